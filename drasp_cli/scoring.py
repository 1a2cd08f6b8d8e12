"""The batched scoring engine: clips in, per-clip scores and failures out.

Decoding and resampling run in worker threads ahead of the model and hand over fixed-size
windows through a bounded queue, so a long file is streamed window by window and memory does not
grow with its length. Windows of different clips share batches; each window is encoded on its
own (the backbone never mixes rows), and each clip is pooled on its own, so a clip's score does
not depend on the batch size, the order, or the other files of the run.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from .audio import is_silent, ogg_ending, prepare_array, stream_file
from .data import ClipInput
from .errors import AudioError, ConfigError, DraspError
from .runtime import HeapGuard

PRECISIONS = ("fp32", "bf16")


@dataclass
class ClipResult:
    """Scores of one clip (``None`` for an axis that could not be scored, with a flag saying why)."""

    path: str
    system: str | None
    scores: dict[str, float | None]
    duration: float  # seconds of audio scored
    key: str = ""  # the clip's key in the run (path, plus time range)
    prompt: str | None = None
    flags: list[str] = field(default_factory=list)
    windows: list[dict[str, Any]] | None = None  # with segments=True: per-window scores
    segments: list[dict[str, Any]] | None = None  # with segments=True: attention per segment

    def to_dict(self) -> dict[str, Any]:
        d = {"path": self.path, "system": self.system, "duration": round(self.duration, 4), "scores": self.scores}
        if self.key != self.path:
            d["key"] = self.key
        if self.prompt is not None:
            d["prompt"] = self.prompt
        if self.flags:
            d["flags"] = self.flags
        if self.windows is not None:
            d["windows"] = self.windows
        if self.segments is not None:
            d["segments"] = self.segments
        return d


@dataclass
class Failure:
    """A clip that could not be scored, with a one-line reason."""

    path: str
    reason: str
    system: str | None = None
    key: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = {"path": self.path, "system": self.system, "error": self.reason}
        if self.key and self.key != self.path:
            d["key"] = self.key
        return d


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but no CUDA device is available")
    try:
        return torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r}; use auto, cpu or cuda") from None


def default_workers(device: torch.device) -> int:
    """Decoding threads for ``device`` when none are asked for: 1 beside a CPU model (which
    uses every core itself), all cores but one (at most 16) beside a GPU."""
    if device.type == "cpu":
        return 1
    return max(1, min(16, (os.cpu_count() or 2) - 1))


def clip_windows(backbone, clip: ClipInput) -> Iterator[tuple[np.ndarray, int, bool, float, float]]:
    """Decode a clip and cut it into the backbone's windows, streaming.

    Yields ``(window, real_samples, is_last, peak_so_far, seconds_so_far)`` per window; the
    last window carries the clip's absolute peak and duration. A clip that fits one window goes
    through the backbone's own ``prepare`` (CLAP repeat-pads it); a longer one is cut into
    windows, the last zero-padded.
    """
    size = backbone.window_samples
    if clip.samples is not None:
        signal = prepare_array(clip.samples, clip.sample_rate or backbone.sample_rate, backbone.sample_rate, clip.path)
        pieces: Iterator[np.ndarray] = iter([signal[i : i + size] for i in range(0, len(signal), size)])
    else:
        pieces = stream_file(clip.path, backbone.sample_rate, size, clip.start, clip.end)
    peak, total = 0.0, 0
    current = next(pieces, None)
    if current is None or current.size == 0:
        raise AudioError(f"{clip.path}: contains no audio samples (zero length)")
    first = True
    while current is not None:
        following = next(pieces, None)
        peak = max(peak, float(np.abs(current).max(initial=0.0)))
        total += current.size
        if first and following is None:
            windows, lengths = backbone.prepare(current)
        else:
            # prepare() on exactly one window's samples only applies the backbone's per-sample
            # conditioning (e.g. CLAP's int16 round trip), so a zero-padded piece stays one window.
            padded = np.zeros(size, np.float32)
            padded[: current.size] = current
            windows, _ = backbone.prepare(padded)
            lengths = np.array([current.size])
        for j in range(len(windows)):
            last = following is None and j == len(windows) - 1
            yield windows[j], int(lengths[j]), last, peak, total / backbone.sample_rate
        first, current = False, following


@dataclass
class _Window:
    clip: int  # index of the clip in the run
    index: int  # window number inside the clip
    samples: np.ndarray  # (window_samples,)
    length: int  # real samples
    last: bool  # the clip's final window
    peak: float = 0.0  # the clip's absolute peak (on the last window)
    duration: float = 0.0  # the clip's duration in seconds (on the last window)
    ending: str | None = None  # why the file's end looks cut off (on the last window), from ogg_ending


@dataclass
class _Clip:
    input: ClipInput
    features: list[Any] = field(default_factory=list)  # concat: per-window frames
    masks: list[torch.Tensor] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    weighted: dict[str, float] = field(default_factory=dict)  # window-mean: sum of weight * score
    weight: float = 0.0
    window_scores: list[dict[str, float]] = field(default_factory=list)
    window_attention: list[tuple[dict[str, torch.Tensor], int]] = field(default_factory=list)


class Scorer:
    """Scores clips with a :class:`~drasp_cli.model.MosModel`.

    Parameters
    ----------
    model : MosModel
        The model; it is moved to ``device`` and put in eval mode.
    batch_size : int
        Windows per forward pass of the backbone.
    device : str
        ``auto``, ``cpu`` or ``cuda``.
    precision : str
        ``fp32`` (default) or ``bf16`` (CUDA only; autocast around the backbone and heads).
    workers : int or None
        Decoding threads; None picks them: one on the CPU, where the model needs the cores, and
        all cores but one (at most 16) when the model runs on a GPU. They share the CPU with
        torch's own threads: the ``drasp`` command calls :func:`drasp_cli.runtime.tune_process`
        before torch loads so that idle torch threads do not spin on the cores the decoders
        need; a Python program can do the same.
    segments : bool
        Also report per-window scores and per-segment attention.
    """

    def __init__(
        self,
        model,
        batch_size: int = 8,
        device: str = "auto",
        precision: str = "fp32",
        workers: int | None = 1,
        segments: bool = False,
    ) -> None:
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {precision!r}; use fp32 or bf16")
        self.device = resolve_device(device)
        if precision == "bf16" and self.device.type != "cuda":
            raise ConfigError("--precision bf16 needs a CUDA device; on the CPU drasp scores in fp32")
        if workers is None:
            workers = default_workers(self.device)
        if batch_size < 1 or workers < 1:
            raise ConfigError("batch size and workers must be at least 1")
        self.model = model.to(self.device).eval()
        self.backbone = model.backbone
        self.batch_size = batch_size
        self.precision = precision
        self.workers = workers
        self.segments = segments
        self._text_cache: dict[str, torch.Tensor] = {}

    # -- decoding (worker threads) -----------------------------------------------------------------
    def _windows_of(self, clip_id: int, clip: ClipInput) -> Iterator[_Window]:
        for index, (samples, length, last, peak, duration) in enumerate(clip_windows(self.backbone, clip)):
            ending = ogg_ending(clip.path) if last and clip.samples is None else None  # here, off the model's thread
            yield _Window(clip_id, index, samples, length, last, peak, duration, ending)

    def _produce(self, jobs: queue.Queue, out: queue.Queue, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                clip_id, clip = jobs.get_nowait()
            except queue.Empty:
                break
            try:
                for window in self._windows_of(clip_id, clip):
                    while not stop.is_set():
                        try:
                            out.put(window, timeout=0.1)
                            break
                        except queue.Full:
                            continue
            except DraspError as e:
                out.put((clip_id, str(e)))
            except Exception as e:  # an unexpected decoder failure must not stop the run
                out.put((clip_id, f"{clip.path}: could not be decoded ({type(e).__name__}: {e})"))
        out.put(None)

    # -- model side ------------------------------------------------------------------------------
    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def _text(self, prompt: str) -> torch.Tensor:
        if prompt not in self._text_cache:
            self._text_cache[prompt] = self.backbone.text_embedding([prompt]).to(self.device)[0]
        return self._text_cache[prompt]

    def _texts(self, prompts: list[str | None]) -> torch.Tensor | None:
        if not self.model.config.text_axes or all(p is None for p in prompts):
            return None
        rows = [self._text(p) if p is not None else None for p in prompts]
        dim = next(r for r in rows if r is not None).shape[-1]
        return torch.stack([r if r is not None else torch.zeros(dim, device=self.device) for r in rows])

    def _encode(self, batch: list[_Window]):
        windows = torch.from_numpy(np.stack([w.samples for w in batch])).to(self.device)  # (Bw, N)
        lengths = torch.tensor([w.length for w in batch], device=self.device)
        with self._autocast():
            return self.backbone.encode(windows, lengths)

    def _segments_of(self, weights: dict[str, torch.Tensor], frames: int, offset_frames: int, duration: float) -> list[dict[str, Any]]:
        """Segment records ``{"start", "end", "weight": {axis: w}}`` from per-axis attention
        ``(S,)`` over units of ``frames`` frames starting ``offset_frames`` into the clip."""
        rate = self.backbone.frame_rate
        rows = {axis: w.float().cpu().tolist() for axis, w in weights.items()}
        out = []
        for s in range(len(next(iter(rows.values())))):
            start = (offset_frames + s * frames) / rate
            if start >= duration:
                break
            end = min(duration, start + frames / rate)
            out.append({"start": round(start, 4), "end": round(end, 4), "weight": {a: r[s] for a, r in rows.items()}})
        return out

    def _finish(self, state: _Clip, last: _Window) -> ClipResult:
        model, clip = self.model, state.input
        axes = model.config.axes
        flags = []
        if is_silent(last.peak):
            flags.append("silent: peak below -80 dBFS; the score is not meaningful")
        if last.ending:
            flags.append(f"{last.ending}; scored the {last.duration:.2f} s that decode")
        text = self._texts([clip.prompt])
        if model.config.text_axes and text is None:
            flags.append(f"no prompt: {', '.join(model.config.text_axes)} not scored")
        windows = segments = None
        if self.backbone.long_audio == "concat":
            t = self.backbone.frames_per_window
            if isinstance(state.features[0], dict):
                feats = {k: torch.cat([f[k] for f in state.features])[None] for k in state.features[0]}  # (1, W*T, D)
            else:
                feats = torch.cat(state.features)[None]  # (1, W*T, D)
            mask = torch.cat(state.masks)[None]  # (1, W*T)
            state.features = state.masks = []  # the windows' frames now live in feats alone
            with self._autocast():
                raw, attention = model.score_frames(feats, mask, text)
            scores = {k: float(v[0]) for k, v in raw.items()}
            if self.segments:
                n = mask.shape[1] // t  # windows
                per_feats = {k: v[0].reshape(n, t, -1) for k, v in feats.items()} if isinstance(feats, dict) else feats[0].reshape(n, t, -1)
                text_w = text.expand(n, -1) if text is not None else None
                with self._autocast():
                    per, _ = model.score_frames(per_feats, mask[0].reshape(n, t), text_w)
                windows = self._window_records(state.lengths, [{k: float(v[i]) for k, v in per.items()} for i in range(n)])
                if attention:
                    frames = next(iter(attention.values())).frames
                    segments = self._segments_of({a: att.weights[0] for a, att in attention.items()}, frames, 0, last.duration)
        else:
            scores = {k: v / state.weight for k, v in state.weighted.items()} if state.weight > 0 else {}
            if self.segments:
                windows = self._window_records(state.lengths, state.window_scores)
                if state.window_attention:
                    t = self.backbone.frames_per_window
                    segments = [
                        dict(seg, window=i)
                        for i, (weights, frames) in enumerate(state.window_attention)
                        for seg in self._segments_of(weights, frames, i * t, last.duration)
                    ]
        full = {axis: (float(scores[axis]) if axis in scores else None) for axis in axes}
        return ClipResult(clip.path, clip.system, full, last.duration, clip.key, clip.prompt, flags, windows, segments)

    def _window_records(self, lengths: list[int], scores: list[dict[str, float]]) -> list[dict[str, Any]]:
        sr, size = self.backbone.sample_rate, self.backbone.window_samples
        return [
            {"start": round(i * size / sr, 4), "end": round((i * size + n) / sr, 4), "scores": s}
            for i, (n, s) in enumerate(zip(lengths, scores))
        ]

    def _run_batch(self, batch: list[_Window], states: dict[int, _Clip]) -> None:
        feats, mask = self._encode(batch)
        if self.backbone.long_audio == "concat":
            for i, w in enumerate(batch):
                st = states.get(w.clip)
                if st is None:
                    continue
                st.features.append({k: v[i] for k, v in feats.items()} if isinstance(feats, dict) else feats[i])
                st.masks.append(mask[i])
                st.lengths.append(w.length)
            return
        text = self._texts([states[w.clip].input.prompt if w.clip in states else None for w in batch])
        with self._autocast():
            per, attention = self.model.score_frames(feats, mask, text)
        size = self.backbone.window_samples
        for i, w in enumerate(batch):
            st = states.get(w.clip)
            if st is None:
                continue
            weight = w.length / size
            row = {k: float(v[i]) for k, v in per.items()}
            for k, v in row.items():
                st.weighted[k] = st.weighted.get(k, 0.0) + weight * v
            st.weight += weight
            st.lengths.append(w.length)
            if self.segments:
                st.window_scores.append(row)
                if attention:
                    frames = next(iter(attention.values())).frames
                    st.window_attention.append(({a: att.weights[i] for a, att in attention.items()}, frames))

    # -- the run ---------------------------------------------------------------------------------
    def score(
        self, clips: Iterable[ClipInput], progress: Callable[[int, int, float], None] | None = None
    ) -> Iterator[ClipResult | Failure]:
        """Score ``clips``; yields a :class:`ClipResult` or :class:`Failure` per clip as each
        finishes (not in input order). ``progress(done, total, windows_per_second)`` is called
        after every batch."""
        clips = list(clips)
        jobs: queue.Queue = queue.Queue()
        for item in enumerate(clips):
            jobs.put(item)
        out: queue.Queue = queue.Queue(maxsize=4 * self.batch_size)
        stop = threading.Event()
        threads = [threading.Thread(target=self._produce, args=(jobs, out, stop), daemon=True) for _ in range(min(self.workers, len(clips)))]
        for th in threads:
            th.start()
        states: dict[int, _Clip] = {}
        done, n_windows, started = 0, 0, time.perf_counter()
        heap = HeapGuard()
        alive = len(threads)
        pending: list[_Window] = []
        try:
            with torch.inference_mode():
                while alive or pending:
                    if alive:
                        item = out.get()
                        if item is None:  # a worker ran out of clips
                            alive -= 1
                        elif isinstance(item, tuple):  # (clip, reason): the clip failed
                            clip_id, reason = item
                            states.pop(clip_id, None)
                            done += 1
                            yield Failure(clips[clip_id].path, reason, clips[clip_id].system, clips[clip_id].key)
                            continue
                        else:
                            states.setdefault(item.clip, _Clip(clips[item.clip]))
                            pending.append(item)
                        if alive and len(pending) < self.batch_size and not out.empty():
                            continue  # fill the batch with what is decoded already
                        # ...but never leave the model idle waiting for the decoders: when nothing
                        # more is ready, run what there is. Scores do not depend on the batch.
                    if not pending:
                        continue
                    batch, pending = pending[: self.batch_size], pending[self.batch_size :]
                    self._run_batch(batch, states)
                    heap.check()  # else a long run's heap fragments and its peak creeps up
                    n_windows += len(batch)
                    for w in batch:
                        if w.last and w.clip in states:
                            done += 1
                            yield self._finish(states.pop(w.clip), w)
                    if progress is not None:
                        progress(done, len(clips), n_windows / max(time.perf_counter() - started, 1e-9))
        finally:
            stop.set()
            for th in threads:
                th.join(timeout=5)


def score_arrays(model, arrays: list[tuple[np.ndarray, int]], names: list[str] | None = None, **kwargs) -> list[ClipResult | Failure]:
    """Score signals already in memory: ``[(samples, sample_rate), ...]``, results in input order.

    >>> from drasp_cli.model import MosModel, ModelConfig
    >>> r = score_arrays(MosModel(ModelConfig()), [(np.full(8000, 0.1, np.float32), 8000)], device="cpu")
    >>> sorted(r[0].scores), r[0].duration
    (['MOS'], 1.0)
    """
    names = names or [f"<array {i}>" for i in range(len(arrays))]
    clips = [ClipInput(n, samples=a, sample_rate=sr) for n, (a, sr) in zip(names, arrays)]
    order = {c.key: i for i, c in enumerate(clips)}
    results = list(Scorer(model, **kwargs).score(clips))
    return sorted(results, key=lambda r: order[r.key])


@dataclass
class ScoreRequest:
    """What to score and how to name it: files/folders or a manifest, systems, prompts, shard."""

    inputs: list[str] = field(default_factory=list)  # files and folders (recursive)
    clips: list[ClipInput] = field(default_factory=list)  # clips already described (e.g. a labelled split)
    manifest: str | None = None  # CSV/JSONL with path (+ system, prompt, start, end)
    system_rule: str = "auto"  # auto, map, folder, name, none (see data.assign_systems)
    system_map: str | None = None  # CSV: path/file/pattern -> system
    system_pattern: str | None = None  # regex whose first group names the system
    prompts: str | None = None  # CSV: path/file/pattern -> prompt
    shard: tuple[int, int] = (0, 1)  # (index, count): score every count-th file from index
    strict: bool = False  # stop at the first failure


def collect(request: ScoreRequest) -> tuple[list[ClipInput], list[Failure], list[str], list[str]]:
    """The clips of a request: ``(clips, failures, unassigned, notes)``."""
    from .audio import find_audio
    from .data import PathTable, assign_systems, read_manifest

    failures: list[Failure] = []
    notes: list[str] = []
    clips: list[ClipInput] = list(request.clips)
    if request.manifest:
        clips += read_manifest(request.manifest)
    if request.inputs:
        files, problems = find_audio(request.inputs)
        clips += [ClipInput(f) for f in files]
        for path, reason in problems:
            if reason.startswith("duplicate"):
                notes.append(f"{path}: {reason}")
            else:
                failures.append(Failure(path, f"{path}: {reason}"))
    if not clips and not failures:
        raise DraspError("nothing to score: give audio files or folders, or --manifest")
    index, count = request.shard
    if not (0 <= index < count):
        raise ConfigError(f"shard {index}/{count}: the index must be in 0..{count - 1}")
    clips = sorted(clips, key=lambda c: (c.path, c.start or 0.0))[index::count]
    system_map = PathTable.from_file(request.system_map, "system") if request.system_map else None
    rule = "map" if system_map is not None and request.system_rule == "auto" else request.system_rule
    if rule == "map" and system_map is None:
        raise ConfigError("--systems map needs --system-map FILE")
    clips, unassigned = assign_systems(clips, rule, system_map, request.system_pattern, roots=request.inputs)
    if request.prompts:
        table = PathTable.from_file(request.prompts, "prompt")
        clips = [c if c.prompt else replace(c, prompt=table.lookup(c.path, request.inputs)) for c in clips]
    return clips, failures, unassigned, notes


def run_scoring(
    model,
    request: ScoreRequest,
    scorer: Scorer,
    log_path: str | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> dict[str, Any]:
    """Score a request and build the report (clips, systems, failures, run facts).

    With ``log_path`` (a ``.jsonl`` file), records are appended as clips finish and clips
    already in that file are not scored again.
    """
    from . import __version__
    from .report import JsonlLog, system_table

    clips, failures, unassigned, notes = collect(request)
    if request.shard[0] > 0:
        failures, notes = [], []  # problems found before sharding are reported by shard 0 alone
    if request.strict and failures:
        raise AudioError(failures[0].reason)
    axes = tuple(model.config.axes)
    run = {
        "drasp_version": __version__,
        "model": getattr(model, "checkpoint_source", None) or "<in memory>",
        "revision": getattr(model, "checkpoint_revision", None),
        "precision": scorer.precision,
        "device": scorer.device.type,
        "segments": scorer.segments,
        "axes": list(axes),
        "shard": list(request.shard),
    }
    log = JsonlLog(log_path, run) if log_path else None
    records: dict[str, dict[str, Any]] = {}
    failed: list[dict[str, Any]] = [f.to_dict() for f in failures]
    try:
        if log is not None:
            records.update(log.done)
            todo = [c for c in clips if c.key not in log.done]
        else:
            todo = clips
        for result in scorer.score(todo, progress):
            record = result.to_dict()
            if isinstance(result, Failure):
                if request.strict:
                    raise AudioError(result.reason)
                failed.append(record)
            else:
                records[result.key] = record
            if log is not None:
                log.add(record, failed=isinstance(result, Failure))
    finally:
        if log is not None:
            log.close()
    scored = [records[c.key] for c in clips if c.key in records]
    return {
        "run": run,
        "axes": list(axes),
        "clips": scored,
        "systems": system_table(scored, axes),
        "failures": failed,
        "unassigned": unassigned,
        "notes": notes,
        "summary": {
            "inputs": len(clips) + len(failures),
            "scored": len(scored),
            "failed": len(failed),
            "flagged": sum(1 for r in scored if r.get("flags")),
            "unassigned": len(unassigned),
            "duplicates": len(notes),
        },
    }


def merge_reports(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One report from the reports of several shards (e.g. the ranks of a torchrun job)."""
    from .report import system_table

    first = reports[0]
    axes = tuple(first["axes"])
    clips = sorted((c for r in reports for c in r["clips"]), key=lambda c: (c["path"], c.get("key", "")))
    merged = {
        "run": {**first["run"], "shard": [0, 1], "shards": len(reports)},
        "axes": list(axes),
        "clips": clips,
        "systems": system_table(clips, axes),
        "failures": [f for r in reports for f in r["failures"]],
        "unassigned": [u for r in reports for u in r["unassigned"]],
        "notes": [n for r in reports for n in r["notes"]],
    }
    merged["summary"] = {
        key: sum(r["summary"][key] for r in reports) for key in ("inputs", "scored", "failed", "flagged", "unassigned")
    }
    merged["summary"]["duplicates"] = len(merged["notes"])
    return merged


def gather_reports(report: dict[str, Any]) -> dict[str, Any] | None:
    """Under torchrun: collect every rank's report on rank 0 and merge them there (other ranks
    get None). Outside torchrun the report is returned as it is."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return report
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    gathered: list[Any] | None = [None] * world if rank == 0 else None
    torch.distributed.gather_object(report, gathered, dst=0)
    return merge_reports(gathered) if rank == 0 else None
