"""The MOS predictor: backbone frames -> pooling -> projection -> one head per output axis.

One frozen :class:`ModelConfig` describes the whole network, so that both published designs are
configurations of the same class:

* MusicEval / DRASP (CLAP): pooled -> Linear -> CLAP ``audio_projection`` -> L2 norm -> an MLP
  head per axis (-> 256 -> 64 -> 1); the TA head takes ``[audio; text]``.
* AudioBox-Aesthetics: per-axis frame streams -> pooling -> L2 norm -> one linear layer per
  axis, de-normalised with per-axis label statistics.

The model is a :class:`huggingface_hub.PyTorchModelHubMixin`, so a checkpoint is the Hub layout
``config.json`` + ``model.safetensors`` + ``README.md`` (see :mod:`drasp_cli.checkpoint`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from .backbones import build_backbone
from .backbones.base import BackboneConfig, Frames, WeightsSource
from .config import config_from_dict, config_to_dict
from .errors import ConfigError
from .pooling import Attention, PoolingConfig, build_pooling

FORMAT_VERSION = 1  # of config.json + model.safetensors; bumped when the layout changes
CLAP_RELEASE = ("lukewys/laion_clap", "music_audioset_epoch_15_esc_90.14.pt")  # HTSAT-base, as MusicEval and the paper
AES_RELEASE = ("facebook/audiobox-aesthetics", "checkpoint.pt")  # Meta's released AudioBox-Aesthetics
HEADS = ("mlp", "linear")
ACTIVATIONS = {"none": nn.Identity, "relu": nn.ReLU, "gelu": nn.GELU}


@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines a drasp model's network and output scale."""

    axes: tuple[str, ...] = ("MOS",)  # names of the predicted scores, e.g. ("MI", "TA") or ("PQ", "PC", "CE", "CU")
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    pooling: PoolingConfig = field(default_factory=PoolingConfig)
    projection_dim: int | None = None  # Linear(pooled -> projection_dim) after pooling; None = none (with backbone_projection: to its width)
    backbone_projection: bool = False  # then the backbone's own audio projection (CLAP's audio_projection)
    l2_normalize: bool = False  # L2-normalise the audio embedding before the heads
    head: str = "mlp"  # "mlp" (MusicEval: -> 256 -> 64 -> 1) or "linear" (AudioBox-Aesthetics: -> 1)
    head_hidden: tuple[int, ...] = (256, 64)  # hidden sizes of the "mlp" head
    head_activation: str = "none"  # between MLP layers; the MusicEval/DRASP reference code uses none
    text_axes: tuple[str, ...] = ()  # axes whose head takes [audio; text embedding], e.g. ("TA",)
    label_mean: tuple[float, ...] | None = None  # per axis; predictions = head * std + mean
    label_std: tuple[float, ...] | None = None
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        for name in ("axes", "text_axes", "head_hidden"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.axes or len(set(self.axes)) != len(self.axes):
            raise ConfigError(f"axes must be distinct names, got {list(self.axes)}")
        if unknown := set(self.text_axes) - set(self.axes):
            raise ConfigError(f"text_axes {sorted(unknown)} are not among the axes {list(self.axes)}")
        if self.head not in HEADS:
            raise ConfigError(f"head must be one of {', '.join(HEADS)}, got {self.head!r}")
        if self.head_activation not in ACTIVATIONS:
            raise ConfigError(f"head_activation must be one of {', '.join(ACTIVATIONS)}, got {self.head_activation!r}")
        for name in ("label_mean", "label_std"):
            value = getattr(self, name)
            if value is not None:
                value = tuple(float(v) for v in value)
                object.__setattr__(self, name, value)
                if len(value) != len(self.axes):
                    raise ConfigError(f"{name} needs one value per axis ({len(self.axes)}), got {len(value)}")
        if self.label_std is not None and min(self.label_std) <= 0:
            raise ConfigError(f"label_std must be positive, got {list(self.label_std)}")
        if self.format_version > FORMAT_VERSION:
            raise ConfigError(
                f"format_version {self.format_version} is newer than this drasp understands ({FORMAT_VERSION}); upgrade drasp"
            )

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return config_from_dict(cls, data, "config.json")


@dataclass
class Prediction:
    """Scores per axis ``(B,)`` on the label scale, with what the pooling looked at.

    ``attention`` (attentive poolings only) holds, per axis, the weights ``(B, W, S)`` of each
    window's segments (for ``concat`` backbones W = 1 and S spans all windows' frames);
    ``window_scores`` holds per-axis ``(B, W)`` scores of each window (``window-mean`` only).
    """

    scores: dict[str, torch.Tensor]
    attention: dict[str, Attention] | None = None
    window_scores: dict[str, torch.Tensor] | None = None


def make_head(config: ModelConfig, in_dim: int) -> nn.Sequential:
    """The head of one axis: a linear layer, or the MusicEval MLP in_dim -> 256 -> 64 -> 1."""
    if config.head == "linear":
        return nn.Sequential(nn.Linear(in_dim, 1))
    layers: list[nn.Module] = []
    for hidden in config.head_hidden:
        layers += [nn.Linear(in_dim, hidden), ACTIVATIONS[config.head_activation]()]
        in_dim = hidden
    layers.append(nn.Linear(in_dim, 1))
    return nn.Sequential(*(m for m in layers if not isinstance(m, nn.Identity)))


class MosModel(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="drasp",
    tags=["audio", "mos-prediction", "drasp"],
    repo_url="https://github.com/drasp-project/drasp",
    pipeline_tag="audio-classification",
):
    """A MOS predictor built from one :class:`ModelConfig`.

    >>> model = MosModel(ModelConfig(axes=("MOS",))).eval()
    >>> model.predict_audio([np.zeros(8000, np.float32), np.ones(40000, np.float32) * 0.1]).scores["MOS"].shape
    torch.Size([2])
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = build_backbone(config.backbone)
        streams = self.backbone.streams
        if streams is not None and (missing := set(config.axes) - set(streams)):
            raise ConfigError(f"backbone {config.backbone.name!r} has no frame stream for axes {sorted(missing)}")
        if config.text_axes and not self.backbone.has_text:
            raise ConfigError(f"text_axes need a backbone with a text encoder; {config.backbone.name!r} has none")
        # One pooling layer serves every stream, as in the DRASP reference code for AudioBox-Aesthetics.
        self.pooling = build_pooling(config.pooling, self.backbone.feature_dim)
        dim = self.pooling.out_dim
        # With the backbone's own projection after it, our projection maps back to the backbone's
        # width (the reference code's pooling_proj), unless the config names another size.
        proj_dim = config.projection_dim or (self.backbone.feature_dim if config.backbone_projection else None)
        self.projection = nn.Linear(dim, proj_dim) if proj_dim else None
        dim = proj_dim or dim
        if config.backbone_projection:
            if dim != self.backbone.feature_dim or self.backbone.embedding_dim is None:
                raise ConfigError(
                    f"backbone_projection needs an embedding of the backbone's feature size {self.backbone.feature_dim} "
                    f"and a backbone with a projection; got {dim}"
                )
            dim = self.backbone.embedding_dim
        text_dim = self.backbone.embedding_dim if config.text_axes else 0
        self.heads = nn.ModuleDict(
            {axis: make_head(config, dim + (text_dim if axis in config.text_axes else 0)) for axis in config.axes}
        )
        n = len(config.axes)
        mean = config.label_mean or (0.0,) * n
        std = config.label_std or (1.0,) * n
        self.register_buffer("label_mean", torch.tensor(mean), persistent=False)
        self.register_buffer("label_std", torch.tensor(std), persistent=False)

    # -- pieces ----------------------------------------------------------------------------------
    @property
    def segment_seconds(self) -> float:
        """Duration of one DRASP segment, in seconds of audio."""
        return self.config.pooling.segment_size / self.backbone.frame_rate

    def embed(self, features: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, Attention | None]:
        """Frames ``(B, T, D)`` + mask ``(B, T)`` -> audio embedding ``(B, E)`` and attention."""
        pooled, attention = self.pooling.pool(features, mask)
        if self.projection is not None:
            pooled = self.projection(pooled)
        if self.config.backbone_projection:
            pooled = self.backbone.audio_projection(pooled)
        if self.config.l2_normalize:
            pooled = nn.functional.normalize(pooled, dim=-1)
        return pooled, attention

    def score_frames(
        self, features: torch.Tensor | dict[str, torch.Tensor], mask: torch.Tensor, text: torch.Tensor | None = None
    ) -> tuple[dict[str, torch.Tensor], dict[str, Attention]]:
        """Scores ``(B,)`` per axis (label scale) of frame sequences ``(B, T, D)`` (or one per
        stream) with mask ``(B, T)``; ``text`` ``(B, E)`` for the text axes, which are left out
        when ``text`` is None."""
        scores: dict[str, torch.Tensor] = {}
        attention: dict[str, Attention] = {}
        shared = None
        for i, axis in enumerate(self.config.axes):
            if axis in self.config.text_axes and text is None:
                continue
            if isinstance(features, dict):
                emb, att = self.embed(features[axis], mask)
            else:
                if shared is None:  # one stream for all axes: pool it once
                    shared = self.embed(features, mask)
                emb, att = shared
            if axis in self.config.text_axes:
                emb = torch.cat([emb, text.to(emb.dtype)], dim=-1)
            raw = self.heads[axis](emb).squeeze(-1)  # (B,)
            scores[axis] = raw * self.label_std[i] + self.label_mean[i]
            if att is not None:
                attention[axis] = att
        return scores, attention

    # -- whole clips ------------------------------------------------------------------------------
    def predict(self, frames: Frames, text: torch.Tensor | None = None) -> Prediction:
        """Scores of a batch of clips from their windowed frames (see :class:`Frames`).

        ``concat`` backbones pool all windows' frames of a clip together; ``window-mean``
        backbones score each window and average the scores weighted by each window's share of
        real audio, as AudioBox-Aesthetics' inference does.
        """
        feats, mask = frames.features, frames.mask
        b, w, t = mask.shape

        def flat(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
            return x.reshape(*shape, *x.shape[3:])

        if self.backbone.long_audio == "concat":
            shape = (b, w * t)
            f = {k: flat(v, shape) for k, v in feats.items()} if isinstance(feats, dict) else flat(feats, shape)
            scores, att = self.score_frames(f, mask.reshape(b, w * t), text)  # (B, W*T, D) -> (B,)
            att = {k: Attention(a.weights.unsqueeze(1), a.frames) for k, a in att.items()}  # (B, 1, S)
            return Prediction(scores, att or None)
        shape = (b * w,)
        f = {k: flat(v, shape + (t,)) for k, v in feats.items()} if isinstance(feats, dict) else flat(feats, shape + (t,))
        text_w = text.repeat_interleave(w, dim=0) if text is not None else None  # (B*W, E)
        win_scores, att = self.score_frames(f, mask.reshape(b * w, t), text_w)  # (B*W,)
        weight = frames.window_weight.to(mask.device)  # (B, W)
        total = weight.sum(dim=1).clamp(min=torch.finfo(weight.dtype).tiny)
        per_window = {k: v.reshape(b, w) for k, v in win_scores.items()}  # (B, W)
        scores = {k: (v * weight).sum(dim=1) / total for k, v in per_window.items()}
        att = {k: Attention(a.weights.reshape(b, w, -1), a.frames) for k, a in att.items()}  # (B, W, S)
        return Prediction(scores, att or None, per_window)

    def predict_audio(self, signals: list[np.ndarray], texts: list[str] | None = None) -> Prediction:
        """Scores of mono signals at the backbone's sample rate (any lengths)."""
        text = self.backbone.text_embedding(texts) if self.config.text_axes and texts is not None else None
        return self.predict(self.backbone(signals), text)

    def forward(self, signals: list[np.ndarray], texts: list[str] | None = None) -> dict[str, torch.Tensor]:
        return self.predict_audio(signals, texts).scores

    # -- checkpoint hooks (huggingface_hub) ------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """The tensors a checkpoint stores: everything but a frozen backbone's pretrained weights."""
        state = self.state_dict()
        if not self.config.backbone.trainable and self.config.backbone.source is not None:
            for key in self.backbone.frozen_state_keys():
                state.pop(f"backbone.{key}", None)
        return state

    def _save_pretrained(self, save_directory) -> None:
        from .checkpoint import write_checkpoint

        write_checkpoint(self, save_directory)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: str | None, config: Any = None, map_location: str = "cpu", **_: Any):
        from .checkpoint import read_checkpoint

        return read_checkpoint(model_id, revision=revision, device=map_location)


def preset(name: str, axes: tuple[str, ...] | None = None, **overrides: Any) -> ModelConfig:
    """The published designs as configs: ``clap`` (MusicEval/DRASP), ``aes``
    (AudioBox-Aesthetics), and ``mel`` (the light offline backbone).

    ``axes`` renames the outputs for other data; a text axis is kept only if it is among them.

    >>> preset("clap").axes, preset("aes").head, preset("mel").pooling.method
    (('MI', 'TA'), 'linear', 'drasp')
    >>> preset("clap", axes=("MOS",)).text_axes
    ()
    """
    if name == "clap":
        base = ModelConfig(
            axes=("MI", "TA"),
            backbone=BackboneConfig(name="clap", variant="HTSAT-base", source=WeightsSource(*CLAP_RELEASE)),
            backbone_projection=True,  # pooled -> Linear to HTSAT's width -> CLAP's audio_projection
            l2_normalize=True,
            head="mlp",
            text_axes=("TA",),
        )
    elif name == "aes":
        base = ModelConfig(
            axes=("CE", "CU", "PC", "PQ"),
            backbone=BackboneConfig(name="aes", trainable=False, source=WeightsSource(*AES_RELEASE)),
            l2_normalize=True,
            head="linear",
        )
        pooling = overrides.get("pooling", base.pooling)
        if pooling.method != "average" and "projection_dim" not in overrides:
            # As the DRASP reference code: pooled -> Linear back to WavLM's width, so the heads stay 768 -> 1.
            overrides["projection_dim"] = 768
    elif name == "mel":
        base = ModelConfig(axes=("MOS",), backbone=BackboneConfig(name="mel"), head="mlp", head_activation="relu")
    else:
        raise ConfigError(f"unknown preset {name!r}; choose clap, aes or mel")
    if axes is not None:
        base = replace(base, axes=tuple(axes), text_axes=tuple(a for a in base.text_axes if a in axes))
    return replace(base, **overrides)



def from_aes_release(source: WeightsSource | None = None, pooling: PoolingConfig | None = None) -> MosModel:
    """Meta's released AudioBox-Aesthetics as a drasp model: its WavLM and layer weights, its
    per-axis linear heads and its target statistics. With the default ``average`` pooling it
    scores exactly as Meta's own inference code; other poolings start from Meta's heads.
    """
    from .backbones.aes import aes_head_state

    source = source or WeightsSource(*AES_RELEASE)
    heads = aes_head_state(source)
    pooling = pooling or PoolingConfig("average")
    config = preset(
        "aes",
        pooling=pooling,
        backbone=BackboneConfig(name="aes", trainable=False, source=source),
        l2_normalize=heads.l2_normalize,
        label_mean=tuple(heads.label_mean[a] for a in heads.axes),
        label_std=tuple(heads.label_std[a] for a in heads.axes),
        axes=tuple(heads.axes),
    )
    model = MosModel(config)
    model.backbone.load()
    with torch.no_grad():
        for axis in config.axes:
            model.heads[axis][0].weight.copy_(heads.weight[axis])
            model.heads[axis][0].bias.copy_(heads.bias[axis])
    return model.eval()
