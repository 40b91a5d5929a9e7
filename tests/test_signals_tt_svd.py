"""Tests for the error-bounded TT-SVD (Algorithm 1) and its Gram-eigenvalue rank path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rankguide_graph.signals import TTDecomposition, tt_ranks, tt_svd

EPS_VALUES = [0.01, 0.1, 0.3, 0.9]
SHAPES = [(10, 16, 16, 6), (4, 5, 6), (3, 3), (2, 3, 4, 5, 2), (7, 1, 5), (1, 8, 9), (12, 2)]


def random_tt(shape: tuple[int, ...], ranks: tuple[int, ...], seed: int) -> np.ndarray:
    """A tensor with TT ranks at most ``ranks``, contracted from random Gaussian cores."""
    rng = np.random.default_rng(seed)
    bounds = (1, *ranks, 1)
    full = np.ones((1, 1))
    for k, n in enumerate(shape):
        core = rng.standard_normal((bounds[k], n * bounds[k + 1]))
        full = (full.reshape(-1, bounds[k]) @ core).reshape(-1, bounds[k + 1])
    return full.reshape(shape)


# --- Theorem 1: relative reconstruction error <= eps ------------------------------------------


@pytest.mark.parametrize("eps", EPS_VALUES)
@pytest.mark.parametrize("shape", SHAPES)
def test_theorem1_random_gaussian(shape: tuple[int, ...], eps: float) -> None:
    tensor = np.random.default_rng(hash(shape) % 2**32).standard_normal(shape)
    tt = tt_svd(tensor, eps=eps)
    assert tt.relative_error(tensor) <= eps + 1e-12
    assert len(tt.ranks) == len(shape) - 1
    assert tt.ranks == tt_ranks(tensor, eps=eps)


@pytest.mark.parametrize("eps", EPS_VALUES)
@pytest.mark.parametrize(
    ("shape", "true_ranks"),
    [((6, 7, 8, 9), (2, 3, 2)), ((10, 16, 16, 6), (4, 7, 3)), ((5, 5, 5), (1, 4)), ((8, 9), (3,))],
)
def test_theorem1_exactly_low_rank(
    shape: tuple[int, ...], true_ranks: tuple[int, ...], eps: float
) -> None:
    tensor = random_tt(shape, true_ranks, seed=len(shape))
    tt = tt_svd(tensor, eps=eps)
    assert tt.relative_error(tensor) <= eps + 1e-12
    assert all(r <= t for r, t in zip(tt.ranks, true_ranks, strict=True))
    assert tt.ranks == tt_ranks(tensor, eps=eps)


@pytest.mark.parametrize("eps", [1e-4, 1e-6, 1e-9])
def test_tiny_eps_recovers_true_ranks_exactly(eps: float) -> None:
    tensor = random_tt((6, 7, 8, 9), (2, 3, 2), seed=0)
    tt = tt_svd(tensor, eps=eps)
    assert tt.ranks == (2, 3, 2)
    assert tt_ranks(tensor, eps=eps) == (2, 3, 2)
    assert tt.relative_error(tensor) < 1e-12


def test_matrix_rank_rule_exact() -> None:
    # diag(4, 3): ||H||^2 = 25, N = 1, so delta^2 = 25 eps^2; the tail after rank 1 is 9.
    tensor = np.diag([4.0, 3.0])
    assert tt_svd(tensor, eps=0.5).ranks == (2,)  # 6.25 < 9
    tt = tt_svd(tensor, eps=0.7)  # 12.25 >= 9
    assert tt.ranks == (1,)
    assert tt.relative_error(tensor) == pytest.approx(0.6, abs=1e-12)


def test_random_gaussian_window_keeps_full_step_rank() -> None:
    tensor = np.random.default_rng(0).standard_normal((10, 16, 16, 6))
    ranks = tt_svd(tensor, eps=0.1).ranks
    assert ranks[0] == 10  # every step carries ~1/10 of the energy, far above the budget
    assert ranks[2] == 6


# --- degenerate tensors ------------------------------------------------------------------------


def test_all_zero_tensor() -> None:
    tensor = np.zeros((3, 4, 5))
    tt = tt_svd(tensor)
    assert tt.ranks == (1, 1)
    assert tt.norm == 0.0
    assert np.array_equal(tt.reconstruct(), tensor)
    assert tt.relative_error(tensor) == 0.0
    assert tt_ranks(tensor) == (1, 1)


@pytest.mark.parametrize(
    ("index", "value"), [((0, 0, 0), 1.0), ((1, 2, 3), -7.5), ((2, 3, 4), 1e-3)]
)
def test_single_nonzero_entry(index: tuple[int, int, int], value: float) -> None:
    tensor = np.zeros((3, 4, 5))
    tensor[index] = value
    tt = tt_svd(tensor)
    assert tt.ranks == (1, 1)
    assert tt_ranks(tensor) == (1, 1)
    np.testing.assert_allclose(tt.reconstruct(), tensor, rtol=0, atol=1e-15 * abs(value))


def test_constant_tensor_has_rank_one() -> None:
    tensor = np.full((10, 16, 16, 6), 2.5)
    tt = tt_svd(tensor, eps=0.01)
    assert tt.ranks == (1, 1, 1)
    assert tt.relative_error(tensor) < 1e-12


@pytest.mark.parametrize("scale", [1e-200, 1e-160, 1e160, 1e200])
def test_extreme_scales_do_not_change_ranks(scale: float) -> None:
    tensor = random_tt((6, 7, 8, 9), (2, 3, 2), seed=1) + 0.01 * np.random.default_rng(
        1
    ).standard_normal((6, 7, 8, 9))
    expected = tt_svd(tensor).ranks
    tt = tt_svd(tensor * scale)
    assert tt.ranks == expected
    assert tt_ranks(tensor * scale) == expected
    assert tt.norm == pytest.approx(scale * np.linalg.norm(tensor), rel=1e-12)
    assert tt.relative_error(tensor * scale) <= 0.1


# --- structure of the decomposition --------------------------------------------------------------


def test_core_shapes_norm_and_orthonormality() -> None:
    tensor = np.random.default_rng(3).standard_normal((10, 16, 16, 6))
    tt = tt_svd(tensor, eps=0.3)
    assert isinstance(tt, TTDecomposition)
    bounds = (1, *tt.ranks, 1)
    assert [c.shape for c in tt.cores] == [
        (bounds[k], n, bounds[k + 1]) for k, n in enumerate(tensor.shape)
    ]
    assert tt.shape == tensor.shape
    assert tt.norm == pytest.approx(np.linalg.norm(tensor), rel=1e-12)
    assert tt.eps == 0.3
    for core in tt.cores[:-1]:
        u = core.reshape(-1, core.shape[2])
        np.testing.assert_allclose(u.T @ u, np.eye(u.shape[1]), atol=1e-12)


def test_reconstruct_is_exact_without_truncation() -> None:
    tensor = np.random.default_rng(4).standard_normal((3, 4, 5))
    tt = tt_svd(tensor, eps=1e-9)
    assert tt.ranks == (3, 5)
    np.testing.assert_allclose(tt.reconstruct(), tensor, atol=1e-12)


def test_relative_error_rejects_other_shape() -> None:
    tt = tt_svd(np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match=r"shape \(4, 3, 2\)"):
        tt.relative_error(np.ones((4, 3, 2)))


# --- Gram path == SVD path ---------------------------------------------------------------------


def _many_tensors() -> list[tuple[np.ndarray, float]]:
    rng = np.random.default_rng(2024)
    cases: list[tuple[np.ndarray, float]] = []
    shapes = [(10, 16, 16, 6), (10, 16, 16, 16), (4, 5, 6), (3, 40, 2), (2, 3, 4, 5, 2)]
    for i in range(150):
        shape = shapes[i % len(shapes)]
        eps = (0.05, 0.1, 0.2, 0.5)[i % 4]
        kind = i % 3
        if kind == 0:
            tensor = rng.standard_normal(shape)
        else:
            ranks = tuple(int(rng.integers(1, 5)) for _ in shape[1:])
            tensor = random_tt(shape, ranks, seed=i)
            if kind == 2:  # low rank plus noise, plus a shared component as in hidden states
                tensor = tensor + 0.05 * np.std(tensor) * rng.standard_normal(shape) + 3.0
        cases.append((tensor, eps))
    return cases


def test_gram_ranks_match_svd_ranks_on_150_tensors() -> None:
    mismatches = [
        (t.shape, eps, tt_svd(t, eps).ranks, tt_ranks(t, eps))
        for t, eps in _many_tensors()
        if tt_svd(t, eps).ranks != tt_ranks(t, eps)
    ]
    assert mismatches == []


# --- inputs --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_torch_inputs_match_numpy(dtype: torch.dtype) -> None:
    tensor = torch.randn(10, 16, 16, 6, generator=torch.Generator().manual_seed(0)).to(dtype)
    as_numpy = tensor.to(torch.float64).numpy()
    assert tt_svd(tensor).ranks == tt_svd(as_numpy).ranks
    assert tt_ranks(tensor) == tt_ranks(as_numpy)


def test_torch_tensor_with_grad_and_integer_arrays() -> None:
    tensor = torch.randn(4, 5, 6, requires_grad=True)
    assert tt_ranks(tensor) == tt_svd(tensor.detach().numpy()).ranks
    ints = np.arange(24).reshape(2, 3, 4)
    assert tt_ranks(ints) == tt_svd(ints.astype(float)).ranks


# --- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("eps", [1.5, 0.0, 1.0, -0.1, float("nan"), "0.1", None])
@pytest.mark.parametrize("fn", [tt_svd, tt_ranks])
def test_bad_eps(fn, eps) -> None:
    with pytest.raises(ValueError, match=r"eps \(=.*\) must be in \(0, 1\)"):
        fn(np.ones((2, 3)), eps=eps)


def test_bad_eps_message_names_value() -> None:
    with pytest.raises(ValueError, match=r"eps \(=1\.5\) must be in \(0, 1\)"):
        tt_svd(np.ones((2, 3)), eps=1.5)


@pytest.mark.parametrize("fn", [tt_svd, tt_ranks])
def test_too_few_dims(fn) -> None:
    with pytest.raises(ValueError, match="at least 2"):
        fn(np.ones(5))
    with pytest.raises(ValueError, match="at least 2"):
        fn(np.float64(3.0))


@pytest.mark.parametrize("fn", [tt_svd, tt_ranks])
def test_empty_tensor(fn) -> None:
    with pytest.raises(ValueError, match="empty"):
        fn(np.ones((0, 3)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("fn", [tt_svd, tt_ranks])
def test_non_finite_entries_rejected_before_lapack(fn, bad, monkeypatch) -> None:
    def no_lapack(*args, **kwargs):
        raise AssertionError("LAPACK was called on a non-finite tensor")

    for name in ("svd", "eigh", "eigvalsh"):
        monkeypatch.setattr(np.linalg, name, no_lapack)
    tensor = np.ones((3, 4, 5))
    tensor[0, 0, :3] = bad
    with pytest.raises(ValueError, match="3 non-finite"):
        fn(tensor)


def test_complex_rejected() -> None:
    with pytest.raises(TypeError, match="complex"):
        tt_svd(np.ones((2, 3), dtype=complex))
    with pytest.raises(TypeError, match="complex"):
        tt_ranks(torch.ones(2, 3, dtype=torch.complex64))
