"""The HTTP side of OpenAI-compatible requests, shared by chat and speech.

Both stream the answer of one POST per reply or sentence. They go through the
SDK client's own pooled HTTP client rather than through its resource methods:
the SDK's request building, response wrappers and a model object per streamed
chunk were most of their CPU (``docs/load.md``, ``docs/providers.md``). What
the rest of the code relies on is kept here: the SDK client holds the key, the
base URL and its headers; the one retry follows the SDK's statuses; failures
raise the SDK's exceptions and read as one short reason (:func:`failure_reason`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import openai
import trio

#: The caller is waiting on the line: a short read timeout instead of the SDK's 600 s.
DEFAULT_TIMEOUT = httpx2.Timeout(10, connect=3)
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

    The streamed requests go through :meth:`stream` on the pooled client itself
    (the module's docstring says why).
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


async def server_sent_events(response: httpx2.Response) -> AsyncIterator[dict[str, Any]]:
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
