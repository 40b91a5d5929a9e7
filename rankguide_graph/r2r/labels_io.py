"""R2R label shards on disk: one format for the labeller that writes them and the trainer.

A label directory holds ``labels.json``::

    {"format": "rankguide-r2r-labels/1", "srm": NAME, "lrm": NAME, "hidden_size": d,
     "vocab_size": V, "top_k": k, "verifier": "...",
     "shards": ["shard-00000.safetensors", ...],
     "counts": {"tokens": n, "different": n, "divergent": n}}

and the shards it lists, ``shard-NNNNN.safetensors``, each with the tensors (one row per token):

- ``hidden`` (N, d) float16: the SRM's last-layer hidden state at the token's position;
- ``topk_logits`` (N, k) float16: the SRM's top-k next-token logit values, sorted descending;
- ``token_ids`` (N,) int64: the token the SRM predicts there (its greedy next token);
- ``labels`` (N,) uint8: 1 divergent, 0 neutral or matching;
- ``problem_index`` (N,) int64: which problem of the data set the token belongs to.

Every write is atomic (temporary file, then ``os.replace``); :func:`read_label_dir` checks the
format string, the dtypes and every shape and names the file at fault.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from rankguide_graph.atomic_files import write_atomically
from rankguide_graph.backend.loading import safetensors_problem
from rankguide_graph.errors import ConfigError

__all__ = [
    "LABELS_FORMAT",
    "META_NAME",
    "SHARD_DTYPES",
    "LabelSet",
    "read_label_dir",
    "shard_name",
    "write_label_meta",
    "write_label_shard",
]

LABELS_FORMAT = "rankguide-r2r-labels/1"
"""The ``format`` string of ``labels.json``."""
META_NAME = "labels.json"
SHARD_DTYPES: dict[str, torch.dtype] = {
    "hidden": torch.float16,
    "topk_logits": torch.float16,
    "token_ids": torch.int64,
    "labels": torch.uint8,
    "problem_index": torch.int64,
}
"""The tensors of a shard and the dtype each is stored in."""
_REQUIRED_META = ("srm", "hidden_size", "vocab_size", "top_k", "shards")


@dataclass
class LabelSet:
    """Every shard of a label directory, concatenated (rows are tokens)."""

    meta: dict[str, Any]
    """The contents of ``labels.json``."""
    hidden: torch.Tensor
    """(N, d) float16."""
    topk_logits: torch.Tensor
    """(N, k) float16, sorted descending."""
    token_ids: torch.Tensor
    """(N,) int64."""
    labels: torch.Tensor
    """(N,) uint8, 1 divergent."""
    problem_index: torch.Tensor
    """(N,) int64."""
    path: Path | None = None
    """The directory it was read from."""

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def hidden_size(self) -> int:
        """d, the SRM's hidden size."""
        return int(self.meta["hidden_size"])

    @property
    def vocab_size(self) -> int:
        """V, the SRM's vocab size."""
        return int(self.meta["vocab_size"])

    @property
    def top_k(self) -> int:
        """k, the number of logit values per token."""
        return int(self.meta["top_k"])

    @property
    def positives(self) -> int:
        """Number of divergent tokens."""
        return int(self.labels.sum())

    def subset(self, rows: torch.Tensor) -> LabelSet:
        """The tokens at ``rows`` (a (M,) index tensor), same metadata."""
        return LabelSet(
            meta=self.meta,
            hidden=self.hidden[rows],
            topk_logits=self.topk_logits[rows],
            token_ids=self.token_ids[rows],
            labels=self.labels[rows],
            problem_index=self.problem_index[rows],
            path=self.path,
        )


def shard_name(index: int) -> str:
    """File name of shard ``index``: ``shard-00000.safetensors``."""
    return f"shard-{index:05d}.safetensors"


def write_label_shard(
    directory: str | os.PathLike[str], index: int, tensors: Mapping[str, torch.Tensor]
) -> Path:
    """Write shard ``index`` of a label directory (created if needed); returns its path.

    ``tensors`` holds the five tensors of :data:`SHARD_DTYPES` (any dtype: they are converted);
    their shapes must agree (N rows each, ``hidden`` (N, d), ``topk_logits`` (N, k)).
    """
    root = Path(directory)
    if index < 0:
        raise ConfigError(f"shard index (={index}) must be >= 0")
    target = root / shard_name(index)
    missing = sorted(set(SHARD_DTYPES) - set(tensors))
    if missing:
        raise ConfigError(f"shard {str(target)!r}: missing tensors {missing}")
    out = {
        key: tensors[key].detach().to("cpu", dtype).contiguous()
        for key, dtype in SHARD_DTYPES.items()
    }
    problem = _shape_problem(out)
    if problem:
        raise ConfigError(f"shard {str(target)!r}: {problem}")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"could not create the label directory {str(root)!r}: {err}") from err
    write_atomically("a label shard", target, {target: lambda tmp: save_file(out, tmp)})
    return target


def write_label_meta(directory: str | os.PathLike[str], meta: Mapping[str, Any]) -> Path:
    """Write ``labels.json`` (``format`` is added when absent); returns its path.

    Write it after the shards it lists: a directory whose ``labels.json`` is there is complete.
    """
    root = Path(directory)
    target = root / META_NAME
    body = {"format": LABELS_FORMAT, **meta}
    missing = [key for key in _REQUIRED_META if key not in body]
    if missing:
        raise ConfigError(f"labels metadata for {str(target)!r} lacks {missing}")
    text = json.dumps(body, indent=2, ensure_ascii=False) + "\n"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"could not create the label directory {str(root)!r}: {err}") from err
    write_atomically(
        "the labels metadata", target, {target: lambda tmp: tmp.write_text(text, "utf-8")}
    )
    return target


def read_label_dir(directory: str | os.PathLike[str]) -> LabelSet:
    """Read and check a label directory; every shard is concatenated.

    The directory is written with :func:`write_label_shard` and :func:`write_label_meta`
    (``rankguide r2r-label``).
    """
    root = Path(directory)
    meta_path = root / META_NAME
    if not root.is_dir():
        raise ConfigError(f"label directory {str(root)!r} does not exist")
    if not meta_path.is_file():
        raise ConfigError(
            f"label directory {str(root)!r} has no {META_NAME}: it is empty or its labelling did "
            "not finish; write labels with `rankguide r2r-label`"
        )
    meta = _read_meta(meta_path)
    d, k = int(meta["hidden_size"]), int(meta["top_k"])
    parts: dict[str, list[torch.Tensor]] = {key: [] for key in SHARD_DTYPES}
    for name in meta["shards"]:
        shard = root / str(name)
        tensors = _read_shard(shard)
        problem = _shape_problem(tensors, hidden_size=d, top_k=k)
        if problem:
            raise ConfigError(f"label shard {str(shard)!r}: {problem}")
        for key in SHARD_DTYPES:
            parts[key].append(tensors[key])
    if not parts["labels"] or sum(t.shape[0] for t in parts["labels"]) == 0:
        raise ConfigError(f"label directory {str(root)!r} holds no tokens")
    cat = {key: torch.cat(chunks) for key, chunks in parts.items()}
    if bool((cat["labels"] > 1).any()):
        raise ConfigError(f"label directory {str(root)!r}: labels must be 0 or 1")
    ids = cat["token_ids"]  # (N,)
    if bool(((ids < 0) | (ids >= int(meta["vocab_size"]))).any()):
        raise ConfigError(
            f"label directory {str(root)!r}: token ids must be in [0, {meta['vocab_size']})"
        )
    return LabelSet(meta=meta, path=root, **cat)


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{str(path)!r} is not readable JSON: {err}") from err
    if not isinstance(meta, dict):
        raise ConfigError(f"{str(path)!r} is not a JSON object")
    if meta.get("format") != LABELS_FORMAT:
        raise ConfigError(
            f"{str(path)!r} has format {meta.get('format')!r}, expected {LABELS_FORMAT!r}"
        )
    missing = [key for key in _REQUIRED_META if key not in meta]
    if missing:
        raise ConfigError(f"{str(path)!r} lacks {missing}")
    for key in ("hidden_size", "vocab_size", "top_k"):
        if not isinstance(meta[key], int) or meta[key] < 1:
            raise ConfigError(f"{str(path)!r}: {key} (={meta[key]!r}) must be a positive int")
    if not isinstance(meta["shards"], list):
        raise ConfigError(f"{str(path)!r}: shards must be a list of file names")
    return meta


def _read_shard(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ConfigError(f"label shard {str(path)!r} is listed in {META_NAME} but missing")
    problem = safetensors_problem(path)
    if problem:
        raise ConfigError(f"label shard {str(path)!r} is damaged ({problem})")
    try:
        tensors = load_file(os.fspath(path))
    except (OSError, SafetensorError) as err:
        raise ConfigError(f"label shard {str(path)!r} is not readable: {err}") from err
    missing = sorted(set(SHARD_DTYPES) - set(tensors))
    if missing:
        raise ConfigError(f"label shard {str(path)!r} lacks the tensors {missing}")
    for key, dtype in SHARD_DTYPES.items():
        if tensors[key].dtype != dtype:
            raise ConfigError(
                f"label shard {str(path)!r}: {key} is {tensors[key].dtype}, expected {dtype}"
            )
    return tensors


def _shape_problem(
    tensors: Mapping[str, torch.Tensor], hidden_size: int | None = None, top_k: int | None = None
) -> str | None:
    """What is wrong with the shapes of a shard's tensors, or ``None``."""
    hidden, topk = tensors["hidden"], tensors["topk_logits"]
    if hidden.dim() != 2 or topk.dim() != 2:
        return f"hidden {tuple(hidden.shape)} and topk_logits {tuple(topk.shape)} must be 2-D"
    n = hidden.shape[0]
    for key in ("topk_logits", "token_ids", "labels", "problem_index"):
        if tensors[key].shape[0] != n or (key != "topk_logits" and tensors[key].dim() != 1):
            return f"{key} has shape {tuple(tensors[key].shape)}, expected {n} rows like hidden"
    if hidden_size is not None and hidden.shape[1] != hidden_size:
        return f"hidden has width {hidden.shape[1]}, {META_NAME} says hidden_size {hidden_size}"
    if top_k is not None and topk.shape[1] != top_k:
        return f"topk_logits has {topk.shape[1]} columns, {META_NAME} says top_k {top_k}"
    return None
