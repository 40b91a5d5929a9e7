"""RankGuide's window signal: TT ranks ``(r_1, r_2)`` of the last W step hidden states.

Implements the tensor-rank measure of the RankGuide paper (arXiv 2604.16694, §3.1, Eq. 1-3 and
Algorithm 1): the hidden states of the last ``W`` steps, ``H`` of shape ``W x d_hid``, are reshaped
to ``W x d1 x d2 x d3`` (Eq. 1) and decomposed by error-bounded TT-SVD with ``eps = 0.1``;
``r_1`` is the rank along the step dimension and ``r_2`` the first hidden-feature rank, the two
quantities compared against ``T_r1`` / ``T_r2`` in the routing rules (Eq. 4-5).

Only ``r_1`` and ``r_2`` are computed: the budget of Algorithm 1 is fixed before the first step
(``N = 3``), so the first two ranks do not depend on the third step, which is skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rankguide_graph.signals.tt_svd import (
    _as_float64_tensor,
    _check_eps,
    _gram_ranks,
    _single_threaded,
)

__all__ = ["RankWindow", "hidden_factorisation", "rank_bounds", "window_ranks"]

_MAX_FACTOR = 16  # the paper's d1 = d2 = 16


def hidden_factorisation(d_hid: int) -> tuple[int, int, int]:
    """Split a hidden size into ``(d1, d2, d3)`` with ``d1 * d2 * d3 == d_hid``.

    The paper's split is ``(16, 16, d_hid // 256)`` (d_hid = 1536 -> (16, 16, 6)); this function
    returns exactly that whenever ``d_hid`` is a multiple of 256. The general rule is greedy:
    ``d1`` is the largest divisor of ``d_hid`` that is at most 16, ``d2`` the largest divisor of
    ``d_hid // d1`` that is at most 16, and ``d3`` the rest. Keeping ``d1 = 16`` wherever possible
    matters because ``r_2`` depends on ``d1`` only: it is the rank of a
    ``(r_1 * d1) x (d_hid / d1)`` unfolding, so ``r_2 <= min(W * d1, d_hid / d1)`` (96 for the
    paper's 1536). Thresholds ``T_r2`` tuned for one hidden size do not carry over to another.

    Examples: 1536 -> (16, 16, 6); 4096 -> (16, 16, 16); 5120 -> (16, 16, 20);
    896 -> (16, 14, 4); 64 -> (16, 4, 1); 1000 -> (10, 10, 10).

    Raises:
        ValueError: if ``d_hid < 2`` or it has no divisor in 2..16 (a prime above 16, say): no
            useful split exists, so pass ``dims=(d1, d2, d3)`` to :func:`window_ranks` explicitly.
    """
    if isinstance(d_hid, bool) or not isinstance(d_hid, int | np.integer) or d_hid < 2:
        raise ValueError(f"d_hid (={d_hid!r}) must be an integer >= 2 (the hidden size).")
    d_hid = int(d_hid)
    d1 = _largest_divisor_at_most(d_hid, _MAX_FACTOR)
    if d1 == 1:
        raise ValueError(
            f"d_hid (={d_hid}) has no divisor between 2 and {_MAX_FACTOR}, so W x d1 x d2 x d3 "
            f"would degenerate to W x 1 x 1 x {d_hid}; pass dims=(d1, d2, d3) with "
            f"d1 * d2 * d3 == {d_hid} explicitly (or pad/project the hidden states)."
        )
    d2 = _largest_divisor_at_most(d_hid // d1, _MAX_FACTOR)
    return d1, d2, d_hid // (d1 * d2)


def rank_bounds(window: int, d_hid: int, dims: Sequence[int] | None = None) -> tuple[int, int]:
    """The largest ``(r_1, r_2)`` a window of ``window`` step states of size ``d_hid`` can have.

    ``r_1`` is the rank of the ``W x d_hid`` unfolding, so ``r_1 <= min(W, d_hid)``; ``r_2`` that
    of the ``(r_1 * d1) x (d_hid / d1)`` one, so ``r_2 <= min(W * d1, d_hid / d1)`` (10 and 96 for
    the paper's W = 10 and 1536; 10 and 32 for 512; 10 and 4 for 64). A threshold above its bound
    makes every window low-rank. ``dims`` as in :func:`window_ranks`.
    """
    d1, _, _ = hidden_factorisation(d_hid) if dims is None else _check_dims(dims, d_hid)
    return min(window, d_hid), min(window * d1, d_hid // d1)


@_single_threaded
def window_ranks(
    hidden: Any, dims: Sequence[int] | None = None, eps: float = 0.1
) -> tuple[int, int]:
    """Return ``(r_1, r_2)`` of a window of step hidden states (RankGuide §3.1, Algorithm 1).

    Equal to ``tt_svd(hidden.reshape(W, d1, d2, d3), eps).ranks[:2]``, computed from the
    eigenvalues of the smaller Gram matrix of the first two unfoldings (about 0.8 ms for
    ``10 x 1536`` on one slow CPU thread).

    Args:
        hidden: ``W x d_hid`` numpy array or torch tensor (any real dtype, any device), one row per
            step, ``W >= 2``. Row order does not change the ranks.
        dims: explicit ``(d1, d2, d3)`` with product ``d_hid``; default
            :func:`hidden_factorisation` of ``d_hid``.
        eps: target relative reconstruction error of the TT-SVD, in (0, 1); the paper uses 0.1.

    Returns:
        ``(r_1, r_2)``: ``1 <= r_1 <= min(W, d_hid)``, ``1 <= r_2 <= min(r_1 * d1, d2 * d3)``.
        An all-zero window gives ``(1, 1)``.

    Raises:
        ValueError: bad ``eps``, ``hidden`` not 2-D, ``W < 2``, bad ``dims``, non-finite entries.
        TypeError: a non-real dtype.
    """
    eps = _check_eps(eps)
    work = _as_float64_tensor(hidden, "hidden")  # (W, d_hid)
    if work.ndim != 2:
        raise ValueError(
            f"hidden has shape {tuple(work.shape)}; expected W x d_hid (one row per step). "
            "Stack the step hidden states with np.stack / torch.stack first."
        )
    n_steps, d_hid = work.shape
    if n_steps < 2:
        raise ValueError(
            f"the window holds W (={n_steps}) step(s); the step rank r_1 needs W >= 2. "
            "Wait until at least 2 (the paper: W=10) steps have hidden states."
        )
    d1, d2, d3 = _check_dims(dims, d_hid) if dims is not None else hidden_factorisation(d_hid)
    tensor = work.reshape(n_steps, d1, d2, d3)  # (W, d1, d2, d3), a view
    r1, r2 = _gram_ranks(tensor, eps, n_ranks=2)
    return r1, r2


class RankWindow:
    """Ring buffer of the last ``size`` step hidden states, as float32 rows, with their ranks.

    ``push`` one hidden state per finished step; ``ranks`` returns ``(r_1, r_2)`` of the held
    window (oldest row first) once ``size`` states are held, else ``None`` (the paper: no rank
    signal before W steps exist).
    """

    def __init__(self, size: int = 10, dims: Sequence[int] | None = None) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 2:
            raise ValueError(
                f"size (={size!r}) must be an integer >= 2: the window length W (the paper: 10)."
            )
        self.size = size
        """The window length W."""
        self.dims = None if dims is None else tuple(int(d) for d in dims)
        """Explicit ``(d1, d2, d3)`` passed to :func:`window_ranks`, or None for the default."""
        self._rows: np.ndarray | None = None  # (size, d_hid), allocated on the first push
        self._count = 0  # states pushed so far (may exceed size)

    def push(self, hidden: Any) -> None:
        """Append one step hidden state, dropping the oldest when full.

        ``hidden`` is ``(d_hid,)``; leading singleton axes (a ``(1, d_hid)`` batch row) are dropped.
        """
        row = _as_float64_tensor(hidden, "hidden").numpy().astype(np.float32)  # (d_hid,)
        if row.ndim > 1 and row.size == row.shape[-1]:
            row = row.reshape(-1)  # (1, d_hid) -> (d_hid,)
        if row.ndim != 1 or row.size == 0:
            raise ValueError(f"a step hidden state must be 1-D (d_hid,), got shape {row.shape}.")
        if self._rows is None:
            self._rows = np.empty((self.size, row.size), dtype=np.float32)  # (W, d_hid)
        elif row.size != self._rows.shape[1]:
            raise ValueError(
                f"hidden state has d_hid={row.size} but the window holds d_hid="
                f"{self._rows.shape[1]}; call clear() before switching models."
            )
        self._rows[self._count % self.size] = row
        self._count += 1

    def __len__(self) -> int:
        """Return the number of states held (at most ``size``)."""
        return min(self._count, self.size)

    @property
    def full(self) -> bool:
        """Whether ``size`` states are held, i.e. whether :meth:`ranks` returns a value."""
        return self._count >= self.size

    def array(self) -> np.ndarray:
        """Return the held states, oldest first, as a ``(len(self), d_hid)`` float32 copy."""
        if self._rows is None:
            return np.empty((0, 0), dtype=np.float32)
        if not self.full:
            return self._rows[: self._count].copy()
        start = self._count % self.size
        return np.concatenate((self._rows[start:], self._rows[:start]))  # (W, d_hid)

    def ranks(self, eps: float = 0.1) -> tuple[int, int] | None:
        """``(r_1, r_2)`` of the held window via :func:`window_ranks`, or None until it is full."""
        if not self.full or self._rows is None:
            return None
        # Row order does not change the ranks, so the ring buffer is used as it is stored.
        return window_ranks(self._rows, dims=self.dims, eps=eps)

    def clear(self) -> None:
        """Forget every held state (e.g. for a new problem)."""
        self._rows = None
        self._count = 0


def _check_dims(dims: Sequence[int], d_hid: int) -> tuple[int, int, int]:
    """Validate an explicit ``(d1, d2, d3)`` against ``d_hid``."""
    values = tuple(dims)
    if len(values) != 3 or not all(
        isinstance(d, int | np.integer) and not isinstance(d, bool) and d >= 1 for d in values
    ):
        raise ValueError(f"dims (={dims!r}) must be three positive integers (d1, d2, d3).")
    d1, d2, d3 = (int(d) for d in values)
    if d1 * d2 * d3 != d_hid:
        raise ValueError(
            f"dims (={values}) multiply to {d1 * d2 * d3}, but d_hid is {d_hid}; pick d1 * d2 * d3 "
            f"== {d_hid}, or leave dims=None for hidden_factorisation({d_hid})."
        )
    return d1, d2, d3


def _largest_divisor_at_most(n: int, bound: int) -> int:
    """Return the largest divisor of ``n`` that is <= ``bound`` (1 if none above 1)."""
    return next(f for f in range(min(bound, n), 0, -1) if n % f == 0)
