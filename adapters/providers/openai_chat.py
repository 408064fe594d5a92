"""Streamed replies from an OpenAI-compatible Chat Completions endpoint.

The caller is waiting on the line, so the SDK's defaults (600 s, two
retries) are replaced by a short timeout and at most one retry, and every
failure becomes one ``LlmFailed`` with a short reason the engine can act on
(say "one moment", try a fallback). User-defined tools run here, between
rounds of the same ``complete()``, so the engine only ever sees text,
``end_call``/``transfer_call`` and the end of the reply.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import attrs
import httpx2
import openai
import trio

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


#: Connections kept for the next request: a call asks every few seconds, and a new
#: connection (TCP, often TLS) costs the caller's wait and the server's CPU each time.
LIMITS = httpx2.Limits(max_connections=1000, max_keepalive_connections=100, keepalive_expiry=120)
#: Before the one retry (the SDK's first backoff), unless the server says how long.
RETRY_DELAY = 0.5
#: Statuses worth the one retry, as the SDK retries them.
RETRYABLE = frozenset({408, 409, 429})


class RunBoundClient:
    """One ``AsyncOpenAI`` and its pooled HTTP client per trio run, made on first use.

    Pooled sockets belong to the trio run that opened them, so a client made
    in another run (an earlier test, a restarted server) is replaced rather
    than reused.

    The two requests a call makes again and again, a streamed completion and a
    streamed sentence of speech, go through :meth:`stream` on the pooled client
    itself: the SDK's request building, response wrappers and a model object per
    streamed chunk were most of their CPU (``docs/load.md``). Its retry (one, for
    the statuses and failures the SDK retries) and its exceptions are kept, so a
    failure reads the same either way.
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
        self._timeout = timeout
        self._retries = max_retries
        self._client: openai.AsyncOpenAI | None = None
        self._http: httpx2.AsyncClient | None = None
        self._headers: dict[str, str] = {}
        self._run: trio.lowlevel.TrioToken | None = None

    def get(self) -> openai.AsyncOpenAI:
        """The client of the current run."""
        run = trio.lowlevel.current_trio_token()
        if self._client is None or self._run is not run:
            self._http = httpx2.AsyncClient(
                timeout=self._timeout, limits=LIMITS, follow_redirects=True
            )
            self._client = openai.AsyncOpenAI(
                **self._options,  # type: ignore[arg-type]
                http_client=self._http,
            )
            # What the SDK would send: the key, and the organisation and project it reads
            # from OPENAI_ORG_ID / OPENAI_PROJECT_ID. The body's type is set by httpx.
            sent = {**self._client.default_headers, **self._client.auth_headers}
            self._headers = {
                name: value
                for name, value in sent.items()
                if isinstance(value, str) and name.lower() not in ("accept", "content-type")
            }
            self._run = run
        return self._client

    @contextlib.asynccontextmanager
    async def stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[httpx2.Response]:
        """POST ``body`` as JSON to ``path`` (under the base URL) and stream the answer.

        A failure before the answer starts is retried once (``max_retries``) where the
        SDK would; then it raises what the SDK raises (``RateLimitError``,
        ``APIStatusError``, or httpx2's timeout and transport errors).
        """
        client = self.get()  # a missing key fails here, as the SDK's own requests do
        http = self._http
        assert http is not None
        request = http.build_request(
            "POST",
            f"{str(client.base_url).rstrip('/')}{path}",
            json=body,
            headers=self._headers,
        )
        retries = self._retries
        for attempt in range(retries + 1):
            last = attempt == retries
            try:
                response = await http.send(request, stream=True)
            except (httpx2.TimeoutException, httpx2.TransportError):
                if last:
                    raise
                await trio.sleep(RETRY_DELAY)
                continue
            if response.status_code >= 400:
                await response.aread()
                await response.aclose()
                if last or not (response.status_code in RETRYABLE or response.status_code >= 500):
                    raise _status_error(response)
                await trio.sleep(_retry_delay(response))
                continue
            try:
                yield response
            finally:
                await response.aclose()
            return

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


def _status_error(response: httpx2.Response) -> openai.APIStatusError:
    """The SDK's exception for an error status, with the body the server gave."""
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    kind = openai.RateLimitError if response.status_code == 429 else openai.APIStatusError
    return kind(
        f"Error code: {response.status_code} - {message or body}", response=response, body=body
    )


def _retry_delay(response: httpx2.Response) -> float:
    """The server's ``retry-after`` when it is short, else :data:`RETRY_DELAY`."""
    try:
        after = float(response.headers.get("retry-after", ""))
    except ValueError:
        return RETRY_DELAY
    return after if 0 <= after <= 5 else RETRY_DELAY


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
            async for chunk in _events(response):
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


async def _events(response: httpx2.Response) -> AsyncIterator[dict[str, Any]]:
    """The JSON objects of a server-sent event stream, up to ``[DONE]``; an ``error`` object
    in the stream raises as the SDK's stream does (``openai.APIError``)."""
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        if not data:
            continue
        chunk = json.loads(data)
        if not isinstance(chunk, dict):
            continue
        error = chunk.get("error")
        if error is not None:
            message = error.get("message") if isinstance(error, dict) else None
            raise openai.APIError(
                message or "An error occurred during streaming", response.request, body=error
            )
        yield chunk


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
