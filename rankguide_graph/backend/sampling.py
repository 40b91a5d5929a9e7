"""Choosing the next token from logits: greedy at temperature 0, else temperature / top-k / top-p.

Greedy decoding takes ``argmax`` of the raw logits, exactly what ``generate(do_sample=False)`` does,
so a step-wise run reproduces one-shot greedy generation token for token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rankguide_graph.errors import ConfigError

MIN_TEMPERATURE = 1e-6
"""Sampling temperatures below this are taken as this (practically greedy, still sampled)."""


@dataclass(frozen=True, kw_only=True)
class SamplingConfig:
    """How tokens are chosen."""

    temperature: float = 0.0
    """0 means greedy; otherwise logits are divided by it before sampling."""
    top_k: int = 0
    """Keep only the k most likely tokens (0 keeps all)."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set whose probability reaches top_p (1.0 keeps all)."""
    seed: int | None = None
    """Seed of the sampler's own generator (runs with the same seed draw the same tokens)."""

    def __post_init__(self) -> None:
        if not isinstance(self.temperature, int | float) or self.temperature < 0:
            raise ConfigError(
                f"temperature (={self.temperature!r}) must be a float >= 0: use 0 for greedy "
                "decoding, e.g. 0.6 for sampling"
            )
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ConfigError(f"top_k (={self.top_k!r}) must be an int >= 0 (0 disables it)")
        if not isinstance(self.top_p, int | float) or not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p (={self.top_p!r}) must be in (0, 1] (1.0 disables it)")

    @property
    def greedy(self) -> bool:
        """Whether tokens are chosen by argmax."""
        return self.temperature == 0


class TokenSampler:
    """Draws token ids under a ``SamplingConfig`` with its own random generator."""

    def __init__(self, config: SamplingConfig) -> None:
        self.config = config
        self._generator: torch.Generator | None = None
        if not config.greedy:
            self._generator = torch.Generator()
            if config.seed is not None:
                self._generator.manual_seed(config.seed)
            else:
                self._generator.seed()

    def __call__(self, logits: torch.Tensor) -> int:
        """Pick the next token id from next-token ``logits`` of shape (V,)."""
        cfg = self.config
        if cfg.greedy:
            return int(torch.argmax(logits))
        scores = logits.float().cpu()  # (V,)
        # The best score shifted to 0 and a floor on the temperature: a tiny one (5e-324 is 0 in
        # float32) would otherwise turn the scores into inf and nan.
        scores = (scores - scores.max()) / max(cfg.temperature, MIN_TEMPERATURE)
        if cfg.top_k:
            kth = torch.topk(scores, min(cfg.top_k, scores.numel())).values[-1]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if cfg.top_p < 1.0:
            sorted_scores, order = torch.sort(scores, descending=True)  # (V,), (V,)
            cumulative = torch.softmax(sorted_scores, dim=-1).cumsum(dim=-1)
            drop = cumulative - torch.softmax(sorted_scores, dim=-1) >= cfg.top_p
            scores = scores.index_fill(0, order[drop], float("-inf"))
        probs = torch.softmax(scores, dim=-1)  # (V,)
        return int(torch.multinomial(probs, 1, generator=self._generator))
