"""Train the embedded demo pair from scratch: a small and a large Llama on the demo task.

Recipe (all of it in :class:`~rankguide_graph.demo.recipe.Recipe`, written beside the weights
as ``recipe.json`` with the measured accuracies and decode speeds):

1. A byte-level BPE tokenizer trained on task text (every person's number is one token), with the
   demo chat template (:data:`~rankguide_graph.demo.task.CHAT_TEMPLATE`, tools included), shared
   by both models (Llama configs keep a saved custom tokenizer).
2. Training data: traces from :func:`~rankguide_graph.demo.task.solution_trace` (the SRM's
   re-check steps more often than the LRM's: small reasoning models re-validate more; both
   contain corrected errors, the wrong person masked out of the loss, and half of the SRM's
   corrections are followed by 2-4 more re-checks: heavy re-validation), 10% of them offering a
   tool (:func:`~rankguide_graph.demo.task.tool_example`), and beside each batch a batch of
   question-less fragments (:func:`~rankguide_graph.demo.task.drill`) that cover every fact.
3. Next-token loss on the reasoning and the answer only (the prompt is masked), AdamW with warm-up
   and cosine decay, a fixed number of optimiser steps per model.
4. The gap between the models: the SRM is a 2-layer Llama (width 512: the paper's reshape W x 16 x
   16 x d/256 then lets r2 reach 32) trained 250 steps on the organisation as
   :func:`~rankguide_graph.demo.task.srm_world` states it (four bosses wrong; traces only of the
   problems whose chain still reaches the top there), its drills starting at a bottom person 0.3
   times as often as at anyone else (rare facts stay less sure); the LRM is a 2-layer Llama of the
   same width (grouped-query attention, 2 key/value heads) trained 500 steps on the truth, then
   grown to 14 layers (:func:`expand_depth`, LLaMA Pro block expansion: each layer followed by
   copies of itself whose output projections start at zero, so the grown model computes the same
   function) and trained 10 more steps. Its accuracy comes from the longer training; its depth gives
   it a real decode cost (on a CPU, time per token follows the number of layers), the >= 4x over the
   SRM that a latency trade-off needs, within the 60 MB the pair may take (GQA keeps a layer at ~2.9
   MB in float16). Width decides the LRM's accuracy on this task (256 and 384 wide stayed below 90%
   on validation, 512 reached 89-98%); a deep model trained from scratch learns too slowly for the
   time budget. The SRM's point is where its uncertainty is real: at 150 steps it cannot yet copy
   the start person, at 300 it is nearly as good as the LRM. Tried and dropped (SRM, 200 steps,
   validation): tied embeddings copied the start more often (61 vs 36 of 102) but learned the facts
   slower (30% vs 39% solved); 32 questions trained with their first step alone beside each batch
   made it worse (7%).
5. The tool phase (:attr:`~.recipe.ModelRecipe.tool_phase`,
   :mod:`~rankguide_graph.demo.tool_phase`) on the weights rounded to float16: learning to
   choose an offered tool, which 10% of tool conversations did not teach this pair. The shipped
   pair was made by ``--tool-phase-from`` on the pair trained without it (README, "The demo
   pair").
6. Weights saved in float16 safetensors; accuracies, tool choice and decode speed measured.

Data and batches are in :mod:`~rankguide_graph.demo.training_data`, the recipe in
:mod:`~rankguide_graph.demo.recipe`.

    rankguide train-demo --out DIR [--no-tool-phase]
    rankguide train-demo --tool-phase-from PAIR --out DIR    # only the tool phase, on PAIR
    rankguide train-demo --lrm-from PAIR --out DIR           # train the SRM, copy PAIR's LRM
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import cast

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from rankguide_graph.backend.prompting import encode_question
from rankguide_graph.demo import task
from rankguide_graph.demo.recipe import ModelRecipe, Recipe, ToolPhase
from rankguide_graph.demo.tool_phase import tool_choice, train_tool_choice
from rankguide_graph.demo.training_data import trace_batches
from rankguide_graph.tiny_models import build_tokenizer

MAX_NEW_TOKENS = 400
"""Generation budget when measuring accuracy (the longest solution is ~260 tokens; a model going
round a circle is cut here)."""


def build_task_tokenizer(recipe: Recipe) -> PreTrainedTokenizerFast:
    """The shared tokenizer, trained on task text, with the demo chat template (tools too)."""
    tokenizer = build_tokenizer(
        recipe.vocab_size, recipe.seed, corpus=task.corpus(2000, recipe.seed), whole_numbers=True
    )
    tokenizer.chat_template = task.CHAT_TEMPLATE
    return tokenizer


def build_model(spec: ModelRecipe, tokenizer: PreTrainedTokenizerFast, seed: int):
    """A fresh Llama of the recipe's size."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads or spec.num_heads,
        max_position_embeddings=1024,
        tie_word_embeddings=spec.tie_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def expand_depth(model: PreTrainedModel, num_layers: int) -> PreTrainedModel:
    """A deeper copy of ``model`` that computes the same function (LLaMA Pro block expansion).

    Each original decoder layer is followed by copies of itself whose output projections
    (``o_proj``, ``down_proj``) are zero, so a copy adds nothing to the residual stream until
    training moves those weights: ``num_layers`` must be a multiple of the original depth.
    """
    old = model.config.num_hidden_layers
    if num_layers % old or num_layers < old:
        raise ValueError(f"num_layers (={num_layers}) must be a multiple of {old}")
    config = model.config.__class__(**{**model.config.to_dict(), "num_hidden_layers": num_layers})
    deeper = AutoModelForCausalLM.from_config(config)
    source = model.state_dict()
    target = {k: v for k, v in source.items() if ".layers." not in k}
    per = num_layers // old
    for new in range(num_layers):
        src, copy = divmod(new, per)
        prefix, src_prefix = f"model.layers.{new}.", f"model.layers.{src}."
        for key, value in source.items():
            if key.startswith(src_prefix):
                name = key[len(src_prefix) :]
                zeroed = copy > 0 and name in ("self_attn.o_proj.weight", "mlp.down_proj.weight")
                target[prefix + name] = torch.zeros_like(value) if zeroed else value.clone()
    deeper.load_state_dict(target)
    return deeper


def train_model(
    spec: ModelRecipe,
    tokenizer: PreTrainedTokenizerFast,
    seed: int,
    *,
    log_every: int = 100,
    watch: list[task.Problem] | None = None,
    model: PreTrainedModel | None = None,
) -> tuple[PreTrainedModel, dict[str, float]]:
    """Train a model; returns it and its training log (final loss, seconds).

    A fresh model of ``spec`` for ``spec.steps``, or (with ``model``, a grown one) for
    ``spec.grow_steps`` at ``spec.grow_lr``. With ``watch``, the accuracy on those problems is
    printed at every log line.
    """
    steps, peak = (spec.steps, spec.lr) if model is None else (spec.grow_steps, spec.grow_lr)
    model = build_model(spec, tokenizer, seed) if model is None else model
    model.train()
    rng = random.Random(seed)
    batches = trace_batches(spec, tokenizer, rng)
    optimiser = torch.optim.AdamW(model.parameters(), lr=peak, weight_decay=0.01)
    warmup = max(1, steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lr_at)
    started, losses = time.perf_counter(), []
    for step in range(steps):
        loss = sum(model(**batch).loss for batch in next(batches))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        scheduler.step()
        optimiser.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        if log_every and (step + 1) % log_every == 0:
            recent = sum(losses[-log_every:]) / log_every
            line = f"  step {step + 1}/{steps} loss {recent:.3f}"
            line += f" {time.perf_counter() - started:.0f} s"
            if watch:
                model.eval()
                line += f" accuracy {accuracy(model, tokenizer, watch):.2f}"
                model.train()
            print(line, flush=True)
    model.eval()
    tail = losses[-min(50, len(losses)) :]
    return model, {"final_loss": sum(tail) / len(tail), "seconds": time.perf_counter() - started}


@torch.inference_mode()
def accuracy(model, tokenizer: PreTrainedTokenizerFast, problems: list[task.Problem]) -> float:
    """Share of ``problems`` the model solves greedily (reasoning and answer in one generation)."""
    correct = 0
    for start in range(0, len(problems), 32):
        chunk = problems[start : start + 32]
        prompts = [encode_question(tokenizer, p.question) for p in chunk]
        width = max(len(p) for p in prompts)
        pad = tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])  # (B, T) left-padded
        mask = (
            torch.arange(width)[None, :] >= torch.tensor([width - len(p) for p in prompts])[:, None]
        ).long()
        out = model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
            pad_token_id=pad, eos_token_id=tokenizer.eos_token_id,
        )  # fmt: skip
        for problem, row in zip(chunk, out[:, width:], strict=True):
            correct += task.is_correct(
                str(tokenizer.decode(row, skip_special_tokens=True)), problem
            )
    return correct / len(problems)


def decode_ms_per_token(path: Path, tokens: int = 48) -> float:
    """Decode time per token of the saved model at ``path`` with the engine's loop (best of 3)."""
    from rankguide_graph.backend import ModelRunner, SamplingConfig, TokenSampler, load_causal_lm

    loaded = load_causal_lm(path, device="cpu", dtype="float32")
    runner = ModelRunner(loaded)
    prompt = encode_question(loaded.tokenizer, task.problems("test", 1)[0].question)

    class _Never:
        def stop_reason(self, token: int) -> None:
            return None

    best = math.inf
    for _ in range(3):
        runner.reset()
        runner.feed(prompt)
        started = time.perf_counter()
        runner.decode(TokenSampler(SamplingConfig()), _Never(), tokens)  # type: ignore[arg-type]
        best = min(best, (time.perf_counter() - started) / tokens)
    return best * 1000


TOOL_CHOICE_PROBLEMS = 10
"""Validation problems the tool-choice report (:func:`~.tool_phase.tool_choice`) is measured on."""


def train_demo_pair(out: Path, recipe: Recipe | None = None, *, log_every: int = 100,
                    lrm_from: Path | None = None) -> dict:  # fmt: skip
    """Train both models, measure them, save them (float16) and ``recipe.json`` under ``out``.

    ``lrm_from``: a pair whose LRM was trained by this same recipe (:func:`reuse_lrm` checks):
    copy it instead of training it again (each model has its own seed, so training it again
    would redo the same work), and train only the SRM, on that LRM's tokenizer
    (:func:`lrm_tokenizer`; ``recipe.json``'s ``same_token_ids`` says whether its ids are the
    recipe's own, as training from scratch would give them).
    """
    recipe = recipe or Recipe()
    tokenizer = build_task_tokenizer(recipe)
    report: dict = {"recipe": asdict(recipe), "models": {}}
    roles: tuple[tuple[str, ModelRecipe], ...] = (("srm", recipe.srm), ("lrm", recipe.lrm))
    if lrm_from is not None:  # checked (and copied) before anything else is written
        report["models"]["lrm"] = reuse_lrm(lrm_from, recipe, tokenizer, out)
        report["lrm_from"] = str(lrm_from)
        theirs = lrm_tokenizer(lrm_from)
        report["same_token_ids"] = theirs.get_vocab() == tokenizer.get_vocab()
        tokenizer = theirs
        tokenizer.chat_template = task.CHAT_TEMPLATE
        roles = roles[:1]
    out.mkdir(parents=True, exist_ok=True)
    held_out = _held_out(recipe)
    for offset, (role, spec) in enumerate(roles):
        print(f"training the {role.upper()} ({spec.num_layers} layers, {spec.hidden_size} wide)")
        seed = recipe.seed + offset
        model, log = train_model(spec, tokenizer, seed, log_every=log_every)
        if spec.grow_to_layers:
            log["accuracy_before_growing"] = accuracy(model, tokenizer, held_out["validation"])
            print(f"  grown to {spec.grow_to_layers} layers, then {spec.grow_steps} more steps")
            grown, more = train_model(spec, tokenizer, seed + 100, log_every=log_every,
                                      model=expand_depth(model, spec.grow_to_layers))  # fmt: skip
            model = grown
            log["seconds"] += more["seconds"]
            log["final_loss"] = more["final_loss"]
        if spec.tool_phase:
            # From the weights as saved (what ``--tool-phase-from`` starts from); not with
            # ``model.half().float()``, which would round RoPE's inv_freq buffer too.
            model.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
            log["accuracy_before_tool_phase"] = accuracy(model, tokenizer, held_out["validation"])
            _run_tool_phase(model, tokenizer, spec, seed, log, log_every)
        report["models"][role] = _measure_and_save(model, tokenizer, out / role, held_out, log)
    if lrm_from is not None:  # the copy's speed measured again, here and now, as the SRM's was
        report["models"]["lrm"]["decode_ms_per_token"] = decode_ms_per_token(out / "lrm")
    return _write_report(out, report)


def read_pair_report(pair: Path, option: str) -> dict:
    """The ``recipe.json`` of a pair written by ``rankguide train-demo`` (``option`` took it)."""
    source_file = pair / "recipe.json"
    if not source_file.is_file():
        raise FileNotFoundError(
            f"{source_file} does not exist: {option} takes a directory written by "
            "`rankguide train-demo` (srm/, lrm/ and recipe.json)"
        )
    return json.loads(source_file.read_text())


def reuse_lrm(pair: Path, recipe: Recipe, tokenizer: PreTrainedTokenizerFast, out: Path) -> dict:
    """Copy the LRM of ``pair`` to ``out / "lrm"``; its report from the pair's ``recipe.json``.

    Refused unless the pair's LRM recipe, seed and vocabulary size are this recipe's and its
    tokenizer has this recipe's tokens: then training it again would give the same model (up to
    the order of the token ids, :func:`lrm_tokenizer`).
    """
    import shutil

    source = read_pair_report(pair, "--lrm-from")
    if out.resolve() == pair.resolve():
        raise ValueError(f"--out (={out}) must be another directory than --lrm-from's")
    theirs = Recipe.from_dict(source["recipe"])
    for name in ("lrm", "seed", "vocab_size"):
        if getattr(theirs, name) != getattr(recipe, name):
            raise ValueError(
                f"the pair in {pair} was trained with a different {name} ({getattr(theirs, name)}"
                f" vs {getattr(recipe, name)}): train the LRM too (leave out --lrm-from)"
            )
    if set(lrm_tokenizer(pair).get_vocab()) != set(tokenizer.get_vocab()):
        raise ValueError(f"the tokenizer in {pair / 'lrm'} is not this recipe's: train the LRM too")
    shutil.copytree(pair / "lrm", out / "lrm", dirs_exist_ok=True)
    print(f"the LRM copied from {pair / 'lrm'} (the same recipe and seed)")
    return dict(source["models"]["lrm"])


def lrm_tokenizer(pair: Path) -> PreTrainedTokenizerFast:
    """The tokenizer of the LRM in ``pair``: with ``--lrm-from``, the SRM learns it too.

    A pair shares one tokenizer. The recipe's own is trained on task text, so a change to that
    text (the SRM's taught-wrong facts) may give the same tokens in another order of ids;
    :func:`reuse_lrm` accepts that (the same tokens) and the SRM is then trained on the LRM's ids.
    """
    return cast(PreTrainedTokenizerFast, AutoTokenizer.from_pretrained(pair / "lrm"))


def add_tool_phase(pair: Path, out: Path, phases: dict[str, ToolPhase], *,
                   log_every: int = 50) -> dict:  # fmt: skip
    """Run the tool phase on the pair trained at ``pair`` and write the result under ``out``.

    The same as training from scratch with ``phases`` in the recipe (the phase starts from the
    float16 weights either way, with the same seed), without the training before it.
    ``phases`` maps ``"srm"`` / ``"lrm"`` to a phase; a model without one is copied unchanged.
    """
    source = read_pair_report(pair, "--tool-phase-from")
    recipe = Recipe.from_dict(source["recipe"])
    for role in phases:
        if getattr(recipe, role).tool_phase:
            raise ValueError(
                f"the {role.upper()} in {pair} has had a tool phase already: pass the pair it "
                "was made from (its recipe.json's tool_phase_from), or one trained without it"
            )
    recipe = replace(recipe, **{role: replace(getattr(recipe, role), tool_phase=phase)
                                for role, phase in phases.items()})  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = cast(PreTrainedTokenizerFast, AutoTokenizer.from_pretrained(pair / "srm"))
    held_out = _held_out(recipe)
    report: dict = {"recipe": asdict(recipe), "tool_phase_from": str(pair), "models": {}}
    for offset, role in enumerate(("srm", "lrm")):
        spec: ModelRecipe = getattr(recipe, role)
        model = AutoModelForCausalLM.from_pretrained(pair / role, dtype=torch.float32)
        measured = ("parameters", "accuracy", "tool_choice", "decode_ms_per_token")
        log = {k: v for k, v in source["models"][role].items() if k not in measured}
        if spec.tool_phase:
            print(f"tool phase of the {role.upper()} from {pair / role}")
            log["accuracy_before_tool_phase"] = source["models"][role]["accuracy"]["validation"]
            _run_tool_phase(model, tokenizer, spec, recipe.seed + offset, log, log_every)
        report["models"][role] = _measure_and_save(model, tokenizer, out / role, held_out, log)
    return _write_report(out, report)


def _held_out(recipe: Recipe) -> dict[str, list[task.Problem]]:
    return {
        split: task.problems(split, recipe.eval_problems, recipe.seed)
        for split in ("validation", "test")
    }


def _run_tool_phase(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast,
                    spec: ModelRecipe, seed: int, log: dict, log_every: int) -> None:  # fmt: skip
    assert spec.tool_phase is not None
    print(f"  tool phase: {spec.tool_phase.steps} steps at lr {spec.tool_phase.lr}")
    phase_log = train_tool_choice(model, tokenizer, spec, spec.tool_phase, seed + 200,
                                  log_every=log_every)  # fmt: skip
    log["tool_phase_final_loss"] = phase_log["final_loss"]
    log["seconds"] = log.get("seconds", 0.0) + phase_log["seconds"]


def _measure_and_save(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, path: Path,
                      held_out: dict[str, list[task.Problem]], log: dict) -> dict:  # fmt: skip
    """Accuracies and tool choice (float32), then float16 weights, tokenizer and decode speed."""
    scores = {split: accuracy(model, tokenizer, p) for split, p in held_out.items()}
    choice = tool_choice(model, tokenizer, held_out["validation"][:TOOL_CHOICE_PROBLEMS],
                         max_new_tokens=MAX_NEW_TOKENS)  # fmt: skip
    model.half()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    rounded = {k: round(v, 2) for k, v in choice.items()}
    print(f"  {path.name}: accuracy {scores}, tool choice {rounded}, {log.get('seconds', 0):.0f} s")
    return {
        **log,
        "parameters": sum(p.numel() for p in model.parameters()),
        "accuracy": scores,
        "tool_choice": choice,
        "decode_ms_per_token": decode_ms_per_token(path),
    }


def _write_report(out: Path, report: dict) -> dict:
    srm, lrm = report["models"]["srm"], report["models"]["lrm"]
    report["models"] = {"srm": srm, "lrm": lrm}
    report["decode_cost_ratio"] = lrm["decode_ms_per_token"] / srm["decode_ms_per_token"]
    (out / "recipe.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
