"""Streamed replies from an OpenAI-compatible Chat Completions endpoint.

The caller is waiting on the line, so the SDK's defaults (600 s, two
retries) are replaced by a short timeout and at most one retry, and every
failure becomes one ``LlmFailed`` with a short reason the engine can act on
(say "one moment", try a fallback). User-defined tools run here, between
rounds of the same ``complete()``, so the engine only ever sees text,
``end_call``/``transfer_call`` and the end of the reply.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import attrs
import httpx2
import openai
import trio
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from adapters.providers.interfaces import ProviderLink
from adapters.providers.tools import BUILTIN_DECLARATIONS, BUILTIN_NAMES, Tool, load_tools
from engine.commands import Message
from engine.events import LlmDone, LlmFailed, LlmText, LlmToolCall

DEFAULT_TIMEOUT = httpx2.Timeout(10, connect=3)


@attrs.frozen
class ChatSettings:
    """How to reach the model and how patient to be with it.

    ``base_url`` and ``api_key`` are given by whoever builds the provider
    (``adapters/app/wiring.py`` passes ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY``
    from the settings). The system prompt is not here: the engine puts it at the
    head of the messages.
    """

    model: str = "gpt-4o-mini"
    temperature: float | None = None
    max_completion_tokens: int | None = 300
    timeout: httpx2.Timeout = DEFAULT_TIMEOUT
    max_retries: int = attrs.field(default=1, validator=attrs.validators.in_((0, 1)))
    base_url: str | None = None
    api_key: str | None = attrs.field(default=None, repr=False)
    tools_module: str | None = None
    max_tool_rounds: int = 3


class RunBoundClient:
    """One ``AsyncOpenAI`` per trio run, made on first use.

    Pooled sockets belong to the trio run that opened them, so a client made
    in another run (an earlier test, a restarted server) is replaced rather
    than reused.
    """

    def __init__(
        self, base_url: str | None, api_key: str | None, timeout: httpx2.Timeout, max_retries: int
    ) -> None:
        self._options = {
            "base_url": base_url,
            "api_key": api_key,
            "timeout": timeout,
            "max_retries": max_retries,
        }
        self._client: openai.AsyncOpenAI | None = None
        self._run: trio.lowlevel.TrioToken | None = None

    def get(self) -> openai.AsyncOpenAI:
        """The client of the current run."""
        run = trio.lowlevel.current_trio_token()
        if self._client is None or self._run is not run:
            self._client = openai.AsyncOpenAI(**self._options)  # type: ignore[arg-type]
            self._run = run
        return self._client

    def warm(self) -> None:
        """Make the client and load the SDK's lazily imported parts now, not in the first call."""
        client = self.get()
        _ = client.chat.completions, client.audio.speech

    async def aclose(self) -> None:
        """Close the pooled sockets, even while the caller is being cancelled."""
        client, self._client = self._client, None
        if client is not None and self._run is trio.lowlevel.current_trio_token():
            with trio.CancelScope(shield=True):
                await client.close()


def failure_reason(exc: Exception) -> str | None:
    """A short, loggable reason for a provider failure, or None if it is not one."""
    if isinstance(exc, openai.RateLimitError):
        return "rate_limited"
    if isinstance(exc, openai.APIStatusError):
        kind = "server_error" if exc.status_code >= 500 else "http_error"
        return f"{kind} {exc.status_code}"
    if isinstance(exc, openai.APITimeoutError | httpx2.TimeoutException):
        return "timeout"
    if isinstance(exc, openai.APIConnectionError | httpx2.TransportError):
        return "connection"
    if isinstance(exc, openai.APIError):
        return "stream_error"
    if isinstance(exc, openai.OpenAIError | httpx2.HTTPError):
        return f"error {type(exc).__name__}"
    return None


@attrs.frozen
class _Call:
    id: str
    name: str
    arguments: str


@attrs.define
class _Round:
    """What one streamed response said: tool-call fragments are keyed by ``index``."""

    text: list[str] = attrs.Factory(list)
    fragments: dict[int, dict[str, Any]] = attrs.Factory(dict)
    usage: Any = None

    def add_tool_fragment(self, fragment: Any) -> None:
        call = self.fragments.setdefault(fragment.index, {"id": "", "name": "", "arguments": []})
        if fragment.id:
            call["id"] = fragment.id
        function = fragment.function
        if function is not None:
            if function.name:
                call["name"] = function.name
            if function.arguments:
                call["arguments"].append(function.arguments)

    def tool_calls(self) -> list[_Call]:
        return [
            _Call(c["id"], c["name"], "".join(c["arguments"]))
            for _, c in sorted(self.fragments.items())
        ]


class OpenAIChat:
    """A :class:`~adapters.providers.interfaces.LanguageModel` on Chat Completions streaming."""

    def __init__(self, settings: ChatSettings | None = None, tools: Sequence[Tool] | None = None):
        self.settings = settings or ChatSettings()
        if tools is None:
            module = self.settings.tools_module
            tools = load_tools(module) if module else ()
        self.tools = {t.name: t for t in tools}
        s = self.settings
        self._client = RunBoundClient(s.base_url, s.api_key, s.timeout, s.max_retries)

    def warm(self) -> None:
        self._client.warm()

    async def aclose(self) -> None:
        """Release pooled connections (call it in the run that used this model)."""
        await self._client.aclose()

    async def complete(
        self, utterance: int, messages: tuple[Message, ...], link: ProviderLink
    ) -> None:
        """Stream the reply of ``utterance``, running user tools between rounds, then LlmDone."""
        history: list[dict[str, Any]] = [{"role": m.role, "content": m.content} for m in messages]
        try:
            for round_no in range(self.settings.max_tool_rounds + 1):
                last = round_no == self.settings.max_tool_rounds
                said = await self._stream_round(utterance, history, link, allow_tools=not last)
                calls = said.tool_calls()
                builtin = [c for c in calls if c.name in BUILTIN_NAMES]
                for call in builtin:
                    await link.emit(
                        LlmToolCall(utterance, call.name, _json_object(call, link), call.id)
                    )
                if builtin or not calls:
                    break
                await self._run_tools("".join(said.text) or None, calls, history, link)
        except Exception as exc:
            reason = failure_reason(exc)
            if reason is None:
                raise
            link.log.warning("llm utterance %d failed: %s (%s)", utterance, reason, exc)
            await link.emit(LlmFailed(utterance, reason))
            return
        await link.emit(LlmDone(utterance))

    async def _stream_round(
        self, utterance: int, history: list[dict[str, Any]], link: ProviderLink, allow_tools: bool
    ) -> _Round:
        body = self._request(history, allow_tools)
        started = link.now()
        first: float | None = None
        result = _Round()
        # The client's own post, not chat.completions.create: the resource method first runs
        # the request through the SDK's type-driven transform, CPU spent on every request
        # (docs/load.md) that changes nothing in a body of plain JSON types.
        # Same retries, errors and chunk objects.
        stream = await self._client.get().post(
            "/chat/completions",
            body=body,
            cast_to=ChatCompletion,
            stream=True,
            stream_cls=openai.AsyncStream[ChatCompletionChunk],
        )
        async with stream:
            async for chunk in stream:
                if chunk.usage is not None:
                    result.usage = chunk.usage
                for choice in chunk.choices or ():
                    delta = choice.delta
                    if delta is None:  # compatible servers are not always complete
                        continue
                    if first is None and (delta.content or delta.tool_calls):
                        first = link.now() - started
                    if delta.content:
                        result.text.append(delta.content)
                        await link.emit(LlmText(utterance, delta.content))
                    for fragment in delta.tool_calls or ():
                        result.add_tool_fragment(fragment)
        usage = result.usage
        link.log.info(
            "llm utterance %d: first token %s s, %s prompt + %s completion tokens",
            utterance,
            "-" if first is None else f"{first:.3f}",
            getattr(usage, "prompt_tokens", "?"),
            getattr(usage, "completion_tokens", "?"),
        )
        return result

    def _request(self, history: list[dict[str, Any]], allow_tools: bool) -> dict[str, Any]:
        """The body of one streamed completion; ``allow_tools=False`` asks for text only."""
        s = self.settings
        request: dict[str, Any] = {
            "model": s.model,
            "messages": history,
            "stream": True,
            "stream_options": {"include_usage": True},
            "tools": [*BUILTIN_DECLARATIONS, *(t.declaration() for t in self.tools.values())],
        }
        if not allow_tools:
            request["tool_choice"] = "none"
        if s.temperature is not None:
            request["temperature"] = s.temperature
        if s.max_completion_tokens is not None:
            request["max_completion_tokens"] = s.max_completion_tokens
        return request

    async def _run_tools(
        self,
        text: str | None,
        calls: list[_Call],
        history: list[dict[str, Any]],
        link: ProviderLink,
    ) -> None:
        history.append(
            {
                "role": "assistant",
                "content": text,
                "tool_calls": [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments},
                    }
                    for c in calls
                ],
            }
        )
        for call in calls:
            tool = self.tools.get(call.name)
            if tool is None:
                link.log.warning("model called unknown tool %r", call.name)
                content = json.dumps({"error": f"unknown tool {call.name}"})
            else:
                content = await tool.call(call.arguments)
                link.log.info("tool %s(%s) -> %.200s", call.name, call.arguments, content)
            history.append({"role": "tool", "tool_call_id": call.id, "content": content})


def _json_object(call: _Call, link: ProviderLink) -> str:
    """The arguments as compact JSON text; unparseable ones become ``{}`` (and a warning)."""
    try:
        value = json.loads(call.arguments or "{}")
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        link.log.warning("tool %s: bad arguments %r", call.name, call.arguments)
        return "{}"
    return json.dumps(value, separators=(",", ":"))
