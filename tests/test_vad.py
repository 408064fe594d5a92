"""The local voice detectors behind barge-in: webrtcvad (default) and Silero (selectable)."""

import pytest

from adapters.media.vad import LocalVad, make_classifier
from adapters.offline.espeak import Espeak
from engine.events import CallerSpeechStarted, CallerSpeechStopped

SILENCE = b"\xff" * 8000  # 1 s


@pytest.fixture(scope="module")
def speech() -> bytes:
    return Espeak().synthesize_ulaw8k("I would like to book a table for four people.")


@pytest.mark.parametrize("kind", ["webrtc", "silero"])
def test_each_detector_hears_speech_and_not_silence(kind, speech):
    classifier = make_classifier(kind)
    audio = SILENCE + speech + SILENCE
    verdicts = [classifier.is_speech(audio[i : i + 160]) for i in range(0, len(audio) - 159, 160)]
    quiet_before = verdicts[:40]
    during = verdicts[55 : 55 + len(speech) // 160 - 20]
    assert not any(quiet_before)
    assert sum(during) > 0.7 * len(during)


def test_an_unknown_detector_is_refused_at_start_up():
    with pytest.raises(ValueError, match="webrtc or silero"):
        LocalVad(kind="loud")


@pytest.mark.parametrize("kind", ["webrtc", "silero"])
def test_local_vad_reports_onset_and_offset_with_first_frame_times(kind, speech):
    detector = LocalVad(kind=kind).detector()
    audio = SILENCE + speech + SILENCE
    events = []
    for n, i in enumerate(range(0, len(audio) - 159, 160)):  # the phone's 20 ms frames
        events += detector.feed(audio[i : i + 160], now=n * 0.02)
    started = [e for e in events if isinstance(e, CallerSpeechStarted)]
    stopped = [e for e in events if isinstance(e, CallerSpeechStopped)]
    assert started and stopped and events[0] == started[0]
    assert 0.9 <= started[0].at <= 1.3  # the speech begins after 1 s of silence
    assert started[0].source == "vad"
