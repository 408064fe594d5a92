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

from adapters.providers.interfaces import ProviderLink
from adapters.providers.openai_http import (
    DEFAULT_TIMEOUT,
    RunBoundClient,
    failure_reason,
    server_sent_events,
)
from adapters.providers.tools import BUILTIN_DECLARATIONS, BUILTIN_NAMES, Tool, load_tools
from engine.commands import Message
from engine.events import LlmDone, LlmFailed, LlmText, LlmToolCall


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

    def add_tool_fragment(self, fragment: dict[str, Any]) -> None:
        index = fragment.get("index", 0)
        call = self.fragments.setdefault(index, {"id": "", "name": "", "arguments": []})
        if fragment.get("id"):
            call["id"] = fragment["id"]
        function = fragment.get("function")
        if function:
            if function.get("name"):
                call["name"] = function["name"]
            if function.get("arguments"):
                call["arguments"].append(function["arguments"])

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
        async with self._client.stream("/chat/completions", body) as response:
            async for chunk in server_sent_events(response):
                if chunk.get("usage") is not None:
                    result.usage = chunk["usage"]
                for choice in chunk.get("choices") or ():
                    delta = choice.get("delta")
                    if not delta:  # compatible servers are not always complete
                        continue
                    content, fragments = delta.get("content"), delta.get("tool_calls")
                    if first is None and (content or fragments):
                        first = link.now() - started
                    if content:
                        result.text.append(content)
                        await link.emit(LlmText(utterance, content))
                    for fragment in fragments or ():
                        result.add_tool_fragment(fragment)
        usage = result.usage if isinstance(result.usage, dict) else {}
        link.log.info(
            "llm utterance %d: first token %s s, %s prompt + %s completion tokens",
            utterance,
            "-" if first is None else f"{first:.3f}",
            usage.get("prompt_tokens", "?"),
            usage.get("completion_tokens", "?"),
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
