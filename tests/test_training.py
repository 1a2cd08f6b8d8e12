"""`drasp train` and `drasp eval` end to end on a tiny labelled set the test writes: the label of
each clip is its noise level, so a model that listens can learn it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import free_port
from drasp_cli.backbones.base import BackboneConfig
from drasp_cli.checkpoint import load_model
from drasp_cli.data import load_dataset
from drasp_cli.model import ModelConfig
from drasp_cli.pooling import PoolingConfig
from drasp_cli.training import recipe, train

SR = 16_000
SYSTEMS = 8


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """8 systems x 6 clips; system k adds noise at level k; the MOS label falls with the noise."""
    root = tmp_path_factory.mktemp("labelled")
    rng = np.random.default_rng(0)
    rows = ["path,system,track,MOS"]
    for k in range(SYSTEMS):
        for j in range(6):
            t = np.arange(int(SR * rng.uniform(1.5, 3.0))) / SR
            clean = 0.3 * np.sin(2 * np.pi * (150 + 60 * j) * t)
            noise = 0.02 * (1.6**k) * rng.standard_normal(t.size)
            name = f"sys{k}/clip{j}.wav"
            (root / f"sys{k}").mkdir(exist_ok=True)
            sf.write(str(root / name), (clean + noise).astype(np.float32), SR)
            label = 4.5 - 0.45 * k + rng.normal(0, 0.1)
            rows.append(f"{name},sys{k},track{j},{label:.3f}")
    (root / "ratings.csv").write_text("\n".join(rows) + "\n")
    return root / "ratings.csv"


def small_model() -> ModelConfig:
    return ModelConfig(
        backbone=BackboneConfig("mel", options={"dim": 24, "channels": 16}),
        pooling=PoolingConfig("drasp", segment_size=4),
        head_activation="relu",
    )


def config(**kw):
    return recipe("mel", **{"batch_size": 8, "lr": 3e-3, "max_epochs": 6, "patience": 20, **kw})


def test_training_learns_and_eval_ranks_systems(labelled, tmp_path, capsys, monkeypatch):
    data = load_dataset(str(labelled), val_fraction=0.25, split_by="track", seed=0)
    result = train(data, small_model(), config(), tmp_path / "run", device="cpu", workers=1)
    losses = [r["train_loss"] for r in result.history]
    assert losses[-1] < 0.7 * losses[0]
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(1, 7))
    assert all("alpha" in r and "beta" in r and "val_srcc_system" in r for r in log)
    model = load_model(tmp_path / "run")
    assert model.config.label_mean is not None  # predictions come out on the label scale
    card = (tmp_path / "run" / "README.md").read_text()
    assert "training and" in card and "system SRCC MOS" in card

    from drasp_cli import cli

    monkeypatch.setattr(sys, "argv", ["drasp", "eval", "--data", str(labelled), "--model", str(tmp_path / "run"),
                                      "--split", "all", "-f", "json", "--device", "cpu", "--plot", str(tmp_path / "plots"), "-q"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code in (0, None)
    result = json.loads(capsys.readouterr().out)
    system = result["system"]["MOS"]
    assert system["n"] == SYSTEMS
    from scipy import stats

    assert system["SRCC"] > 0.7 and stats.spearmanr([p[1] for p in result["points"]["MOS"]], [p[2] for p in result["points"]["MOS"]]).pvalue < 0.05
    assert (tmp_path / "plots" / "systems_MOS.png").stat().st_size > 1000


def test_resume_gives_the_same_weights(labelled, tmp_path):
    data = load_dataset(str(labelled), val_fraction=0.25, split_by="system", seed=1)
    full = train(data, small_model(), config(max_epochs=4), tmp_path / "full", device="cpu", workers=1)

    def interrupt(epoch, step, steps):
        if epoch == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(data, small_model(), config(max_epochs=4), tmp_path / "cut", device="cpu", workers=1, on_progress=interrupt)
    resumed = train(data, small_model(), config(max_epochs=4), tmp_path / "cut", device="cpu", workers=1, resume=True)
    assert [r["epoch"] for r in resumed.history] == [3, 4]
    assert resumed.best_epoch == full.best_epoch
    a, b = load_model(tmp_path / "full"), load_model(tmp_path / "cut")
    for (k, v), (k2, v2) in zip(a.state_dict().items(), b.state_dict().items()):
        assert k == k2
        torch.testing.assert_close(v, v2, rtol=0, atol=0)


def test_two_process_torchrun_training_completes(labelled, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()),
        "-m", "drasp_cli", "train", "--data", str(labelled), "--out", str(tmp_path / "ddp"), "--val-fraction", "0.25",
        "--epochs", "2", "--batch-size", "8", "--device", "cpu", "--workers", "1", "--segment-size", "4", "-q",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    log = (tmp_path / "ddp" / "train_log.jsonl").read_text().splitlines()
    assert len(log) == 2  # written once, by rank 0
    assert load_model(tmp_path / "ddp").config.pooling.method == "drasp"


def test_frozen_backbone_features_are_cached_once(labelled, tmp_path):
    data = load_dataset(str(labelled), val_fraction=0.25, split_by="system", seed=2)
    events: list[str] = []
    cfg = config(max_epochs=2, freeze_backbone=True)
    first = train(data, small_model(), cfg, tmp_path / "a", device="cpu", workers=1, cache_dir=str(tmp_path / "cache"),
                  on_event=events.append)
    announced = [e for e in events if e.startswith("computing frozen mel frame features")]
    assert len(announced) == 2 and "MB in" in announced[0]  # train and validation splits, size first
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == len(data.train) + len(data.val)
    events.clear()
    second = train(data, small_model(), cfg, tmp_path / "b", device="cpu", workers=1, cache_dir=str(tmp_path / "cache"),
                   on_event=events.append)
    assert not [e for e in events if e.startswith("computing")]  # everything came from the cache
    assert [r["val_loss"] for r in second.history] == pytest.approx([r["val_loss"] for r in first.history], abs=1e-6)


def test_push_uploads_only_the_checkpoint_files(tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    from drasp_cli.checkpoint import push_checkpoint, save_model
    from drasp_cli.errors import CheckpointError
    from drasp_cli.model import MosModel

    folder = save_model(MosModel(small_model()), tmp_path / "m")
    (folder / "train_log.jsonl").write_text("{}\n")
    calls = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create", repo_id, kw)))

    def upload(self, **kw):
        calls.append(("upload", kw))
        return "https://huggingface.co/me/model/commit/abc"

    monkeypatch.setattr(HfApi, "upload_folder", upload)
    assert push_checkpoint(folder, "me/model", private=True).endswith("/commit/abc")
    assert calls[0] == ("create", "me/model", {"repo_type": "model", "private": True, "exist_ok": True})
    kw = calls[1][1]
    assert kw["repo_id"] == "me/model" and kw["folder_path"] == str(folder)
    assert kw["allow_patterns"] == ["config.json", "model.safetensors", "README.md"]
    (tmp_path / "junk").mkdir()
    with pytest.raises(CheckpointError, match="config.json is missing"):
        push_checkpoint(tmp_path / "junk", "me/model")
    assert len(calls) == 2  # nothing was uploaded for the broken folder
