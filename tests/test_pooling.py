"""Every pooling method of Table I: shapes, padding invariance, edge cases, and DRASP re-computed
from the paper's equations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from drasp_cli.errors import ConfigError
from drasp_cli.pooling import DRASP, POOLINGS, PoolingConfig, build_pooling, segment

METHODS = list(POOLINGS)
D = 8


def make(method: str, **kw) -> torch.nn.Module:
    pool = build_pooling(PoolingConfig(method, segment_size=3, **kw), D).eval()
    if isinstance(pool, DRASP):
        # Move beta off zero so the segmental branch shows in the output.
        with torch.no_grad():
            pool.alpha.fill_(0.8)
            pool.beta.fill_(0.6)
    return pool


def test_all_eight_methods_of_table_one_are_registered():
    assert METHODS == [
        "average",
        "statistics",
        "attentive",
        "attentive-statistics",
        "segmental-attentive-statistics",
        "drasp",
        "multi-head-attentive",
        "multi-resolution-attentive",
    ]


@pytest.mark.parametrize("method", METHODS)
def test_output_shape_matches_out_dim(method):
    pool = make(method)
    out = pool(torch.randn(4, 13, D), torch.ones(4, 13, dtype=torch.bool))
    assert out.shape == (4, pool.out_dim)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("garbage", ["random", "huge", "nonfinite"])
def test_padding_never_changes_the_result(method, garbage):
    pool = make(method)
    lengths = [11, 5, 1, 7]
    t_max = 16
    rows = [torch.randn(1, n, D) for n in lengths]
    if garbage == "random":
        fill = torch.randn(len(lengths), t_max, D)
    elif garbage == "huge":
        fill = torch.full((len(lengths), t_max, D), 1e6)
    else:
        fill = torch.full((len(lengths), t_max, D), float("nan"))
        fill[:, ::2] = float("inf")
    x = fill.clone()
    mask = torch.zeros(len(lengths), t_max, dtype=torch.bool)
    for i, (row, n) in enumerate(zip(rows, lengths)):
        x[i, :n] = row[0]
        mask[i, :n] = True
    batched = pool(x, mask)
    for i, (row, n) in enumerate(zip(rows, lengths)):
        alone = pool(row, torch.ones(1, n, dtype=torch.bool))
        torch.testing.assert_close(batched[i : i + 1], alone, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_empty_and_single_frame_rows_are_finite(method):
    pool = make(method)
    x = torch.randn(3, 6, D)
    mask = torch.zeros(3, 6, dtype=torch.bool)
    mask[1, 0] = True  # one valid frame
    mask[2] = True
    out = pool(x, mask)
    assert torch.isfinite(out).all()
    # One valid frame: every weighted mean is that frame, every std is (numerically) zero.
    mean_part = out[1, :D]
    if method == "multi-resolution-attentive":
        torch.testing.assert_close(out[1].reshape(-1, D), x[1, 0].expand(pool.config.heads, D))
    elif method != "drasp":
        torch.testing.assert_close(mean_part, x[1, 0])
        if pool.out_dim == 2 * D:
            assert out[1, D:].abs().max() < 1e-3


@pytest.mark.parametrize("method", METHODS)
def test_gradients_stay_finite_on_constant_input(method):
    pool = make(method).train()
    x = torch.ones(2, 9, D, requires_grad=True)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 4:] = False
    pool(x, mask).sum().backward()
    assert torch.isfinite(x.grad).all()
    for name, p in pool.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name


def test_partial_last_segment_is_the_mean_of_its_valid_frames_only():
    x = torch.tensor([[[1.0], [3.0], [5.0], [7.0], [100.0]]])  # (1, 5, 1)
    mask = torch.tensor([[True, True, True, True, False]])
    seg, seg_mask = segment(x, mask, 3)
    assert seg.flatten().tolist() == [3.0, 7.0]  # (1+3+5)/3, then 7 alone (100 is padding)
    assert seg_mask.tolist() == [[True, True]]


def test_drasp_starts_from_global_statistics():
    pool = build_pooling(PoolingConfig("drasp", segment_size=2), D)
    assert pool.alpha.item() == 1.0 and pool.beta.item() == 0.0
    assert pool.alpha.requires_grad and pool.beta.requires_grad
    stats = build_pooling(PoolingConfig("statistics"), D)
    x, mask = torch.randn(2, 7, D), torch.ones(2, 7, dtype=torch.bool)
    torch.testing.assert_close(pool(x, mask), stats(x, mask))


def drasp_by_the_equations(x: np.ndarray, n: int, W, b, v, alpha, beta, eps=1e-8) -> np.ndarray:
    """DRASP for one unpadded sequence ``x`` (T, d), written from eqs. (1)-(5) with loops."""
    T, d = x.shape
    mu = x.mean(axis=0)
    sigma = np.sqrt(np.maximum((x * x).mean(axis=0) - mu * mu, eps))
    S = math.ceil(T / n)
    segs = [x[s * n : min((s + 1) * n, T)].mean(axis=0) for s in range(S)]  # eq. (1), last one partial
    z = np.array([v @ np.tanh(W @ a + b) for a in segs])  # eq. (2)
    w = np.exp(z - z.max()) / np.exp(z - z.max()).sum()  # eq. (3)
    mu_t = sum(w_s * a for w_s, a in zip(w, segs))  # eq. (4)
    sigma_t = np.sqrt(np.maximum(sum(w_s * a * a for w_s, a in zip(w, segs)) - mu_t * mu_t, eps))
    return alpha * np.concatenate([mu, sigma]) + beta * np.concatenate([mu_t, sigma_t])  # eq. (5)


@pytest.mark.parametrize("T,n", [(7, 3), (6, 2), (5, 1), (4, 8)])
def test_drasp_matches_an_independent_computation_from_the_equations(T, n):
    torch.manual_seed(T * 10 + n)
    d = 4
    pool = build_pooling(PoolingConfig("drasp", segment_size=n, attention_dim=3), d).double()
    with torch.no_grad():
        pool.alpha.fill_(0.7)
        pool.beta.fill_(1.3)
    x = torch.randn(1, T, d, dtype=torch.float64)
    got = pool(x, torch.ones(1, T, dtype=torch.bool))[0].detach().numpy()
    scorer = pool.segment_branch.scorer
    want = drasp_by_the_equations(
        x[0].numpy(),
        n,
        scorer.proj.weight.detach().numpy(),
        scorer.proj.bias.detach().numpy(),
        scorer.v.weight.detach().numpy()[0],
        0.7,
        1.3,
    )
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_drasp_segment_attention_sums_to_one_over_real_segments():
    pool = build_pooling(PoolingConfig("drasp", segment_size=2), D)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 5:] = False  # 5 real frames: segments {0,1} {2,3} {4}
    _, att = pool.pool(torch.randn(2, 9, D), mask)
    assert att.frames == 2
    assert att.weights.shape == (2, 5)
    torch.testing.assert_close(att.weights.sum(dim=1), torch.ones(2))
    assert (att.weights[1, 3:] == 0).all()


def test_multi_resolution_high_temperature_head_averages():
    pool = build_pooling(PoolingConfig("multi-resolution-attentive", heads=2, temperatures=(1.0, 1e9)), D)
    with torch.no_grad():
        pool.scorer.v.weight.mul_(50)  # make the sharp head very sharp
    x, mask = torch.randn(1, 12, D), torch.ones(1, 12, dtype=torch.bool)
    out = pool(x, mask).reshape(2, D)
    torch.testing.assert_close(out[1], x[0].mean(dim=0), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out[0], x[0].mean(dim=0), atol=1e-3)


def test_multi_head_with_zero_queries_is_the_mean():
    pool = build_pooling(PoolingConfig("multi-head-attentive", heads=4), D)
    with torch.no_grad():
        pool.u.zero_()
    x, mask = torch.randn(2, 5, D), torch.ones(2, 5, dtype=torch.bool)
    torch.testing.assert_close(pool(x, mask), x.mean(dim=1))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"method": "max"}, "unknown pooling 'max'"),
        ({"method": "drasp", "segment_size": 0}, "segment_size"),
        ({"method": "multi-resolution-attentive", "heads": 2, "temperatures": (1.0,)}, "temperatures"),
    ],
)
def test_bad_pooling_configs_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        PoolingConfig(**kwargs)


def test_multi_head_needs_divisible_features():
    with pytest.raises(ConfigError, match="divisible"):
        build_pooling(PoolingConfig("multi-head-attentive", heads=3), D)
