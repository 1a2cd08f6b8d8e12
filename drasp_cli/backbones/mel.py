"""``mel``: a light backbone with no pretrained weights, fast on a CPU.

Log-mel frames (16 kHz by default, 20 ms hop, 64 bands) through a small trainable convolutional front end
that downsamples by 4, giving 12.5 frames per second. It is what tests, CI and the offline
default model run on; everything it knows comes from training, so its weights always live in
the drasp checkpoint.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .base import Backbone, BackboneConfig

SAMPLE_RATE = 16_000  # default rate; option "sample_rate" raises it to hear above 8 kHz
FRAME_SECONDS = 0.02  # 20 ms STFT hop
FFT_SECONDS = 0.064  # analysis window of about 64 ms (rounded up to a power of two)
STRIDE = 4  # two stride-2 convolutions: 12.5 frames per second
WINDOW_SECONDS = 10.0  # frames are computed per 10 s window, so memory stays flat for long files
LOG_FLOOR = 1e-5  # mel power floor before the log (-100 dB)
LOG_CENTER, LOG_SCALE = -4.0, 2.0  # (log10 power - center) / scale puts typical music near [-1, 1]


class MelBackbone(Backbone):
    """Log-mel spectrogram + 2-layer strided CNN; options ``dim`` (feature size, default 128),
    ``channels`` (hidden channels, default 128), ``n_mels`` (default 64) and ``sample_rate``
    (default 16000; 48000 hears codec and band-limit artefacts above 8 kHz)."""

    name = "mel"
    description = "log-mel + small CNN, no pretrained weights (fast, offline)"
    long_audio = "concat"

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__(config)
        opts = {"dim": 128, "channels": 128, "n_mels": 64, "sample_rate": SAMPLE_RATE, **config.options}
        self.dim, n_mels, channels = int(opts["dim"]), int(opts["n_mels"]), int(opts["channels"])
        self.rate = int(opts["sample_rate"])
        self.hop = int(round(self.rate * FRAME_SECONDS))
        self.n_fft = 1 << math.ceil(math.log2(self.rate * FFT_SECONDS))
        import librosa  # only for the filterbank; cheap next to torch

        fb = librosa.filters.mel(sr=self.rate, n_fft=self.n_fft, n_mels=n_mels, fmin=0.0, fmax=self.rate / 2)
        self.register_buffer("filterbank", torch.from_numpy(fb.astype(np.float32)), persistent=False)
        self.register_buffer("stft_window", torch.hann_window(self.n_fft), persistent=False)
        self.frontend = nn.Sequential(
            nn.Conv1d(n_mels, channels, kernel_size=5, stride=2, padding=2),
            nn.GELU(),
            nn.Conv1d(channels, self.dim, kernel_size=5, stride=2, padding=2),
            nn.GELU(),
        )
        self.norm = nn.LayerNorm(self.dim)
        self.loaded = True  # nothing heavy to load

    @property
    def sample_rate(self) -> int:
        return self.rate

    @property
    def frame_rate(self) -> float:
        return 1.0 / (FRAME_SECONDS * STRIDE)

    @property
    def feature_dim(self) -> int:
        return self.dim

    @property
    def window_seconds(self) -> float:
        return WINDOW_SECONDS

    def frozen_state_keys(self) -> list[str]:
        return []  # no pretrained source: every weight is trained and saved

    def log_mel(self, windows: torch.Tensor) -> torch.Tensor:
        """``(W, N)`` audio -> ``(W, n_mels, N // hop)`` log-mel power, scaled to about [-1, 1]."""
        spec = torch.stft(
            windows, self.n_fft, hop_length=self.hop, window=self.stft_window, center=True, pad_mode="constant",
            return_complex=True,
        )  # (W, F, N // hop + 1)
        power = spec[..., : windows.shape[-1] // self.hop].abs().square()  # (W, F, N // hop)
        log = torch.log10(torch.matmul(self.filterbank, power).clamp(min=LOG_FLOOR))  # (W, M, N // hop)
        return (log - LOG_CENTER) / LOG_SCALE

    def encode(self, windows: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mel = self.log_mel(windows)
        feats = self.frontend(mel).transpose(1, 2)  # (W, T, D)
        return self.norm(feats), self.window_frame_mask(lengths)
