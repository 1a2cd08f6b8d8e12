"""The backbone interface: audio in, frame features with a validity mask out.

A backbone is built cheaply from a :class:`BackboneConfig` (name, sample rate, frame rate and
feature size are known at once, so ``drasp --help`` and config validation never load a model);
``load()`` does the heavy imports and reads the pretrained weights.

Audio of any length is cut into the backbone's fixed windows (``prepare``), each window is
encoded to frames (``encode``), and the frames come back with a window axis so the model can
either pool all windows' frames together (``concat``) or score each window and average the
window scores weighted by each window's real length (``window-mean``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError

LongAudio = Literal["concat", "window-mean"]


@dataclass(frozen=True)
class WeightsSource:
    """Where a pretrained backbone's weights come from, recorded instead of copying them.

    Either ``path`` (a local file) or ``repo_id`` + ``filename`` (a Hugging Face Hub file,
    resolved through ``huggingface_hub`` and its cache).
    """

    repo_id: str | None = None  # Hub repository, e.g. "lukewys/laion_clap"
    filename: str | None = None  # file inside the repository
    revision: str | None = None  # branch, tag or commit; None = the default branch
    sha256: str | None = None  # expected digest of the file; checked when set
    path: str | None = None  # a local file, used instead of the Hub when set


@dataclass(frozen=True)
class BackboneConfig:
    """Which backbone, in which variant, with which weights."""

    name: str = "mel"  # registry name: "mel", "clap", "aes"
    variant: str | None = None  # backbone-specific variant, e.g. "HTSAT-base"; None = its default
    options: dict[str, Any] = field(default_factory=dict)  # backbone-specific settings
    source: WeightsSource | None = None  # pretrained weights; None = random init (or trained, in the checkpoint)
    trainable: bool = True  # False: frozen, so its weights stay out of model.safetensors


@dataclass
class Frames:
    """Frame features of a batch of clips, with a window axis.

    ``features`` is ``(B, W, T, D)``, or a dict of such tensors, one per output axis, for a
    backbone with per-axis streams. ``mask`` is ``(B, W, T)``, True for a real frame.
    ``window_weight`` is ``(B, W)``: each window's share of real audio (0 for a window that
    only pads the batch), the weights of a ``window-mean``.
    """

    features: torch.Tensor | dict[str, torch.Tensor]
    mask: torch.Tensor
    window_weight: torch.Tensor


class Backbone(nn.Module):
    """Base class of every backbone.

    Subclasses set the class attributes, build their network in ``load`` (or in the
    constructor when it is cheap) and implement ``encode``.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    long_audio: ClassVar[LongAudio] = "concat"

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.config = config
        self.loaded = False

    # -- facts known without loading -------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        raise NotImplementedError

    @property
    def frame_rate(self) -> float:
        """Distinct frames per second of audio."""
        raise NotImplementedError

    @property
    def feature_dim(self) -> int:
        raise NotImplementedError

    @property
    def window_seconds(self) -> float:
        raise NotImplementedError

    @property
    def window_samples(self) -> int:
        return int(round(self.window_seconds * self.sample_rate))

    @property
    def frames_per_window(self) -> int:
        return int(round(self.window_seconds * self.frame_rate))

    @property
    def streams(self) -> tuple[str, ...] | None:
        """Names of per-axis frame streams, or None for one stream shared by all axes."""
        return None

    @property
    def embedding_dim(self) -> int | None:
        """Size of ``audio_projection``'s output (and of ``text_embedding``), if it has one."""
        return None

    @property
    def has_text(self) -> bool:
        return False

    # -- heavy part ------------------------------------------------------------------------
    def load(self, pretrained: bool = True) -> None:
        """Import the backbone's package and build its network; with ``pretrained``, also read
        the weights named by ``config.source`` (skipped when a checkpoint stores them)."""
        self.loaded = True

    def frozen_state_keys(self) -> list[str]:
        """State-dict keys (relative to the backbone) that come from ``config.source``.

        A checkpoint leaves them out when the backbone is not trainable.
        """
        return list(self.state_dict().keys())

    # -- audio -> windows --------------------------------------------------------------------
    def prepare(self, signal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cut a mono signal at ``sample_rate`` into windows.

        Returns ``windows`` ``(W, window_samples)`` float32, zero-padded, and ``lengths``
        ``(W,)``: the real samples in each window. The default is non-overlapping windows, the
        last one zero-padded; a clip of zero samples gives one empty window.
        """
        return cut_windows(signal, self.window_samples)

    def encode(
        self, windows: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor | dict[str, torch.Tensor], torch.Tensor]:
        """Encode windows ``(W, window_samples)`` to features ``(W, T, D)`` (or a dict of them
        per stream) and a frame mask ``(W, T)``, T = ``frames_per_window``."""
        raise NotImplementedError

    def window_frame_mask(self, lengths: torch.Tensor) -> torch.Tensor:
        """``(W, T)`` mask of the frames that start inside the real audio of each window."""
        t = self.frames_per_window
        valid = torch.ceil(lengths.to(torch.float64) * self.frame_rate / self.sample_rate)
        valid = valid.clamp(max=t).long()
        return torch.arange(t, device=lengths.device)[None, :] < valid[:, None]

    # -- batch of clips -> Frames ------------------------------------------------------------------
    def forward(self, signals: list[np.ndarray]) -> Frames:
        """Frames of a batch of mono signals at ``sample_rate`` (any lengths)."""
        return self.encode_clips([self.prepare(s) for s in signals])

    def encode_clips(self, clips: list[tuple[np.ndarray, np.ndarray]]) -> Frames:
        """Frames of clips already cut into windows: ``[(windows (W_i, N), lengths (W_i,)), ...]``.

        Clips with fewer windows are padded with empty windows (all frames masked, weight 0).
        """
        n_windows = max(w.shape[0] for w, _ in clips)
        device = next(self.parameters(), torch.empty(0)).device
        windows = np.zeros((len(clips), n_windows, self.window_samples), dtype=np.float32)
        lengths = np.zeros((len(clips), n_windows), dtype=np.int64)
        for i, (w, n) in enumerate(clips):
            windows[i, : w.shape[0]] = w
            lengths[i, : n.shape[0]] = n
        flat = torch.from_numpy(windows.reshape(-1, self.window_samples)).to(device)  # (B*W, N)
        flat_len = torch.from_numpy(lengths.reshape(-1)).to(device)  # (B*W,)
        feats, mask = self.encode(flat, flat_len)
        b = len(clips)

        def unflat(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(b, n_windows, *x.shape[1:])  # (B, W, T, D)

        if isinstance(feats, dict):
            feats = {k: unflat(v) for k, v in feats.items()}
        else:
            feats = unflat(feats)
        mask = unflat(mask) & (unflat(flat_len) > 0)[..., None]  # padding windows: no valid frame
        weight = torch.from_numpy(lengths / self.window_samples).to(device=device, dtype=torch.float32)
        return Frames(features=feats, mask=mask, window_weight=weight)

    # -- optional: projection and text -------------------------------------------------------------
    def audio_projection(self, x: torch.Tensor) -> torch.Tensor:
        """Project a ``(B, feature_dim)`` audio vector into the backbone's joint space."""
        raise ConfigError(f"backbone {self.name!r} has no audio projection")

    def text_embedding(self, texts: list[str]) -> torch.Tensor:
        """``(B, embedding_dim)`` text embeddings, L2-normalised."""
        raise ConfigError(f"backbone {self.name!r} has no text encoder; use a model without text axes")


def cut_windows(signal: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut ``signal`` into non-overlapping windows of ``window`` samples, the last zero-padded.

    >>> w, n = cut_windows(np.ones(25, dtype=np.float32), 10)
    >>> w.shape, n.tolist()
    ((3, 10), [10, 10, 5])
    """
    n_windows = max(1, math.ceil(len(signal) / window))
    out = np.zeros((n_windows, window), dtype=np.float32)
    flat = out.reshape(-1)
    flat[: len(signal)] = signal
    lengths = np.clip(len(signal) - window * np.arange(n_windows), 0, window)
    return out, lengths.astype(np.int64)
