"""The MOS predictor built from one config, on the light ``mel`` backbone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from drasp_cli.backbones.base import BackboneConfig, Frames
from drasp_cli.errors import ConfigError
from drasp_cli.model import ModelConfig, MosModel, preset
from drasp_cli.pooling import PoolingConfig

SR = 16_000


def tone(seconds: float, freq: float = 440.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def small(**kw) -> MosModel:
    cfg = ModelConfig(backbone=BackboneConfig("mel", options={"dim": 32, "channels": 16}), **kw)
    return MosModel(cfg).eval()


def test_mel_backbone_frames_and_mask():
    model = small()
    frames = model.backbone([tone(0.5), tone(25.0)])
    assert model.backbone.frame_rate == 12.5
    assert frames.features.shape == (2, 3, 125, 32)  # 25 s -> three 10 s windows of 125 frames
    assert frames.mask[0].sum().item() == 7  # ceil(0.5 s * 12.5)
    assert frames.mask[1, :2].all() and frames.mask[1, 2].sum().item() == 63  # ceil(5 s * 12.5)
    torch.testing.assert_close(frames.window_weight, torch.tensor([[0.05, 0, 0], [1, 1, 0.5]]))


@pytest.mark.parametrize("method", ["drasp", "statistics", "multi-head-attentive"])
def test_a_clip_scores_the_same_alone_and_in_any_batch(method):
    model = small(pooling=PoolingConfig(method, segment_size=5))
    clips = [tone(3.0, 220), tone(12.5, 330), tone(0.7, 550), tone(21.0, 660)]
    with torch.inference_mode():
        alone = [model(([c]))["MOS"].item() for c in clips]
        together = model(clips)["MOS"].tolist()
        reversed_ = model(clips[::-1])["MOS"].tolist()[::-1]
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(reversed_, alone, atol=1e-5)
    assert len(set(np.round(alone, 4))) == 4  # the clips really differ


def test_label_normalisation_puts_predictions_on_the_label_scale():
    torch.manual_seed(1)
    plain = small(axes=("A", "B"))
    scaled = MosModel(ModelConfig(**{**plain.config.__dict__, "label_mean": (3.0, -1.0), "label_std": (2.0, 0.5)})).eval()
    scaled.load_state_dict(plain.state_dict())
    clip = [tone(2.0)]
    with torch.inference_mode():
        a, b = plain(clip), scaled(clip)
    torch.testing.assert_close(b["A"], a["A"] * 2.0 + 3.0)
    torch.testing.assert_close(b["B"], a["B"] * 0.5 - 1.0)


def test_musiceval_mlp_head_shape_and_linear_head():
    mlp = small(head="mlp")
    linears = [m for m in mlp.heads["MOS"] if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 256), (256, 64), (64, 1)]
    assert len(mlp.heads["MOS"]) == 3  # the reference MLP has no activations between its layers
    relu = small(head="mlp", head_activation="relu")
    assert len(relu.heads["MOS"]) == 5
    lin = small(head="linear", projection_dim=16, l2_normalize=True)
    assert [(m.in_features, m.out_features) for m in lin.heads["MOS"]] == [(16, 1)]


def test_l2_normalised_embedding_has_unit_norm():
    model = small(projection_dim=24, l2_normalize=True)
    x, mask = torch.randn(3, 40, 32), torch.ones(3, 40, dtype=torch.bool)
    emb, _ = model.embed(x, mask)
    assert emb.shape == (3, 24)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))


def test_per_axis_streams_feed_their_own_heads():
    model = small(axes=("PQ", "CE"), pooling=PoolingConfig("average"), head="linear")
    with torch.no_grad():
        model.heads["CE"].load_state_dict(model.heads["PQ"].state_dict())
    a, b = torch.randn(2, 10, 32), torch.randn(2, 10, 32)
    mask = torch.ones(2, 10, dtype=torch.bool)
    s1, _ = model.score_frames({"PQ": a, "CE": b}, mask)
    s2, _ = model.score_frames({"PQ": b, "CE": a}, mask)
    torch.testing.assert_close(s1["PQ"], s2["CE"])
    torch.testing.assert_close(s1["CE"], s2["PQ"])
    assert not torch.allclose(s1["PQ"], s1["CE"])


def test_window_mean_weights_windows_by_their_real_length():
    model = small(pooling=PoolingConfig("average"))
    model.backbone.long_audio = "window-mean"
    feats = torch.randn(2, 3, 125, 32)
    mask = torch.ones(2, 3, 125, dtype=torch.bool)
    mask[0, 2, 60:] = False
    mask[1, 1:] = False
    weight = torch.tensor([[1.0, 1.0, 0.5], [0.3, 0.0, 0.0]])
    pred = model.predict(Frames(feats, mask, weight))
    per_window, _ = model.score_frames(feats.reshape(6, 125, 32), mask.reshape(6, 125))
    w = per_window["MOS"].reshape(2, 3)
    torch.testing.assert_close(pred.scores["MOS"][0], (w[0] * weight[0]).sum() / 2.5)
    torch.testing.assert_close(pred.scores["MOS"][1], w[1, 0])
    torch.testing.assert_close(pred.window_scores["MOS"], w)


def test_attention_of_drasp_is_reported_per_segment():
    model = small(pooling=PoolingConfig("drasp", segment_size=25))  # 2 s segments
    pred = model.predict_audio([tone(5.0), tone(25.0)])
    att = pred.attention["MOS"]
    assert att.frames == 25
    assert att.weights.shape == (2, 1, 15)  # 3 windows x 125 frames / 25
    torch.testing.assert_close(att.weights.sum(dim=-1), torch.ones(2, 1))
    assert (att.weights[0, 0, 3:] == 0).all()  # 5 s of audio = 63 frames = 3 segments
    assert model.segment_seconds == 2.0


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"axes": ()}, "axes"),
        ({"axes": ("A", "A")}, "distinct"),
        ({"text_axes": ("TA",)}, "not among the axes"),
        ({"head": "transformer"}, "head must be"),
        ({"label_mean": (1.0, 2.0)}, "one value per axis"),
        ({"label_std": (0.0,), "label_mean": (1.0,)}, "positive"),
        ({"format_version": 99}, "newer"),
    ],
)
def test_bad_model_configs_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig(**kwargs)


def test_text_axes_need_a_text_encoder():
    with pytest.raises(ConfigError, match="text encoder"):
        MosModel(ModelConfig(axes=("MI", "TA"), text_axes=("TA",)))


def test_presets_describe_the_published_designs():
    clap, aes = preset("clap"), preset("aes")
    assert clap.axes == ("MI", "TA") and clap.text_axes == ("TA",)
    assert clap.backbone_projection and clap.l2_normalize and clap.backbone.source.filename.endswith('.pt')
    assert aes.axes == ("CE", "CU", "PC", "PQ") and aes.head == "linear" and not aes.backbone.trainable
    with pytest.raises(ConfigError):
        preset("whisper")
