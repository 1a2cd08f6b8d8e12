"""The 'aes' backbone against Meta's own AudioBox-Aesthetics code, on a random-weight model.

The reference is Meta's ``audiobox_aesthetics.infer.AesPredictor`` itself: its windowing
(``make_inference_batch``), its checkpoint loader and its weighted window mean. ``infer.py``
imports torchaudio at the top but only calls ``torchaudio.functional.resample`` (and only
``torchaudio.load`` for paths), so it runs here with a stub whose resample is the identity at 16 kHz.

WavLM-Base costs about a second per 10-s window on a 2-core CPU, so the model is built once per
module and every test counts its windows.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from drasp_cli.backbones import build_backbone
from drasp_cli.backbones.aes import (
    AXES,
    MODEL_DEFAULTS,
    AesBackbone,
    AesCheckpoint,
    aes_head_state,
    heads_from_checkpoint,
    read_aes_checkpoint,
)
from drasp_cli.backbones.base import BackboneConfig, Frames, WeightsSource
from drasp_cli.errors import CheckpointError, ConfigError

aes_model = pytest.importorskip("audiobox_aesthetics.model.aes", reason="audiobox-aesthetics is not installed")

# Meta's own code, run here as the reference, warns about torch APIs it uses; drasp silences them.
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*weight_norm.*is deprecated:FutureWarning"),
    pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask:UserWarning"),
]

SR = 16_000
# Distinct label statistics per axis, so a swapped axis or a missing de-normalisation shows.
TARGET_TRANSFORM = {
    "CE": {"mean": 5.6, "std": 1.3},
    "CU": {"mean": 6.1, "std": 1.1},
    "PC": {"mean": 3.2, "std": 1.8},
    "PQ": {"mean": 6.8, "std": 0.9},
}
COMMIT = "0123456789abcdef0123456789abcdef01234567"  # a made-up snapshot of the Hub repository


def make_clip(seconds: float, seed: int) -> np.ndarray:
    """A mono 16 kHz clip with some structure: a few partials, an envelope, noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * SR))) / SR
    freqs = rng.uniform(80, 4000, size=4)
    tone = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3)) for f in freqs) / 4
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.2, 2.0) * t) ** 2
    return (0.4 * tone * envelope + 0.05 * rng.standard_normal(t.shape)).astype(np.float32)


# -- fixtures: one random model, saved in Meta's two layouts ---------------------------------------


@pytest.fixture(scope="module")
def meta_model():
    """A random AesMultiOutput whose layer weights and heads give distinct, spread-out scores."""
    torch.manual_seed(0)
    model = aes_model.AesMultiOutput(target_transform=TARGET_TRANSFORM)
    with torch.no_grad():
        for axis in AXES:
            model.layer_weights[axis].normal_(0, 2)  # non-uniform mixes, different per axis
            model.proj_layer[axis][0].weight.mul_(30)  # scores of order 1, not 1e-2
    return model.eval()


@pytest.fixture(scope="module")
def saved(meta_model, tmp_path_factory) -> dict[str, Path]:
    """The model as Meta's checkpoint.pt and in the from_pretrained layout."""
    root = tmp_path_factory.mktemp("aes")
    ckpt = root / "checkpoint.pt"
    model_cfg = {k: getattr(meta_model, k) for k in MODEL_DEFAULTS} | {
        "precision": "bf16",  # as in Meta's released config; without effect on the scores
        "lr": 1e-4,  # a training field that only infer.py's field list skips
    }
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in meta_model.state_dict().items()},
            "model_cfg": model_cfg,
            "target_transform": TARGET_TRANSFORM,
        },
        ckpt,
    )
    pretrained = root / "pretrained"
    meta_model.save_pretrained(pretrained)
    return {"checkpoint": ckpt, "pretrained": pretrained}


@pytest.fixture(scope="module")
def backbone(saved) -> AesBackbone:
    b = build_backbone(BackboneConfig(name="aes", source=WeightsSource(path=str(saved["checkpoint"])), trainable=False))
    b.load()
    return b.eval()


CLIP_SECONDS = (0.5, 10.0, 25.0)


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    return [make_clip(s, seed=i) for i, s in enumerate(CLIP_SECONDS)]


@pytest.fixture(scope="module")
def frames(backbone, clips) -> Frames:
    with torch.inference_mode():
        return backbone(clips)


def pipeline_scores(frames: Frames, heads) -> dict[str, np.ndarray]:
    """drasp's scoring with ``average`` pooling, written out: masked mean over the valid frames,
    L2 normalisation, Meta's linear head, de-normalisation, window mean weighted by real length."""
    mask = frames.mask.unsqueeze(-1).float()  # (B, W, T, 1)
    weight = frames.window_weight  # (B, W)
    out = {}
    for axis in AXES:
        x = frames.features[axis]  # (B, W, T, D)
        pooled = (x * mask).sum(2) / mask.sum(2).clamp(min=1)  # (B, W, D)
        if heads.l2_normalize:
            pooled = F.normalize(pooled, dim=-1)
        z = (pooled @ heads.weight[axis].T + heads.bias[axis]).squeeze(-1)  # (B, W)
        window_scores = z * heads.label_std[axis] + heads.label_mean[axis]
        out[axis] = ((window_scores * weight).sum(1) / weight.sum(1)).numpy()  # (B,)
    return out


def meta_scores(checkpoint: Path, clips: list[np.ndarray], monkeypatch) -> dict[str, np.ndarray]:
    """Per-file scores of Meta's AesPredictor (infer.py) on 16 kHz clips, in one batch."""
    stub = types.ModuleType("torchaudio")

    def resample(wav, orig_freq, new_freq):
        assert orig_freq == new_freq, "the stub only serves 16 kHz input"
        return wav

    stub.functional = types.SimpleNamespace(resample=resample)
    monkeypatch.setitem(sys.modules, "torchaudio", stub)
    monkeypatch.delitem(sys.modules, "audiobox_aesthetics.infer", raising=False)
    try:
        infer = importlib.import_module("audiobox_aesthetics.infer")
        predictor = infer.AesPredictor(checkpoint_pth=str(checkpoint), precision="32")
        # audio_resample_mono takes a (C, N) tensor under data_col with its sample_rate.
        rows = predictor.forward([{"path": torch.from_numpy(c)[None], "sample_rate": SR} for c in clips])
    finally:
        sys.modules.pop("audiobox_aesthetics.infer", None)  # it holds the stub
    return {axis: np.array([row[axis] for row in rows]) for axis in AXES}


# -- cheap facts --------------------------------------------------------------------------------------


def test_import_does_not_load_meta_package():
    code = (
        "import sys, drasp_cli.backbones.aes as a\n"
        "from drasp_cli.backbones.base import BackboneConfig\n"
        "b = a.AesBackbone(BackboneConfig(name='aes'))\n"
        "print(b.sample_rate, b.frame_rate, b.frames_per_window, b.feature_dim, b.long_audio, "
        "','.join(b.streams), 'audiobox_aesthetics' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["16000", "50.0", "499", "768", "window-mean", "CE,CU,PC,PQ", "False"]


def test_streams_are_meta_axes_in_meta_order():
    assert AesBackbone(BackboneConfig(name="aes")).streams == tuple(aes_model.AXES_NAME)


def test_unknown_options_and_variants_are_refused():
    with pytest.raises(ConfigError, match="nth_layer"):
        AesBackbone(BackboneConfig(name="aes", options={"nth_layer": 12}))
    with pytest.raises(ConfigError, match="WavLM-Base"):
        AesBackbone(BackboneConfig(name="aes", variant="large"))


def test_missing_package_names_the_install_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "audiobox_aesthetics.model.aes", None)
    with pytest.raises(ConfigError, match=r"pip install --no-deps audiobox-aesthetics==0\.0\.4"):
        AesBackbone(BackboneConfig(name="aes")).load()


def test_window_frame_mask_is_meta_forward_padding_mask():
    from audiobox_aesthetics.model.wavlm import WavLM

    b = AesBackbone(BackboneConfig(name="aes"))
    n, t = b.window_samples, b.frames_per_window
    lengths = torch.tensor([1, 319, 320, 321, 640, 8000, 80_001, 159_679, 159_680, 159_681, 160_000])
    padding = torch.arange(n)[None, :] >= lengths[:, None]  # (W, N), as AesMultiOutput.forward gets it
    # forward_padding_mask reads only the features' shape; it does not use self.
    theirs = ~WavLM.forward_padding_mask(None, torch.empty(len(lengths), t, 1), padding)
    ours = b.window_frame_mask(lengths)
    assert torch.equal(ours, theirs)
    assert ours.sum(1).tolist() == [1, 1, 1, 2, 2, 25, 251, 499, 499, 499, 499]


# -- parity with Meta's inference --------------------------------------------------------------------


def test_scores_match_meta_inference(backbone, frames, clips, saved, monkeypatch):
    theirs = meta_scores(saved["checkpoint"], clips, monkeypatch)
    ours = pipeline_scores(frames, backbone.pretrained_heads)
    for axis in AXES:
        np.testing.assert_allclose(ours[axis], theirs[axis], atol=1e-4, rtol=0, err_msg=axis)
    # Random heads scaled up: the files (and axes) get visibly different scores, so a wrong
    # mask, window weight or axis order could not pass by accident.
    assert min(np.ptp(theirs[axis]) for axis in AXES) > 0.01
    # The same through drasp's own model and scoring engine, one clip at a time.
    from drasp_cli.model import from_aes_release
    from drasp_cli.scoring import score_arrays

    model = from_aes_release(WeightsSource(path=str(saved["checkpoint"])))
    results = score_arrays(model, [(c, SR) for c in clips], device="cpu", batch_size=2)
    for axis in AXES:
        np.testing.assert_allclose([r.scores[axis] for r in results], theirs[axis], atol=1e-4, rtol=0, err_msg=axis)


def test_frames_windows_masks_and_weights(frames, backbone):
    assert set(frames.features) == set(AXES)
    for axis in AXES:
        assert frames.features[axis].shape == (3, 3, 499, 768)
        assert torch.isfinite(frames.features[axis]).all()
    # 0.5 s = 8000 samples -> 25 frames; 25 s -> two full windows and 5 s = 250 frames.
    assert frames.mask.sum(-1).tolist() == [[25, 0, 0], [499, 0, 0], [499, 499, 250]]
    np.testing.assert_allclose(frames.window_weight.numpy(), [[0.05, 0, 0], [1, 0, 0], [1, 1, 0.5]])
    # Windows that only pad the batch are never encoded: zeros, not WavLM's output for silence.
    assert not frames.features["CE"][0, 1:].any()
    # The per-axis mixes differ: each axis has its own layer weights.
    assert not torch.allclose(frames.features["CE"][2, 0], frames.features["PQ"][2, 0])
    # The mask encode returns is the one window_frame_mask predicts from the lengths.
    lengths = (frames.window_weight * backbone.window_samples).round().long().reshape(-1)
    assert torch.equal(frames.mask.reshape(-1, 499), backbone.window_frame_mask(lengths))


def test_three_minute_clip_and_batch_invariance(backbone, frames, clips):
    long_clip = make_clip(183.0, seed=7)  # 18 full windows and 3 s
    windows, lengths = backbone.prepare(long_clip)
    assert windows.shape == (19, 160_000) and lengths.tolist() == [160_000] * 18 + [48_000]
    mask = backbone.window_frame_mask(torch.from_numpy(lengths))
    assert mask[:18].all() and mask[18].sum() == 150  # 3 s = 48000 samples = 150 frames
    np.random.seed(123)
    expected_draw = np.random.random()
    np.random.seed(123)
    # Encoding every window would cost ~20 s of WavLM here; the last one (zero-padded, masked)
    # beside the 0.5-s clip shows both the masking and that rows never mix.
    short, short_len = backbone.prepare(clips[0])
    batch = torch.from_numpy(np.concatenate([windows[-1:], short]))
    with torch.inference_mode():
        feats, out_mask = backbone.encode(batch, torch.tensor([48_000, int(short_len[0])]))
    assert np.random.random() == expected_draw  # Meta's layerdrop draws do not leak out
    assert out_mask.sum(-1).tolist() == [150, 25]
    for axis in AXES:
        assert feats[axis].shape == (2, 499, 768)
        # The 0.5-s clip's frames do not depend on what else is in the batch.
        torch.testing.assert_close(feats[axis][1], frames.features[axis][0, 0], atol=1e-4, rtol=1e-4)


# -- weights: Meta's layouts, the Hub cache, refusals ---------------------------------------------------


def meta_backbone_state(meta_model) -> dict[str, torch.Tensor]:
    return {k: v for k, v in meta_model.state_dict().items() if not k.startswith("proj_layer.")}


def assert_heads_are_meta(heads, meta_model):
    assert heads.axes == AXES and heads.l2_normalize
    for axis in AXES:
        assert torch.equal(heads.weight[axis], meta_model.proj_layer[axis][0].weight)
        assert torch.equal(heads.bias[axis], meta_model.proj_layer[axis][0].bias)
        assert heads.label_mean[axis] == TARGET_TRANSFORM[axis]["mean"]
        assert heads.label_std[axis] == TARGET_TRANSFORM[axis]["std"]


def test_checkpoint_pt_loads_every_backbone_key(backbone, meta_model):
    state = backbone.state_dict()
    expected = meta_backbone_state(meta_model)
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    assert sorted(backbone.frozen_state_keys()) == sorted(expected)
    assert_heads_are_meta(backbone.pretrained_heads, meta_model)
    assert not backbone.wavlm_model.training


def test_partial_pretrained_config_gets_model_defaults(saved, meta_model):
    config = json.loads((saved["pretrained"] / "config.json").read_text())
    assert "nth_layer" not in config and "normalize_embed" not in config  # only explicitly passed fields
    ckpt = read_aes_checkpoint(saved["pretrained"])
    assert ckpt.model_cfg == MODEL_DEFAULTS
    assert_heads_are_meta(aes_head_state(saved["pretrained"] / "model.safetensors"), meta_model)


@pytest.mark.parametrize("layout", ["pretrained-folder", "hub-cache"])
def test_other_sources_load_the_same_weights(layout, saved, meta_model, tmp_path, monkeypatch):
    if layout == "pretrained-folder":
        source = WeightsSource(path=str(saved["pretrained"]))
    else:
        import huggingface_hub.constants as hf_constants

        # The cache layout of huggingface_hub: refs/main names the commit of snapshots/<commit>/.
        cache = tmp_path / "hub"
        repo = cache / "models--facebook--audiobox-aesthetics"
        (repo / "snapshots" / COMMIT).mkdir(parents=True)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(COMMIT)
        (repo / "snapshots" / COMMIT / "checkpoint.pt").symlink_to(saved["checkpoint"])
        monkeypatch.setenv("HF_HOME", str(tmp_path))
        monkeypatch.setenv("HF_HUB_CACHE", str(cache))
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        # huggingface_hub reads these variables once, at import.
        monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
        monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
        source = WeightsSource(repo_id="facebook/audiobox-aesthetics", filename="checkpoint.pt")
    b = AesBackbone(BackboneConfig(name="aes", source=source))
    b.load()
    state, expected = b.state_dict(), meta_backbone_state(meta_model)
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    assert_heads_are_meta(b.pretrained_heads, meta_model)


def test_hub_file_not_in_offline_cache_is_a_checkpoint_error(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError, match="not in the local Hugging Face cache"):
        read_aes_checkpoint(WeightsSource(repo_id="facebook/audiobox-aesthetics", filename="checkpoint.pt"))


class Payload:
    """A class a weights_only unpickler must refuse to rebuild."""


def test_refuses_a_pickle_weights_only_cannot_load(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"state_dict": {}, "payload": Payload()}, path)
    with pytest.raises(CheckpointError, match=r"weights_only=True"):
        read_aes_checkpoint(path)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        read_aes_checkpoint(garbage)


def test_refuses_another_architecture(tmp_path):
    path = tmp_path / "checkpoint.pt"
    other = torch.nn.Linear(768, 4).state_dict()
    torch.save({"state_dict": {f"model.{k}": v for k, v in other.items()}}, path)
    b = AesBackbone(BackboneConfig(name="aes", source=WeightsSource(path=str(path))))
    with pytest.raises(
        CheckpointError, match=r"not an AudioBox-Aesthetics.*missing keys, e\.g\. layer_weights\.CE"
    ) as e:
        b.load()
    assert "2 unexpected keys, e.g. bias, weight" in str(e.value)


def test_heads_that_are_not_one_linear_layer_are_refused():
    ckpt = AesCheckpoint(
        path=Path("checkpoint.pt"),
        state_dict={},
        model_cfg=MODEL_DEFAULTS | {"proj_num_layer": 2},
        target_transform=TARGET_TRANSFORM,
    )
    with pytest.raises(CheckpointError, match="proj_num_layer=1"):
        heads_from_checkpoint(ckpt)
    with pytest.raises(CheckpointError, match="target_transform"):
        heads_from_checkpoint(AesCheckpoint(Path("c.pt"), {}, dict(MODEL_DEFAULTS), None))
