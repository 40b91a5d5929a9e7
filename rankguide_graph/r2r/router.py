"""The R2R router: a small network that says, at each SRM token, whether the LRM should write it.

Architecture (R2R §4.2, its ``HiddenStatesTokenLMHeadLogitsClassifier``): three inputs per
token, the SRM's last-layer hidden state (d), its top-k next-token logit values (k, sorted
descending) and the SRM's input embedding of the token it predicts (d, a frozen reference to the
SRM's own embedding, bound with :meth:`R2RRouter.bind_embedding` and never saved in the router
file). Each is projected to the width w, the three are concatenated and projected to w, then
``depth`` pre-LayerNorm residual MLP blocks (expansion 4, GELU, dropout 0.1), a final LayerNorm
and ``Linear(w -> 1)`` give one logit. R2R uses six blocks of width 1024; the demo pair needs far
less (the defaults here: width 128, depth 2).

A router file is ``PATH`` (safetensors, the trained parameters only) and ``PATH.json`` (its
metadata: format, SRM name, hidden size, vocab size, top_k, width, depth, threshold, metrics,
recipe). Never pickle. :func:`load_router` refuses a file for another SRM (hidden size, vocab
size, or name unless ``allow_other_name``) and a missing or damaged file, naming it.

Threshold semantics (:meth:`LoadedRouter.routes`): a token goes to the LRM when its probability
is above the threshold, ``prob > threshold``; threshold 0.0 routes every token (even at prob 0)
and threshold 1.0 routes none.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from rankguide_graph.atomic_files import write_atomically
from rankguide_graph.backend.loading import LoadedModel, safetensors_problem
from rankguide_graph.errors import ConfigError, ModelLoadError

__all__ = [
    "ROUTER_FORMAT",
    "embedding_weight",
    "LoadedRouter",
    "R2RRouter",
    "RouterConfig",
    "load_router",
    "router_sidecar",
    "same_srm",
    "save_router",
    "srm_vocab_size",
]

ROUTER_FORMAT = "rankguide-r2r-router/1"
"""The ``format`` string of a router's JSON metadata."""


@dataclass(frozen=True)
class RouterConfig:
    """The shape of a router."""

    hidden_size: int
    """d: the SRM's hidden size (and embedding width)."""
    vocab_size: int
    """V: rows of the SRM's input embedding."""
    top_k: int = 100
    """k: how many of the largest logit values the router reads."""
    width: int = 128
    """w: width of the residual stream (R2R: 1024)."""
    depth: int = 2
    """Number of residual MLP blocks (R2R: 6)."""
    expansion: int = 4
    dropout: float = 0.1

    def __post_init__(self) -> None:
        for name in ("hidden_size", "vocab_size", "top_k", "width", "expansion"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"router {name} (={value!r}) must be a positive int")
        if not isinstance(self.depth, int) or self.depth < 0:
            raise ConfigError(f"router depth (={self.depth!r}) must be an int >= 0")
        if self.top_k > self.vocab_size:
            raise ConfigError(
                f"router top_k (={self.top_k}) exceeds the vocab size (={self.vocab_size})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"router dropout (={self.dropout}) must be in [0, 1)")


class _Block(nn.Module):
    """Pre-LayerNorm residual MLP block: ``x + drop(W2 drop(gelu(W1 ln(x))))``."""

    def __init__(self, width: int, expansion: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.up = nn.Linear(width, expansion * width)
        self.down = nn.Linear(expansion * width, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, w) -> (N, w)
        h = self.drop(nn.functional.gelu(self.up(self.norm(x))))  # (N, e*w)
        return x + self.drop(self.down(h))  # (N, w)


class R2RRouter(nn.Module):
    """The router network; :meth:`forward` returns one logit per token (divergent if high)."""

    def __init__(self, config: RouterConfig) -> None:
        super().__init__()
        self.config = config
        d, k, w = config.hidden_size, config.top_k, config.width
        self.hidden_proj = nn.Linear(d, w)
        self.logits_proj = nn.Linear(k, w)
        self.token_proj = nn.Linear(d, w)
        self.combine = nn.Linear(3 * w, w)
        self.blocks = nn.ModuleList(
            _Block(w, config.expansion, config.dropout) for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(w)
        self.head = nn.Linear(w, 1)
        # A plain attribute, not a parameter or buffer: never trained, never in the state dict.
        self._embedding: torch.Tensor | None = None  # (V, d)

    @property
    def has_embedding(self) -> bool:
        """Whether an SRM embedding is bound."""
        return self._embedding is not None

    def bind_embedding(self, embedding: nn.Module | torch.Tensor) -> None:
        """Read token embeddings from ``embedding``: the SRM's input embedding or its (V, d) weight.

        A detached reference, so it is frozen and shares the SRM's memory.
        """
        weight = embedding_weight(embedding)
        expected = (self.config.vocab_size, self.config.hidden_size)
        if tuple(weight.shape) != expected:
            raise ConfigError(
                f"the SRM embedding has shape {tuple(weight.shape)}, the router was built for "
                f"{expected} (vocab size, hidden size): it belongs to another SRM"
            )
        self._embedding = weight.detach()

    def forward(
        self, hidden: torch.Tensor, topk_logits: torch.Tensor, token_ids: torch.Tensor
    ) -> torch.Tensor:
        """Logits (N,) for hidden states (N, d), top-k logit values (N, k) and token ids (N,)."""
        if self._embedding is None:
            raise ConfigError("the router has no SRM embedding: call bind_embedding(srm) first")
        dtype = self.head.weight.dtype
        device = self.head.weight.device
        emb = self._embedding[token_ids.to(self._embedding.device)]  # (N, d)
        parts = [
            self.hidden_proj(hidden.to(device, dtype)),  # (N, w)
            self.logits_proj(topk_logits.to(device, dtype)),  # (N, w)
            self.token_proj(emb.to(device, dtype)),  # (N, w)
        ]
        x = self.combine(torch.cat(parts, dim=-1))  # (N, 3w) -> (N, w)
        for block in self.blocks:
            x = block(x)  # (N, w)
        return self.head(self.norm(x)).squeeze(-1)  # (N,)


def embedding_weight(embedding: nn.Module | torch.Tensor) -> torch.Tensor:
    """The (V, d) weight of an embedding module (or the weight itself)."""
    weight = embedding if isinstance(embedding, torch.Tensor) else embedding.weight
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise ConfigError("an SRM embedding must be an embedding module or a (V, d) weight")
    return weight


def srm_vocab_size(srm: LoadedModel) -> int:
    """Rows of the SRM's input embedding (the ids a predicted token can take)."""
    return int(embedding_weight(srm.model.get_input_embeddings()).shape[0])


def same_srm(a: str, b: str) -> bool:
    """Whether two SRM names mean the same model: equal, or the same local directory.

    ``"demo"`` is the embedded demo SRM.
    """
    if a == b:
        return True
    paths = [_as_path(name) for name in (a, b)]
    return paths[0] is not None and paths[0] == paths[1]


def _as_path(name: str) -> Path | None:
    if name == "demo":
        from rankguide_graph.demo.pair import demo_dir

        try:
            return (demo_dir() / "srm").resolve()
        except (OSError, ValueError):
            return None
    path = Path(name).expanduser()
    return path.resolve() if path.is_dir() else None


@dataclass
class LoadedRouter:
    """A router with its threshold, ready to score tokens (in eval mode, no gradients)."""

    router: R2RRouter
    threshold: float
    meta: dict[str, Any] = field(default_factory=dict)
    """The JSON metadata it was saved with."""

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.threshold) <= 1.0:
            raise ConfigError(f"router threshold (={self.threshold}) must be in [0, 1]")
        self.router.eval()

    @property
    def top_k(self) -> int:
        """k, the number of logit values the router reads."""
        return self.router.config.top_k

    def bind(self, srm: LoadedModel) -> None:
        """Bind the SRM's input embedding (checked against the router's shape)."""
        self.router.bind_embedding(srm.model.get_input_embeddings())

    @torch.no_grad()
    def probs(
        self, hidden: torch.Tensor, logits: torch.Tensor, tokens: torch.Tensor
    ) -> torch.Tensor:
        """Divergence probabilities (N,) float32 on the CPU.

        From hidden states (N, d), the SRM's full next-token logits (N, V) and the tokens it
        predicts (N,).
        """
        k = self.router.config.top_k
        topk = torch.topk(logits.float(), k, dim=-1).values  # (N, k), sorted descending
        return torch.sigmoid(self.router(hidden, topk, tokens).float()).cpu()  # (N,)

    def prob(self, hidden: torch.Tensor, logits: torch.Tensor, token: int) -> float:
        """Divergence probability of one token: hidden state (d,), full logits (V,)."""
        ids = torch.tensor([int(token)], dtype=torch.long)
        return float(self.probs(hidden.reshape(1, -1), logits.reshape(1, -1), ids)[0])

    def routes(self, prob: float) -> bool:
        """Whether a token with this probability goes to the LRM.

        ``prob > threshold``, except that threshold 0.0 always routes and 1.0 never does.
        """
        if self.threshold <= 0.0:
            return True
        if self.threshold >= 1.0:
            return False
        return prob > self.threshold


def router_sidecar(path: str | os.PathLike[str]) -> Path:
    """The JSON metadata next to a router file: ``PATH.json``."""
    return Path(os.fspath(path) + ".json")


def save_router(
    router: R2RRouter, path: str | os.PathLike[str], meta: Mapping[str, Any]
) -> tuple[Path, Path]:
    """Write ``router``'s parameters to ``path`` and its metadata to ``PATH.json``, atomically.

    ``meta`` must name the SRM (``srm``) and holds JSON-serialisable values (``threshold``,
    ``metrics``, ``recipe``, ...); the router's shape is added from its config. The SRM
    embedding is not saved.
    """
    if "srm" not in meta:
        raise ConfigError("router metadata must name its SRM (meta['srm'])")
    threshold = float(meta.get("threshold", 0.5))
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"router threshold (={threshold}) must be in [0, 1]")
    target, sidecar = Path(path), router_sidecar(path)
    body = {"format": ROUTER_FORMAT, **meta, **asdict(router.config), "threshold": threshold}
    text = json.dumps(body, indent=2, ensure_ascii=False) + "\n"
    header = {"format": ROUTER_FORMAT, "srm": str(meta["srm"])}
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in router.state_dict().items()}
    write_atomically(
        "the router",
        target,
        {
            target: lambda tmp: save_file(tensors, tmp, header),
            sidecar: lambda tmp: tmp.write_text(text, encoding="utf-8"),
        },
    )
    return target, sidecar


def load_router(
    path: str | os.PathLike[str],
    srm: LoadedModel | None = None,
    *,
    allow_other_name: bool = False,
    device: str | torch.device | None = None,
) -> LoadedRouter:
    """Read a router written by :func:`save_router` (``rankguide r2r-train``).

    With ``srm`` the router is checked against it (hidden size, vocab size, name unless
    ``allow_other_name``) and its embedding is bound; without, call :meth:`LoadedRouter.bind`
    before scoring. ``device`` defaults to the SRM's device, else CPU.
    """
    name = os.fspath(path)
    target, sidecar = Path(name), router_sidecar(name)
    if not target.is_file():
        raise ModelLoadError(f"router file {name!r} does not exist: train one with r2r-train")
    if not sidecar.is_file():
        raise ModelLoadError(
            f"router file {name!r} has no metadata {str(sidecar)!r}: copy both files together"
        )
    meta = _read_router_meta(sidecar)
    try:
        config = RouterConfig(
            **{key: meta[key] for key in RouterConfig.__dataclass_fields__ if key in meta}
        )
    except (ConfigError, TypeError) as err:
        raise ModelLoadError(f"router metadata {str(sidecar)!r} is invalid: {err}") from err
    if srm is not None:
        _check_srm(name, meta, config, srm, allow_other_name)
    problem = safetensors_problem(target)
    if problem:
        raise ModelLoadError(f"router file {name!r} is damaged ({problem}): train or copy it again")
    try:
        tensors = load_file(name)
        router = R2RRouter(config)
        router.load_state_dict(tensors, strict=True)
    except (OSError, SafetensorError, RuntimeError) as err:
        raise ModelLoadError(f"router file {name!r} is not readable: {err}") from err
    target_device = torch.device(device) if device is not None else None
    if target_device is None and srm is not None:
        target_device = srm.device
    if target_device is not None:
        router.to(target_device)
    if srm is not None:
        router.bind_embedding(srm.model.get_input_embeddings())
    return LoadedRouter(router=router, threshold=float(meta["threshold"]), meta=meta)


def _read_router_meta(sidecar: Path) -> dict[str, Any]:
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelLoadError(
            f"router metadata {str(sidecar)!r} is not readable JSON: {err}"
        ) from err
    if not isinstance(meta, dict) or meta.get("format") != ROUTER_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise ModelLoadError(
            f"router metadata {str(sidecar)!r} has format {found!r}, expected {ROUTER_FORMAT!r}"
        )
    for key in ("srm", "hidden_size", "vocab_size", "threshold"):
        if key not in meta:
            raise ModelLoadError(f"router metadata {str(sidecar)!r} lacks {key!r}")
    threshold = meta["threshold"]
    if not isinstance(threshold, int | float) or not 0.0 <= threshold <= 1.0:
        raise ModelLoadError(
            f"router metadata {str(sidecar)!r}: threshold (={threshold!r}) must be in [0, 1]"
        )
    return meta


def _check_srm(
    name: str, meta: dict[str, Any], config: RouterConfig, srm: LoadedModel, allow_other_name: bool
) -> None:
    vocab = srm_vocab_size(srm)
    ours = f"SRM {meta['srm']!r} (hidden size {config.hidden_size}, vocab {config.vocab_size})"
    theirs = f"SRM {srm.name!r} (hidden size {srm.hidden_size}, vocab {vocab})"
    if config.hidden_size != srm.hidden_size or config.vocab_size != vocab:
        raise ConfigError(f"router file {name!r} was trained for {ours}, not for {theirs}")
    if not allow_other_name and not same_srm(str(meta["srm"]), srm.name):
        raise ConfigError(
            f"router file {name!r} was trained for {ours}, not for {theirs}: pass "
            "allow_other_name=True if it is the same model under another name"
        )
