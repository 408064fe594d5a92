"""The few Vobiz REST calls the agent needs: dial out, hang up, transfer.

Errors become one exception, :class:`VobizApiError`, whose text says what to
do about it (wrong credentials, no balance, rate limit), because these
messages end up in front of someone setting the agent up for the first time.
Built on ``httpx.AsyncClient``, which runs under trio.
"""

from __future__ import annotations

from urllib.parse import quote

import httpx

DEFAULT_BASE_URL = "https://api.vobiz.ai/api/v1"


class VobizApiError(Exception):
    """A REST call failed; ``status`` is None when no HTTP answer came back."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.message = message


def _api_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300]
    if isinstance(body, dict):
        for key in ("error", "message", "detail"):
            if body.get(key):
                return str(body[key])[:300]
    return str(body)[:300]


def _error(response: httpx.Response) -> VobizApiError:
    status, text = response.status_code, _api_text(response)
    if status in (401, 403):
        hint = "Vobiz refused the credentials: check VOBIZ_AUTH_ID / VOBIZ_AUTH_TOKEN"
        return VobizApiError(status, f"{hint} ({text})" if text else hint)
    if status == 402:
        return VobizApiError(status, f"Vobiz account balance is too low to place calls ({text})")
    if status == 429:
        wait = response.headers.get("retry-after")
        after = f"; retry after {wait} s" if wait else ""
        return VobizApiError(status, f"Vobiz rate or concurrency limit reached{after} ({text})")
    if status >= 500:
        return VobizApiError(status, f"Vobiz server error: {text or response.reason_phrase}")
    return VobizApiError(status, text or response.reason_phrase)


class VobizRest:
    """A client for one Vobiz account; ``async with`` it or call :meth:`aclose`."""

    def __init__(
        self,
        auth_id: str,
        auth_token: str,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 5.0,
    ) -> None:
        self.auth_id = auth_id
        self.base_url = base_url.rstrip("/")
        self._account = f"{self.base_url}/Account/{quote(auth_id, safe='')}"
        self._client = httpx.AsyncClient(
            headers={"X-Auth-ID": auth_id, "X-Auth-Token": auth_token},
            timeout=timeout,
        )

    def __repr__(self) -> str:
        return f"VobizRest(auth_id={self.auth_id!r}, base_url={self.base_url!r})"

    async def __aenter__(self) -> VobizRest:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _request(self, method: str, url: str, body: dict | None = None) -> httpx.Response:
        try:
            response = await self._client.request(method, url, json=body)
        except httpx.TimeoutException as exc:
            raise VobizApiError(None, f"Vobiz did not answer in time ({url}): {exc!r}") from exc
        except httpx.TransportError as exc:
            raise VobizApiError(None, f"cannot reach Vobiz at {self.base_url}: {exc!r}") from exc
        if response.is_error:
            raise _error(response)
        return response

    async def make_call(
        self, from_: str, to: str, answer_url: str, hangup_url: str | None = None
    ) -> str:
        """Dial ``to`` from ``from_``; Vobiz fetches the answer XML when it picks up.

        Returns the ``request_uuid``, which Vobiz also uses as the call uuid.
        """
        body = {"from": from_, "to": to, "answer_url": answer_url, "answer_method": "POST"}
        if hangup_url:
            body |= {"hangup_url": hangup_url, "hangup_method": "POST"}
        response = await self._request("POST", f"{self._account}/Call/", body)
        try:
            uuid = response.json().get("request_uuid")
        except (ValueError, AttributeError):
            uuid = None
        if not isinstance(uuid, str) or not uuid:
            raise VobizApiError(response.status_code, f"no request_uuid in {response.text[:200]!r}")
        return uuid

    async def hangup(self, call_uuid: str) -> None:
        """End a live call."""
        await self._request("DELETE", f"{self._account}/Call/{quote(call_uuid, safe='')}/")

    async def transfer(self, call_uuid: str, aleg_url: str) -> None:
        """Send the caller to new XML fetched from ``aleg_url`` (a human, a queue)."""
        body = {"legs": "aleg", "aleg_url": aleg_url, "aleg_method": "POST"}
        await self._request("POST", f"{self._account}/Call/{quote(call_uuid, safe='')}/", body)
