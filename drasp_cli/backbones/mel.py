"""``mel``: a light backbone with no pretrained weights, fast on a CPU.

Log-mel frames (16 kHz, 20 ms hop, 64 bands) through a small trainable convolutional front end
that downsamples by 4, giving 12.5 frames per second. It is what tests, CI and the offline
default model run on; everything it knows comes from training, so its weights always live in
the drasp checkpoint.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .base import Backbone, BackboneConfig

SAMPLE_RATE = 16_000
HOP = 320  # 20 ms STFT hop
N_FFT = 1024  # 64 ms analysis window
STRIDE = 4  # two stride-2 convolutions
WINDOW_SECONDS = 10.0  # frames are computed per 10 s window, so memory stays flat for long files
LOG_FLOOR = 1e-5  # mel power floor before the log (-100 dB)


class MelBackbone(Backbone):
    """Log-mel spectrogram + 2-layer strided CNN; options ``dim`` (feature size, default 128),
    ``channels`` (hidden channels, default 128) and ``n_mels`` (default 64)."""

    name = "mel"
    description = "log-mel + small CNN, no pretrained weights (fast, offline)"
    long_audio = "concat"

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__(config)
        opts = {"dim": 128, "channels": 128, "n_mels": 64, **config.options}
        self.dim, n_mels, channels = int(opts["dim"]), int(opts["n_mels"]), int(opts["channels"])
        import librosa  # only for the filterbank; cheap next to torch

        fb = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=n_mels, fmin=0.0, fmax=SAMPLE_RATE / 2)
        self.register_buffer("filterbank", torch.from_numpy(fb.astype(np.float32)), persistent=False)
        self.register_buffer("stft_window", torch.hann_window(N_FFT), persistent=False)
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
        return SAMPLE_RATE

    @property
    def frame_rate(self) -> float:
        return SAMPLE_RATE / (HOP * STRIDE)

    @property
    def feature_dim(self) -> int:
        return self.dim

    @property
    def window_seconds(self) -> float:
        return WINDOW_SECONDS

    def frozen_state_keys(self) -> list[str]:
        return []  # no pretrained source: every weight is trained and saved

    def log_mel(self, windows: torch.Tensor) -> torch.Tensor:
        """``(W, N)`` audio -> ``(W, n_mels, N // HOP)`` log-mel power."""
        spec = torch.stft(
            windows, N_FFT, hop_length=HOP, window=self.stft_window, center=True, pad_mode="constant", return_complex=True
        )  # (W, F, N // HOP + 1)
        power = spec[..., : windows.shape[-1] // HOP].abs().square()  # (W, F, N // HOP)
        return torch.log10(torch.matmul(self.filterbank, power).clamp(min=LOG_FLOOR))  # (W, M, N // HOP)

    def encode(self, windows: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mel = self.log_mel(windows)
        feats = self.frontend(mel).transpose(1, 2)  # (W, T, D)
        return self.norm(feats), self.window_frame_mask(lengths)
