"""Train the default model drasp ships (`drasp_cli/checkpoints/proxy-mel-drasp`) on the proxy benchmark,
measure it on held-out tracks and held-out systems, and write it with its model card.

    python benchmarks/proxy/prepare.py                    # the data (cached)
    python benchmarks/make_default_model.py               # -> drasp_cli/checkpoints/proxy-mel-drasp/

Settings: the `mel` backbone (48 kHz, dim 64), DRASP pooling with 4-frame (320 ms) segments, the `mel` recipe.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "benchmarks" / "proxy" / "data" / "proxy"

SUMMARY = (
    "A no-reference estimate of how degraded a music recording sounds, on ViSQOL's 1-5 MOS-LQO scale: "
    "`MOS` for the whole clip (ViSQOL v3 audio mode against the clean source) and `LOCAL` for its worst "
    "second (the lowest ViSQOL of its 1 s segments). It was trained on real music degraded by band limits, "
    "noise, clipping, low-bitrate codecs and short local faults (dropouts, clicks, noise bursts, distortion). "
    "It is a proxy for listener opinion, not a model of it: it knows nothing about composition, mixing "
    "taste or text alignment, and its numbers are only comparable with other drasp scores of this model."
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", default=str(DATA / "manifest.csv"))
    parser.add_argument("--heldout", default=str(DATA / "heldout.csv"))
    parser.add_argument("--out", default=str(ROOT / "drasp_cli" / "checkpoints" / "proxy-mel-drasp"))
    parser.add_argument("--pooling", default="drasp")
    parser.add_argument("--segment-size", type=int, default=4)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--sample-rate", type=int, default=48_000, help="mel backbone rate; 48 kHz hears codec artefacts")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--patience", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from drasp_cli.backbones.base import BackboneConfig
    from drasp_cli.checkpoint import load_model, write_checkpoint
    from drasp_cli.data import load_dataset
    from drasp_cli.metrics import evaluate_records
    from drasp_cli.model import ModelConfig
    from drasp_cli.pooling import PoolingConfig
    from drasp_cli.scoring import Scorer, ScoreRequest, run_scoring
    from drasp_cli.training import recipe, train

    data = load_dataset(args.manifest)
    heldout = load_dataset(args.heldout).split("all")
    model_config = ModelConfig(
        axes=data.axes,
        backbone=BackboneConfig("mel", options={"dim": args.dim, "channels": args.dim, "sample_rate": args.sample_rate}),
        pooling=PoolingConfig(args.pooling, segment_size=args.segment_size),
        head="mlp",
        head_activation="relu",
    )
    config = recipe("mel", max_epochs=args.epochs, patience=args.patience, seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        result = train(data, model_config, config, tmp, device="cpu", workers=1, on_event=print)
        model = load_model(tmp)
        log = (Path(tmp) / "train_log.jsonl").read_text()
    accuracy = {}
    for name, examples in (("test tracks, seen systems", data.test), ("test tracks, held-out systems", heldout),
                           ("test tracks, all systems", data.test + heldout)):
        report = run_scoring(model, ScoreRequest(clips=[e.clip for e in examples], system_rule="none"), Scorer(model, device="cpu"))
        m = evaluate_records(report["clips"], examples, data.axes)
        for axis in data.axes:
            c, s = m["clip"][axis], m["system"][axis]
            accuracy[f"{name}, {axis}"] = (
                f"clip SRCC {c['SRCC']:.3f} / LCC {c['LCC']:.3f} / MSE {c['MSE']:.3f} (n={c['n']}); "
                f"system SRCC {s['SRCC']:.3f} / LCC {s['LCC']:.3f} (n={s['n']})"
            )
    card = {
        "title": "drasp default model: proxy-mel-drasp",
        "summary": SUMMARY,
        "training_data": (
            f"The proxy benchmark (`benchmarks/proxy`): {len(data.train)} training and {len(data.val)} validation "
            "clips cut from game soundtracks in Debian packages (singularity-music CC-BY-SA-3.0, wesnoth-1.16-music "
            "GPL-2+, warzone2100-music GPL-2+/CC-BY-SA-3.0+, hyperrogue-music GPL-2+, planetblupi-music-ogg GPL-3+, "
            "fretsonfire-songs-muldjord CC-BY-SA-3.0, fretsonfire-songs-sectoid Expat), split by source track"
        ),
        "recipe": {**{k: v for k, v in vars(config).items()}, "best_epoch": result.best_epoch},
        "accuracy": accuracy,
        "reproduce": "python benchmarks/proxy/prepare.py && python benchmarks/make_default_model.py",
    }
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    write_checkpoint(model, out, card)
    print(json.dumps(accuracy, indent=1))
    print(f"best epoch {result.best_epoch} of {len(log.splitlines())}; written to {out}")


if __name__ == "__main__":
    main()
