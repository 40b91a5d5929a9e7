"""Error-bounded TT-SVD: the tensor-train ranks behind RankGuide's rank signal.

Implements Algorithm 1 of the RankGuide paper (arXiv 2604.16694, Appendix A.1), which is the TT-SVD
of Oseledets (2011, "Tensor-Train Decomposition", SIAM J. Sci. Comput. 33(5), Alg. 1) with a uniform
per-step error budget ``delta^2 = eps^2 * ||H||_F^2 / N`` over the ``N = order - 1`` SVD steps. The
cores follow Eq. (3) and contract back as in Eq. (9); Theorem 1 then bounds the relative
reconstruction error by ``eps``.

Two entry points:

- :func:`tt_svd` returns the cores (full Algorithm 1, one SVD per step).
- :func:`tt_ranks` returns only the ranks and is what the online signal uses. It takes the
  eigenvalues of the smaller Gram matrix of each unfolding instead of an SVD: the eigenvalues of
  ``A A^T`` (or ``A^T A``) are the squared singular values of ``A``, and the carry ``Sigma_r V_r^T``
  equals ``U_r^T A``, so the selected ranks are the same; the tests check this on many tensors.

Inputs may be numpy arrays or torch tensors of any real dtype and device. The linear algebra runs
in float64 on the CPU through torch, on one thread: the public functions set
``torch.set_num_threads(1)`` for their duration (about 30 us) and restore it. On matrices this
small, extra threads gain little, and on a loaded machine their barriers stall: a 10 x 1536 window
took 1 ms on one thread but 150-300 ms on two busy cores (numpy's OpenBLAS threads behave the same
way, hence torch here). With torch's OpenMP backend the thread count is a per-thread setting, so
the forward passes of concurrent runs (on their models' scheduler threads) keep their threads
meanwhile (tested). Cores are returned as numpy arrays.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import numpy as np
import torch

__all__ = ["TTDecomposition", "tt_ranks", "tt_svd"]

# Below this eps the Gram path is not trusted: Gram eigenvalues carry an absolute error of about
# 1e-16 * ||A||_F^2, which becomes comparable to the budget eps^2 * ||H||_F^2 / N near eps ~ 1e-7.
_GRAM_MIN_EPS = 1e-5
# ||H||_F^2 outside this range is rescaled by max|H| first, so Gram entries cannot overflow and
# the tail sums of the spectrum stay far from subnormal numbers.
_SAFE_MIN, _SAFE_MAX = 1e-150, 1e150

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _single_threaded(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``fn`` with one torch intra-op thread, restoring the previous count afterwards."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        n_threads = torch.get_num_threads()
        if n_threads == 1:
            return fn(*args, **kwargs)
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(n_threads)

    return wrapper


@dataclass(frozen=True, repr=False)
class TTDecomposition:
    """A tensor train ``G_0 x G_1 x ... x G_N`` as produced by Algorithm 1.

    Every core is 3-D, ``cores[k]`` of shape ``(r_k, n_k, r_{k+1})`` with ``r_0 = r_{N+1} = 1``:
    the paper's ``G_0`` (``W x r_1``, Eq. 3) is ``cores[0][0]`` and its last core ``G_N`` is
    ``cores[-1][..., 0]``. The first ``N`` cores have orthonormal columns when unfolded to
    ``(r_k * n_k, r_{k+1})``; the last one carries the norm.
    """

    ranks: tuple[int, ...]
    """The TT ranks ``(r_1, ..., r_N)``; ``r_1`` is the rank along the first (step) mode."""
    cores: list[np.ndarray]
    """The ``N + 1`` float64 cores, ``cores[k]`` of shape ``(r_k, n_k, r_{k+1})``."""
    norm: float
    """Frobenius norm ``||H||_F`` of the decomposed tensor."""
    eps: float
    """The target relative error the ranks were chosen for."""

    def __repr__(self) -> str:
        """Short form: ranks, shape, norm and eps, without the core values."""
        return (
            f"TTDecomposition(ranks={self.ranks}, shape={self.shape}, norm={self.norm:.6g}, "
            f"eps={self.eps})"
        )

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the tensor the train represents: ``(n_0, ..., n_N)``."""
        return tuple(int(core.shape[1]) for core in self.cores)

    @_single_threaded
    def reconstruct(self) -> np.ndarray:
        """Contract the cores back into a full float64 numpy tensor (Eq. 9)."""
        first = self.cores[0]
        full = torch.from_numpy(first.reshape(first.shape[1], first.shape[2]))  # (n_0, r_1)
        for core in self.cores[1:]:
            r_prev, n_k, r_next = core.shape
            step = torch.from_numpy(core.reshape(r_prev, n_k * r_next))  # (r_k, n_k r_{k+1})
            full = full.reshape(-1, r_prev) @ step  # (n_0 ... n_{k-1}, n_k r_{k+1})
        return full.reshape(self.shape).numpy()

    @_single_threaded
    def relative_error(self, original: Any) -> float:
        """Return ``||original - reconstruct()||_F / ||original||_F`` (Theorem 1 bounds it by eps).

        A zero ``original`` gives 0.0 when the reconstruction is zero too, and ``inf`` otherwise.
        """
        reference = _as_float64_tensor(original, "original")
        if tuple(reference.shape) != self.shape:
            raise ValueError(
                f"original has shape {tuple(reference.shape)} but the train represents "
                f"{self.shape}; pass the tensor that was decomposed."
            )
        residual = reference - torch.from_numpy(self.reconstruct())
        scale = float(reference.abs().max())
        if scale == 0.0:
            return 0.0 if not bool(residual.any()) else float("inf")
        # Both norms of x / max|x|, so that squares neither overflow nor underflow.
        return float(torch.linalg.vector_norm(residual / scale)) / float(
            torch.linalg.vector_norm(reference / scale)
        )


@_single_threaded
def tt_svd(tensor: Any, eps: float = 0.1) -> TTDecomposition:
    """Decompose ``tensor`` into a tensor train with relative error at most ``eps`` (Algorithm 1).

    Args:
        tensor: a numpy array or torch tensor with at least 2 dimensions, already shaped (e.g.
            ``W x d1 x d2 x d3``). Any real dtype and device; it is converted to float64 on the CPU.
        eps: target relative Frobenius error, in (0, 1). The paper uses 0.1.

    Returns:
        The :class:`TTDecomposition`. An all-zero tensor gives ranks all 1 and zero cores.

    Raises:
        TypeError: for a non-real dtype. ValueError: for a bad ``eps``, fewer than 2 dimensions,
        an empty tensor or non-finite entries.
    """
    work, eps = _prepare(tensor, eps)
    _check_finite(work, "tensor")
    shape = tuple(work.shape)
    n_steps = len(shape) - 1
    scale = float(work.abs().max())
    if scale == 0.0:
        zeros = [np.zeros((1, n, 1)) for n in shape]
        return TTDecomposition(ranks=(1,) * n_steps, cores=zeros, norm=0.0, eps=eps)

    # Work on H / max|H| so that squares neither overflow nor underflow; ranks are scale-free.
    carry = work / scale  # (n_0, ..., n_N)
    sq = float(torch.dot(carry.reshape(-1), carry.reshape(-1)))  # ||H / max|H| ||_F^2 >= 1
    delta2 = eps * eps * sq / n_steps  # per-step budget (line 2)
    cores: list[np.ndarray] = []
    ranks: list[int] = []
    r_prev = 1
    for n_k in shape[:-1]:
        # Lines 5-9: unfold, SVD, smallest rank within budget, core U_r, carry Sigma_r V_r^T.
        unfolding = carry.reshape(r_prev * n_k, -1)  # (r_{k-1} n_k, rest)
        u, s, vh = torch.linalg.svd(unfolding, full_matrices=False)
        rank = _select_rank((s * s).flip(0).tolist(), delta2)
        cores.append(u[:, :rank].reshape(r_prev, n_k, rank).numpy())  # (r_{k-1}, n_k, r_k)
        carry = s[:rank, None] * vh[:rank]  # (r_k, rest)
        ranks.append(rank)
        r_prev = rank
    # Line 11: the last core is the remaining carry, scaled back to the input's units.
    cores.append((carry * scale).reshape(r_prev, shape[-1], 1).numpy())  # (r_N, n_N, 1)
    return TTDecomposition(ranks=tuple(ranks), cores=cores, norm=scale * sq**0.5, eps=eps)


@_single_threaded
def tt_ranks(tensor: Any, eps: float = 0.1) -> tuple[int, ...]:
    """Return the TT ranks ``(r_1, ..., r_N)`` that :func:`tt_svd` would select, without cores.

    Uses the eigenvalues of the smaller Gram matrix of each unfolding (float64, tiny negative
    eigenvalues clipped to 0), which gives the same ranks as the SVD path at about half the cost;
    for ``eps < 1e-5`` it falls back to SVDs, where Gram rounding could matter.

    Args:
        tensor: a numpy array or torch tensor with at least 2 dimensions, already shaped.
        eps: target relative Frobenius error, in (0, 1).

    Raises:
        The same errors as :func:`tt_svd`.
    """
    work, eps = _prepare(tensor, eps)
    if eps < _GRAM_MIN_EPS:
        return tt_svd(work, eps).ranks
    return _gram_ranks(work, eps, len(work.shape) - 1)


def _gram_ranks(work: torch.Tensor, eps: float, n_ranks: int) -> tuple[int, ...]:
    """Ranks ``r_1..r_{n_ranks}`` of Algorithm 1 on a CPU float64 tensor, via Gram matrices.

    ``n_ranks`` may be smaller than ``order - 1`` (the window signal needs only ``r_1, r_2``); the
    per-step budget still uses ``N = order - 1`` so the ranks match the full algorithm.
    ``||H||_F^2`` is read off the trace of the first Gram matrix (a BLAS product), so NaN or inf
    entries are caught there, before any LAPACK call. The order of the carry's rows does not
    matter (a row permutation is orthogonal), so eigenvectors are used in LAPACK's ascending order.
    """
    shape = tuple(work.shape)
    n_steps = len(shape) - 1
    carry = work  # (n_0, ..., n_N)
    gram, row_side = _gram(carry.reshape(shape[0], -1))
    sq = float(gram.diagonal().sum())  # ||H||_F^2; NaN/inf iff a non-finite entry (or overflow)
    if not _SAFE_MIN < sq < _SAFE_MAX:
        _check_finite(work, "tensor")  # raises unless this was an overflow or underflow
        scale = float(work.abs().max())
        if scale == 0.0:
            return (1,) * n_ranks  # all-zero tensor: every unfolding has rank 0 -> r_k = 1
        carry = work / scale  # ranks are scale-free; this keeps squares representable
        gram, row_side = _gram(carry.reshape(shape[0], -1))
        sq = float(gram.diagonal().sum())
    delta2 = eps * eps * sq / n_steps  # per-step budget (line 2)
    ranks: list[int] = []
    r_prev = 1
    for k in range(n_ranks):
        unfolding = carry.reshape(r_prev * shape[k], -1)  # (m, n)
        m, n = unfolding.shape
        if k > 0:
            gram, row_side = _gram(unfolding)  # (min(m, n), min(m, n))
        if k == n_ranks - 1:  # the last rank needs eigenvalues only
            ranks.append(_select_rank(torch.linalg.eigvalsh(gram).tolist(), delta2))
            break
        lam, vecs = torch.linalg.eigh(gram)  # ascending
        rank = _select_rank(lam.tolist(), delta2)
        if row_side:  # gram = A A^T = U diag(s^2) U^T
            if rank < m:
                carry = vecs[:, m - rank :].T @ unfolding  # (r_k, n) = U_r^T A, rows reversed
            # else: U^T A is an orthogonal row-mix of A; later unfoldings keep their singular
            # values (the mix acts as U^T kron I on them), so A itself serves as the carry.
        else:  # gram = A^T A = V diag(s^2) V^T
            sigma = lam[n - rank :].clamp(min=0.0).sqrt()  # (r_k,) ascending
            carry = sigma[:, None] * vecs[:, n - rank :].T  # (r_k, n) = Sigma_r V_r^T, reversed
        ranks.append(rank)
        r_prev = rank
    return tuple(ranks)


def _gram(unfolding: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Return the smaller Gram matrix of ``unfolding`` and whether it is the row side ``A A^T``."""
    m, n = unfolding.shape
    if m <= n:
        return unfolding @ unfolding.T, True  # (m, m)
    return unfolding.T @ unfolding, False  # (n, n)


def _select_rank(s2_ascending: Sequence[float], delta2: float) -> int:
    """Smallest ``r >= 1`` with ``sum_{i > r} sigma_i^2 <= delta2`` (Algorithm 1, line 7).

    ``s2_ascending`` holds the squared singular values in ascending order (Gram eigenvalues as
    LAPACK returns them; tiny negative ones from rounding count as 0). Summed from the smallest
    up, the running sums are the tail sums; the rank is the number of values whose tail sum,
    themselves included, exceeds delta2. A plain loop: these lists are short (<= a few hundred).
    """
    tail = 0.0
    kept = len(s2_ascending)
    for value in s2_ascending:
        tail += max(value, 0.0)
        if tail > delta2:
            break
        kept -= 1
    return max(1, kept)


def _check_eps(eps: Any) -> float:
    """Return ``eps`` as a float after checking that it lies in (0, 1)."""
    real = isinstance(eps, numbers.Real) and not isinstance(eps, bool)
    value = float(eps) if real else float("nan")
    if not 0.0 < value < 1.0:
        raise ValueError(
            f"eps (={eps!r}) must be in (0, 1): it is the target relative reconstruction error "
            "||H - H_hat||_F / ||H||_F; the paper uses eps=0.1."
        )
    return value


def _prepare(tensor: Any, eps: float) -> tuple[torch.Tensor, float]:
    """Validate ``eps`` and the shape of ``tensor``; return it as a CPU float64 tensor and eps.

    Finiteness is checked by the callers, before their first LAPACK call.
    """
    eps = _check_eps(eps)
    work = _as_float64_tensor(tensor, "tensor")
    if work.ndim < 2:
        raise ValueError(
            f"tensor has {work.ndim} dimension(s) (shape {tuple(work.shape)}); TT-SVD needs at "
            "least 2. Reshape it first, e.g. a W x d_hid window to W x 16 x 16 x (d_hid // 256)."
        )
    if work.numel() == 0:
        raise ValueError(
            f"tensor is empty (shape {tuple(work.shape)}); every dimension must be >= 1."
        )
    return work, eps


def _check_finite(work: torch.Tensor, name: str) -> None:
    """Raise ValueError naming how many entries of ``work`` are NaN or infinite."""
    finite = torch.isfinite(work)
    if not bool(finite.all()):
        n_bad = int(work.numel() - int(finite.sum()))
        raise ValueError(
            f"{name} has {n_bad} non-finite (NaN or inf) entr{'y' if n_bad == 1 else 'ies'} of "
            f"{work.numel()}; the decomposition needs finite values. Check the hidden states "
            "upstream (e.g. an overflow in float16) before computing ranks."
        )


def _as_float64_tensor(value: Any, name: str) -> torch.Tensor:
    """Convert a numpy array, torch tensor or nested sequence to a contiguous CPU float64 tensor.

    Shared by the signal modules. Numpy input is not copied when it already is float64 and
    C-contiguous. Raises TypeError for complex, boolean or non-numeric input.
    """
    if isinstance(value, torch.Tensor):
        if value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{name} has dtype {value.dtype}; pass a real floating tensor.")
        return value.detach().to(device="cpu", dtype=torch.float64).contiguous()
    array = np.asarray(value)
    if array.dtype.kind not in "fiu":
        raise TypeError(
            f"{name} has dtype {array.dtype}; pass a real numeric numpy array or torch tensor."
        )
    array = np.ascontiguousarray(array, dtype=np.float64)
    if not array.flags.writeable:  # torch.from_numpy warns on read-only memory
        array = array.copy()
    return torch.from_numpy(array)
