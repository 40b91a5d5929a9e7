"""Loading local HuggingFace causal LMs that expose hidden states.

``load_causal_lm`` accepts a local directory or a hub id. A hub id is served from the local cache
when it is there; otherwise the hub is probed once with a short timeout, so a machine without
network fails in well under a second with a message that says so (``transformers`` alone retries
for about half a minute). ``trust_remote_code`` stays off unless asked for.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from rankguide_graph.backend.devices import resolve_device, resolve_dtype
from rankguide_graph.errors import ModelLoadError, TokenizerMismatchError


@dataclass
class LoadedModel:
    """A causal LM, its tokenizer and where it lives."""

    model: PreTrainedModel
    """The model, in eval mode."""
    tokenizer: PreTrainedTokenizerBase
    """Its tokenizer."""
    name: str
    """The directory or hub id it was loaded from."""

    @property
    def device(self) -> torch.device:
        """Device of the input embeddings (where input ids must go)."""
        return next(self.model.get_input_embeddings().parameters()).device

    @property
    def num_layers(self) -> int:
        """Number of decoder layers."""
        return int(self.model.config.num_hidden_layers)

    @property
    def hidden_size(self) -> int:
        """Width of the residual stream."""
        return int(self.model.config.hidden_size)

    @property
    def max_context(self) -> int | None:
        """Longest sequence the model's position encoding supports, when the config says."""
        value = getattr(self.model.config, "max_position_embeddings", None)
        return int(value) if value else None


def _is_local(name: str) -> bool:
    return Path(name).expanduser().is_dir()


def _looks_like_path(name: str) -> bool:
    """Hub ids are ``name`` or ``org/name``; anything else is meant as a filesystem path."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def _local_parent(name: str) -> Path | None:
    """The existing local directory a hub-id-shaped ``org/name`` starts in, if any."""
    first = Path(name).expanduser().parts[:1]
    return Path(first[0]) if first and Path(first[0]).is_dir() and "/" in name else None


def resolve_source(name: str, hub_timeout_s: float) -> tuple[str, bool]:
    """Return ``(source, local_files_only)`` for ``name`` or raise a fast, explicit error."""
    if _is_local(name):
        return str(Path(name).expanduser()), True
    if _looks_like_path(name):
        raise ModelLoadError(
            f"model path (={name!r}) is not a directory: pass a directory written by "
            "`save_pretrained`, or a hub id such as 'Qwen/Qwen3-4B'"
        )
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(name, "config.json")
    if isinstance(cached, str):
        return name, True
    parent = _local_parent(name)
    if parent is not None:  # 'models/srm' with a local models/: a mistyped path, not a hub id
        raise ModelLoadError(
            f"model path (={name!r}) does not exist ({str(parent)!r} is a local directory, but "
            f"it has no {Path(name).name!r}): check the path"
        )
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise ModelLoadError(
            f"hub id (={name!r}) is not in the local cache and HF_HUB_OFFLINE is set: download it "
            "on a machine with network (`hf download ...`) or pass a local directory"
        )
    from huggingface_hub import HfApi

    try:
        HfApi().model_info(name, timeout=hub_timeout_s)
    except Exception as err:  # connection refused, DNS failure, 404, gated repo ...
        raise ModelLoadError(
            f"{name!r} is not a local directory (no {str(Path(name).absolute())!r}) and the "
            f"Hugging Face Hub cannot be reached for it ({type(err).__name__}: {err}): check the "
            "path, or on a machine without network pass a local directory written by "
            "`save_pretrained` (or download the model first)"
        ) from err
    return name, False


def check_model_directory(directory: Path, name: str, kind: str = "a causal LM") -> None:
    """Refuse a local directory with no ``config.json`` or a damaged safetensors file."""
    if not (directory / "config.json").is_file():
        found = sorted(p.name for p in directory.iterdir())[:5]
        holds = f"it holds {found}" if found else "it is empty"
        raise ModelLoadError(
            f"could not load {kind} from {name!r}: the directory has no config.json ("
            f"{holds}): pass a directory written by `save_pretrained` (config.json, weights, "
            "tokenizer)"
        )
    for weights in sorted(directory.glob("*.safetensors")):
        problem = safetensors_problem(weights)
        if problem is not None:
            raise ModelLoadError(
                f"the weights file {str(weights)!r} is damaged ({problem}): it was cut short or "
                "overwritten; copy or download the model again"
            )


def safetensors_problem(path: Path) -> str | None:
    """What is wrong with a safetensors file's header and length, or ``None`` (headers only)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"{size} bytes, shorter than a safetensors header"
        length = int.from_bytes(head, "little")
        if length == 0 or 8 + length > size:
            return f"its header claims {length} bytes of metadata, the file has {size} bytes"
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return "its header is not JSON"
    if not isinstance(header, dict):
        return "its header is not a JSON object"
    try:
        end = max(
            (int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"),
            default=0,
        )
    except (KeyError, IndexError, TypeError, ValueError):
        return "its header lists a tensor without data_offsets"
    if 8 + length + end > size:
        return f"it holds {size} bytes of the {8 + length + end} its header describes"
    return None


def load_causal_lm(
    name_or_path: str | os.PathLike[str],
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    device_map: str | dict[str, object] | None = None,
    trust_remote_code: bool = False,
    hub_timeout_s: float = 10.0,
) -> LoadedModel:
    """Load a causal LM and its tokenizer for step-wise generation.

    Args:
        name_or_path: a local directory or a hub id.
        device: ``None`` picks CUDA when available, else CPU. Ignored when ``device_map`` is given.
        dtype: ``None`` picks bfloat16 on CUDA and float32 on CPU.
        device_map: e.g. ``"auto"`` to spread a large model over several GPUs (needs accelerate).
        trust_remote_code: run modelling code shipped with the checkpoint (off by default).
        hub_timeout_s: how long to wait for the hub before failing, for ids not in the cache.
    """
    name = os.fspath(name_or_path)
    source, local_only = resolve_source(name, hub_timeout_s)
    if Path(source).is_dir():
        check_model_directory(Path(source), name)
    resolved_device = resolve_device(device) if device_map is None else None
    weight_dtype = resolve_dtype(dtype, resolved_device or torch.device("cuda"))
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            source, local_files_only=local_only, trust_remote_code=trust_remote_code
        )
        model = AutoModelForCausalLM.from_pretrained(
            source,
            dtype=weight_dtype,
            device_map=device_map,
            local_files_only=local_only,
            trust_remote_code=trust_remote_code,
        )
    except (OSError, ValueError, ImportError, SafetensorError) as err:
        raise ModelLoadError(f"could not load a causal LM from {name!r}: {err}") from err
    if resolved_device is not None:
        model.to(resolved_device)  # type: ignore[arg-type]  # transformers' stub is too narrow
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, name=name)


def check_same_tokenizer(srm: LoadedModel, lrm: LoadedModel) -> None:
    """Refuse an SRM/LRM pair whose tokenizers differ (token-level routing needs one vocabulary)."""
    a, b = srm.tokenizer, lrm.tokenizer
    if a is b:
        return
    vocab_a, vocab_b = a.get_vocab(), b.get_vocab()
    if vocab_a == vocab_b and a.all_special_tokens == b.all_special_tokens:
        return
    only_a = len(vocab_a.keys() - vocab_b.keys())
    only_b = len(vocab_b.keys() - vocab_a.keys())
    raise TokenizerMismatchError(
        f"the SRM ({srm.name!r}, vocabulary {len(vocab_a)}) and the LRM ({lrm.name!r}, vocabulary "
        f"{len(vocab_b)}) use different tokenizers ({only_a} tokens only in the SRM's, {only_b} "
        "only in the LRM's, special tokens "
        f"{'equal' if a.all_special_tokens == b.all_special_tokens else 'different'}): "
        "pick two models of one family (e.g. Qwen3-4B with Qwen3-32B)"
    )
