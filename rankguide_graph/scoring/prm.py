"""A process reward model (PRM) that rates each reasoning step of a solution in [0, 1].

This is the step verifier of the TRIM baseline (arXiv 2601.10245): the small model drafts a step,
the PRM scores it, and when the score falls below a threshold the large model regenerates the
step. TRIM's setup uses ``Qwen/Qwen2.5-Math-PRM-7B``, so the input follows that model's
convention (see its model card):

- chat messages ``[system, user=question, assistant=steps]``, where the assistant turn is the
  stripped steps joined by the step separator ``<extra_0>`` and closed by one more separator,
  rendered by the tokenizer's chat template without a generation prompt;
- one forward pass; at every separator token the head emits 2-class logits, and the score of the
  step the separator closes is the softmax probability of the positive class (label 1).

Qwen2.5-Math-PRM ships remote code (``Qwen2ForProcessRewardModel``, registered under
``AutoModel``) whose per-token 2-class logits mean the same as a token-classification head with
``num_labels=2``; any ``AutoModelForTokenClassification`` checkpoint trained that way works too.
Loading fails fast with :class:`~rankguide_graph.errors.ModelLoadError` on a missing path or an
unreachable hub, and refuses checkpoints whose classification head is missing (``transformers``
would otherwise initialise it at random and return noise).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForTokenClassification,
    AutoTokenizer,
    PreTrainedModel,
)
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from rankguide_graph.backend.devices import resolve_device, resolve_dtype

# Hub ids fail fast exactly as in ``load_causal_lm``.
from rankguide_graph.backend.loading import check_model_directory, resolve_source
from rankguide_graph.errors import ConfigError, ModelLoadError, PromptError

DEFAULT_STEP_SEPARATOR = "<extra_0>"
"""The step separator of Qwen2.5-Math-PRM."""

DEFAULT_PRM_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
"""The system prompt of Qwen2.5-Math-PRM's reference usage."""

_MAX_KEYS_SHOWN = 4


def _logits_of(output: Any) -> torch.Tensor:
    """The per-token logits of a model output: ``.logits`` when present, else the first item."""
    logits = getattr(output, "logits", None)
    if logits is None:
        logits = output[0]
    if not isinstance(logits, torch.Tensor):
        raise ConfigError(
            f"the PRM returned {type(logits).__name__} instead of a logits tensor: pass a "
            "token-classification model (per-token logits of shape (batch, seq, num_labels))"
        )
    return logits


def _model_class(config: Any, trust_remote_code: bool) -> Any:
    """The auto class to load with: ``AutoModel`` for remote-code PRMs registered only there."""
    auto_map = getattr(config, "auto_map", None) or {}
    if (
        trust_remote_code
        and "AutoModelForTokenClassification" not in auto_map
        and "AutoModel" in auto_map
    ):
        return AutoModel
    return AutoModelForTokenClassification


class ProcessRewardModel:
    """A PRM scoring each step of a solution by the positive-class probability at its separator.

    Build one with :meth:`load`, or wrap an already loaded token-classification model and its
    tokenizer directly.

    Args:
        model: a model returning per-token logits of at least 2 classes (``.logits`` or the first
            output), in eval mode.
        tokenizer: its tokenizer; ``step_separator`` must be one token of its vocabulary.
        name: where the model came from, for error messages.
        step_separator: the token closing each step (``"<extra_0>"`` for Qwen2.5-Math-PRM).
        positive_label: the class index meaning "this step is correct".
        system: the system prompt; ``None`` uses :data:`DEFAULT_PRM_SYSTEM`, ``""`` sends none.
            Only used when the tokenizer has a chat template.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        name: str = "<in-memory model>",
        step_separator: str = DEFAULT_STEP_SEPARATOR,
        positive_label: int = 1,
        system: str | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.step_separator = step_separator
        self.system = DEFAULT_PRM_SYSTEM if system is None else system
        self.separator_id = self._check_separator(tokenizer, step_separator, name)
        num_labels = int(getattr(model.config, "num_labels", 0) or 0)
        if num_labels < 2:
            raise ConfigError(
                f"the model at {name!r} has num_labels={num_labels}: a process reward model needs "
                "a classification head of at least 2 classes (Qwen2.5-Math-PRM has 2)"
            )
        if not 0 <= positive_label < num_labels:
            raise ConfigError(
                f"positive_label (={positive_label!r}) is not a class of the model at {name!r} "
                f"(num_labels={num_labels}): use 1 for Qwen2.5-Math-PRM"
            )
        self.num_labels = num_labels
        self.positive_label = positive_label

    @staticmethod
    def _check_separator(tokenizer: PreTrainedTokenizerBase, separator: str, name: str) -> int:
        """Return the id of ``separator``, refusing anything but a single vocabulary token."""
        token_id = tokenizer.get_vocab().get(separator) if separator else None
        encoded = tokenizer.encode(separator, add_special_tokens=False) if separator else []
        if token_id is None or list(encoded) != [token_id]:
            raise ConfigError(
                f"step_separator (={separator!r}) is not a single token of the tokenizer of "
                f"{name!r} (it encodes to {len(encoded)} tokens): pass step_separator= a token "
                "of its vocabulary, such as '<extra_0>' for Qwen2.5-Math-PRM"
            )
        return int(token_id)

    @classmethod
    def load(
        cls,
        name_or_path: str | os.PathLike[str],
        *,
        step_separator: str = DEFAULT_STEP_SEPARATOR,
        positive_label: int = 1,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        trust_remote_code: bool = False,
        system: str | None = None,
        hub_timeout_s: float = 10.0,
    ) -> ProcessRewardModel:
        """Load a PRM and its tokenizer from a local directory or a hub id.

        Args:
            name_or_path: a directory written by ``save_pretrained`` or a hub id such as
                ``"Qwen/Qwen2.5-Math-PRM-7B"`` (which needs ``trust_remote_code=True``).
            step_separator: see :class:`ProcessRewardModel`.
            positive_label: see :class:`ProcessRewardModel`.
            device: ``None`` picks CUDA when available, else CPU.
            dtype: ``None`` picks bfloat16 on CUDA and float32 on CPU.
            trust_remote_code: run modelling code shipped with the checkpoint (off by default).
                With it, a checkpoint whose ``auto_map`` registers only ``AutoModel`` (as
                Qwen2.5-Math-PRM does) is loaded through ``AutoModel``.
            system: see :class:`ProcessRewardModel`.
            hub_timeout_s: how long to wait for the hub before failing, for ids not in the cache.

        Raises:
            ModelLoadError: missing path, unreachable hub, unreadable files, or a checkpoint
                without classification-head weights (not a process reward model).
            ConfigError: a bad device/dtype, a separator that is not one token, or a head of
                fewer than 2 classes.
        """
        name = os.fspath(name_or_path)
        source, local_only = resolve_source(name, hub_timeout_s)
        if Path(source).is_dir():
            check_model_directory(Path(source), name, "a process reward model")
        resolved_device = resolve_device(device)
        weight_dtype = resolve_dtype(dtype, resolved_device)
        try:
            tokenizer = AutoTokenizer.from_pretrained(
                source, local_files_only=local_only, trust_remote_code=trust_remote_code
            )
            config = AutoConfig.from_pretrained(
                source, local_files_only=local_only, trust_remote_code=trust_remote_code
            )
            model, info = _model_class(config, trust_remote_code).from_pretrained(
                source,
                config=config,
                dtype=weight_dtype,
                local_files_only=local_only,
                trust_remote_code=trust_remote_code,
                output_loading_info=True,
            )
        except Exception as err:  # OSError, ValueError, errors raised by remote code ...
            raise ModelLoadError(
                f"could not load a process reward model from {name!r} "
                f"({type(err).__name__}: {err}): pass a directory written by `save_pretrained` "
                "holding a token-classification PRM, or a hub id such as "
                "'Qwen/Qwen2.5-Math-PRM-7B' with trust_remote_code=True"
            ) from err
        missing = sorted(info.get("missing_keys", ()))
        if missing:
            shown = ", ".join(missing[:_MAX_KEYS_SHOWN])
            extra = len(missing) - _MAX_KEYS_SHOWN
            more = f" and {extra} more" if extra > 0 else ""
            hint = (
                "; the checkpoint ships its own modelling code (auto_map): try "
                "trust_remote_code=True"
                if getattr(config, "auto_map", None) and not trust_remote_code
                else ""
            )
            del model
            raise ModelLoadError(
                f"{name!r} is not a process reward model: its checkpoint has no weights for "
                f"{shown}{more}, so the classification head would be random{hint}; pass a PRM "
                "checkpoint such as 'Qwen/Qwen2.5-Math-PRM-7B'"
            )
        model.to(resolved_device)
        model.eval()
        return cls(
            model,
            tokenizer,
            name=name,
            step_separator=step_separator,
            positive_label=positive_label,
            system=system,
        )

    @property
    def device(self) -> torch.device:
        """Device of the input embeddings (where input ids must go)."""
        embeddings = self.model.get_input_embeddings()
        if embeddings is not None:
            return next(embeddings.parameters()).device
        return next(self.model.parameters()).device

    def build_input(self, question: str, steps: Sequence[str]) -> str:
        """The PRM input text: the chat-rendered (or plain) question and separator-closed steps.

        Raises:
            PromptError: no steps, a non-string question or step, or a separator inside the text.
        """
        if isinstance(steps, str) or not len(steps):
            raise PromptError(
                f"steps (={steps!r}) must be a non-empty sequence of step strings: pass at least "
                "the step to score"
            )
        texts = {"question": question, "system": self.system}
        texts.update((f"step {i}", step) for i, step in enumerate(steps))
        for what, text in texts.items():
            if not isinstance(text, str):
                raise PromptError(f"{what} (={text!r}) must be a string")
            if self.step_separator in text:
                raise PromptError(
                    f"{what} contains the step separator {self.step_separator!r}, which would "
                    "be scored as a step boundary: remove it from the text"
                )
        sep = self.step_separator
        answer = sep.join(step.strip() for step in steps) + sep
        if self.tokenizer.chat_template:
            messages = [
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer},
            ]
            if self.system:
                messages.insert(0, {"role": "system", "content": self.system})
            rendered = self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=False
            )
            return str(rendered)
        return question + "\n" + answer

    def score_steps(self, question: str, steps: Sequence[str]) -> list[float]:
        """Score every step of ``steps`` (a solution to ``question``) in [0, 1], in one pass.

        Each score is the positive-class probability at the separator closing that step, so it
        depends on the question and the steps before it only (the PRM is causal).

        Raises:
            PromptError: as :meth:`build_input`, or when the input does not fit the model's
                context or the separator does not survive tokenization as one token per step.
        """
        text = self.build_input(question, steps)
        # With a chat template the rendered text carries its own special tokens.
        add_special = not bool(self.tokenizer.chat_template)
        ids = self.tokenizer(text, add_special_tokens=add_special, return_tensors="pt")[
            "input_ids"
        ]  # (1, T)
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit and ids.shape[1] > int(limit):
            raise PromptError(
                f"the PRM input is {ids.shape[1]} tokens but {self.name!r} handles at most "
                f"{limit}: score fewer or shorter steps"
            )
        positions = (ids[0] == self.separator_id).nonzero().flatten()  # (S,)
        if positions.numel() != len(steps):
            raise PromptError(
                f"found {positions.numel()} step separators {self.step_separator!r} in the "
                f"tokenized input for {len(steps)} steps: the tokenizer merges the separator "
                "with its neighbours; pass step_separator= a special token of the tokenizer"
            )
        ids = ids.to(self.device)
        with torch.inference_mode():
            output = self.model(input_ids=ids, attention_mask=torch.ones_like(ids))
        logits = _logits_of(output)  # (1, T, num_labels)
        if logits.ndim != 3 or logits.shape[-1] <= self.positive_label:
            raise ConfigError(
                f"the PRM at {self.name!r} returned logits of shape {tuple(logits.shape)}: "
                "expected per-token logits (1, seq, num_labels) with num_labels > positive_label "
                f"(={self.positive_label})"
            )
        step_logits = logits[0, positions.to(logits.device)].float()  # (S, num_labels)
        probs = torch.softmax(step_logits, dim=-1)[:, self.positive_label]  # (S,)
        return [float(p) for p in probs.cpu()]

    def score_last(self, question: str, previous_steps: Sequence[str], draft: str) -> float:
        """Score ``draft`` as the next step after ``previous_steps`` (TRIM's per-step check)."""
        return self.score_steps(question, [*previous_steps, draft])[-1]
