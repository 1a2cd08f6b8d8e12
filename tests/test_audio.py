"""Decoding, downmix, resampling and the one-line reasons for bad audio."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

from drasp_cli.audio import find_audio, load_audio, ogg_ending, probe, stream_file, to_mono
from drasp_cli.errors import AudioError


def write(path, seconds=1.0, sr=16_000, channels=1, subtype="PCM_16", freq=440.0):
    t = np.arange(int(seconds * sr)) / sr
    x = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    data = np.stack([x] * channels, axis=1) if channels > 1 else x
    sf.write(str(path), data, sr, subtype=subtype)
    return path


@pytest.mark.parametrize("ext", ["wav", "flac", "ogg", "mp3"])
def test_formats_decode_to_mono_at_the_target_rate(tmp_path, ext):
    path = write(tmp_path / f"a.{ext}", seconds=2.0, sr=44_100, channels=2, subtype=None)
    x = load_audio(path, 16_000)
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(len(x) - 32_000) <= 1200  # mp3/ogg encoders add a little padding
    assert 0.2 < np.abs(x).max() < 0.4


@pytest.mark.parametrize("sr", [8_000, 96_000])
def test_other_sample_rates_are_resampled_faithfully(tmp_path, sr):
    ref = load_audio(write(tmp_path / "ref.wav", sr=16_000, freq=300.0), 16_000)
    x = load_audio(write(tmp_path / "x.wav", sr=sr, freq=300.0), 16_000)
    assert len(x) == len(ref)
    assert np.abs(x[800:-800] - ref[800:-800]).max() < 2e-3  # same tone, edges aside


def test_six_channels_are_averaged(tmp_path):
    mono = load_audio(write(tmp_path / "m.wav"), 16_000)
    six = load_audio(write(tmp_path / "six.wav", channels=6), 16_000)
    np.testing.assert_allclose(six, mono, atol=1e-6)


@pytest.mark.parametrize("channels", [1, 2, 3, 6])
def test_downmix_is_the_mean_of_different_channels(channels):
    block = np.random.default_rng(channels).standard_normal((4_410, channels)).astype(np.float32)
    np.testing.assert_allclose(to_mono(block), block.mean(axis=1), atol=1e-6)
    assert to_mono(block).dtype == np.float32 and to_mono(block).shape == (4_410,)
    assert to_mono(np.zeros((10, 0), np.float32)).size == 0


def test_streaming_pieces_join_to_the_whole_signal(tmp_path):
    path = write(tmp_path / "long.wav", seconds=25.0, sr=44_100)
    pieces = list(stream_file(path, 16_000, 160_000))
    assert [len(p) for p in pieces] == [160_000, 160_000, 80_000]
    np.testing.assert_allclose(np.concatenate(pieces), load_audio(path, 16_000), atol=1e-6)


def test_start_and_end_select_part_of_a_file(tmp_path):
    path = write(tmp_path / "a.wav", seconds=5.0)
    assert len(load_audio(path, 16_000, start=1.0, end=3.5)) == 40_000
    with pytest.raises(AudioError, match="outside the file"):
        probe(path, start=9.0)


def bad_inputs(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "text.wav").write_text("these are not the samples you are looking for")
    sf.write(str(tmp_path / "zero.wav"), np.zeros((0, 1), np.float32), 16_000)
    data = write(tmp_path / "full.wav", seconds=2.0).read_bytes()
    (tmp_path / "truncated.wav").write_bytes(data[: len(data) // 2])
    flac = write(tmp_path / "full.flac", seconds=2.0, subtype=None).read_bytes()
    (tmp_path / "truncated.flac").write_bytes(flac[: len(flac) // 2])
    nan = np.full(16_000, 0.1, np.float32)
    nan[8000] = np.nan
    sf.write(str(tmp_path / "nan.wav"), nan, 16_000, subtype="FLOAT")
    inf = np.full(16_000, 0.1, np.float32)
    inf[100] = np.inf
    sf.write(str(tmp_path / "inf.wav"), inf, 16_000, subtype="FLOAT")
    (tmp_path / "folder.wav").mkdir()
    return {
        "missing.wav": "no such file",
        "empty.wav": r"empty file \(0 bytes\)",
        "text.wav": "not a readable audio file",
        "zero.wav": "no audio samples",
        "truncated.wav": "truncated: the WAV header promises",
        "truncated.flac": "decoding failed after .* truncated or corrupt",
        "nan.wav": r"NaN or infinite samples \(first at 0.500 s\)",
        "inf.wav": "NaN or infinite samples",
        "folder.wav": "is a folder",
    }


def test_each_bad_input_gets_a_one_line_reason_naming_it(tmp_path):
    for name, reason in bad_inputs(tmp_path).items():
        path = tmp_path / name
        with pytest.raises(AudioError, match=reason) as info:
            load_audio(path, 16_000)
        message = str(info.value)
        assert message.startswith(str(path)) and "\n" not in message


def test_unreadable_file_is_reported(tmp_path, monkeypatch):
    path = write(tmp_path / "locked.wav")
    real_access = os.access
    # Tests run as root in CI, where chmod cannot lock a file; pretend the permission check fails.
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(path) else real_access(p, mode))
    with pytest.raises(AudioError, match="permission denied"):
        probe(path)


def test_find_audio_recurses_dedupes_and_reports_missing(tmp_path):
    (tmp_path / "a" / "deep").mkdir(parents=True)
    write(tmp_path / "a" / "x.wav")
    write(tmp_path / "a" / "deep" / "y.flac", subtype=None)
    (tmp_path / "a" / "notes.txt").write_text("not audio")
    files, problems = find_audio([tmp_path / "a", tmp_path / "a" / "x.wav", tmp_path / "nope"])
    assert files == [str(tmp_path / "a" / "deep" / "y.flac"), str(tmp_path / "a" / "x.wav")]
    assert (str(tmp_path / "a" / "x.wav"), "duplicate of an earlier input; scored once") in problems
    assert (str(tmp_path / "nope"), "no such file or folder") in problems


def ogg_pages(data: bytes) -> list[int]:
    """Byte offsets where each Ogg page ends."""
    ends, at = [], 0
    while at < len(data):
        assert data[at : at + 4] == b"OggS"
        n = data[at + 26]
        at += 27 + n + sum(data[at + 27 : at + 27 + n])
        ends.append(at)
    return ends


def test_a_cut_ogg_file_is_recognised(tmp_path):
    whole = write(tmp_path / "whole.ogg", seconds=6.0, sr=44_100, subtype=None)
    data = whole.read_bytes()
    ends = ogg_pages(data)
    assert ends[-1] == len(data) and len(ends) > 3
    (tmp_path / "mid.ogg").write_bytes(data[: len(data) // 2])
    (tmp_path / "page.ogg").write_bytes(data[: ends[-2]])  # whole pages, but not the last one
    assert ogg_ending(whole) is None
    assert "inside an Ogg page" in ogg_ending(tmp_path / "mid.ogg")
    assert "end-of-stream" in ogg_ending(tmp_path / "page.ogg")
    assert ogg_ending(write(tmp_path / "a.flac", subtype=None)) is None  # not Ogg: no opinion
    assert len(load_audio(tmp_path / "page.ogg", 16_000)) < len(load_audio(whole, 16_000))  # it does decode


def test_an_ogg_file_cut_before_its_first_audio_page_says_why(tmp_path):
    whole = write(tmp_path / "tone.ogg", seconds=3.0, sr=44_100, subtype=None)  # a pure tone: few pages
    (tmp_path / "cut.ogg").write_bytes(whole.read_bytes()[: ogg_pages(whole.read_bytes())[1] + 100])
    with pytest.raises(AudioError, match=r"cut.ogg: contains no audio samples .*inside an Ogg page"):
        load_audio(tmp_path / "cut.ogg", 16_000)
