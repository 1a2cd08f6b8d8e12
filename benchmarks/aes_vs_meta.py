"""drasp's `aes` scoring side by side with Meta's own AudioBox-Aesthetics inference flow.

Both run the same weights (a random AesMultiOutput saved as Meta's checkpoint.pt: the compute is that
of the released model, which this machine cannot download). Meta's flow is its `AesPredictor.forward`
(decode, resample, 10 s windows zero-padded with a mask, one forward over all windows of a batch of
files, window-weighted mean); torchaudio is not installed here, so its two calls are served by
soundfile (decode) and soxr (resample), the same libraries drasp uses. Scores must agree to 1e-4.

    python benchmarks/aes_vs_meta.py --music DIR          # (a) real music files from DIR
    python benchmarks/aes_vs_meta.py --short 48           # (b) 48 clips of 1-4 s

Prints per-case wall time, clips/s and the largest score difference.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import soundfile as sf
import torch


def meta_predictor(checkpoint: Path, batch_size: int):
    """Meta's AesPredictor with torchaudio's load/resample served by soundfile and soxr."""
    import soxr

    def load(path, **kwargs):
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
        return torch.from_numpy(data.T.copy()), sr

    def info(path):
        return types.SimpleNamespace(sample_rate=sf.info(str(path)).samplerate)

    def resample(wav, orig_freq, new_freq):
        if orig_freq == new_freq:
            return wav
        out = soxr.resample(wav.numpy().T, orig_freq, new_freq, quality="HQ")
        return torch.from_numpy(np.ascontiguousarray(out.T))

    stub = types.ModuleType("torchaudio")
    stub.load, stub.info = load, info
    stub.functional = types.SimpleNamespace(resample=resample)
    sys.modules["torchaudio"] = stub
    infer = importlib.import_module("audiobox_aesthetics.infer")
    return infer.AesPredictor(checkpoint_pth=str(checkpoint), precision="32", batch_size=batch_size)


def run_meta(predictor, files: list[str], batch_size: int) -> tuple[float, dict[str, list[float]]]:
    started = time.perf_counter()
    scores: dict[str, list[float]] = {}
    for i in range(0, len(files), batch_size):
        rows = predictor.forward([{"path": f} for f in files[i : i + batch_size]])
        for row in rows:
            for axis, value in row.items():
                scores.setdefault(axis, []).append(value)
    return time.perf_counter() - started, scores


def run_drasp(model, files: list[str], batch_size: int) -> tuple[float, dict[str, list[float]]]:
    from drasp_cli.data import ClipInput
    from drasp_cli.scoring import Scorer

    scorer = Scorer(model, batch_size=batch_size, device="cpu", workers=1)
    started = time.perf_counter()
    results = {r.path: r for r in scorer.score([ClipInput(f) for f in files])}
    elapsed = time.perf_counter() - started
    return elapsed, {axis: [results[f].scores[axis] for f in files] for axis in model.config.axes}


def short_clips(folder: Path, n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        sr = 44_100
        t = np.arange(int(rng.uniform(1.0, 4.0) * sr)) / sr
        x = 0.2 * np.sin(2 * np.pi * rng.uniform(100, 800) * t) + 0.01 * rng.standard_normal(t.size)
        path = folder / f"short{i:03d}.wav"
        sf.write(str(path), np.stack([x, x], axis=1).astype(np.float32), sr)
        out.append(str(path))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--music", help="folder of real music files (a)")
    parser.add_argument("--max-files", type=int, default=8)
    parser.add_argument("--short", type=int, default=0, help="number of 1-4 s clips (b)")
    parser.add_argument("--batch", type=int, default=8, help="files per Meta forward; windows per drasp forward")
    args = parser.parse_args()

    from audiobox_aesthetics.model.aes import AesMultiOutput

    from drasp_cli.backbones.aes import MODEL_DEFAULTS
    from drasp_cli.backbones.base import WeightsSource
    from drasp_cli.model import from_aes_release

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        meta_model = AesMultiOutput(target_transform={a: {"mean": 5.0, "std": 1.5} for a in ("CE", "CU", "PC", "PQ")})
        ckpt = Path(tmp) / "checkpoint.pt"
        torch.save(
            {"state_dict": {f"model.{k}": v for k, v in meta_model.state_dict().items()},
             "model_cfg": {k: getattr(meta_model, k) for k in MODEL_DEFAULTS} | {"precision": "32"},
             "target_transform": meta_model.target_transform},
            ckpt,
        )
        predictor = meta_predictor(ckpt, args.batch)
        model = from_aes_release(WeightsSource(path=str(ckpt)))
        cases = {}
        if args.music:
            exts = (".wav", ".flac", ".ogg", ".mp3")
            cases["real music"] = sorted(str(p) for p in Path(args.music).rglob("*") if p.suffix.lower() in exts)[: args.max_files]
        if args.short:
            cases[f"{args.short} clips of 1-4 s"] = short_clips(Path(tmp), args.short)
        print(f"# drasp vs Meta AudioBox-Aesthetics inference, CPU, {torch.get_num_threads()} threads, batch {args.batch}")
        print("| case | files | audio s | Meta s | drasp s | drasp / Meta time | max |score diff| |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for name, files in cases.items():
            audio = sum(sf.info(f).duration for f in files)
            t_meta, s_meta = run_meta(predictor, files, args.batch)
            t_ours, s_ours = run_drasp(model, files, args.batch)
            diff = max(float(np.max(np.abs(np.array(s_meta[a]) - np.array(s_ours[a])))) for a in s_ours)
            print(f"| {name} | {len(files)} | {audio:.0f} | {t_meta:.1f} | {t_ours:.1f} | {t_ours / t_meta:.2f} | {diff:.2e} |")


if __name__ == "__main__":
    main()
