"""``voice-agent call`` against the fake Vobiz REST API over loopback."""

import pytest

from adapters.app.outbound import place_call
from fixtures.fake_vobiz_rest import fake_vobiz_rest


@pytest.fixture
def env(monkeypatch):
    for name in ("VOBIZ_AUTH_ID", "VOBIZ_AUTH_TOKEN", "VOBIZ_API_URL", "PUBLIC_URL"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def credentials(env, fake, token: str = "fake-token") -> None:
    env.setenv("VOBIZ_AUTH_ID", fake.auth_id)
    env.setenv("VOBIZ_AUTH_TOKEN", token)
    env.setenv("VOBIZ_API_URL", fake.url)
    env.setenv("PUBLIC_URL", "https://agent.example.com")


async def test_a_call_is_placed_and_its_id_printed(env, capsys):
    async with fake_vobiz_rest() as fake:
        credentials(env, fake)
        status = await place_call("+15550002", "+15550001")
    out = capsys.readouterr().out.strip()
    assert status == 0
    assert out in fake.live_calls
    body = fake.live_calls[out]
    assert body["from"] == "+15550001" and body["to"] == "+15550002"
    assert body["answer_url"] == "https://agent.example.com/answer"
    assert body["hangup_url"] == "https://agent.example.com/hangup"


async def test_missing_credentials_say_which_variables(env, capsys):
    status = await place_call("+15550002", "+15550001")
    assert status == 2
    assert "VOBIZ_AUTH_ID" in capsys.readouterr().err


async def test_missing_public_url_is_explained(env, capsys):
    async with fake_vobiz_rest() as fake:
        credentials(env, fake)
        env.delenv("PUBLIC_URL")
        status = await place_call("+15550002", "+15550001")
    assert status == 2
    assert "PUBLIC_URL" in capsys.readouterr().err
    assert not fake.requests


async def test_wrong_credentials_are_refused_clearly(env, capsys):
    async with fake_vobiz_rest() as fake:
        credentials(env, fake, token="wrong")
        status = await place_call("+15550002", "+15550001")
    err = capsys.readouterr()
    assert status == 1 and not err.out
    assert "401" in err.err and "VOBIZ_AUTH_TOKEN" in err.err


@pytest.mark.parametrize(
    ("to", "code", "text", "shown"),
    [
        pytest.param("+15550002", 403, "account suspended", "403", id="forbidden"),
        pytest.param(
            "not-a-number", 400, "invalid destination number", "HTTP 400", id="client-error"
        ),
    ],
)
async def test_a_refusal_shows_its_status_and_the_api_text(env, capsys, to, code, text, shown):
    async with fake_vobiz_rest() as fake:
        credentials(env, fake)
        fake.fail_next(code, text)
        status = await place_call(to, "+15550001")
    err = capsys.readouterr().err
    assert status == 1
    assert shown in err and text in err
