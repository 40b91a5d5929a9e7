"""Training the R2R router on label shards, and choosing its threshold on validation.

The recipe of R2R's public code: ``BCEWithLogitsLoss(pos_weight = n_neg / n_pos)`` against the
class imbalance (few tokens are divergent), AdamW (lr 5e-5, weight decay 5e-4), batches of 1024,
early stopping on the validation loss (the best epoch's weights are kept). The validation split
is a share of the problems (seeded), so tokens of one problem never sit on both sides; with a
single problem it is a share of the tokens.

The threshold is chosen on the validation split only, with the routing rule ``prob > threshold``
(:meth:`LoadedRouter.routes`): either the largest threshold whose recall of divergent tokens is at
least ``target_recall`` (R2R: 0.95), or the one whose share of routed tokens is the largest not
above ``target_lrm_share``.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from rankguide_graph.errors import ConfigError
from rankguide_graph.r2r.labels_io import LabelSet
from rankguide_graph.r2r.router import R2RRouter, RouterConfig, embedding_weight

__all__ = ["TrainConfig", "TrainResult", "choose_threshold", "routing_metrics", "train_router"]


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of :func:`train_router` (defaults: R2R's, at the demo's width)."""

    width: int = 128
    depth: int = 2
    epochs: int = 20
    lr: float = 5e-5
    weight_decay: float = 5e-4
    batch_size: int = 1024
    patience: int = 3
    """Epochs without a better validation loss before stopping."""
    val_share: float = 0.1
    target_recall: float | None = 0.95
    target_lrm_share: float | None = None
    """Used instead of ``target_recall`` when set."""
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if not 0.0 < self.val_share < 1.0:
            raise ConfigError(f"val_share (={self.val_share}) must be in (0, 1)")
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise ConfigError(
                f"epochs (={self.epochs}), batch_size (={self.batch_size}) and patience "
                f"(={self.patience}) must be >= 1"
            )
        if self.lr <= 0 or self.weight_decay < 0:
            raise ConfigError(f"lr (={self.lr}) must be > 0, weight_decay >= 0")
        if self.target_lrm_share is not None:
            if not 0.0 <= self.target_lrm_share <= 1.0:
                raise ConfigError(f"target LRM share (={self.target_lrm_share}) must be in [0, 1]")
        elif self.target_recall is None or not 0.0 < self.target_recall <= 1.0:
            raise ConfigError(f"target recall (={self.target_recall}) must be in (0, 1]")


@dataclass
class TrainResult:
    """A trained router, its threshold and what was measured on validation."""

    router: R2RRouter
    threshold: float
    metrics: dict[str, Any]
    recipe: dict[str, Any]


def split_rows(labels: LabelSet, val_share: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and validation row indices.

    The validation rows are a seeded share of the problems (of the tokens when there is only one
    problem).
    """
    gen = torch.Generator().manual_seed(seed)
    n = len(labels)
    problems = torch.unique(labels.problem_index)  # (P,)
    if problems.numel() >= 2:
        order = problems[torch.randperm(problems.numel(), generator=gen)]
        n_val = min(max(1, round(val_share * problems.numel())), problems.numel() - 1)
        is_val = torch.isin(labels.problem_index, order[:n_val])  # (N,)
    else:
        rows = torch.randperm(n, generator=gen)
        n_val = min(max(1, round(val_share * n)), n - 1)
        is_val = torch.zeros(n, dtype=torch.bool)
        is_val[rows[:n_val]] = True
    all_rows = torch.arange(n)
    return all_rows[~is_val], all_rows[is_val]


def choose_threshold(
    probs: torch.Tensor,
    labels: torch.Tensor,
    *,
    target_recall: float | None = 0.95,
    target_lrm_share: float | None = None,
) -> float:
    """The threshold for the rule ``prob > threshold``, from validation probs (N,) and labels (N,).

    The largest threshold whose recall is >= ``target_recall``, or (when ``target_lrm_share``
    is set) the one routing the largest share of tokens not above it.
    """
    p = probs.double()  # (N,)
    if target_lrm_share is not None:
        allowed = math.floor(target_lrm_share * p.numel() + 1e-9)  # routed tokens at most
        if allowed >= p.numel():
            return 0.0
        # Everything strictly above the (allowed+1)-th largest value routes: <= allowed tokens.
        return min(1.0, float(torch.sort(p, descending=True).values[allowed]))
    if target_recall is None:
        raise ConfigError("choose_threshold needs target_recall or target_lrm_share")
    positives = torch.sort(p[labels.bool()], descending=True).values  # (P,)
    if positives.numel() == 0:
        raise ConfigError("no divergent token in the validation split: cannot measure recall")
    needed = math.ceil(target_recall * positives.numel() - 1e-9)  # positives that must route
    value = float(positives[needed - 1])  # the needed-th largest positive must be above it
    return max(0.0, min(1.0, math.nextafter(value, -math.inf)))


def routing_metrics(probs: torch.Tensor, labels: torch.Tensor, threshold: float) -> dict[str, Any]:
    """Recall, precision and routed share at ``threshold`` (rule of :meth:`LoadedRouter.routes`)."""
    if threshold <= 0.0:
        routed = torch.ones_like(labels, dtype=torch.bool)
    elif threshold >= 1.0:
        routed = torch.zeros_like(labels, dtype=torch.bool)
    else:
        routed = probs.double() > threshold  # (N,)
    truth = labels.bool()  # (N,)
    hits = int((routed & truth).sum())
    return {
        "recall": hits / max(1, int(truth.sum())),
        "precision": hits / max(1, int(routed.sum())),
        "routed_share": int(routed.sum()) / max(1, truth.numel()),
        "positive_rate": int(truth.sum()) / max(1, truth.numel()),
    }


def train_router(
    labels: LabelSet,
    embedding: nn.Module | torch.Tensor,
    config: TrainConfig,
    *,
    srm_vocab_size: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train a router on ``labels`` with the SRM's input ``embedding`` bound; see the module."""
    from tqdm.auto import tqdm

    torch.manual_seed(config.seed)
    weight = embedding_weight(embedding)
    vocab = srm_vocab_size if srm_vocab_size is not None else int(weight.shape[0])
    train_rows, val_rows = split_rows(labels, config.val_share, config.seed)
    train, val = labels.subset(train_rows), labels.subset(val_rows)
    n_pos = train.positives
    n_neg = len(train) - n_pos
    if n_pos == 0 or n_neg == 0:
        which = "divergent" if n_pos == 0 else "non-divergent"
        raise ConfigError(f"the training split has no {which} token: cannot train a classifier")
    if val.positives == 0 and config.target_lrm_share is None:
        raise ConfigError(
            "the validation split has no divergent token: raise --val-share, label more "
            "problems, or choose the threshold with --target-lrm-share"
        )
    device = torch.device(config.device)
    router = R2RRouter(
        RouterConfig(
            hidden_size=labels.hidden_size,
            vocab_size=vocab,
            top_k=labels.top_k,
            width=config.width,
            depth=config.depth,
        )
    ).to(device)
    router.bind_embedding(weight)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(n_neg / n_pos, device=device))
    optimizer = torch.optim.AdamW(
        router.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    gen = torch.Generator().manual_seed(config.seed)
    steps = math.ceil(len(train) / config.batch_size)
    best_loss, best_state, best_epoch, stale = math.inf, None, 0, 0
    epochs_run = 0
    bar = tqdm(
        total=config.epochs * steps,
        desc="r2r-train",
        unit="batch",
        file=sys.stderr,
        disable=None if progress else True,
    )
    with bar:
        for epoch in range(1, config.epochs + 1):
            epochs_run = epoch
            router.train()
            order = torch.randperm(len(train), generator=gen)  # (N_train,)
            for start in range(0, len(train), config.batch_size):
                rows = order[start : start + config.batch_size]  # (B,)
                logits = router(train.hidden[rows], train.topk_logits[rows], train.token_ids[rows])
                loss = loss_fn(logits, train.labels[rows].to(device, torch.float32))  # ()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                bar.update()
            val_loss, _ = _evaluate(router, val, loss_fn, config.batch_size)
            bar.set_postfix(epoch=epoch, val_loss=f"{val_loss:.4f}")
            if val_loss < best_loss - 1e-6:
                best_loss, best_epoch, stale = val_loss, epoch, 0
                best_state = {k: v.detach().clone() for k, v in router.state_dict().items()}
            else:
                stale += 1
                if stale >= config.patience:
                    bar.update(bar.total - bar.n)
                    break
    if best_state is not None:
        router.load_state_dict(best_state)
    val_loss, val_probs = _evaluate(router, val, loss_fn, config.batch_size)
    threshold = choose_threshold(
        val_probs,
        val.labels,
        target_recall=config.target_recall,
        target_lrm_share=config.target_lrm_share,
    )
    metrics = {
        "val_loss": val_loss,
        **routing_metrics(val_probs, val.labels, threshold),
        "best_epoch": best_epoch,
        "epochs_run": epochs_run,
        "counts": {
            "train_tokens": len(train),
            "train_divergent": n_pos,
            "val_tokens": len(val),
            "val_divergent": val.positives,
            "val_problems": int(torch.unique(val.problem_index).numel()),
        },
        "split": "validation",
    }
    router.eval()
    recipe = {**asdict(config), "loss": "BCEWithLogitsLoss(pos_weight=n_neg/n_pos)"}
    return TrainResult(router=router, threshold=threshold, metrics=metrics, recipe=recipe)


@torch.no_grad()
def _evaluate(
    router: R2RRouter, data: LabelSet, loss_fn: nn.Module, batch_size: int
) -> tuple[float, torch.Tensor]:
    """Mean weighted loss and the probabilities (N,) on ``data``, in eval mode."""
    router.eval()
    logits = torch.cat(
        [
            router(
                data.hidden[i : i + batch_size],
                data.topk_logits[i : i + batch_size],
                data.token_ids[i : i + batch_size],
            ).float()
            for i in range(0, len(data), batch_size)
        ]
    )  # (N,)
    target = data.labels.to(logits.device, torch.float32)  # (N,)
    loss = float(loss_fn(logits, target))
    return loss, torch.sigmoid(logits).cpu()
