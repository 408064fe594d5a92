"""The console and the inspector in headless Chromium, against the offline server.

Chromium's fake media devices feed a recorded phrase as the microphone. The
fake device restarts its file each time the microphone is opened, and the
page lets go of the microphone while muted, so unmuting says the phrase: once
to ask, once more to barge in. Every wait is on a condition the page or the
server reports, with a generous timeout.

``SCREENSHOT_DIR=docs uv run pytest tests/test_console_browser.py`` refreshes
the README's screenshots; otherwise they are kept in the test's own folder.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from browser import WAIT_MS, PageErrors, launch, needs_chromium, screenshot_dir

from adapters.app.cli import main as voice_agent
from adapters.console.inspect import view_for
from adapters.media.audio import resample, ulaw_decode, ulaw_encode
from engine.calllog import split_log
from engine.replay import replay

pytestmark = needs_chromium
sync_api = pytest.importorskip("playwright.sync_api")

PHRASE = "What are your opening hours?"
GOLDEN = sorted(Path("fixtures/calls").glob("*.jsonl"))


def _phrase_wav(path: Path) -> Path:
    """The caller's phrase (the simulated caller's espeak voice) as a 48 kHz WAV."""
    from adapters.offline.espeak import Espeak
    from adapters.simulator.script import CALLER_VOICE

    pcm, rate = Espeak(voice=CALLER_VOICE).synthesize(PHRASE)
    quiet = np.zeros(48000 // 5, np.int16)
    samples = np.concatenate([quiet, resample(pcm, rate, 48000), quiet])
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(48000)
        wav.writeframes(samples.astype("<i2").tobytes())
    return path


class Console:
    """``voice-agent console --port 0 --offline --open`` in its own process."""

    def __init__(self, folder: Path) -> None:
        self.logs = folder / "calls"
        self.opened = folder / "opened.txt"
        recorder = folder / "browser.py"
        recorder.write_text(
            "import pathlib, sys\npathlib.Path(sys.argv[1]).write_text(sys.argv[2])\n"
        )
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("VOBIZ_", "OPENAI_", "DEEPGRAM_", "CONSOLE_"))
            and k not in ("PUBLIC_URL", "RECORD_AUDIO")
        }
        # `--open` goes through Python's webbrowser, which runs $BROWSER: here, a recorder.
        env |= {
            "CALL_LOG_DIR": str(self.logs),
            "BROWSER": f"{sys.executable} {recorder} {self.opened} %s",
        }
        exe = Path(sys.executable).with_name("voice-agent")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "adapters.app.cli"]
        self.process = subprocess.Popen(
            [*cmd, "console", "--port", "0", "--offline", "--open"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output: list[str] = []
        lines: queue.Queue[str] = queue.Queue()

        def read() -> None:
            for line in self.process.stdout:
                self.output.append(line)
                lines.put(line)
            lines.put("")

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()
        self.url = ""
        deadline = time.monotonic() + 60
        while not self.url:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if not line:
                raise AssertionError("the console exited:\n" + "".join(self.output))
            if line.startswith("console: "):
                self.url = line.split(" ", 1)[1].strip()

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
        finally:
            self.reader.join(5)
            self.process.stdout.close()


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    server = Console(tmp_path_factory.mktemp("console"))
    yield server
    assert server.stop() == 0, "".join(server.output)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    wav = _phrase_wav(tmp_path_factory.mktemp("mic") / "phrase.wav")
    with sync_api.sync_playwright() as playwright:
        chromium = launch(
            playwright,
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}%noloop",
        )
        yield chromium
        chromium.close()


def _file_text(path: Path, timeout: float = WAIT_MS / 1000) -> str:
    """The file's text once something is in it (the browser is opened in the background)."""
    deadline = time.monotonic() + timeout
    while not (path.is_file() and path.read_text()):
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing written to {path}")
        time.sleep(0.05)
    return path.read_text()


def _stat(page, name: str):
    return page.evaluate(f"window.phoneStats.{name}")


def _wait(page, condition: str) -> None:
    page.wait_for_function(condition, timeout=WAIT_MS)


def test_a_call_from_the_browser_is_heard_answered_interrupted_and_replays(
    console, browser, tmp_path
):
    shots = screenshot_dir(tmp_path)
    page = browser.new_page(viewport={"width": 1400, "height": 960})
    errors = PageErrors(page)
    page.goto(console.url)
    page.wait_for_selector("#diagram .state[data-state='listening']")
    assert _file_text(console.opened) == console.url  # --open opened the printed address

    page.click("#mute")  # the microphone stays closed until the greeting has been heard
    page.click("#call")
    _wait(page, "window.phoneStats.state === 'listening'")
    # The greeting came as audio, played through the worklet, and the page said so.
    assert _stat(page, "agentFrames") > 50 and _stat(page, "playedSent") >= 1
    assert _stat(page, "played") > 1.0
    assert page.locator("#diagram .state.active").get_attribute("data-state") == "listening"

    page.click("#mute")  # unmute: the phrase is spoken
    page.wait_for_selector("#transcript .caller.final", timeout=WAIT_MS)
    assert "opening hours" in page.inner_text("#transcript .caller.final").lower()
    _wait(page, "window.phoneStats.state === 'speaking'")
    page.wait_for_selector("#transcript .agent >> text=We are open Tuesday", timeout=WAIT_MS)
    played = _stat(page, "played")
    _wait(page, f"window.phoneStats.played > {played + 1.0}")  # the reply is being heard

    page.click("#mute")
    page.click("#mute")  # the phrase again, over the agent: a barge-in
    _wait(page, "window.phoneStats.clearedSent >= 1")
    assert _stat(page, "clears") >= 1
    assert _stat(page, "droppedOnClear") > 0  # the queued reply was thrown away at once
    page.wait_for_selector("#live-barge-ins tbody tr", timeout=WAIT_MS)
    page.wait_for_selector("#transcript .clear >> text=clearAudio", timeout=WAIT_MS)
    page.wait_for_selector("#live-latency tbody tr[data-key='turn-2']", timeout=WAIT_MS)
    # the interrupting words become the next turn
    _wait(page, "document.querySelectorAll('#transcript .caller.final').length >= 2")
    _wait(page, "document.querySelectorAll('#transitions li').length >= 5")
    page.screenshot(path=str(shots / "console.png"))

    page.click("#hangup")
    _wait(page, "window.phoneStats.ended !== null")
    page.wait_for_selector("#inspect-link", timeout=WAIT_MS)
    assert not errors.messages

    (log,) = console.logs.glob("*.jsonl")
    lines, _ = split_log(log.read_text())
    result = replay(lines)
    assert result.identical and result.finished, result.divergence
    records = [json.loads(line) for line in lines]
    events = [r for r in records if r["kind"] == "event"]
    commands = [r for r in records if r["kind"] == "command"]
    # the page's playedStream (not the fallback timer) marked the greeting heard
    assert any(r["event"] == "AudioPlayed" and r["name"] == "1.0" for r in events)
    assert any(r["event"] == "AudioCleared" for r in events)  # the page's clearedAudio
    assert any(r["command"] == "ClearAudio" for r in commands)
    finals = [r["text"] for r in events if r["event"] == "Transcript" and r["is_final"]]
    assert sum("opening hours" in text for text in finals) >= 2
    assert log.with_suffix(".wav").is_file()

    # The finished call in the inspector: its timeline, waveforms, the barge-in marked.
    page.click("#inspect-link")
    page.wait_for_selector("#inspector[data-rendered='true']", timeout=WAIT_MS)
    assert page.locator(".wave canvas").count() == 2
    assert page.locator(".mark.clear").count() >= 1
    assert page.locator(".lane.agent .sentence.cut").count() >= 1
    page.click(".wave.caller", position={"x": 300, "y": 30})  # play from that moment
    _wait(page, "document.getElementById('call-audio').currentTime > 0")
    page.screenshot(path=str(shots / "inspector.png"), full_page=True)
    page.goto(console.url + "calls.html")
    page.wait_for_selector(f"#calls tbody tr >> text={log.name}", timeout=WAIT_MS)
    assert not errors.messages
    page.close()


def test_the_pages_phone_audio_matches_the_servers(console, browser):
    """Mu-law like adapters/media/audio.py, and a resampler that keeps speech and stops aliases."""
    page = browser.new_page()
    errors = PageErrors(page)
    page.goto(console.url)
    got = page.evaluate(
        """async () => {
          const m = await import("./static/dsp.js");
          const samples = [];
          for (let s = -32768; s < 32768; s += 37) samples.push(s);
          const sine = (rate, hz, amp) => Float32Array.from({length: rate},
            (_, i) => amp * Math.sin(2 * Math.PI * hz * i / rate));
          const rms = (x) => Math.sqrt(x.slice(400, -400).reduce((a, v) => a + v * v, 0)
            / (x.length - 800));
          const whole = new m.Resampler(44100, 8000).push(sine(44100, 1000, 0.5));
          const chunked = new m.Resampler(44100, 8000);
          const parts = [];
          const input = sine(44100, 1000, 0.5);
          for (let i = 0; i < input.length; i += 128) parts.push(...chunked.push(input.subarray(i, i + 128)));
          const alias = new m.Resampler(44100, 8000).push(sine(44100, 6000, 0.5));
          const up = new m.Resampler(8000, 48000).push(sine(8000, 1000, 0.5));
          return {
            samples, encoded: samples.map(m.ulawEncodeSample),
            decoded: Array.from(m.ulawDecode(Uint8Array.from({length: 256}, (_, i) => i)),
              (x) => Math.round(x * 32768)),
            speech: rms(whole), alias: rms(alias), up: rms(up), upLength: up.length,
            chunkedSame: parts.length === whole.length
              && parts.every((v, i) => Math.abs(v - whole[i]) < 1e-6),
          };
        }"""
    )
    assert got["encoded"] == list(ulaw_encode(np.array(got["samples"], np.int16)))
    assert got["decoded"] == ulaw_decode(bytes(range(256))).tolist()
    assert abs(got["speech"] - 0.5 / 2**0.5) < 0.01  # 1 kHz goes through untouched
    assert got["alias"] < 0.005  # 6 kHz would fold to 2 kHz: it is filtered out first
    assert abs(got["up"] - 0.5 / 2**0.5) < 0.01 and abs(got["upLength"] - 48000) < 100
    assert got["chunkedSame"]  # 128-sample render quanta give the same output as one block
    assert not errors.messages
    page.close()


def test_the_inspector_renders_every_golden_log(browser, tmp_path):
    shots = screenshot_dir(tmp_path)
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    for log in GOLDEN:
        errors = PageErrors(page)
        out = tmp_path / f"{log.stem}.html"
        assert voice_agent(["inspect", str(log), "--out", str(out)]) == 0
        view = view_for(log)
        page.goto(out.as_uri())
        page.wait_for_selector("#inspector[data-rendered='true']", timeout=WAIT_MS)
        assert page.locator(".band").count() == len(view["bands"]), log.stem
        states = page.locator(".band").evaluate_all("els => els.map(e => e.dataset.state)")
        assert states == [b["state"] for b in view["bands"]], log.stem
        assert page.locator(".lane.caller .utt").count() == len(view["caller"]), log.stem
        assert page.locator(".lane.agent .sentence").count() == len(view["agent"]), log.stem
        assert page.locator(".timeline .mark").count() == len(view["marks"]), log.stem
        assert page.locator("#latency tbody tr").count() == len(view["turns"]), log.stem
        if view["errors"]:
            assert page.locator("#errors li").count() == len(view["errors"]), log.stem
        assert not errors.messages, (log.stem, errors.messages)
        if log.stem == "false_interruption_resume":
            page.screenshot(path=str(shots / "inspector-golden.png"), full_page=True)
    page.close()
