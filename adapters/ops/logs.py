"""The server's console log: one line per event, as text or as JSON (``LOG_FORMAT=json``).

Every line about a call carries its id as a field (``call_id``), not as text
inside the message: a call's lines are found with one filter in a log store,
and the text format still shows them as ``[call <id>] …``. hypercorn's access
and error lines go through the same handler, once.

No stream token reaches a line: a ``token=`` in a URL is replaced before the
line is written, whatever logged it. The JSON line carries the message, never
the record's arguments (hypercorn's access-log arguments hold the whole
environment, keys included).
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import sys
from collections.abc import Mapping
from typing import IO, Any

#: The values of ``LOG_FORMAT``.
FORMATS = ("text", "json")

#: hypercorn's access line: no query string (a media socket's carries its token), no agent.
ACCESS_LOG_FORMAT = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(L)ss'
#: Requests too frequent and too dull for the log: probes and scrapes (every few seconds
#: from each load balancer and Prometheus; their failures show in those).
QUIET_PATHS = frozenset({"/health", "/metrics"})

_TOKEN = re.compile(r"([?&]token=)[^&\s\"'<>]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def redacted(text: str) -> str:
    """``text`` with every URL's ``token=`` value replaced."""
    return _TOKEN.sub(r"\1<redacted>", text)


def _call_id(record: logging.LogRecord) -> str | None:
    call_id = getattr(record, "call_id", None)
    return None if call_id is None else str(call_id)


def _escaped(text: str) -> str:
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: [call <id>] message``, control characters escaped: a webhook's
    call id or a requested path (``/%0A…`` in an access line) cannot start a forged line."""

    LINE = "%(asctime)s %(levelname)s %(name)s: %(message)s"

    def __init__(self) -> None:
        super().__init__(self.LINE)

    def formatMessage(self, record: logging.LogRecord) -> str:
        call_id = _call_id(record)
        message = _escaped(record.message)
        if call_id is not None:
            message = f"[call {_escaped(call_id)}] {message}"
        return redacted(self.LINE % (record.__dict__ | {"message": message}))

    def formatException(self, ei: Any) -> str:
        return redacted(super().formatException(ei))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC), ``level``, ``logger``, ``message``, and
    ``call_id`` and ``exception`` when there are. ASCII only, so no reader finds a line
    break inside a line."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        line: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redacted(record.getMessage()),
        }
        call_id = _call_id(record)
        if call_id is not None:
            line["call_id"] = call_id
        if record.exc_info:
            line["exception"] = redacted(self.formatException(record.exc_info))
        if record.stack_info:
            line["stack"] = redacted(self.formatStack(record.stack_info))
        return json.dumps(line)


def formatter(fmt: str) -> logging.Formatter:
    if fmt not in FORMATS:
        raise ValueError(f"LOG_FORMAT={fmt!r}: must be one of {', '.join(FORMATS)}")
    return JsonFormatter() if fmt == "json" else TextFormatter()


class _AccessLines(logging.Filter):
    """Leaves out the access lines of :data:`QUIET_PATHS`, and hypercorn's second line for
    a request whose client closed the connection as the response ended.

    hypercorn marks a response finished only after its last bytes are written, and a
    close read meanwhile logs the request again, with no status: a webhook sender that
    closes at once (Vobiz, curl) got two lines per request. The price: a request whose
    client left before any response has no access line (its handler's own lines stay).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        atoms = record.args
        if not isinstance(atoms, Mapping):
            return True
        return atoms.get("U") not in QUIET_PATHS and atoms.get("s") != "-"


#: The handler :func:`setup` installed on the root logger.
_handler: logging.Handler | None = None


def setup(verbose: bool = False, fmt: str = "text", stream: IO[str] | None = None) -> None:
    """One handler on the root logger, in ``fmt``, to stderr (or ``stream``).

    As with ``logging.basicConfig``, a root logger that already has handlers (an
    embedding program's, pytest's) is left as it is.
    """
    global _handler
    root = logging.getLogger()
    if _handler is None and root.handlers:
        return
    if _handler is not None:
        root.removeHandler(_handler)
    _handler = logging.StreamHandler(stream or sys.stderr)
    _handler.setFormatter(formatter(fmt))
    root.addHandler(_handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not verbose:  # one line per provider request is noise next to a call's own log
        logging.getLogger("httpx").setLevel(logging.WARNING)


def use_format(fmt: str) -> None:
    """Write the lines of :func:`setup`'s handler in ``fmt`` from now on (the settings name
    the format, and are read after logging starts)."""
    if _handler is not None:
        _handler.setFormatter(formatter(fmt))


def hypercorn_loggers() -> tuple[logging.Logger, logging.Logger]:
    """The loggers hypercorn is given for its access and error lines, whose lines reach the
    root handler like any other.

    Given as loggers, hypercorn adds no handler of its own (given ``"-"``, it adds one
    and every line is printed twice). They are ours, not ``hypercorn.*``: any other
    hypercorn server in the process (a test's fake) puts a handler on those.
    """
    access = logging.getLogger("voice_agent.access")
    if not any(isinstance(f, _AccessLines) for f in access.filters):
        access.addFilter(_AccessLines())
    return access, logging.getLogger("voice_agent.hypercorn")
