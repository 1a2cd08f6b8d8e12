"""The model drasp ships, on the example clips the repository ships (real music, unseen tracks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from drasp_cli.checkpoint import DEFAULT_MODEL, load_model
from drasp_cli.data import ClipInput
from drasp_cli.scoring import Scorer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "clips"


def test_the_default_model_loads_without_a_name_and_ranks_degradations():
    model = load_model()
    assert model.checkpoint_source == str(DEFAULT_MODEL)
    assert model.config.axes == ("MOS", "LOCAL")
    clips = [ClipInput(str(p), system=p.parent.name) for p in sorted(EXAMPLES.glob("*/*Nebula*.flac"))]
    results = {r.system: r.scores for r in Scorer(model, device="cpu").score(clips)}
    assert set(results) == {"clean", "clip_30", "noise_25db", "opus_6k"}
    for axis in ("MOS", "LOCAL"):
        assert 1.0 <= results["noise_25db"][axis] < results["clean"][axis] <= 5.0
        assert results["opus_6k"][axis] < results["clean"][axis] - 0.5  # a degradation it never saw
    assert results["clean"]["MOS"] > 4.0


def test_score_without_model_uses_it(monkeypatch, capsys):
    import json
    import sys

    from drasp_cli import cli

    monkeypatch.setattr(sys, "argv", ["drasp", "score", str(EXAMPLES / "clean"), "-f", "json", "-q", "--device", "cpu"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code in (0, None)
    report = json.loads(capsys.readouterr().out)
    assert report["run"]["model"] == str(DEFAULT_MODEL) and report["summary"]["scored"] == 3
