"""Audio input: decode, downmix, resample and deliver fixed-size pieces, streaming.

Files are read block by block (soundfile), downmixed to mono by averaging the channels and
resampled with soxr's streaming resampler, so memory does not grow with a file's length.
Every problem with an input becomes an :class:`AudioError` whose one-line message names the file.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import AudioError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aif", ".aiff")
SILENCE_PEAK = 10 ** (-80 / 20)  # a clip whose peak stays under -80 dBFS is flagged as silent
READ_BLOCK_SECONDS = 10.0  # decode this much source audio at a time


@dataclass(frozen=True)
class AudioInfo:
    """What the container says about a file."""

    path: str
    sample_rate: int
    channels: int
    frames: int  # source frames (after start/end cropping)
    format: str

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


def _fail(path: str | os.PathLike, reason: str) -> AudioError:
    return AudioError(f"{path}: {reason}")


def _wav_truncation(path: Path) -> str | None:
    """For a RIFF/WAVE file, the reason it is truncated (its data chunk claims more bytes than
    the file holds), else None. libsndfile silently reads what is there."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE" or head[:4] == b"RF64":
                return None
            size = path.stat().st_size
            while True:
                chunk = f.read(8)
                if len(chunk) < 8:
                    return None
                cid, length = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if cid == b"data":
                    missing = f.tell() + length - size
                    return f"truncated: the WAV header promises {length} bytes of audio, the file holds {length - missing}" if missing > 0 else None
                f.seek(length + (length & 1), os.SEEK_CUR)
    except OSError:
        return None


OGG_TAIL_BYTES = 1 << 17  # an Ogg page is at most 65,307 bytes


def ogg_ending(path: str | os.PathLike) -> str | None:
    """For an Ogg file (Vorbis, Opus, FLAC in Ogg), why its end looks cut off, else None.

    libsndfile decodes a truncated Ogg file without complaint, up to its last whole page. A
    complete stream ends with a page that reaches the end of the file and carries the
    end-of-stream flag; this looks for that page among the last 128 KiB.
    """
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"OggS":
                return None
            size = f.seek(0, os.SEEK_END)
            start = max(0, size - OGG_TAIL_BYTES)
            f.seek(start)
            tail = f.read()
    except OSError:
        return None
    at = tail.rfind(b"OggS")
    while at >= 0:
        if at + 27 <= len(tail) and tail[at + 4] == 0:  # stream structure version 0
            n_segments = tail[at + 26]
            table = tail[at + 27 : at + 27 + n_segments]
            end = at + 27 + n_segments + sum(table)
            if len(table) == n_segments and end == len(tail):
                if tail[at + 5] & 0x04:
                    return None
                return "the Ogg stream ends without its end-of-stream page (truncated?)"
        at = tail.rfind(b"OggS", 0, at)
    return "the file ends inside an Ogg page (truncated?)"


def probe(path: str | os.PathLike, start: float | None = None, end: float | None = None) -> AudioInfo:
    """Check that ``path`` is a readable, non-empty audio file and describe it.

    ``start`` / ``end`` (seconds) select part of the file.
    """
    import soundfile as sf

    p = Path(path)
    if not p.exists():
        raise _fail(path, "no such file")
    if p.is_dir():
        raise _fail(path, "is a folder, not an audio file")
    if not os.access(p, os.R_OK):
        raise _fail(path, "permission denied")
    if p.stat().st_size == 0:
        raise _fail(path, "empty file (0 bytes)")
    try:
        info = sf.info(str(p))
    except PermissionError:
        raise _fail(path, "permission denied") from None
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        reason = str(e).split(":")[-1].strip().rstrip(".") or "unreadable"
        raise _fail(path, f"not a readable audio file ({reason})") from None
    if reason := _wav_truncation(p):
        raise _fail(path, reason)
    frames = info.frames
    if frames <= 0:
        ending = ogg_ending(p)
        raise _fail(path, "contains no audio samples (zero length)" + (f"; {ending}" if ending else ""))
    first = int(round((start or 0.0) * info.samplerate))
    last = frames if end is None else min(frames, int(round(end * info.samplerate)))
    if start is not None and (start < 0 or first >= frames):
        raise _fail(path, f"start {start} s is outside the file ({frames / info.samplerate:.2f} s)")
    if last <= first:
        raise _fail(path, f"end {end} s is not after start {start or 0.0} s")
    return AudioInfo(str(path), info.samplerate, info.channels, last - first, info.format)


class Resampler:
    """Streaming mono resampler (soxr HQ); a pass-through when the rates agree."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        import soxr

        self.stream = None if in_rate == out_rate else soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality="HQ")

    def __call__(self, x: np.ndarray, last: bool = False) -> np.ndarray:
        if self.stream is None:
            return x
        return self.stream.resample_chunk(x, last=last)


def to_mono(block: np.ndarray) -> np.ndarray:
    """``(N, C)`` or ``(N,)`` -> ``(N,)`` float32, averaging the channels."""
    block = np.asarray(block, dtype=np.float32)
    if block.ndim != 2:
        return block
    if block.shape[1] == 0:
        return np.zeros(0, np.float32)  # no channels: no samples
    # Summing the columns one by one is ~15x faster than ``block.mean(axis=1)``, whose reduction
    # over a short, strided axis cost more than decoding a WAV file.
    mono = block[:, 0].copy()
    for c in range(1, block.shape[1]):
        mono += block[:, c]
    if block.shape[1] > 1:
        mono /= np.float32(block.shape[1])
    return mono


def _check_finite(path: str, block: np.ndarray, offset: int, sample_rate: int) -> None:
    if not np.isfinite(block).all():
        at = offset + int(np.argmin(np.isfinite(block)))
        raise _fail(path, f"contains NaN or infinite samples (first at {at / sample_rate:.3f} s)")


class Pieces:
    """Cut a stream of mono blocks into pieces of ``size`` samples (the last one shorter)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.parts: list[np.ndarray] = []
        self.held = 0

    def push(self, block: np.ndarray) -> Iterator[np.ndarray]:
        if block.size:
            self.parts.append(block)
            self.held += block.size
        while self.held >= self.size:
            joined = np.concatenate(self.parts)
            yield joined[: self.size]
            rest = joined[self.size :]
            self.parts, self.held = ([rest] if rest.size else []), rest.size

    def flush(self) -> Iterator[np.ndarray]:
        if self.held:
            yield np.concatenate(self.parts)
        self.parts, self.held = [], 0


def stream_file(
    path: str | os.PathLike, sample_rate: int, piece: int, start: float | None = None, end: float | None = None
) -> Iterator[np.ndarray]:
    """Decode ``path`` to mono at ``sample_rate`` and yield pieces of ``piece`` samples (the last
    one shorter). Raises :class:`AudioError` naming the file for anything undecodable."""
    import soundfile as sf

    info = probe(path, start, end)
    resample = Resampler(info.sample_rate, sample_rate)
    pieces = Pieces(piece)
    first = int(round((start or 0.0) * info.sample_rate))
    block = max(1, int(READ_BLOCK_SECONDS * info.sample_rate))
    read = 0
    try:
        with sf.SoundFile(str(path)) as f:
            if first:
                f.seek(first)
            while read < info.frames:
                data = f.read(min(block, info.frames - read), dtype="float32", always_2d=True)
                if len(data) == 0:
                    break
                mono = to_mono(data)
                _check_finite(str(path), mono, read, info.sample_rate)
                read += len(data)
                yield from pieces.push(resample(mono))
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise _fail(path, f"decoding failed after {read / info.sample_rate:.2f} s ({str(e).strip().rstrip('.')}; truncated or corrupt?)") from None
    if read == 0:
        raise _fail(path, "contains no audio samples (zero length)")
    yield from pieces.push(resample(np.zeros(0, np.float32), last=True))
    yield from pieces.flush()


def load_audio(path: str | os.PathLike, sample_rate: int, start: float | None = None, end: float | None = None) -> np.ndarray:
    """The whole file (or its ``start``–``end`` part) as mono float32 at ``sample_rate``."""
    parts = list(stream_file(path, sample_rate, 1 << 22, start, end))
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def prepare_array(samples: np.ndarray, sample_rate: int, target_rate: int, name: str = "<array>") -> np.ndarray:
    """An in-memory signal ``(N,)`` or ``(N, C)`` as mono float32 at ``target_rate``."""
    x = to_mono(np.asarray(samples))
    if x.ndim != 1:
        raise _fail(name, f"expected samples shaped (N,) or (N, channels), got {np.asarray(samples).shape}")
    if x.size == 0:
        raise _fail(name, "contains no audio samples (zero length)")
    _check_finite(name, x, 0, sample_rate)
    return Resampler(sample_rate, target_rate)(x, last=True)


def is_silent(peak: float) -> bool:
    """Whether a clip whose absolute peak is ``peak`` counts as silent (below -80 dBFS)."""
    return peak < SILENCE_PEAK


def find_audio(inputs: list[str | os.PathLike]) -> tuple[list[str], list[tuple[str, str]]]:
    """Expand files and folders (recursively, audio extensions only) into a sorted file list.

    Returns ``(files, problems)``: a path that does not exist is a problem, not an exception,
    so the other inputs are still scored; a duplicate path is kept once and reported.
    """
    files: list[str] = []
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()

    def add(path: str) -> None:
        key = os.path.realpath(path)
        if key in seen:
            problems.append((path, "duplicate of an earlier input; scored once"))
            return
        seen.add(key)
        files.append(path)

    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in AUDIO_EXTENSIONS and f.is_file())
            if not found:
                problems.append((str(item), "folder holds no audio files (" + ", ".join(AUDIO_EXTENSIONS) + ")"))
            for f in found:
                add(f)
        elif p.exists() or p.is_symlink():
            add(str(item))
        else:
            problems.append((str(item), "no such file or folder"))
    return files, problems
