"""Tests for the next-token entropy signals (full vocabulary and GlimpRouter's top-k)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rankguide_graph.signals import entropy, topk_entropy


def reference_entropy(logits: np.ndarray) -> float:
    """Plain float64 softmax entropy over the finite logits."""
    x = logits[np.isfinite(logits)].astype(np.float64)
    p = np.exp(x - x.max())
    p /= p.sum()
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


@pytest.mark.parametrize("vocab", [1, 2, 10, 1000, 151_936])
def test_uniform_logits(vocab: int) -> None:
    logits = np.full(vocab, 3.25)
    assert entropy(logits) == pytest.approx(math.log(vocab), abs=1e-6)
    assert topk_entropy(logits) == pytest.approx(math.log(min(20, vocab)), abs=1e-6)
    assert topk_entropy(logits, k=5) == pytest.approx(math.log(min(5, vocab)), abs=1e-6)


def test_one_hot_like_logits() -> None:
    logits = np.zeros(151_936)
    logits[42] = 100.0
    assert entropy(logits) == pytest.approx(0.0, abs=1e-6)
    assert topk_entropy(logits) == pytest.approx(0.0, abs=1e-6)


def test_hand_computed_example() -> None:
    # p = (1/2, 1/4, 1/4): H = 1.5 ln 2. Top-2 renormalised = (2/3, 1/3): H = ln 3 - (2/3) ln 2.
    logits = np.log([0.5, 0.25, 0.25]) + 7.0
    assert entropy(logits) == pytest.approx(1.5 * math.log(2), abs=1e-6)
    assert topk_entropy(logits, k=2) == pytest.approx(math.log(3) - 2 / 3 * math.log(2), abs=1e-6)
    assert topk_entropy(logits, k=1) == 0.0


def test_topk_is_renormalised_top_probabilities() -> None:
    rng = np.random.default_rng(0)
    logits = 3.0 * rng.standard_normal(5000)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    top = np.sort(p)[-20:]
    top /= top.sum()
    expected = float(-(top * np.log(top)).sum())
    assert topk_entropy(logits, k=20) == pytest.approx(expected, abs=1e-6)
    assert topk_entropy(logits, k=20) <= math.log(20)


@pytest.mark.parametrize("scale", [0.1, 1.0, 3.0, 30.0])
def test_matches_float64_reference(scale: float) -> None:
    logits = scale * np.random.default_rng(1).standard_normal(151_936)
    assert entropy(logits) == pytest.approx(reference_entropy(logits), abs=1e-5)


def test_large_logits_do_not_overflow() -> None:
    assert entropy(np.array([1000.0, 1000.0])) == pytest.approx(math.log(2), abs=1e-6)
    assert entropy(np.array([1e4, 0.0, -1e4])) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_torch_matches_numpy(dtype: torch.dtype) -> None:
    logits = (4 * torch.randn(32_000, generator=torch.Generator().manual_seed(2))).to(dtype)
    as_numpy = logits.to(torch.float64).numpy()
    assert entropy(logits) == pytest.approx(entropy(as_numpy), abs=1e-9)
    assert topk_entropy(logits) == pytest.approx(topk_entropy(as_numpy), abs=1e-9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    logits = 4 * torch.randn(151_936, device="cuda", dtype=torch.bfloat16)
    assert entropy(logits) == pytest.approx(entropy(logits.cpu()), abs=1e-4)
    assert topk_entropy(logits) == pytest.approx(topk_entropy(logits.cpu()), abs=1e-6)


def test_masked_tokens() -> None:
    logits = np.array([0.0, 0.0, -np.inf, -np.inf])
    assert entropy(logits) == pytest.approx(math.log(2), abs=1e-6)
    assert topk_entropy(logits, k=3) == pytest.approx(math.log(2), abs=1e-6)
    assert topk_entropy(logits, k=1) == 0.0
    rng = np.random.default_rng(3)
    logits = rng.standard_normal(1000)
    logits[::3] = -np.inf
    assert entropy(logits) == pytest.approx(reference_entropy(logits), abs=1e-6)


def test_k_above_vocab_is_clamped() -> None:
    logits = np.random.default_rng(4).standard_normal(8)
    assert topk_entropy(logits, k=50) == pytest.approx(entropy(logits), abs=1e-6)


@pytest.mark.parametrize("k", [0, -3, True, 2.5])
def test_bad_k(k) -> None:
    with pytest.raises(ValueError, match=r"k \(="):
        topk_entropy(np.zeros(10), k=k)


@pytest.mark.parametrize("fn", [entropy, topk_entropy])
def test_nan_logits_rejected(fn) -> None:
    logits = np.zeros(10)
    logits[[1, 4]] = np.nan
    with pytest.raises(ValueError, match="2 NaN"):
        fn(logits)


@pytest.mark.parametrize("fn", [entropy, topk_entropy])
def test_bad_logits_rejected(fn) -> None:
    with pytest.raises(ValueError, match=r"\+inf"):
        fn(np.array([0.0, np.inf]))
    with pytest.raises(ValueError, match="all tokens masked"):
        fn(np.full(5, -np.inf))
    with pytest.raises(ValueError, match="1-D"):
        fn(np.zeros((1, 10)))
    with pytest.raises(ValueError, match="1-D"):
        fn(np.zeros(0))
    with pytest.raises(TypeError, match="complex"):
        fn(torch.zeros(4, dtype=torch.complex64))
