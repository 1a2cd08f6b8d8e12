"""Checkpoint folders: config.json + model.safetensors + README.md, local and through the Hub cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from conftest import put_in_hf_cache
from drasp_cli.backbones.base import BackboneConfig
from drasp_cli.checkpoint import load_model, save_model
from drasp_cli.errors import CheckpointError
from drasp_cli.model import ModelConfig, MosModel
from drasp_cli.pooling import PoolingConfig

CLIP = [np.sin(np.arange(48_000) / 7.0).astype(np.float32) * 0.2]


def tiny(**kw) -> MosModel:
    cfg = ModelConfig(
        axes=("PQ", "CE"),
        backbone=BackboneConfig("mel", options={"dim": 16, "channels": 8}),
        pooling=PoolingConfig("drasp", segment_size=5),
        label_mean=(3.0, 2.5),
        label_std=(1.2, 0.8),
        **kw,
    )
    return MosModel(cfg).eval()


@pytest.fixture
def saved(tmp_path):
    model = tiny()
    with torch.no_grad():
        model.pooling.beta.fill_(0.4)  # a trained-looking value must survive the round trip
    folder = save_model(model, tmp_path / "ckpt", card={"data": "unit-test clips"})
    return model, folder


def test_round_trip_gives_identical_scores(saved):
    model, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    loaded = load_model(folder)
    assert loaded.config == model.config
    with torch.inference_mode():
        a, b = model(CLIP), loaded(CLIP)
    for axis in ("PQ", "CE"):
        torch.testing.assert_close(a[axis], b[axis], rtol=0, atol=0)
    assert loaded.pooling.beta.item() == pytest.approx(0.4)
    assert not loaded.training


def test_weights_are_safetensors_and_config_is_plain_json(saved):
    _, folder = saved
    with safe_open(folder / "model.safetensors", "pt") as f:
        assert "pooling.beta" in f.keys()
        assert f.metadata()["format_version"] == "1"
    config = json.loads((folder / "config.json").read_text())
    assert config["pooling"]["method"] == "drasp" and config["axes"] == ["PQ", "CE"]
    card = (folder / "README.md").read_text()
    assert "library_name: drasp" in card
    assert "segments of 5 frames = 0.400 s" in card
    assert "unit-test clips" in card


def edit_config(folder, change):
    path = folder / "config.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda d: d.update(colour="blue"), "unknown key 'colour'"),
        (lambda d: d["pooling"].update(methd="x"), r"config.json.pooling: unknown key 'methd'"),
        (lambda d: d.update(format_version=7), "newer than this drasp"),
        (lambda d: d["pooling"].update(method="average"), "weights do not match config.json.*unexpected"),
        (lambda d: d["backbone"]["options"].update(dim=32), "wrong shape"),
        (lambda d: d.update(axes=["PQ", "CE", "CU"], label_mean=None, label_std=None), "missing"),
    ],
)
def test_a_config_that_does_not_fit_is_refused(saved, change, message):
    _, folder = saved
    edit_config(folder, change)
    with pytest.raises(CheckpointError, match=message):
        load_model(folder)


def test_missing_or_corrupt_files_are_clear_errors(saved, tmp_path):
    _, folder = saved
    with pytest.raises(CheckpointError, match="no checkpoint folder there"):
        load_model(tmp_path / "nowhere")
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_model(folder)
    (folder / "config.json").write_text("{")
    with pytest.raises(CheckpointError, match="not a readable JSON config"):
        load_model(folder)
    (folder / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json is missing"):
        load_model(folder)


def test_loading_from_the_hub_cache_offline(saved, hf_cache):
    model, folder = saved
    put_in_hf_cache(hf_cache, "someone/drasp-test", {n: folder / n for n in ("config.json", "model.safetensors")})
    for loaded in (load_model("someone/drasp-test"), MosModel.from_pretrained("someone/drasp-test")):
        with torch.inference_mode():
            torch.testing.assert_close(loaded(CLIP)["PQ"], model(CLIP)["PQ"], rtol=0, atol=0)


def test_an_uncached_hub_model_offline_says_what_to_do(hf_cache):
    with pytest.raises(CheckpointError, match="not in the local Hugging Face cache.*offline"):
        load_model("someone/not-downloaded")


def test_from_pretrained_and_save_pretrained_use_the_same_format(tmp_path):
    model = tiny()
    model.save_pretrained(tmp_path / "a")
    again = MosModel.from_pretrained(tmp_path / "a")
    assert again.config == model.config
    assert json.loads((tmp_path / "a" / "config.json").read_text())["format_version"] == 1
