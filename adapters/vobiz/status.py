"""The Stream element's status callbacks (``statusCallbackUrl``), with what is safe to keep."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

#: Stream status events that say the media connection is in trouble.
STREAM_TROUBLE = frozenset({"DroppedStream", "DegradedStream"})


@attrs.frozen
class StreamStatus:
    """One ``statusCallbackUrl`` POST, with what is safe to keep of it.

    ``ServiceURL`` is never kept: it is our stream URL, live token and all.
    Every value is cut to a bounded length, since the sender may not be Vobiz.
    """

    event: str
    stream_id: str = ""
    name: str = ""
    error: str = ""

    @property
    def trouble(self) -> bool:
        return self.event in STREAM_TROUBLE or bool(self.error)

    def for_log(self) -> dict[str, str]:
        fields = {"Event": self.event, "StreamID": self.stream_id, "Name": self.name}
        if self.error:
            fields["Error"] = self.error
        return {k: v for k, v in fields.items() if v}


def stream_status(form: Mapping[str, str]) -> StreamStatus:
    def field(key: str, limit: int = 128) -> str:
        return str(form.get(key, ""))[:limit]

    return StreamStatus(field("Event", 32), field("StreamID"), field("Name"), field("Error", 256))
