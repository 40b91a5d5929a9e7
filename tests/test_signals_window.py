"""Tests for the window rank signal (r1, r2), the hidden-size factorisation and RankWindow."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rankguide_graph.signals import (
    RankWindow,
    hidden_factorisation,
    rank_bounds,
    tt_ranks,
    tt_svd,
    window_ranks,
)

# --- hidden_factorisation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("d_hid", "expected"),
    [
        (1536, (16, 16, 6)),  # DeepSeek-R1-Distill-Qwen-1.5B, the paper's split
        (4096, (16, 16, 16)),
        (5120, (16, 16, 20)),  # Qwen2.5-32B
        (2048, (16, 16, 8)),
        (3584, (16, 16, 14)),  # Qwen2.5-7B
        (2560, (16, 16, 10)),  # Qwen3-4B
        (896, (16, 14, 4)),  # Qwen2.5-0.5B: not a multiple of 256
        (1152, (16, 12, 6)),
        (64, (16, 4, 1)),
        (16, (16, 1, 1)),
        (1000, (10, 10, 10)),
        (30, (15, 2, 1)),
        (2 * 997, (2, 1, 997)),
    ],
)
def test_hidden_factorisation(d_hid: int, expected: tuple[int, int, int]) -> None:
    dims = hidden_factorisation(d_hid)
    assert dims == expected
    assert dims[0] * dims[1] * dims[2] == d_hid


@pytest.mark.parametrize("d_hid", [256 * k for k in range(1, 40)])
def test_multiples_of_256_use_the_paper_split(d_hid: int) -> None:
    assert hidden_factorisation(d_hid) == (16, 16, d_hid // 256)


@pytest.mark.parametrize("d_hid", [997, 17, 323, 1, 0, -256])
def test_hidden_factorisation_without_a_useful_split(d_hid: int) -> None:
    with pytest.raises(ValueError, match=rf"d_hid \(={d_hid}\)"):
        hidden_factorisation(d_hid)


def test_prime_error_points_to_dims() -> None:
    with pytest.raises(ValueError, match="pass dims="):
        hidden_factorisation(997)


# --- window_ranks == Algorithm 1 -----------------------------------------------------------------


def _windows() -> list[tuple[np.ndarray, tuple[int, int, int] | None, float]]:
    rng = np.random.default_rng(7)
    cases: list[tuple[np.ndarray, tuple[int, int, int] | None, float]] = []
    for i in range(60):
        d_hid = (1536, 896, 4096, 64)[i % 4]
        eps = (0.1, 0.05, 0.3)[i % 3]
        n_steps = (10, 10, 4, 2, 16)[i % 5]
        kind = i % 3
        if kind == 0:
            hidden = rng.standard_normal((n_steps, d_hid))
        else:  # steps in a few directions, plus a large shared component as in real hidden states
            k = int(rng.integers(1, n_steps))
            hidden = rng.standard_normal((n_steps, k)) @ rng.standard_normal((k, d_hid))
            hidden += 10.0 * rng.standard_normal(d_hid)
            if kind == 2:
                hidden += 0.1 * rng.standard_normal((n_steps, d_hid))
        cases.append((hidden, None, eps))
    cases.append((rng.standard_normal((10, 1536)), (8, 8, 24), 0.1))
    cases.append((rng.standard_normal((10, 1536)), (32, 4, 12), 0.1))
    return cases


def test_window_ranks_match_tt_svd_on_62_windows() -> None:
    mismatches = []
    for hidden, dims, eps in _windows():
        d1, d2, d3 = dims or hidden_factorisation(hidden.shape[1])
        reference = tt_svd(hidden.reshape(hidden.shape[0], d1, d2, d3), eps).ranks[:2]
        got = window_ranks(hidden, dims=dims, eps=eps)
        if got != reference:
            mismatches.append((hidden.shape, dims, eps, got, reference))
    assert mismatches == []


def test_window_ranks_match_tt_ranks_prefix() -> None:
    hidden = np.random.default_rng(0).standard_normal((10, 1536))
    assert window_ranks(hidden) == tt_ranks(hidden.reshape(10, 16, 16, 6))[:2]


def test_random_window_has_full_step_rank() -> None:
    hidden = np.random.default_rng(1).standard_normal((10, 1536))
    r1, r2 = window_ranks(hidden)
    assert r1 == 10
    assert 60 < r2 <= 96  # r2 <= min(W * d1, d2 * d3) = min(160, 96)


def test_repeated_step_gives_rank_one() -> None:
    row = np.random.default_rng(2).standard_normal(1536)
    assert window_ranks(np.tile(row, (10, 1)))[0] == 1


@pytest.mark.parametrize("eps", [0.01, 0.1, 0.5, 0.9])
def test_equal_energy_three_directions_give_r1_three(eps: float) -> None:
    # Orthonormal step factors and orthonormal feature rows: three equal singular values, so the
    # tail after rank 2 is 1/3 of the energy, above any budget eps^2 / 3.
    rng = np.random.default_rng(3)
    q_steps, _ = np.linalg.qr(rng.standard_normal((10, 3)))
    q_feats, _ = np.linalg.qr(rng.standard_normal((1536, 3)))
    assert window_ranks(q_steps @ q_feats.T, eps=eps)[0] == 3


def test_row_order_does_not_change_ranks() -> None:
    hidden = np.random.default_rng(4).standard_normal((10, 1536))
    hidden[5:] = hidden[:5] + 0.01  # make it rank-deficient so truncation happens
    assert window_ranks(hidden) == window_ranks(hidden[::-1])


def test_zero_window() -> None:
    assert window_ranks(np.zeros((10, 1536))) == (1, 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_torch_windows_match_numpy(dtype: torch.dtype) -> None:
    hidden = torch.randn(10, 1536, generator=torch.Generator().manual_seed(5)).to(dtype)
    assert window_ranks(hidden) == window_ranks(hidden.to(torch.float64).numpy())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_window() -> None:
    hidden = torch.randn(10, 1536, device="cuda", dtype=torch.bfloat16)
    assert window_ranks(hidden) == window_ranks(hidden.cpu())


def test_explicit_dims() -> None:
    hidden = np.random.default_rng(6).standard_normal((10, 1536))
    assert window_ranks(hidden, dims=(16, 16, 6)) == window_ranks(hidden)
    assert window_ranks(hidden, dims=[16, 16, 6]) == window_ranks(hidden)


# --- window_ranks validation ---------------------------------------------------------------------


@pytest.mark.parametrize("n_steps", [0, 1])
def test_window_needs_two_steps(n_steps: int) -> None:
    with pytest.raises(ValueError, match=rf"W \(={n_steps}\).*W >= 2"):
        window_ranks(np.ones((n_steps, 1536)))


def test_window_must_be_2d() -> None:
    with pytest.raises(ValueError, match="W x d_hid"):
        window_ranks(np.ones(1536))
    with pytest.raises(ValueError, match="W x d_hid"):
        window_ranks(np.ones((1, 10, 1536)))


@pytest.mark.parametrize(
    ("dims", "match"),
    [((16, 16, 5), "multiply to 1280"), ((16, 96), "three positive"), ((16, 0, 6), "three")],
)
def test_bad_dims(dims: tuple[int, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        window_ranks(np.ones((10, 1536)), dims=dims)


def test_window_bad_eps_and_non_finite() -> None:
    with pytest.raises(ValueError, match=r"eps \(=1\.5\) must be in \(0, 1\)"):
        window_ranks(np.ones((10, 1536)), eps=1.5)
    hidden = np.ones((10, 1536))
    hidden[3, 7] = np.nan
    with pytest.raises(ValueError, match="1 non-finite"):
        window_ranks(hidden)


def test_window_float16_overflow_is_reported() -> None:
    hidden = torch.full((10, 1536), 1.0, dtype=torch.float16)
    hidden[0, :4] = float("inf")
    with pytest.raises(ValueError, match="4 non-finite"):
        window_ranks(hidden)


# --- RankWindow ----------------------------------------------------------------------------------


def test_rank_window_fills_then_rolls() -> None:
    rng = np.random.default_rng(8)
    rows = rng.standard_normal((13, 1536))
    window = RankWindow(size=10)
    for i in range(9):
        window.push(rows[i])
        assert len(window) == i + 1
        assert not window.full
        assert window.ranks() is None
    window.push(rows[9])
    assert window.full and len(window) == 10
    assert window.ranks() == window_ranks(rows[:10].astype(np.float32))
    for i in range(10, 13):
        window.push(torch.from_numpy(rows[i]))
    assert len(window) == 10
    np.testing.assert_array_equal(window.array(), rows[3:13].astype(np.float32))
    assert window.ranks(eps=0.2) == window_ranks(rows[3:13].astype(np.float32), eps=0.2)


def test_rank_window_accepts_batch_rows_and_dims() -> None:
    window = RankWindow(size=2, dims=(8, 8, 24))
    window.push(torch.ones(1, 1536))
    window.push(np.arange(1536.0)[None, :])
    assert window.array().shape == (2, 1536)
    assert window.array().dtype == np.float32
    assert window.ranks() == window_ranks(window.array(), dims=(8, 8, 24))


def test_rank_window_rejects_other_sizes_and_clears() -> None:
    window = RankWindow(size=3)
    window.push(np.ones(1536))
    with pytest.raises(ValueError, match="d_hid=896"):
        window.push(np.ones(896))
    with pytest.raises(ValueError, match="1-D"):
        window.push(np.ones((2, 1536)))
    window.clear()
    assert len(window) == 0
    window.push(np.ones(896))
    assert len(window) == 1


@pytest.mark.parametrize("size", [1, 0, 2.5])
def test_rank_window_size(size) -> None:
    with pytest.raises(ValueError, match="size"):
        RankWindow(size=size)


def test_thread_count_is_restored_even_on_errors() -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        window_ranks(np.random.default_rng(9).standard_normal((10, 1536)))
        assert torch.get_num_threads() == 2
        with pytest.raises(ValueError):
            window_ranks(np.ones((1, 1536)))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("window", "d_hid", "bounds"),
    [(10, 1536, (10, 96)), (10, 512, (10, 32)), (10, 64, (10, 4)), (3, 64, (3, 4)), (4, 2, (2, 1))],
)
def test_rank_bounds_are_the_largest_ranks_a_window_reaches(window, d_hid, bounds) -> None:
    assert rank_bounds(window, d_hid) == bounds
    # a random window (full rank almost surely) reaches both, eps = 0 keeps every singular value
    states = np.random.default_rng(3).standard_normal((window, d_hid))
    assert window_ranks(states, eps=1e-9) == bounds
