"""Temporal pooling: every method of the DRASP paper's Table I, ``(x, mask) -> vector``.

All methods take frame features ``x`` ``(B, T, D)`` and a validity mask ``(B, T)`` (True = a
real frame) and return ``(B, out_dim)``. Padding never changes a result: frames marked invalid
get zero weight everywhere (masked means, a masked softmax, segments that average their valid
frames only), and a row without a single valid frame gives finite zeros instead of NaN.

Standard deviations are ``sqrt(max(var, VAR_EPS))``: the clamp keeps the value finite and makes
the gradient zero (not infinite) when a feature is constant over time.

>>> x, mask = torch.randn(2, 10, 8), torch.ones(2, 10, dtype=torch.bool)
>>> [build_pooling(PoolingConfig(m), 8)(x, mask).shape[1] for m in POOLINGS]
[8, 16, 8, 16, 16, 16, 8, 32]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from .errors import ConfigError

VAR_EPS = 1e-8  # variance floor before the square root (std floor 1e-4)


@dataclass(frozen=True)
class PoolingConfig:
    """Settings of a pooling layer; each method reads the fields it needs."""

    method: str = "drasp"  # one of POOLINGS
    segment_size: int = 4  # frames per segment (segmental methods), counted in the backbone's distinct frames
    attention_dim: int | None = None  # hidden size of the attention scorer's W; None = the feature size, as the paper's code
    heads: int = 4  # attention heads of the multi-head methods
    temperatures: tuple[float, ...] | None = None  # softmax temperature per head (multi-resolution); None = 1, 2, 4, ...

    def __post_init__(self) -> None:
        if self.method not in POOLINGS:
            raise ConfigError(f"unknown pooling {self.method!r}; choose one of {', '.join(POOLINGS)}")
        if self.segment_size < 1:
            raise ConfigError(f"segment_size must be at least 1 frame, got {self.segment_size}")
        if self.heads < 1:
            raise ConfigError(f"heads must be at least 1, got {self.heads}")
        if self.temperatures is not None:
            object.__setattr__(self, "temperatures", tuple(float(t) for t in self.temperatures))
            if len(self.temperatures) != self.heads or min(self.temperatures) <= 0:
                raise ConfigError(f"temperatures must be {self.heads} positive numbers (one per head), got {self.temperatures}")


@dataclass
class Attention:
    """Where an attentive pooling looked: ``weights`` ``(B, S)`` over units of ``frames``
    frames each (1 for frame-level attention), summing to 1 over a row's valid units."""

    weights: torch.Tensor
    frames: int


# -- masked building blocks ------------------------------------------------------------------------


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Softmax of ``scores`` over ``dim`` with invalid positions at exactly zero weight.

    A row with no valid position gives all zeros (not NaN).

    >>> masked_softmax(torch.tensor([[1.0, 2.0, 9.0]]), torch.tensor([[True, True, False]]))
    tensor([[0.2689, 0.7311, 0.0000]])
    """
    floor = torch.finfo(scores.dtype).min
    weights = torch.softmax(scores.masked_fill(~mask, floor), dim=dim)
    return weights * mask.to(weights.dtype)  # an all-invalid row was uniform: zero it


def weighted_stats(x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean and standard deviation over time (eq. 4 of the paper).

    ``x`` ``(B, T, D)``, ``w`` ``(B, T)`` summing to 1 (or 0 for an empty row). The variance is
    taken as ``sum w (x - mu)^2``, equal to eq. 4's ``sum w x^2 - mu^2`` but without its
    cancellation error.
    """
    w = w.unsqueeze(-1)  # (B, T, 1)
    mu = (w * x).sum(dim=1)  # (B, D)
    var = (w * (x - mu.unsqueeze(1)).square()).sum(dim=1)  # (B, D)
    return mu, var.clamp(min=VAR_EPS).sqrt()


def uniform_weights(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``(B, T)`` weights 1/n on a row's n valid frames (zeros for an empty row)."""
    m = mask.to(dtype)
    return m / m.sum(dim=1, keepdim=True).clamp(min=1)


def segment(x: torch.Tensor, mask: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Segment-wise average pooling (eq. 1): non-overlapping segments of ``n`` frames.

    Returns segments ``(B, S, D)``, S = ceil(T / n), each the mean of its valid frames, and their
    mask ``(B, S)`` (a segment is valid when it holds at least one valid frame).

    >>> s, m = segment(torch.arange(5.0).reshape(1, 5, 1), torch.tensor([[1, 1, 1, 1, 0]]).bool(), 2)
    >>> s.flatten().tolist(), m.tolist()
    ([0.5, 2.5, 0.0], [[True, True, False]])
    """
    b, t, d = x.shape
    s = -(-t // n)
    pad = s * n - t
    if pad:
        x = torch.nn.functional.pad(x, (0, 0, 0, pad))  # (B, S*n, D)
        mask = torch.nn.functional.pad(mask, (0, pad), value=False)  # (B, S*n)
    m = mask.to(x.dtype).reshape(b, s, n, 1)  # (B, S, n, 1)
    # where() rather than multiplication, so non-finite values in padding cannot leak (0 * inf = nan)
    summed = torch.where(m.bool(), x.reshape(b, s, n, d), 0).sum(dim=2)  # (B, S, D)
    count = m.sum(dim=2)  # (B, S, 1)
    return summed / count.clamp(min=1), count.squeeze(-1) > 0


def zero_invalid(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` with invalid frames set to 0, so that zero weights mean zero contribution even
    when padding holds inf or NaN."""
    return torch.where(mask.unsqueeze(-1), x, 0)


class AttentionScorer(nn.Module):
    """``z = v^T tanh(W a + b)`` (eq. 2), one score per frame or segment.

    With ``heads`` > 1, one ``v`` per head over a shared ``W`` gives ``(B, T, heads)``.
    """

    def __init__(self, dim: int, hidden: int | None = None, heads: int = 1) -> None:
        super().__init__()
        hidden = hidden or dim
        self.proj = nn.Linear(dim, hidden)  # W, b
        self.v = nn.Linear(hidden, heads, bias=False)  # v (one column per head)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return self.v(torch.tanh(self.proj(a)))  # (B, T, heads)


# -- the methods ---------------------------------------------------------------------------------


class Pooling(nn.Module):
    """Base class: subclasses implement ``pool``; ``forward`` returns the vector only."""

    name: ClassVar[str]
    summary: ClassVar[str]
    attentive: ClassVar[bool] = False

    def __init__(self, dim: int, config: PoolingConfig) -> None:
        super().__init__()
        self.in_dim = dim
        self.config = config
        self.out_dim = dim

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.pool(x, mask)[0]

    def pool(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, Attention | None]:
        """The pooled vector ``(B, out_dim)`` and, for attentive methods, the attention map."""
        raise NotImplementedError


class AveragePooling(Pooling):
    """mu = mean of the valid frames."""

    name = "average"
    summary = "mean of the frames (AudioBox-Aesthetics' own pooling)"

    def pool(self, x, mask):
        x = zero_invalid(x, mask)
        w = uniform_weights(mask, x.dtype).unsqueeze(-1)  # (B, T, 1)
        return (w * x).sum(dim=1), None


class StatisticsPooling(Pooling):
    """[mu; sigma] over the valid frames (Snyder et al. 2017)."""

    name = "statistics"
    summary = "mean and standard deviation of the frames, [mu; sigma] (Snyder et al. 2017)"

    def __init__(self, dim, config):
        super().__init__(dim, config)
        self.out_dim = 2 * dim

    def pool(self, x, mask):
        x = zero_invalid(x, mask)
        mu, sigma = weighted_stats(x, uniform_weights(mask, x.dtype))
        return torch.cat([mu, sigma], dim=-1), None


class AttentivePooling(Pooling):
    """Self-attentive pooling: sum_t w_t a_t, w = softmax_t(v^T tanh(W a_t + b))."""

    name = "attentive"
    summary = "attention-weighted mean of the frames (self-attentive pooling)"
    attentive = True

    def __init__(self, dim, config):
        super().__init__(dim, config)
        self.scorer = AttentionScorer(dim, config.attention_dim)

    def pool(self, x, mask):
        x = zero_invalid(x, mask)
        w = masked_softmax(self.scorer(x).squeeze(-1), mask)  # (B, T)
        return (w.unsqueeze(-1) * x).sum(dim=1), Attention(w, 1)


class AttentiveStatisticsPooling(Pooling):
    """Attentive statistics pooling (Okabe et al. 2018): [mu~; sigma~] with frame attention."""

    name = "attentive-statistics"
    summary = "attention-weighted mean and std of the frames (Okabe et al. 2018)"
    attentive = True

    def __init__(self, dim, config):
        super().__init__(dim, config)
        self.out_dim = 2 * dim
        self.scorer = AttentionScorer(dim, config.attention_dim)

    def pool(self, x, mask):
        x = zero_invalid(x, mask)
        w = masked_softmax(self.scorer(x).squeeze(-1), mask)  # (B, T)
        mu, sigma = weighted_stats(x, w)
        return torch.cat([mu, sigma], dim=-1), Attention(w, 1)


class SegmentalAttentiveStatisticsPooling(Pooling):
    """Segmental attentive statistics pooling, the DRASP paper's local branch (eqs. 1-4).

    a_s = mean of segment s's valid frames (segments of n frames), z_s = v^T tanh(W a_s + b),
    w = softmax_s(z), output [mu~; sigma~] = weighted mean and std of the a_s.
    """

    name = "segmental-attentive-statistics"
    summary = "attention over segments of n frames, weighted mean and std of the segments (eqs. 1-4)"
    attentive = True

    def __init__(self, dim, config):
        super().__init__(dim, config)
        self.out_dim = 2 * dim
        self.scorer = AttentionScorer(dim, config.attention_dim)

    def pool(self, x, mask):
        seg, seg_mask = segment(x, mask, self.config.segment_size)  # (B, S, D), (B, S)
        w = masked_softmax(self.scorer(seg).squeeze(-1), seg_mask)  # (B, S)
        mu, sigma = weighted_stats(seg, w)
        return torch.cat([mu, sigma], dim=-1), Attention(w, self.config.segment_size)


class DRASP(Pooling):
    """Dual-Resolution Attentive Statistics Pooling (eq. 5).

    p = alpha [mu; sigma] + beta [mu~; sigma~]: global statistics of the frames plus segmental
    attentive statistics, fused by trainable scalars alpha (initially 1) and beta (initially 0).

    >>> pool = DRASP(8, PoolingConfig("drasp", segment_size=2))
    >>> pool(torch.randn(3, 7, 8), torch.ones(3, 7, dtype=torch.bool)).shape
    torch.Size([3, 16])
    """

    name = "drasp"
    summary = "DRASP: alpha [mu; sigma] + beta [segmental attentive mu~; sigma~] (the paper's method)"
    attentive = True

    def __init__(self, dim, config):
        super().__init__(dim, config)
        self.out_dim = 2 * dim
        self.global_branch = StatisticsPooling(dim, config)
        self.segment_branch = SegmentalAttentiveStatisticsPooling(dim, config)
        self.alpha = nn.Parameter(torch.tensor(1.0))
        self.beta = nn.Parameter(torch.tensor(0.0))

    def pool(self, x, mask):
        coarse, _ = self.global_branch.pool(x, mask)  # (B, 2D)
        fine, attention = self.segment_branch.pool(x, mask)  # (B, 2D)
        return self.alpha * coarse + self.beta * fine, attention


class MultiHeadAttentivePooling(Pooling):
    """Self multi-head attention pooling (India et al. 2019).

    The features are split into H heads of D/H; head h weighs frames by
    softmax_t(u_h^T a_{t,h} / sqrt(D/H)) and returns its weighted mean; the heads are concatenated.
    """

    name = "multi-head-attentive"
    summary = "features split into H heads, each with its own frame attention (India et al. 2019)"
    attentive = True

    def __init__(self, dim, config):
        super().__init__(dim, config)
        if dim % config.heads:
            raise ConfigError(f"multi-head-attentive needs the feature size {dim} to be divisible by heads={config.heads}")
        self.heads = config.heads
        self.u = nn.Parameter(torch.empty(config.heads, dim // config.heads))
        nn.init.xavier_uniform_(self.u)

    def pool(self, x, mask):
        b, t, d = x.shape
        x = zero_invalid(x, mask)
        xh = x.reshape(b, t, self.heads, d // self.heads)  # (B, T, H, D/H)
        scores = (xh * self.u).sum(-1) / (d // self.heads) ** 0.5  # (B, T, H)
        w = masked_softmax(scores, mask.unsqueeze(-1), dim=1)  # (B, T, H)
        pooled = (w.unsqueeze(-1) * xh).sum(dim=1)  # (B, H, D/H)
        return pooled.reshape(b, d), Attention(w.mean(dim=-1), 1)


class MultiResolutionAttentivePooling(Pooling):
    """Multi-resolution multi-head attentive pooling (Wang et al. 2020).

    H heads score the frames with z_{t,h} = v_h^T tanh(W a_t + b) over a shared W and use
    different softmax temperatures T_h, w_h = softmax_t(z_h / T_h): low temperatures give
    sharp attention, high ones a broad view. The heads' weighted means are concatenated.
    """

    name = "multi-resolution-attentive"
    summary = "H attention heads with different softmax temperatures, concatenated (Wang et al. 2020)"
    attentive = True

    def __init__(self, dim, config):
        super().__init__(dim, config)
        self.out_dim = config.heads * dim
        temps = config.temperatures or tuple(2.0**h for h in range(config.heads))
        self.register_buffer("temperatures", torch.tensor(temps), persistent=False)
        self.scorer = AttentionScorer(dim, config.attention_dim, heads=config.heads)

    def pool(self, x, mask):
        b = x.shape[0]
        x = zero_invalid(x, mask)
        scores = self.scorer(x) / self.temperatures.to(x.dtype)  # (B, T, H)
        w = masked_softmax(scores, mask.unsqueeze(-1), dim=1)  # (B, T, H)
        pooled = torch.einsum("bth,btd->bhd", w, x)  # (B, H, D)
        return pooled.reshape(b, -1), Attention(w.mean(dim=-1), 1)


POOLINGS: dict[str, type[Pooling]] = {
    cls.name: cls
    for cls in (
        AveragePooling,
        StatisticsPooling,
        AttentivePooling,
        AttentiveStatisticsPooling,
        SegmentalAttentiveStatisticsPooling,
        DRASP,
        MultiHeadAttentivePooling,
        MultiResolutionAttentivePooling,
    )
}


def build_pooling(config: PoolingConfig, dim: int) -> Pooling:
    """The pooling layer ``config`` describes, for ``dim``-dimensional frames."""
    return POOLINGS[config.method](dim, config)
