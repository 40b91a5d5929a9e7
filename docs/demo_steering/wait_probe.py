"""Why steering does not lower the demo SRM's re-checks: the vectors' immediate effect on "Wait".

Eq. 8 adds ``alpha * v`` to the input of the steering layer at delimiter tokens; the next step's
first token is predicted at that very position, so the first thing a vector can change is the
probability that the next step is a validation step (this task's validation steps all begin
with ``"Wait, "``). This probe measures exactly that, without letting the steered SRM write:

1. the SRM alone writes its greedy trace for every problem of ``--dataset`` (no steering,
   through the step engine, the run budgets of ``data/demo/settings.json``), as ``steer-eval``'s
   SRM-only run does;
2. each trace is fed again in one forward pass per alpha, with ``alpha * v`` added at every
   delimiter after the prompt (the hook the engine uses, ``steering.hook.add_at_positions``),
   and at each delimiter P(next token is a ``Wait`` token) is read, grouped by what the unsteered
   SRM wrote next (a validation step or an execution step); the mean log-probability of the
   trace's other tokens shows whether the push disturbs the look-ups through attention.

It also prints what precedes the states each class mean is taken over (the kind of the step just
written), the norm of the layer's input at delimiters next to the vectors' norms, and Eq. 7's
difference of class means taken on the probe's own traces (no rank filter), steered like the
others: a check that the calibration's labels point where the probe's do.

    rankguide calibrate --srm rankguide_graph/data/demo/srm --data demo_train.jsonl \\
        --out vec.safetensors --window 10 --t-r1 8 --t-r2 31 \\
        --max-steps 64 --max-thinking-tokens 512
    python docs/demo_steering/wait_probe.py --vector vec.safetensors --dataset demo-validation

printed wait_probe.txt (2026-12-04, the shipped SRM; 1 min on this 2-core CPU).
"""

import argparse
import collections

import torch

from rankguide_graph.backend import (
    ModelRunner,
    StepEngine,
    StepStopRule,
    encode_question,
    load_causal_lm,
)
from rankguide_graph.demo.pair import demo_dir, demo_problems
from rankguide_graph.signals.step_types import classify_step
from rankguide_graph.steering.hook import add_at_positions
from rankguide_graph.steering.io import load_steering_vector
from rankguide_graph.steering.traces import TraceBudget, record_trace

ALPHAS = (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0)

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--vector", required=True, help="a rankguide calibrate output")
parser.add_argument("--dataset", default="demo-validation")
args = parser.parse_args()

root = demo_dir()
loaded = load_causal_lm(str(root / "srm"))
model, tokenizer = loaded.model, loaded.tokenizer
rule = StepStopRule.for_tokenizer(tokenizer)
engine = StepEngine({"srm": ModelRunner(loaded)}, rule, max_step_tokens=512)
budget = TraceBudget(max_steps=64, max_thinking_tokens=512)
vectors = {w: load_steering_vector(args.vector, which=w) for w in ("rankguide", "seal")}
vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
wait_ids = [i for i, t in enumerate(vocab) if t.startswith("Wait")]
print(f"SRM {root / 'srm'}, vector file {args.vector}, dataset {args.dataset}")
print(f"'Wait' tokens (every validation step starts with one): {[vocab[i] for i in wait_ids]}")

traces = []  # (prompt length, token ids, step texts)
with torch.inference_mode():
    for problem in demo_problems(args.dataset):
        prompt = encode_question(tokenizer, problem.problem)
        steps = record_trace(engine, prompt, budget)
        traces.append((len(prompt), list(engine.sequence), [s.text for s in steps]))

# what the class means are taken over: the kind of step written just before each state
before = collections.Counter()
for _, _, texts in traces:
    kinds = [classify_step(t) for t in texts]
    for previous, current in zip(kinds, kinds[1:], strict=False):
        before[(current, previous)] += 1
print(
    "\nstates before a step, by the kind of the step just written (steps of the unsteered traces):"
)
for current in ("execution", "reflection"):
    total = sum(n for (c, _), n in before.items() if c == current)
    parts = ", ".join(
        f"after {p} {n / total:.0%}" for (c, p), n in sorted(before.items()) if c == current
    )
    print(f"  before {current} steps ({total}): {parts}")


def delimiter_mask(prompt_len: int, sequence: list[int]) -> torch.Tensor:
    """(T,) bool: the delimiters after the prompt, the positions Eq. 8 steers in the engine."""
    return torch.tensor(
        [i >= prompt_len - 1 and t in rule.delimiter_ids for i, t in enumerate(sequence)]
    )


def next_is_wait(sequence: list[int], i: int) -> bool:
    """Whether the token after position ``i`` starts a validation step."""
    return i + 1 < len(sequence) and sequence[i + 1] in wait_ids


# the class means on these traces themselves (Eq. 7 without the rank filter): a check that the
# calibration's labels point where this probe's do
layer_index = vectors["rankguide"].layer
states: dict[bool, list[torch.Tensor]] = {True: [], False: []}
with torch.inference_mode():
    for prompt_len, sequence, _ in traces:
        out = model(torch.tensor([sequence]), output_hidden_states=True)
        hidden = out.hidden_states[layer_index][0]  # (T, d): the steering layer's input
        mask = delimiter_mask(prompt_len, sequence)
        for i in mask.nonzero().flatten().tolist():
            if i >= prompt_len:
                states[next_is_wait(sequence, i)].append(hidden[i])
exe_mean = torch.stack(states[False]).mean(0)  # (d,)
val_mean = torch.stack(states[True]).mean(0)  # (d,)
here = exe_mean - val_mean  # (d,)
norm = torch.stack(states[False] + states[True]).norm(dim=-1).mean()
cos = torch.nn.functional.cosine_similarity
print(
    f"\nsteering layer {layer_index}: mean norm of its input at delimiters {float(norm):.1f}; "
    f"|v_rankguide| {float(vectors['rankguide'].vector.norm()):.1f}, "
    f"|v_seal| {float(vectors['seal'].vector.norm()):.1f}, "
    f"|exe - val on these traces| {float(here.norm()):.1f}; cosine of the last with "
    f"v_rankguide {float(cos(here, vectors['rankguide'].vector, dim=0)):.2f}, "
    f"with -v_seal {float(cos(here, -vectors['seal'].vector, dim=0)):.2f}"
)

print("\nP(next token is 'Wait') at delimiters, teacher-forced on the unsteered traces:")
print(
    f"{'vector':<12} {'alpha':>6} {'before validation':>18} {'before execution':>17} "
    f"{'log p, other tokens':>20}"
)
steer = {
    "rankguide": vectors["rankguide"].vector,
    "seal": vectors["seal"].vector,
    "exe - val": here,  # measured on these traces
}
with torch.inference_mode():
    for name, vector in steer.items():
        for alpha in ALPHAS:
            p_wait: dict[bool, list[float]] = {True: [], False: []}
            log_p_other: list[float] = []
            for prompt_len, sequence, _ in traces:
                mask = delimiter_mask(prompt_len, sequence)
                with add_at_positions(model.model.layers[layer_index], vector, alpha, mask):
                    logits = model(torch.tensor([sequence])).logits[0]  # (T, V)
                probs = logits.float().softmax(-1)  # (T, V)
                for i in range(prompt_len, len(sequence) - 1):
                    if mask[i]:
                        p_wait[next_is_wait(sequence, i)].append(float(probs[i, wait_ids].sum()))
                    else:
                        log_p_other.append(float(probs[i, sequence[i + 1]].log()))
            val, exe = p_wait[True], p_wait[False]
            print(
                f"{name:<12} {alpha:>+6.1f} {sum(val) / len(val):>11.3f} (n {len(val)})"
                f" {sum(exe) / len(exe):>9.3f} (n {len(exe)})"
                f" {sum(log_p_other) / len(log_p_other):>20.4f}"
            )
