"""Scoring speed and memory: end-to-end `drasp score` throughput against the backbone's own forward
pass, and peak memory for long files. Prints its figures (and writes JSON with --json).

    python benchmarks/speed.py                       # clap (HTSAT-base) and aes, wav and ogg, batch 8
    python benchmarks/speed.py --backbones mel --clips 64 --memory-minutes 5 60
    python benchmarks/speed.py --device cuda --precision bf16 --batch 64 --clips 512 --workers 14 --memory-minutes

Models have random weights in the official architectures: the compute is the same as with the
released weights, which this machine cannot download. Clips are 10 s of 44.1 kHz stereo music-like
audio (a few partials with vibrato and a noise floor), written once into a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from drasp_cli.runtime import tune_process

tune_process()  # what the `drasp` command does before torch loads (passive OpenMP waits)

import numpy as np  # noqa: E402 (after tune_process)
import soundfile as sf  # noqa: E402
import torch  # noqa: E402

SOURCE_RATE = 44_100


def synth(seconds: float, seed: int) -> np.ndarray:
    """Stereo music-like audio: three partials with vibrato, an envelope, and noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SOURCE_RATE)) / SOURCE_RATE
    x = np.zeros_like(t)
    for k in range(3):
        f = rng.uniform(110, 880)
        x += rng.uniform(0.05, 0.2) * np.sin(2 * np.pi * f * t + 0.5 * np.sin(2 * np.pi * 5 * t))
    x *= 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.2, 1.0) * t)
    left = x + 0.01 * rng.standard_normal(t.size)
    right = 0.9 * x + 0.01 * rng.standard_normal(t.size)
    return np.stack([left, right], axis=1).astype(np.float32)


def build(name: str):
    from drasp_cli.backbones.base import BackboneConfig
    from drasp_cli.model import MosModel, preset
    from drasp_cli.pooling import PoolingConfig

    pooling = PoolingConfig("drasp", segment_size=4)
    if name == "clap":
        config = preset("clap", backbone=BackboneConfig("clap", variant="HTSAT-base", trainable=False), pooling=pooling)
    elif name == "aes":
        config = preset("aes", backbone=BackboneConfig("aes", trainable=False), pooling=pooling)
    else:
        config = preset("mel", pooling=pooling)
    model = MosModel(config)
    model.backbone.load()
    return model.eval()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def raw_forward(model, batch: int, repeats: int, precision: str = "fp32") -> float:
    """Clips/s of the backbone's encode alone on full 10 s windows already on the model's
    device, at batch size ``batch`` (bf16: under autocast, as ``Scorer`` runs it)."""
    bb = model.backbone
    device = next(model.parameters()).device
    windows, lengths = bb.prepare(synth(10.0, 0).mean(axis=1)[: bb.window_samples])  # any audio: cost is fixed
    w = torch.from_numpy(np.repeat(windows, batch, axis=0)).to(device)
    n = torch.full((batch,), bb.window_samples, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    with torch.inference_mode(), autocast:
        for _ in range(2 if device.type == "cuda" else 1):
            bb.encode(w, n)  # warm-up
        _sync(device)
        started = time.perf_counter()
        for _ in range(repeats):
            bb.encode(w, n)
        _sync(device)
    return batch * repeats / (time.perf_counter() - started)


def end_to_end(model, files: list[str], batch: int, workers: int, device: str = "cpu", precision: str = "fp32") -> tuple[float, dict]:
    from drasp_cli.data import ClipInput
    from drasp_cli.scoring import Scorer

    scorer = Scorer(model, batch_size=batch, device=device, precision=precision, workers=workers)
    list(scorer.score([ClipInput(f) for f in files[:batch]]))  # warm-up on one full batch, as raw_forward
    started = time.perf_counter()
    results = list(scorer.score([ClipInput(f) for f in files]))  # scores are read back: no sync needed
    elapsed = time.perf_counter() - started
    return len(results) / elapsed, {"failed": sum(1 for r in results if not hasattr(r, "scores"))}


def decode_only(model, files: list[str], workers: int) -> float:
    """Clips/s of the decoding side alone (decode, downmix, resample, cut windows) on
    ``workers`` threads: the ceiling of end-to-end throughput when the model is fast."""
    from concurrent.futures import ThreadPoolExecutor

    from drasp_cli.data import ClipInput
    from drasp_cli.scoring import clip_windows

    def one(path: str) -> int:
        return sum(1 for _ in clip_windows(model.backbone, ClipInput(path)))

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, files[:workers]))  # warm-up
        started = time.perf_counter()
        list(pool.map(one, files))
    return len(files) / (time.perf_counter() - started)


def pooling_cost(model, repeats: int = 20) -> dict[str, float]:
    """Milliseconds per batch of 8 clips for each pooling method on this backbone's frames."""
    from drasp_cli.pooling import POOLINGS, PoolingConfig, build_pooling

    bb = model.backbone
    device = next(model.parameters()).device
    x = torch.randn(8, bb.frames_per_window, bb.feature_dim, device=device)
    mask = torch.ones(8, bb.frames_per_window, dtype=torch.bool, device=device)
    out = {}
    with torch.inference_mode():
        for name in POOLINGS:
            pool = build_pooling(PoolingConfig(name, segment_size=4), bb.feature_dim).to(device).eval()
            pool(x, mask)
            _sync(device)
            started = time.perf_counter()
            for _ in range(repeats):
                pool(x, mask)
            _sync(device)
            out[name] = 1000 * (time.perf_counter() - started) / repeats
    return out


MEMORY_CHILD = """
import sys, threading, time
from benchmarks.speed import build  # applies drasp_cli.runtime.tune_process() on import
from drasp_cli.data import ClipInput
from drasp_cli.runtime import resident_bytes
from drasp_cli.scoring import Scorer

def rss():
    return resident_bytes() / 1024  # kB
model = build(sys.argv[1])
before, peak, done = rss(), [0.0], threading.Event()
def watch():  # ru_maxrss cannot be reset after the model's build, so sample the RSS while scoring
    while not done.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(0.02)
t = threading.Thread(target=watch, daemon=True)
t.start()
started = time.perf_counter()
[r] = Scorer(model, batch_size=8, device="cpu").score([ClipInput(sys.argv[2])])
done.set(); t.join()
print(before, max(peak[0], rss()), time.perf_counter() - started, r.duration)
"""


def peak_memory(backbone: str, path: str) -> dict[str, float]:
    """RSS (MB) of a fresh process after building the model, and its peak while scoring one file."""
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, backbone, path], capture_output=True, text=True, check=True, cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    ).stdout.split()
    base, peak, seconds, duration = (float(v) for v in out)
    return {"model_mb": base / 1024, "peak_mb": peak / 1024, "seconds": seconds, "audio_seconds": duration}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default="clap,aes", help="comma-separated: clap, aes, mel")
    parser.add_argument("--formats", default="wav,ogg")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--clips", type=int, default=16, help="10 s clips per format")
    parser.add_argument("--workers", type=int, default=1, help="decoding threads")
    parser.add_argument("--rounds", type=int, default=3, help="end-to-end runs per format, each followed by a raw-forward run")
    parser.add_argument("--memory-minutes", type=float, nargs="*", default=[5, 60])
    parser.add_argument("--memory-backbones", default="clap")
    parser.add_argument("--scaling", type=int, nargs="*", default=[1, 4, 8, 16], help="batch sizes for the raw-forward scaling table")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--precision", default="fp32", help="fp32, or bf16 on CUDA (raw forward and scoring alike)")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    from drasp_cli.scoring import resolve_device

    device = resolve_device(args.device)

    torch.set_num_threads(os.cpu_count() or 1)
    facts = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
        + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""),
        "device": str(device),
        "precision": args.precision,
        "workers": args.workers,
        "batch": args.batch,
        "backbones": {},
        "memory": {},
    }
    print(
        f"# drasp scoring speed — {facts['machine']}, {facts['date']}, {device} {args.precision}, batch {args.batch}, "
        f"{args.workers} decoding thread(s), {args.clips} clips of 10 s 44.1 kHz stereo per format"
    )
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for fmt in args.formats.split(","):
            files[fmt] = []
            for i in range(args.clips):
                path = f"{tmp}/clip{i:03d}.{fmt}"
                sf.write(path, synth(10.0, i), SOURCE_RATE)
                files[fmt].append(path)
        print("| backbone | raw forward clips/s (median, range) | format | end-to-end clips/s (median, range) | ratio | decoding alone, clips/s | real-time factor |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for name in args.backbones.split(","):
            model = build(name).to(device)
            repeats = max(1, args.clips // args.batch)
            entry = {"formats": {}, "pooling_ms_per_batch8": pooling_cost(model)}
            for fmt, paths in files.items():
                # Raw forward and end to end alternate, round after round, so that a change in the
                # machine's load hits both; the figures are the medians over the rounds.
                raws, e2es = [raw_forward(model, args.batch, repeats, args.precision)], []
                for _ in range(args.rounds):
                    e2e, info = end_to_end(model, paths, args.batch, args.workers, str(device), args.precision)
                    e2es.append(e2e)
                    raws.append(raw_forward(model, args.batch, repeats, args.precision))
                raw, e2e = float(np.median(raws)), float(np.median(e2es))
                decode = decode_only(model, paths, args.workers)
                entry["formats"][fmt] = {"raw_rounds": raws, "end_to_end_rounds": e2es, "raw": raw, "decode_only": decode}
                entry["formats"][fmt].update(clips_per_s=e2e, ratio=e2e / raw, **info)
                spread = f"{min(raws):.2f}–{max(raws):.2f}"
                print(
                    f"| {name} | {raw:.2f} ({spread}) | {fmt} | {e2e:.2f} ({min(e2es):.2f}–{max(e2es):.2f}) | {e2e / raw:.2f} "
                    f"| {decode:.0f} | {10 * e2e:.1f}x |"
                )
            entry["scaling"] = {b: raw_forward(model, b, max(1, 16 // b), args.precision) for b in args.scaling}
            facts["backbones"][name] = entry
            del model
        if args.scaling:
            print("\n| backbone | " + " | ".join(f"batch {b}" for b in args.scaling) + " |")
            print("| --- |" + " --- |" * len(args.scaling))
            for name, entry in facts["backbones"].items():
                print(f"| {name} (raw clips/s) | " + " | ".join(f"{entry['scaling'][b]:.2f}" for b in args.scaling) + " |")
        print("\n| backbone | pooling | ms per batch of 8 windows |")
        print("| --- | --- | --- |")
        for name, entry in facts["backbones"].items():
            for pool, ms in entry["pooling_ms_per_batch8"].items():
                print(f"| {name} | {pool} | {ms:.2f} |")
        if args.memory_minutes:
            print("\n| backbone | audio | peak RSS while scoring, MB | RSS before scoring, MB | scoring s |")
            print("| --- | --- | --- | --- | --- |")
            for name in args.memory_backbones.split(","):
                facts["memory"][name] = {}
                for minutes in args.memory_minutes:
                    path = f"{tmp}/long{minutes:g}.wav"
                    with sf.SoundFile(path, "w", SOURCE_RATE, 2, subtype="PCM_16") as f:
                        block = synth(60.0, 99)
                        for _ in range(int(round(minutes))):
                            f.write(block)
                    m = peak_memory(name, path)
                    facts["memory"][name][f"{minutes:g} min"] = m
                    print(f"| {name} | {minutes:g} min 44.1 kHz stereo wav | {m['peak_mb']:.0f} | {m['model_mb']:.0f} | {m['seconds']:.1f} |")
                    os.unlink(path)
                peaks = [v["peak_mb"] for v in facts["memory"][name].values()]
                if len(peaks) > 1:
                    print(f"| {name} | growth, longest vs shortest | {peaks[-1] - peaks[0]:+.0f} MB | | |")
    if args.json:
        Path(args.json).write_text(json.dumps(facts, indent=2))


if __name__ == "__main__":
    main()
