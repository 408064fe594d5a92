"""OpenAIChat against the loopback fake, through the real SDK and real sockets.

Delays are virtual (a MockClock that autojumps), so a 10 s timeout costs nothing and
the times asserted below are exact call times, not wall-clock guesses.
"""

from __future__ import annotations

import json
import logging

import httpx2
import pytest
import trio

from adapters.providers.interfaces import ProviderLink
from adapters.providers.openai_chat import ChatSettings, OpenAIChat
from adapters.providers.tools import Tool, load_tools, tool
from engine.commands import Message
from engine.events import LlmDone, LlmFailed, LlmText, LlmToolCall
from fixtures.fake_openai import (
    FakeOpenAI,
    Fault,
    Reply,
    ToolCall,
    chat_chunks,
    loopback_clock,
    run_fake_openai,
)

CHAT = "/v1/chat/completions"
MESSAGES = (
    Message("system", "You are a friendly phone agent."),
    Message("user", "Where is my order A17?"),
)


# A tools module for the loader: this test module itself.
@tool(
    parameters={
        "type": "object",
        "properties": {"order_id": {"type": "string"}},
        "required": ["order_id"],
    }
)
def lookup_order(order_id: str) -> dict:
    """Where an order is."""
    return {"order_id": order_id, "status": "shipped", "eta": "Friday"}


@tool
async def opening_hours() -> str:
    """When the shop is open."""
    await trio.sleep(0.5)
    return "9 to 5, Monday to Friday"


@pytest.fixture
def clock():
    return loopback_clock()


class Recorder:
    """A ProviderLink whose emit records events with the call time they arrived."""

    def __init__(self) -> None:
        self.events: list = []
        self.times: list[float] = []
        self.link = ProviderLink(
            call_id="test-call",
            emit=self.emit,
            now=trio.current_time,
            log=logging.LoggerAdapter(logging.getLogger("test.openai_chat"), {}),
        )

    async def emit(self, event) -> None:
        self.events.append(event)
        self.times.append(trio.current_time())


def make_chat(fake: FakeOpenAI, **overrides) -> OpenAIChat:
    settings = {"base_url": fake.base_url, "api_key": "sk-test", "max_retries": 0, **overrides}
    return OpenAIChat(ChatSettings(**settings))


async def run_turn(chat: OpenAIChat, utterance: int = 1) -> Recorder:
    rec = Recorder()
    try:
        await chat.complete(utterance, MESSAGES, rec.link)
    finally:
        await chat.aclose()
    return rec


def texts(events) -> str:
    return "".join(e.text for e in events if isinstance(e, LlmText))


async def test_text_deltas_arrive_in_order_then_done(clock):
    fake = FakeOpenAI(first_token_delay=0.4, token_delay=0.1)
    fake.replies.append(Reply("Your order shipped on Monday."))
    async with run_fake_openai(fake):
        t0 = trio.current_time()
        rec = await run_turn(make_chat(fake, temperature=0.3))

    assert rec.events == [
        LlmText(1, "Your"),
        LlmText(1, " order"),
        LlmText(1, " shipped"),
        LlmText(1, " on"),
        LlmText(1, " Monday."),
        LlmDone(1),
    ]
    # Deltas leave as they come: the first at the fake's time to first token.
    assert rec.times[0] - t0 == pytest.approx(0.5)
    assert rec.times[-2] - t0 == pytest.approx(0.9)
    [body] = fake.bodies(CHAT)
    assert body["model"] == "gpt-4o-mini"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["temperature"] == 0.3
    assert body["max_completion_tokens"] == 300
    assert body["messages"] == [{"role": m.role, "content": m.content} for m in MESSAGES]
    names = [t["function"]["name"] for t in body["tools"]]
    assert names[:2] == ["end_call", "transfer_call"]
    assert "tool_choice" not in body


def test_fake_fragments_tool_calls_like_openai():
    call = ToolCall("transfer_call", '{"to": "+14155550100", "reason": "billing"}')
    chunks = list(chat_chunks(Reply("", (call,)), "m", include_usage=True))
    fragments = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks
        if c["choices"] and "tool_calls" in c["choices"][0]["delta"]
    ]
    assert len(fragments) > 3
    assert fragments[0]["id"] == "call_1" and fragments[0]["function"]["name"] == "transfer_call"
    assert all(set(f) == {"index", "function"} for f in fragments[1:])
    assert "".join(f["function"]["arguments"] for f in fragments) == call.arguments
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0


async def test_fragmented_builtin_tool_call_becomes_one_event(clock):
    fake = FakeOpenAI(token_delay=0.05)
    fake.replies.append(
        Reply(
            "Let me put you through.",
            (ToolCall("transfer_call", '{"to": "sip:billing@example.com", "reason": "invoice"}'),),
        )
    )
    async with run_fake_openai(fake):
        rec = await run_turn(make_chat(fake))

    assert texts(rec.events) == "Let me put you through."
    assert rec.events[-2:] == [
        LlmToolCall(
            1, "transfer_call", '{"to":"sip:billing@example.com","reason":"invoice"}', "call_1"
        ),
        LlmDone(1),
    ]
    assert len(fake.bodies(CHAT)) == 1  # built-in tools go to the engine, not back to the model


async def test_end_call_with_bad_arguments_still_reaches_the_engine(clock):
    fake = FakeOpenAI()
    fake.replies.append(Reply("Bye!", (ToolCall("end_call", '{"reason": "do'),)))
    async with run_fake_openai(fake):
        rec = await run_turn(make_chat(fake))
    assert rec.events[-2:] == [LlmToolCall(1, "end_call", "{}", "call_1"), LlmDone(1)]


async def test_user_tool_result_reaches_the_next_request(clock):
    fake = FakeOpenAI()
    fake.replies.extend(
        [
            Reply(
                "One moment.",
                (
                    ToolCall("lookup_order", '{"order_id": "A17"}', id="call_a"),
                    ToolCall("opening_hours", "", id="call_b"),
                ),
            ),
            Reply("Order A17 arrives Friday."),
        ]
    )
    async with run_fake_openai(fake):
        rec = await run_turn(make_chat(fake, tools_module=__name__))

    assert texts(rec.events) == "One moment.Order A17 arrives Friday."
    assert rec.events[-1] == LlmDone(1)
    assert not any(isinstance(e, LlmToolCall) for e in rec.events)
    first, second = fake.bodies(CHAT)
    declared = [t["function"]["name"] for t in first["tools"]]
    assert declared == ["end_call", "transfer_call", "lookup_order", "opening_hours"]
    assistant, result_a, result_b = second["messages"][len(MESSAGES) :]
    assert assistant["role"] == "assistant" and assistant["content"] == "One moment."
    assert [c["id"] for c in assistant["tool_calls"]] == ["call_a", "call_b"]
    assert assistant["tool_calls"][0]["function"] == {
        "name": "lookup_order",
        "arguments": '{"order_id": "A17"}',
    }
    assert result_a == {
        "role": "tool",
        "tool_call_id": "call_a",
        "content": json.dumps({"order_id": "A17", "status": "shipped", "eta": "Friday"}),
    }
    assert result_b == {
        "role": "tool",
        "tool_call_id": "call_b",
        "content": "9 to 5, Monday to Friday",
    }


async def test_tool_rounds_are_bounded(clock):
    fake = FakeOpenAI(script=lambda messages: Reply("", (ToolCall("opening_hours"),)))
    async with run_fake_openai(fake):
        rec = await run_turn(make_chat(fake, tools_module=__name__, max_tool_rounds=2))
    bodies = fake.bodies(CHAT)
    assert len(bodies) == 3
    assert [b.get("tool_choice") for b in bodies] == [None, None, "none"]
    assert rec.events == [LlmDone(1)]


async def test_tool_errors_go_back_to_the_model():
    def broken(**kwargs):
        raise RuntimeError("database down")

    result = await Tool(broken, "broken", "fails").call('{"x": 1}')
    assert json.loads(result) == {"error": "RuntimeError: database down"}
    assert "error" in json.loads(await Tool(broken, "broken", "fails").call("[1]"))


def test_loader_refuses_builtin_names(tmp_path, monkeypatch):
    (tmp_path / "clashing_tools.py").write_text(
        "from adapters.providers.tools import tool\n@tool(name='end_call')\ndef hang_up():\n    return 'no'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="reserved"):
        load_tools("clashing_tools")
    assert [t.name for t in load_tools(__name__)] == ["lookup_order", "opening_hours"]


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (Fault("rate_limit"), "rate_limited"),
        (Fault("server_error"), "server_error 500"),
        (Fault("drop", after_chunks=3), "connection"),
        (Fault("stream_error", after_chunks=2), "stream_error"),
    ],
)
async def test_failures_become_llm_failed(clock, caplog, fault, reason):
    fake = FakeOpenAI()
    fake.replies.append(Reply("Sure, one two three four."))
    fake.chat_faults.append(fault)
    async with run_fake_openai(fake):
        rec = await run_turn(make_chat(fake), utterance=7)
    assert rec.events[-1] == LlmFailed(7, reason)
    assert not any(isinstance(e, LlmDone) for e in rec.events)
    assert f"failed: {reason}" in caplog.text


async def test_hang_times_out_at_the_read_timeout(clock):
    fake = FakeOpenAI()
    fake.chat_faults.append(Fault("hang"))
    async with run_fake_openai(fake):
        t0 = trio.current_time()
        rec = await run_turn(make_chat(fake, timeout=httpx2.Timeout(2.0, connect=1.0)))
    assert rec.events == [LlmFailed(1, "timeout")]
    assert rec.times[0] - t0 == pytest.approx(2.0)


async def test_a_slow_server_only_delays_the_reply(clock):
    fake = FakeOpenAI()
    fake.replies.append(Reply("Hello."))
    fake.chat_faults.append(Fault("slow", delay=1.5))
    async with run_fake_openai(fake):
        t0 = trio.current_time()
        rec = await run_turn(make_chat(fake))
    assert rec.events == [LlmText(1, "Hello."), LlmDone(1)]
    assert rec.times[0] - t0 == pytest.approx(1.5)


async def test_one_retry_rides_over_a_429(clock):
    fake = FakeOpenAI()
    fake.replies.append(Reply("Hello."))
    fake.chat_faults.append(Fault("rate_limit"))
    async with run_fake_openai(fake):
        rec = await run_turn(make_chat(fake, max_retries=1))
    assert rec.events == [LlmText(1, "Hello."), LlmDone(1)]
    assert len(fake.bodies(CHAT)) == 2


async def test_cancelling_mid_stream_stops_at_once(clock):
    fake = FakeOpenAI(token_delay=1.0)
    fake.replies.append(Reply("one two three four five six"))
    async with run_fake_openai(fake):
        chat = make_chat(fake)
        rec = Recorder()
        first_text = trio.Event()
        original_emit = rec.emit

        async def emit(event) -> None:
            await original_emit(event)
            if isinstance(event, LlmText) and event.text:
                first_text.set()

        link = ProviderLink(rec.link.call_id, emit, rec.link.now, rec.link.log)
        async with trio.open_nursery() as nursery:
            scope = trio.CancelScope()

            async def reply() -> None:
                with scope:
                    await chat.complete(1, MESSAGES, link)

            nursery.start_soon(reply)
            await first_text.wait()
            cancelled_at = trio.current_time()
            scope.cancel()
        # Cancellation took no (virtual) time: nothing waited for the next token.
        assert trio.current_time() == cancelled_at
        assert rec.events == [LlmText(1, "one")]
        # The model is usable again after a cancelled stream.
        fake.replies.append(Reply("Again."))
        await chat.complete(2, MESSAGES, rec.link)
        await chat.aclose()
    assert rec.events[-2:] == [LlmText(2, "Again."), LlmDone(2)]


async def test_missing_api_key_is_a_failure_not_a_crash(clock, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    chat = OpenAIChat(ChatSettings(base_url="http://127.0.0.1:9/v1", api_key=None))
    rec = await run_turn(chat)
    assert rec.events == [LlmFailed(1, "error OpenAIError")]


async def test_a_refused_key_fails_the_reply_at_once(clock):
    fake = FakeOpenAI(api_key="sk-the-right-one")  # as strict as the real API: 401 otherwise
    fake.replies.append(Reply("Hello."))
    async with run_fake_openai(fake):
        refused = await run_turn(make_chat(fake, max_retries=1))
        fake.api_key = "sk-test"
        accepted = await run_turn(make_chat(fake))
    assert refused.events == [LlmFailed(1, "http_error 401")]
    assert accepted.events == [LlmText(1, "Hello."), LlmDone(1)]


async def test_the_organisation_and_project_go_with_each_request(clock, monkeypatch):
    monkeypatch.setenv("OPENAI_ORG_ID", "org-fake")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-fake")
    fake = FakeOpenAI()
    fake.replies.append(Reply("Hello."))
    async with run_fake_openai(fake):
        await run_turn(make_chat(fake))
    (headers,) = fake.headers
    assert headers["Openai-Organization"] == "org-fake"
    assert headers["Openai-Project"] == "proj-fake"
    assert headers["Authorization"] == "Bearer sk-test"
