"""Audio conversion: exact G.711, chunk-invariant resampling, framing, Vobiz byte orders."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.signal import lfilter, upfirdn

from adapters.media.audio import (
    L16,
    MULAW,
    Downsampler,
    Framer,
    InboundConverter,
    OutboundConverter,
    PhoneEncoder,
    Upsampler,
    resample,
    ulaw_decode,
    ulaw_encode,
)

ALL_INT16 = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = bytes(range(256))


# --- an independent scalar reference: Sun g711.c, 16-bit route ---------------------------------

SEG_END = (0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF, 0x3FFF, 0x7FFF)


def sun_linear2ulaw(pcm_val: int) -> int:
    if pcm_val < 0:
        pcm_val = 0x84 - pcm_val
        mask = 0x7F
    else:
        pcm_val += 0x84
        mask = 0xFF
    seg = next((i for i, end in enumerate(SEG_END) if pcm_val <= end), 8)
    if seg >= 8:
        return 0x7F ^ mask
    return ((seg << 4) | ((pcm_val >> (seg + 3)) & 0xF)) ^ mask


def sun_ulaw2linear(u_val: int) -> int:
    u_val = ~u_val & 0xFF
    t = ((u_val & 0x0F) << 3) + 0x84
    t <<= (u_val & 0x70) >> 4
    return 0x84 - t if u_val & 0x80 else t - 0x84


def audioop_module():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop
    return audioop


# --- mu-law ------------------------------------------------------------------------------------


def test_decode_matches_reference_for_every_code():
    expected = [sun_ulaw2linear(code) for code in range(256)]
    assert ulaw_decode(ALL_CODES).tolist() == expected
    assert ulaw_decode(ALL_CODES).dtype == np.int16
    assert ulaw_decode(b"\xff").tolist() == [0]
    assert ulaw_decode(b"\x80\x00").tolist() == [32124, -32124]


def test_encode_matches_reference_on_all_65536_inputs():
    expected = bytes(sun_linear2ulaw(int(x)) for x in ALL_INT16)
    assert ulaw_encode(ALL_INT16) == expected


def test_every_code_round_trips_except_negative_zero():
    again = ulaw_encode(ulaw_decode(ALL_CODES))
    broken = [code for code in range(256) if again[code] != code]
    assert broken == [0x7F]
    assert again[0x7F] == 0xFF  # -0 decodes to 0, which encodes as +0


def test_encode_clips_at_the_extremes():
    loud = np.array([32767, 32636, 32635, -32768, -32636], dtype=np.int16)
    assert ulaw_encode(loud) == bytes([0x80, 0x80, 0x80, 0x00, 0x00])


def test_encode_refuses_non_int16():
    with pytest.raises(TypeError):
        ulaw_encode(np.array([1.0, 2.0]))


def test_audioop_decoder_agrees_exactly():
    audioop = audioop_module()
    theirs = np.frombuffer(audioop.ulaw2lin(ALL_CODES, 2), dtype=np.int16)
    assert theirs.tolist() == ulaw_decode(ALL_CODES).tolist()


def test_audioop_encoder_differs_only_on_documented_negative_inputs():
    audioop = audioop_module()
    theirs = np.frombuffer(audioop.lin2ulaw(ALL_INT16.tobytes(), 2), dtype=np.uint8)
    ours = np.frombuffer(ulaw_encode(ALL_INT16), dtype=np.uint8)
    differ = ours != theirs
    assert int(differ.sum()) == 381
    assert (ALL_INT16[differ] < 0).all()
    # One step each, always towards the larger magnitude (audioop rounds |x|/4 up) ...
    assert (ours[differ].astype(int) - theirs[differ].astype(int) == 1).all()
    # ... because the 14-bit route is exactly our route applied to x with its low 2 bits cleared.
    assert ulaw_encode(ALL_INT16 & np.int16(~3)) == theirs.tobytes()


# --- resampling --------------------------------------------------------------------------------


def tone(freq: float, rate: int, seconds: float = 1.0, amplitude: float = 10000) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.round(amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def level_db(samples: np.ndarray, amplitude: float = 10000, trim: int = 200) -> float:
    """RMS of the steady part relative to a full-amplitude sine."""
    core = samples[trim:-trim].astype(np.float64)
    rms = np.sqrt(np.mean(core**2))
    return float(20 * np.log10(max(rms, 1e-9) / (amplitude / np.sqrt(2))))


def down_whole(pcm: np.ndarray, factor: int = 3) -> np.ndarray:
    d = Downsampler(factor)
    return np.concatenate((d.process(pcm.astype("<i2").tobytes()), d.flush()))


def up_whole(pcm: np.ndarray, factor: int) -> np.ndarray:
    u = Upsampler(factor)
    return np.concatenate((u.process(pcm), u.flush()))


def random_cuts(total: int, seed: int, largest: int = 999) -> list[int]:
    rng = np.random.default_rng(seed)
    cuts, at = [], 0
    while at < total:
        at += int(rng.integers(1, largest))
        cuts.append(min(at, total))
    return cuts


def noise(n: int, seed: int = 7, scale: float = 12000) -> np.ndarray:
    values = np.random.default_rng(seed).standard_normal(n) * scale
    return np.clip(np.round(values), -32768, 32767).astype(np.int16)


@pytest.mark.parametrize("factor", [2, 3])
def test_downsampler_passes_1khz_within_1db(factor):
    out = down_whole(tone(1000, 8000 * factor), factor)
    assert abs(level_db(out)) < 1.0


@pytest.mark.parametrize("factor", [2, 3])
def test_downsampler_removes_5khz_by_40db(factor):
    out = down_whole(tone(5000, 8000 * factor), factor)
    assert level_db(out) <= -40.0


def test_plain_decimation_would_alias_5khz():
    # The filter is what makes the previous test pass: every 3rd sample alone keeps the tone.
    assert abs(level_db(tone(5000, 24000)[::3])) < 1.0


@pytest.mark.parametrize("factor", [2, 3])
def test_downsampler_is_time_aligned_and_length_exact(factor):
    impulse = np.zeros(30 * factor, dtype=np.int16)
    impulse[15 * factor] = 30000
    out = down_whole(impulse, factor)
    assert len(out) == 30
    assert int(np.argmax(out)) == 15


def test_downsampler_latency_is_47_input_samples():
    d = Downsampler(3)
    assert d.delay == 47
    # Output k needs input up to 3k + 47: with 480 samples (one 20 ms chunk) in,
    # outputs 0..144 are ready (3*144 + 47 = 479), 15 are held back (~2 ms).
    assert len(d.process(bytes(960))) == 145
    assert len(d.flush()) == 15


@pytest.mark.parametrize("resampler", [Downsampler(2), Downsampler(3), Upsampler(2), Upsampler(3)])
def test_taps_are_dyadic_so_sums_are_exact(resampler):
    scaled = resampler.taps * 2.0**32
    assert (scaled == np.round(scaled)).all()
    assert np.abs(scaled).sum() * 32768 < 2.0**53


@pytest.mark.parametrize("factor", [2, 3])
def test_downsampler_agrees_with_lfilter(factor):
    pcm = noise(5000, factor)
    d = Downsampler(factor)
    padded = np.concatenate((pcm.astype(np.float64), np.zeros(d.delay)))
    filtered = lfilter(d.taps, 1.0, padded)[d.delay :: factor]
    expected = np.clip(np.rint(filtered), -32768, 32767).astype(np.int16)
    assert down_whole(pcm, factor).tobytes() == expected.tobytes()


@pytest.mark.parametrize("factor", [2, 3])
def test_upsampler_agrees_with_upfirdn(factor):
    pcm = noise(3000, factor)
    u = Upsampler(factor)
    delay = (len(u.taps) - 1) // 2
    filtered = upfirdn(u.taps, pcm.astype(np.float64), up=factor)[delay : delay + 3000 * factor]
    expected = np.clip(np.rint(filtered), -32768, 32767).astype(np.int16)
    assert up_whole(pcm, factor).tobytes() == expected.tobytes()


@pytest.mark.parametrize("seed", range(5))
def test_downsampler_chunked_equals_whole_with_odd_chunks(seed):
    pcm = noise(24000 + seed, seed)
    data = pcm.astype("<i2").tobytes()
    whole = down_whole(pcm)
    d = Downsampler(3)
    parts, start = [], 0
    for end in random_cuts(len(data), seed):
        parts.append(d.process(data[start:end]))
        start = end
    parts.append(d.flush())
    chunked = np.concatenate(parts)
    assert chunked.tobytes() == whole.tobytes()
    assert len(whole) == -(-len(pcm) // 3)


def test_downsampler_flush_resets_for_the_next_stream():
    d = Downsampler(3)
    first = np.concatenate((d.process(noise(999).tobytes()), d.flush()))
    again = np.concatenate((d.process(noise(999).tobytes()), d.flush()))
    assert first.tobytes() == again.tobytes()


def test_downsampler_clips_instead_of_wrapping():
    square = np.tile(np.array([32767] * 12 + [-32768] * 12, dtype=np.int16), 100)
    out = down_whole(square)
    assert out.max() == 32767 and out.min() == -32768  # Gibbs overshoot is clipped


@pytest.mark.parametrize("factor", [2, 3])
def test_upsampler_passes_1khz_and_removes_its_image(factor):
    out = up_whole(tone(1000, 8000), factor)
    assert len(out) == 8000 * factor
    assert abs(level_db(out)) < 1.0
    spectrum = np.abs(np.fft.rfft(out.astype(np.float64)))
    freqs = np.fft.rfftfreq(len(out), 1 / (8000 * factor))
    image = spectrum[np.argmin(np.abs(freqs - 7000))]
    wanted = spectrum[np.argmin(np.abs(freqs - 1000))]
    assert 20 * np.log10(image / wanted) <= -40.0


@pytest.mark.parametrize("factor", [2, 3])
def test_upsampler_is_time_aligned(factor):
    impulse = np.zeros(40, dtype=np.int16)
    impulse[20] = 30000
    out = up_whole(impulse, factor)
    assert len(out) == 40 * factor
    assert int(np.argmax(out)) == 20 * factor


@pytest.mark.parametrize("factor", [2, 3])
def test_upsampler_chunked_equals_whole(factor):
    pcm = noise(4001, factor)
    whole = up_whole(pcm, factor)
    u = Upsampler(factor)
    parts, start = [], 0
    for end in random_cuts(len(pcm), factor, largest=200):
        parts.append(u.process(pcm[start:end]))
        start = end
    parts.append(u.flush())
    assert np.concatenate(parts).tobytes() == whole.tobytes()


def test_resample_22050_to_8000_keeps_length_and_tone():
    out = resample(tone(1000, 22050), 22050, 8000)
    assert out.dtype == np.int16
    assert len(out) == 8000
    assert abs(level_db(out)) < 1.0


def test_resample_8000_to_16000_and_identity():
    pcm = tone(440, 8000)
    assert len(resample(pcm, 8000, 16000)) == 16000
    assert resample(pcm, 8000, 8000).tobytes() == pcm.tobytes()


# --- phone encoder and framer ------------------------------------------------------------------


def test_phone_encoder_chunked_equals_whole():
    data = noise(12000, 3).astype("<i2").tobytes()
    whole = PhoneEncoder()
    expected = whole.process(data) + whole.flush()
    assert expected == ulaw_encode(down_whole(noise(12000, 3)))
    enc = PhoneEncoder()
    out, start = b"", 0
    for end in random_cuts(len(data), 11, largest=4097):
        out += enc.process(data[start:end])
        start = end
    assert out + enc.flush() == expected
    assert len(expected) == 4000


@settings(max_examples=200, deadline=None)
@given(
    chunks=st.lists(st.binary(max_size=500), max_size=20),
    frame_bytes=st.sampled_from([1, 160, 320]),
    max_frames=st.sampled_from([1, 2, 5]),
    pad=st.sampled_from([b"\xff", b"\x00"]),
)
def test_framer_neither_drops_nor_duplicates(chunks, frame_bytes, max_frames, pad):
    framer = Framer(frame_bytes, max_frames)
    frames = [frame for chunk in chunks for frame in framer.push(chunk)]
    last = framer.flush(pad)
    if last is not None:
        frames.append(last)
    assert all(
        0 < len(frame) <= frame_bytes * max_frames and len(frame) % frame_bytes == 0
        for frame in frames
    )
    data = b"".join(chunks)
    fill = -len(data) % frame_bytes
    assert b"".join(frames) == data + pad * fill
    assert framer.flush(pad) is None


def test_framer_holds_partial_frames():
    framer = Framer()
    assert framer.push(b"\x01" * 100) == []
    assert framer.push(b"\x02" * 100) == [b"\x01" * 100 + b"\x02" * 60]
    assert framer.flush() == b"\x02" * 40 + b"\xff" * 120


# --- Vobiz formats -----------------------------------------------------------------------------


def test_inbound_mulaw_is_identity():
    conv = InboundConverter(MULAW, 8000)
    assert conv.to_ulaw8k(ALL_CODES) == ALL_CODES
    assert conv.flush() == b""


def test_inbound_l16_is_read_big_endian():
    # 0x1234 = 4660 big-endian; read little-endian it would be 0x3412 = 13330.
    conv = InboundConverter(L16, 8000)
    out = conv.to_ulaw8k(b"\x12\x34" * 3)
    assert out == ulaw_encode(np.array([4660] * 3, dtype=np.int16))
    assert out != ulaw_encode(np.array([13330] * 3, dtype=np.int16))


def test_inbound_l16_carries_a_stray_byte():
    conv = InboundConverter(L16, 8000)
    assert conv.to_ulaw8k(b"\x12") == b""
    assert conv.to_ulaw8k(b"\x34\xed") == ulaw_encode(np.array([4660], dtype=np.int16))
    assert conv.to_ulaw8k(b"\xcc") == ulaw_encode(np.array([-4660], dtype=np.int16))


@pytest.mark.parametrize("rate", [16000, 24000])
def test_inbound_l16_downsamples_big_endian(rate):
    seconds = 0.1
    payload = b"\x12\x34" * int(rate * seconds)
    conv = InboundConverter(L16, rate)
    out = b"".join(conv.to_ulaw8k(payload[i : i + 640]) for i in range(0, len(payload), 640))
    out += conv.flush()
    assert len(out) == int(8000 * seconds)
    steady = out[40:-40]  # away from the start/end transients of the filter
    assert steady == ulaw_encode(np.array([4660], dtype=np.int16)) * len(steady)


def test_formats_vobiz_does_not_send_are_refused():
    with pytest.raises(ValueError):
        InboundConverter(MULAW, 16000)
    with pytest.raises(ValueError):
        OutboundConverter(L16, 44100)


def test_outbound_mulaw_is_identity():
    assert OutboundConverter(MULAW, 8000).from_ulaw8k(ALL_CODES) == ALL_CODES


def test_outbound_l16_is_written_little_endian():
    # Code 0x80 decodes to 32124 = 0x7D7C: little-endian bytes 7C 7D.
    conv = OutboundConverter(L16, 8000)
    assert conv.from_ulaw8k(b"\x80\x00") == b"\x7c\x7d\x84\x82"
    assert conv.from_ulaw8k(ALL_CODES) == ulaw_decode(ALL_CODES).astype("<i2").tobytes()


@pytest.mark.parametrize("rate", [16000, 24000])
def test_outbound_l16_upsamples_little_endian(rate):
    code = ulaw_encode(np.array([4660], dtype=np.int16))
    level = int(ulaw_decode(code)[0])
    conv = OutboundConverter(L16, rate)
    data = b"".join(conv.from_ulaw8k(code * 160) for _ in range(5)) + conv.flush()
    samples = np.frombuffer(data, dtype="<i2")
    assert len(samples) == 800 * rate // 8000
    steady = samples[100:-100]
    assert (steady == level).all()
    assert data[400:402] == level.to_bytes(2, "little", signed=True)


def test_outbound_reset_drops_the_old_reply():
    conv = OutboundConverter(L16, 16000)
    conv.from_ulaw8k(b"\x80" * 160)
    conv.reset()
    assert not any(conv.flush())  # nothing of the loud reply remains
    conv.from_ulaw8k(b"\x80" * 160)
    conv.reset()
    fresh = OutboundConverter(L16, 16000)
    assert conv.from_ulaw8k(b"\xff" * 160) == fresh.from_ulaw8k(b"\xff" * 160)
