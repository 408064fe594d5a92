"""VobizRest against the fake Vobiz REST server, over real loopback sockets."""

from __future__ import annotations

import pytest
import trio

from adapters.vobiz.rest import VobizApiError, VobizRest
from fixtures.fake_vobiz_rest import fake_vobiz_rest


def client(fake, token: str | None = None) -> VobizRest:
    return VobizRest(fake.auth_id, token or fake.auth_token, base_url=fake.url)


async def test_make_call_hangup_transfer():
    async with fake_vobiz_rest() as fake, client(fake) as rest:
        uuid = await rest.make_call(
            "+14155550100", "+919876543210", "https://agent.example/answer", "https://h.example/h"
        )
        assert uuid in fake.live_calls
        await rest.transfer(uuid, "https://agent.example/human")
        assert fake.live_calls[uuid]["transferred_to"] == "https://agent.example/human"
        await rest.hangup(uuid)
        assert fake.live_calls == {}

    made, moved, hung = fake.requests
    assert (made.method, made.path) == ("POST", "/api/v1/Account/MA_FAKE/Call/")
    assert made.headers["x-auth-id"] == "MA_FAKE"
    assert made.headers["x-auth-token"] == "fake-token"
    assert made.headers["content-type"] == "application/json"
    assert made.body == {
        "from": "+14155550100",
        "to": "+919876543210",
        "answer_url": "https://agent.example/answer",
        "answer_method": "POST",
        "hangup_url": "https://h.example/h",
        "hangup_method": "POST",
    }
    assert (moved.method, moved.path) == ("POST", f"/api/v1/Account/MA_FAKE/Call/{uuid}/")
    assert moved.body == {
        "legs": "aleg",
        "aleg_url": "https://agent.example/human",
        "aleg_method": "POST",
    }
    assert (hung.method, hung.path, hung.body) == (
        "DELETE",
        f"/api/v1/Account/MA_FAKE/Call/{uuid}/",
        None,
    )


async def test_make_call_without_hangup_url(nursery):
    async with fake_vobiz_rest(nursery) as fake, client(fake) as rest:
        await rest.make_call("+1", "+2", "https://a.example/answer")
    assert "hangup_url" not in fake.requests[0].body


async def test_wrong_token_names_the_settings():
    async with fake_vobiz_rest() as fake, client(fake, token="wrong") as rest:
        with pytest.raises(VobizApiError) as info:
            await rest.make_call("+1", "+2", "https://a.example/answer")
    assert info.value.status == 401
    assert "VOBIZ_AUTH_ID / VOBIZ_AUTH_TOKEN" in str(info.value)


@pytest.mark.parametrize(
    ("status", "headers", "needle"),
    [
        (401, {}, "check VOBIZ_AUTH_ID / VOBIZ_AUTH_TOKEN"),
        (403, {}, "check VOBIZ_AUTH_ID / VOBIZ_AUTH_TOKEN"),
        (402, {}, "balance"),
        (429, {"retry_after": "3"}, "retry after 3 s"),
        (400, {}, "the error text from the API"),
        (500, {}, "Vobiz server error"),
    ],
)
async def test_http_errors_become_clear_vobiz_api_errors(status, headers, needle):
    async with fake_vobiz_rest() as fake, client(fake) as rest:
        message = "the error text from the API" if status == 400 else ""
        fake.fail_next(status, message, **{k.replace("_", "-"): v for k, v in headers.items()})
        with pytest.raises(VobizApiError) as info:
            await rest.make_call("+1", "+2", "https://a.example/answer")
        assert info.value.status == status
        assert needle in str(info.value)
        # The failure was one-shot: the next request goes through.
        assert await rest.make_call("+1", "+2", "https://a.example/answer")


async def test_unknown_call_is_a_404_with_the_api_text():
    async with fake_vobiz_rest() as fake, client(fake) as rest:
        with pytest.raises(VobizApiError) as info:
            await rest.hangup("no-such-call")
    assert (info.value.status, info.value.message) == (404, "call not found")


async def test_wrong_path_casing_is_refused_like_vobiz():
    async with fake_vobiz_rest() as fake:
        lower = VobizRest(fake.auth_id, fake.auth_token, base_url=fake.url)
        lower._account = lower._account.replace("/Account/", "/account/")
        async with lower:
            with pytest.raises(VobizApiError) as info:
                await lower.hangup("x")
    assert info.value.status == 401


async def test_network_error_has_no_status():
    async with fake_vobiz_rest() as fake:
        url = fake.url
    # The fake is gone; its port now refuses connections.
    async with VobizRest("MA", "t", base_url=url) as rest:
        with pytest.raises(VobizApiError) as info:
            await rest.hangup("x")
    assert info.value.status is None
    assert "cannot reach Vobiz" in str(info.value)


async def test_timeout_is_a_network_error(autojump_clock):
    # A listener that accepts but never answers.
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with VobizRest("MA", "t", base_url=f"http://127.0.0.1:{port}", timeout=0.2) as rest:
        with pytest.raises(VobizApiError) as info:
            await rest.hangup("x")
    for listener in listeners:
        await listener.aclose()
    assert info.value.status is None
    assert "did not answer in time" in str(info.value)


def test_the_token_stays_out_of_repr_and_the_url_loses_its_slash():
    rest = VobizRest("MA", "t0ken-value", "http://127.0.0.1:9/v1/")
    assert rest.base_url == "http://127.0.0.1:9/v1"
    assert "t0ken-value" not in repr(rest)


async def test_fake_hands_back_the_callers_exception_unwrapped():
    with pytest.raises(VobizApiError):
        async with fake_vobiz_rest() as fake, client(fake) as rest:
            await rest.hangup("no-such-call")
