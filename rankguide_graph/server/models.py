"""The names the server answers to, and the models behind them.

- ``NAME`` (``"rankguide"`` by default, ``"demo"`` for the embedded pair, or ``--model NAME``):
  the RankGuide pair, for ``/v1/chat/completions``.
- ``NAME-srm`` and ``NAME-lrm``: each model alone, for plain continuation on
  ``/v1/completions``; each is also found under its checkpoint path as given on the command line
  (what vLLM names a model it serves by default), so a client configured with a path works.

Both single models are the pair's own loaded models (one copy of the weights), used under the
pair's lock, each with its own prefix cache. An LRM that is itself remote (``http://...``) is
not served again: only ``NAME-srm`` is listed then.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from rankguide_graph.backend.loading import LoadedModel
from rankguide_graph.backend.scheduler import model_lock
from rankguide_graph.server.errors import APIError
from rankguide_graph.server.prefix_cache import PrefixCache
from rankguide_graph.session import ModelPair


@dataclass
class SingleModel:
    """One model of the pair served for plain continuation."""

    name: str
    role: Literal["srm", "lrm"]
    cache: PrefixCache
    _texts: dict[int, str] = field(default_factory=dict, repr=False)

    @property
    def loaded(self) -> LoadedModel:
        """The model and its tokenizer."""
        return self.cache.loaded

    @property
    def max_context(self) -> int | None:
        """Longest sequence (prompt plus completion) the model takes, when its config says."""
        return self.loaded.max_context

    @property
    def vocab_size(self) -> int:
        """Number of token ids the model scores."""
        return int(self.loaded.model.config.vocab_size)

    def eos_token_ids(self) -> frozenset[int]:
        """The end-of-sequence ids ``generate`` would stop at (generation config, tokenizer)."""
        ids: set[int] = set()
        config = getattr(self.loaded.model, "generation_config", None)
        for value in (getattr(config, "eos_token_id", None), self.loaded.tokenizer.eos_token_id):
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, list | tuple):
                ids.update(int(v) for v in value)
        return frozenset(ids)

    def token_text(self, token_id: int) -> str:
        """The text of one token (special tokens included), memoised."""
        text = self._texts.get(token_id)
        if text is None:
            text = str(self.loaded.tokenizer.decode([token_id], skip_special_tokens=False))
            self._texts[token_id] = text
        return text


def _roles(pair: ModelPair) -> list[tuple[Literal["srm", "lrm"], LoadedModel]]:
    """The pair's in-process models (an LRM behind another server is not served again)."""
    roles: list[tuple[Literal["srm", "lrm"], Any]] = [("srm", pair.srm), ("lrm", pair.lrm)]
    return [(role, model) for role, model in roles if isinstance(model, LoadedModel)]


class ServedModels:
    """The pair's name for chat, and its two models by name for completions."""

    def __init__(self, name: str, pair: ModelPair) -> None:
        """``name``: what ``/v1/models`` lists for the pair (``NAME-srm``/``-lrm`` follow)."""
        self.name = name
        self.root = f"{pair.srm.name}+{pair.lrm.name}"
        """The two checkpoints (or the remote LRM's address)."""
        self.created = int(time.time())
        self.singles = {
            role: SingleModel(f"{name}-{role}", role, PrefixCache(loaded, model_lock(loaded.model)))
            for role, loaded in _roles(pair)
        }
        self._by_name: dict[str, SingleModel] = {}
        for single in self.singles.values():  # checkpoint paths first: names win a clash
            self._by_name.setdefault(single.loaded.name, single)
        for single in self.singles.values():
            self._by_name[single.name] = single

    @property
    def context_limit(self) -> int | None:
        """The smaller context window of the two models (``None`` when neither says)."""
        limits = [s.max_context for s in self.singles.values() if s.max_context]
        return min(limits) if limits else None

    def _unknown(self, requested: str, endpoint: str) -> APIError:
        singles = " or ".join(repr(s.name) for s in self.singles.values())
        return APIError(
            404,
            f"model (={requested!r}) is not served on {endpoint}: use {self.name!r} for "
            f"/v1/chat/completions, {singles} for /v1/completions (GET /v1/models lists them)",
            param="model",
            code="model_not_found",
        )

    def check_chat(self, requested: str) -> None:
        """Accept the pair's name; a 404 naming the served names otherwise."""
        if requested != self.name:
            raise self._unknown(requested, "/v1/chat/completions")

    def single(self, requested: str) -> SingleModel:
        """The single model ``requested`` names; a 404 naming the served names otherwise."""
        found = self._by_name.get(requested)
        if found is None:
            raise self._unknown(requested, "/v1/completions")
        return found

    def listing(self) -> dict[str, Any]:
        """``GET /v1/models``: OpenAI's list, with each model's context length (as vLLM)."""
        entries = [
            {
                "id": self.name,
                "object": "model",
                "created": self.created,
                "owned_by": "rankguide",
                "root": self.root,
                "parent": None,
                "max_model_len": self.context_limit,
            }
        ]
        entries += [
            {
                "id": single.name,
                "object": "model",
                "created": self.created,
                "owned_by": "rankguide",
                "root": single.loaded.name,
                "parent": self.name,
                "max_model_len": single.max_context,
            }
            for single in self.singles.values()
        ]
        return {"object": "list", "data": entries}
