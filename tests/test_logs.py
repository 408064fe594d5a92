"""The console log: its two formats, the call id as a field, no token in a line, and
``voice-agent serve`` writing each of its lines once, hypercorn's included."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from serving import running_server
from stand_ins import quiet

from adapters.app.settings import ServerSettings
from adapters.call.record import call_logger
from adapters.ops import logs
from engine.config import AgentConfig

ROOT = Path(__file__).resolve().parent.parent


def record(message: str, *args, call_id: str | None = None, exc: bool = False):
    """A record as a logger makes it (an adapter's ``extra`` becomes attributes)."""
    exc_info = None
    if exc:
        try:
            raise RuntimeError("socket gone: ws://x/ws?token=v1.abc.123.secretmac")
        except RuntimeError:
            exc_info = sys.exc_info()
    extra = {} if call_id is None else {"call_id": call_id}
    return logging.getLogger("voice_agent.call").makeRecord(
        "voice_agent.call", logging.WARNING, __file__, 1, message, args, exc_info, extra=extra
    )


def test_a_calls_lines_carry_its_id_as_a_field_in_both_formats():
    line = logs.formatter("text").format(record("ended (%s)", "stop", call_id="CA-1"))
    assert line.endswith("WARNING voice_agent.call: [call CA-1] ended (stop)")
    entry = json.loads(logs.formatter("json").format(record("ended (%s)", "stop", call_id="CA-1")))
    assert entry["call_id"] == "CA-1"
    assert entry["message"] == "ended (stop)"
    assert entry["level"] == "WARNING" and entry["logger"] == "voice_agent.call"
    assert entry["time"].endswith("+00:00")
    assert "call_id" not in json.loads(logs.formatter("json").format(record("serving")))


def test_the_call_logger_passes_the_id_as_a_field_not_as_text(caplog):
    caplog.set_level(logging.INFO, "voice_agent.call")
    call_logger("CA-2").info("stream reconnected as %s", "s2")
    (got,) = caplog.records
    assert got.getMessage() == "stream reconnected as s2"
    assert got.call_id == "CA-2"


def test_a_token_in_a_url_never_reaches_a_line_nor_its_traceback():
    for fmt in logs.FORMATS:
        line = logs.formatter(fmt).format(
            record("to %s", "wss://a.example/ws?token=v1.Y2Fs.99.mac&x=1", exc=True)
        )
        assert "v1.Y2Fs" not in line and "secretmac" not in line
        assert "token=<redacted>" in line


def test_a_json_line_is_one_line_whatever_it_says():
    entry = logs.formatter("json").format(record("a\nb\u2028c", call_id="x\ny", exc=True))
    assert "\n" not in entry and "\u2028" not in entry
    assert json.loads(entry)["exception"].startswith("Traceback")


async def test_a_requested_path_cannot_forge_a_text_line(tmp_path, caplog):
    caplog.set_level(logging.INFO, "voice_agent.access")
    forged = "/x%0A2026-11-28 INFO voice_agent.call: [call victim] ended"
    settings = ServerSettings(call_log_dir=tmp_path)
    async with (
        running_server(settings, AgentConfig(), quiet()) as app,
        httpx.AsyncClient() as client,
    ):
        assert (await client.get(app.base_url + forged)).status_code == 404
    (access,) = [r for r in caplog.records if r.name == "voice_agent.access"]
    line = logs.formatter("text").format(access)
    assert "\n" not in line and '"GET /x\\x0a2026-11-28 INFO' in line


def test_an_unknown_format_is_refused_naming_the_setting():
    with pytest.raises(ValueError, match="LOG_FORMAT='xml'"):
        logs.formatter("xml")


# -- voice-agent serve, as a process ----------------------------------------------------------


async def read_line(stream: trio.abc.ReceiveStream, buffer: bytearray) -> bytes:
    while b"\n" not in buffer:
        chunk = await stream.receive_some()
        if not chunk:
            raise EOFError(buffer.decode(errors="replace"))
        buffer.extend(chunk)
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return line


async def test_serve_writes_json_lines_each_once_hypercorns_included_and_serves_metrics(tmp_path):
    env = os.environ | {
        "LOG_FORMAT": "json",
        "CALL_LOG_DIR": str(tmp_path / "calls"),
        "STREAM_SECRET": "s" * 32,
        "PYTHONPATH": str(ROOT),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    command = [sys.executable, "-m", "adapters.app.cli", "serve", "--port", "0", "--workers", "1"]
    # cwd: a folder without a .env, so only this environment counts.
    process = await trio.lowlevel.open_process(command, env=env, cwd=tmp_path, stderr=-1)
    assert process.stderr is not None
    buffer = bytearray()
    lines: list[dict] = []
    try:
        with trio.fail_after(60):
            while not lines or not lines[-1]["message"].startswith("serving on "):
                lines.append(json.loads(await read_line(process.stderr, buffer)))
            base = lines[-1]["message"].removeprefix("serving on ").split(";")[0]
            async with httpx.AsyncClient(base_url=base) as client:
                health = await client.get("/health")
                scraped = await client.get("/metrics")
                missing = await client.post("/answer", data={})
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            while True:
                try:
                    lines.append(json.loads(await read_line(process.stderr, buffer)))
                except EOFError as rest:
                    assert not str(rest).strip()
                    break
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await process.stderr.aclose()
    assert health.status_code == 200 and scraped.status_code == 200 and missing.status_code == 400
    families = {f.name for f in text_string_to_metric_families(scraped.text)}
    assert {"voice_agent_calls_live", "voice_agent_event_loop_lag_seconds"} <= families
    messages = [line["message"] for line in lines]
    assert len([m for m in messages if m.startswith("Running on")]) == 1
    access = [m for m in messages if '"POST /answer' in m]
    assert len(access) == 1 and '" 400 ' in access[0]
    assert not [m for m in messages if "/health" in m or "/metrics" in m]  # probes, scrapes
    assert any(m.startswith("shutting down") for m in messages)  # SIGTERM: the drain
