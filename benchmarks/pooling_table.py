"""The paper's Table I on the proxy benchmark: every pooling method (and DRASP at several segment
sizes, like Fig. 4) trained with the `mel` backbone on the same data, budget and seeds, evaluated on
held-out tracks of the training systems and on systems never seen in training.

    python benchmarks/pooling_table.py --manifest ~/.cache/drasp/proxy/manifest.csv --seeds 0 1 2

The manifests are the proxy benchmark's (`benchmarks/proxy/prepare.py`): `manifest.csv` (`path, system,
track, split, <axes>`, split train / val / test by source track) and `heldout.csv` (systems never seen in
training, on the test tracks). Prints Markdown tables (mean ± std over seeds) and writes every run's
metrics as JSON (--json).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np

from drasp_cli.pooling import POOLINGS

METHODS = list(POOLINGS)  # the eight methods of Table I, in its order
LEVELS = ("clip", "system")
METRICS = ("MSE", "LCC", "SRCC", "KTAU")


def run_one(method: str, n: int, seed: int, data, heldout, args) -> dict:
    from drasp_cli.backbones.base import BackboneConfig
    from drasp_cli.metrics import evaluate_records
    from drasp_cli.model import ModelConfig
    from drasp_cli.pooling import PoolingConfig
    from drasp_cli.scoring import Scorer, ScoreRequest, run_scoring
    from drasp_cli.training import recipe, train

    model_config = ModelConfig(
        axes=data.axes,
        backbone=BackboneConfig("mel", options={"dim": args.dim, "channels": args.dim, "sample_rate": args.sample_rate}),
        pooling=PoolingConfig(method, segment_size=n),
        head="mlp",
        head_activation="relu",
    )
    config = recipe("mel", max_epochs=args.epochs, patience=args.patience, seed=seed, batch_size=args.batch, lr=args.lr)
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        result = train(data, model_config, config, out, device="cpu", workers=1)
        from drasp_cli.checkpoint import load_model

        model = load_model(out)
        seconds = time.perf_counter() - started
        row = {"method": method, "segment_size": n, "seed": seed, "best_epoch": result.best_epoch, "train_seconds": seconds}
        for name, examples in (("tracks", data.test), ("systems", heldout), ("all", data.test + heldout)):
            if not examples:
                continue
            report = run_scoring(model, ScoreRequest(clips=[e.clip for e in examples], system_rule="none"), Scorer(model, device="cpu"))
            row[name] = evaluate_records(report["clips"], examples, data.axes, n_resamples=0)
        if method == "drasp":
            row["alpha"], row["beta"] = float(model.pooling.alpha), float(model.pooling.beta)
    return row


def summarise(rows: list[dict], axes: tuple[str, ...], part: str) -> list[str]:
    titles = {
        "tracks": "held-out tracks, systems seen in training",
        "systems": "systems never seen in training (held-out tracks)",
        "all": "held-out tracks, seen and unseen systems together",
    }
    lines = [f"\n### {part}: {titles[part]}"]
    for axis in axes:
        lines.append(f"\n**{axis}**\n")
        header = "| method | n | " + " | ".join(f"{lvl} {m}" for lvl in LEVELS for m in METRICS) + " |"
        lines += [header, "|" + " --- |" * (2 + len(LEVELS) * len(METRICS))]
        keys = sorted({(r["method"], r["segment_size"]) for r in rows}, key=lambda k: (METHODS.index(k[0]), k[1]))
        for method, n in keys:
            runs = [r for r in rows if r["method"] == method and r["segment_size"] == n and part in r]
            cells = []
            for lvl in LEVELS:
                for m in METRICS:
                    values = np.array([r[part][lvl][axis][m] for r in runs], dtype=float)
                    values = values[np.isfinite(values)]
                    cells.append(f"{values.mean():.3f} ± {values.std():.3f}" if values.size else "n/a")
            seg = str(n) if "segment" in method or method == "drasp" else ""
            lines.append(f"| {method} | {seg} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", required=True, help="train/val/test manifest of the proxy benchmark")
    parser.add_argument("--heldout", help="manifest of held-out systems (default: heldout.csv beside --manifest)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--segment-sizes", type=int, nargs="+", default=[2, 4, 8, 16], help="DRASP sizes (Fig. 4)")
    parser.add_argument("--segment-size", type=int, default=4, help="for segmental-attentive-statistics")
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--patience", type=int, default=6)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--sample-rate", type=int, default=48_000, help="mel backbone rate")
    parser.add_argument("--json", help="write every run's metrics here")
    args = parser.parse_args()

    from drasp_cli.data import load_dataset

    data = load_dataset(args.manifest)
    heldout_path = Path(args.heldout or Path(args.manifest).parent / "heldout.csv")
    heldout_split = load_dataset(str(heldout_path)).split("all") if heldout_path.exists() else []
    print(f"# Pooling comparison on {args.manifest}: {len(data.train)} train, {len(data.val)} val, "
          f"{len(data.test)} held-out-track and {len(heldout_split)} held-out-system clips; axes {', '.join(data.axes)}; "
          f"mel backbone ({args.sample_rate} Hz, dim {args.dim}), {args.epochs} epochs max, patience {args.patience}, seeds {args.seeds}")
    jobs = [(m, args.segment_size) for m in args.methods if m != "drasp"]
    if "drasp" in args.methods:
        jobs += [("drasp", n) for n in args.segment_sizes]
    rows = []
    for method, n in jobs:
        for seed in args.seeds:
            row = run_one(method, n, seed, data, heldout_split, args)
            rows.append(row)
            sys_srcc = row.get("tracks", {}).get("system", {}).get(data.axes[0], {}).get("SRCC", math.nan)
            print(f"  {method} n={n} seed={seed}: best epoch {row['best_epoch']}, {row['train_seconds']:.0f} s, "
                  f"held-out-track system SRCC {data.axes[0]} {sys_srcc:.3f}", flush=True)
            if args.json:  # after every run, so an interrupted table keeps what finished
                Path(args.json).write_text(json.dumps(rows, indent=1))
    for part in ("tracks", "systems", "all"):
        print("\n".join(summarise(rows, data.axes, part)))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
