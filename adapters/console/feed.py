"""The console's live feed: the log records of the console's own calls, as they are written.

The board hands every call's records to :meth:`ConsoleCalls.listen` (the call
log writer's listener). Only calls the console placed itself are kept; a
call from Vobiz on the same server never reaches the feed. A subscriber gets
the call's records from its header on, then each new one; a subscriber that
falls far behind is cut off rather than slowing the call, which never waits
on the console.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from typing import Any

import trio

#: Console calls whose records are kept (the newest ones).
CALLS_KEPT = 20
#: Records kept per call; a longer call's feed starts from its newest records.
RECORDS_KEPT = 50_000
#: Records a subscriber may have waiting before it is cut off.
SUBSCRIBER_BUFFER = 5_000


def feed_record(record: dict[str, Any]) -> dict[str, Any]:
    """The record as the feed shows it: recorded audio bytes left out (length and digest stay)."""
    audio = record.get("audio")
    if isinstance(audio, dict) and "b64" in audio:
        record = record | {"audio": {k: v for k, v in audio.items() if k != "b64"}}
    return record


class CallFeed:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.subscribers: set[trio.MemorySendChannel[dict[str, Any]]] = set()
        self.finished = False

    def add(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if len(self.records) > RECORDS_KEPT:
            del self.records[: len(self.records) - RECORDS_KEPT]
        for channel in list(self.subscribers):
            try:
                channel.send_nowait(record)
            except (trio.WouldBlock, trio.BrokenResourceError):
                self.subscribers.discard(channel)
                channel.close()
        if record.get("kind") == "footer":
            self.finished = True
            for channel in self.subscribers:
                channel.close()
            self.subscribers.clear()


class ConsoleCalls:
    """The calls placed from the console page, and their feeds."""

    def __init__(self) -> None:
        self.calls: OrderedDict[str, CallFeed] = OrderedDict()

    def new_call(self) -> str:
        """A fresh call id for the page to answer with; its records will be kept."""
        call_id = f"console-{secrets.token_hex(6)}"
        self.calls[call_id] = CallFeed()
        while len(self.calls) > CALLS_KEPT:
            _, old = self.calls.popitem(last=False)
            for channel in old.subscribers:
                channel.close()
        return call_id

    def listen(self, call_id: str, record: dict[str, Any]) -> None:
        """The log writer's listener: called for every record of every call on the server."""
        feed = self.calls.get(call_id)
        if feed is not None:
            feed.add(feed_record(record))

    def subscribe(
        self, call_id: str
    ) -> tuple[list[dict[str, Any]], trio.MemoryReceiveChannel[dict[str, Any]]] | None:
        """The records so far and a channel of the next ones; None for a call not the console's."""
        feed = self.calls.get(call_id)
        if feed is None:
            return None
        send, receive = trio.open_memory_channel[dict[str, Any]](SUBSCRIBER_BUFFER)
        if feed.finished:
            send.close()
        else:
            feed.subscribers.add(send)
        return list(feed.records), receive
