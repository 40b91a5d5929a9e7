"""Next-token entropy: the uncertainty signal of RankGuide's routing (Eq. 5, ``H(p_t) >= T_e``).

Two definitions, both in nats (natural log):

- :func:`entropy`: ``-sum_i p_i ln p_i`` with ``p = softmax(logits)`` over the whole vocabulary.
- :func:`topk_entropy`: GlimpRouter's definition (Zeng et al., 2026, read from its code): take the
  top-k probabilities of the full softmax (k = 20 there), renormalise them to sum 1 and return
  their entropy, which is at most ``ln k``. The renormalised top-k distribution is exactly the
  softmax of the top-k logits (the full normaliser cancels), which is how it is computed here.

The full-vocabulary pass runs in torch float32 with a max-shifted log-sum-exp (stable for any
finite logits) on one intra-op thread (see :mod:`.tt_svd` for why); the top-k entropy is summed in
float64. ``-inf`` logits (masked tokens) are
allowed and get probability 0; NaN or ``+inf`` logits raise ValueError.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from rankguide_graph.signals.tt_svd import _single_threaded

__all__ = ["entropy", "topk_entropy"]


@_single_threaded
def entropy(logits: Any) -> float:
    """Entropy in nats of ``softmax(logits)`` over the full vocabulary.

    Args:
        logits: 1-D numpy array or torch tensor of length V (any real float dtype, any device),
            e.g. ``outputs.logits[0, -1]``. ``-inf`` entries are masked tokens.

    Returns:
        A float in ``[0, ln V]``; ``ln V`` for uniform logits.
    """
    x, top = _as_logits(logits)  # (V,) float32, max(x)
    shifted = x - top  # (V,) <= 0, -inf where masked
    weights = torch.exp(shifted)  # (V,) unnormalised probabilities, 0 where masked
    total = float(weights.sum())  # >= 1: the max entry contributes exp(0)
    weighted = weights * shifted  # (V,) NaN where masked (0 * -inf)
    dot = float(weighted.sum())
    if math.isnan(dot):  # only masked tokens can cause it: the input has no NaN
        dot = float(torch.nan_to_num(weighted, nan=0.0).sum())  # they contribute 0 * ln 0 = 0
    # H = -sum p ln p with p = w / total and ln p = shifted - ln total.
    return max(math.log(total) - dot / total, 0.0)


@_single_threaded
def topk_entropy(logits: Any, k: int = 20) -> float:
    """GlimpRouter's entropy: the renormalised top-k probabilities' entropy, in nats.

    Args:
        logits: 1-D numpy array or torch tensor of length V (any real float dtype, any device).
        k: how many of the most likely tokens to keep, >= 1 (GlimpRouter: 20, matching
            ``top_logprobs=20``). A ``k`` above V is clamped to V, which gives :func:`entropy`.

    Returns:
        A float in ``[0, ln min(k, V)]``: ``ln k`` when the top k logits are equal.
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(
            f"k (={k!r}) must be an integer >= 1: the number of top tokens kept "
            "(GlimpRouter uses k=20)."
        )
    x, _ = _as_logits(logits)  # (V,) float32
    k = min(int(k), x.numel())
    if x.device.type == "cpu":  # introselect: about 2x faster than torch.topk on one CPU thread
        top = np.partition(x.numpy(), x.numel() - k)[-k:].astype(np.float64)  # (k,)
    else:
        top = torch.topk(x, k, sorted=False).values.double().cpu().numpy()  # (k,)
    shifted = top - top.max()  # (k,) <= 0
    weights = np.exp(shifted)  # (k,)
    total = float(weights.sum())
    finite = weights > 0.0  # masked tokens (-inf) can be in the top k when V has few finite ones
    value = math.log(total) - float((weights[finite] * shifted[finite]).sum()) / total
    return max(value, 0.0)


def _as_logits(logits: Any) -> tuple[torch.Tensor, float]:
    """Validate ``logits``; return them as a 1-D float32 torch tensor on their device, and max."""
    if isinstance(logits, torch.Tensor):
        if logits.is_complex() or logits.dtype == torch.bool:
            raise TypeError(f"logits have dtype {logits.dtype}; pass real floating logits.")
        x = logits.detach().to(torch.float32)
    else:
        array = np.asarray(logits)
        if array.dtype.kind not in "fiu":
            raise TypeError(f"logits have dtype {array.dtype}; pass a real numeric numpy array.")
        x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if x.ndim != 1 or x.numel() == 0:
        raise ValueError(
            f"logits have shape {tuple(x.shape)}; expected a non-empty 1-D vector over the "
            "vocabulary, e.g. outputs.logits[0, -1] for the next token of a (1, T, V) output."
        )
    top = float(x.max())  # NaN if any entry is NaN
    if not top < math.inf:
        n_nan = int(torch.isnan(x).sum())
        if n_nan:
            raise ValueError(
                f"logits contain {n_nan} NaN entr{'y' if n_nan == 1 else 'ies'} of {x.numel()}; "
                "check the model output (e.g. a float16 overflow) before computing the entropy."
            )
        raise ValueError("logits contain +inf; mask tokens with -inf, never +inf.")
    if top == -math.inf:
        raise ValueError("every logit is -inf (all tokens masked): the distribution is undefined.")
    return x, top
