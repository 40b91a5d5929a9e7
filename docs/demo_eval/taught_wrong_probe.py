"""What an SRM writes at a taught-wrong person when the trace so far is the true chain.

For every validation problem whose chain passes one of the four people whose boss the SRM was
taught wrong (:func:`rankguide_graph.demo.task.misremembered`), the trace is written by the
task's own step text up to ``"Next: boss of P.\\n\\n"`` for the first such P, and the SRM's next
token is read (teacher forcing, one forward pass): the probability of P's true boss and of the
taught-wrong one, the most likely token, and the top-20 entropy RankGuide reads.

    python docs/demo_eval/taught_wrong_probe.py rankguide_graph/data/demo/srm

printed taught_wrong_probe.txt (2026-12-04) for the current SRM and the previous one (commit
528cf00's ``rankguide_graph/data/demo/srm``).
"""
import collections
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rankguide_graph.backend.prompting import encode_question
from rankguide_graph.demo import task

path = sys.argv[1]
tokenizer = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
taught, world = task.misremembered(), task.world()


def token(n: int) -> int:
    return tokenizer(str(n), add_special_tokens=False)["input_ids"][0]


rows = collections.defaultdict(list)
for problem in task.problems("validation"):
    chain = [problem.start, *problem.values()]
    hits = [i for i, person in enumerate(chain) if person in taught]
    if not hits:
        continue
    i = hits[0]
    text = task.start_text(problem.start) + "".join(
        task.step_text(a, b) for a, b in zip(chain[:i], chain[1 : i + 1])
    )
    ids = encode_question(tokenizer, problem.question)
    ids += tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        probs = model(torch.tensor([ids])).logits[0, -1].float().softmax(-1)  # (V,)
    top = probs.topk(20).values
    top = top / top.sum()
    entropy = float(-(top * top.log()).sum())
    person = chain[i]
    rows[person].append((
        float(probs[token(world.boss[person])]), float(probs[token(taught[person])]),
        tokenizer.decode(int(probs.argmax())), entropy,
    ))  # fmt: skip
print(path)
for person, rs in rows.items():
    n = len(rs)
    print(
        f"person {person} (level {world.level[person]}): true boss {world.boss[person]}, taught "
        f"{taught[person]}; problems {n}; p(true) {sum(r[0] for r in rs) / n:.3f}, p(taught) "
        f"{sum(r[1] for r in rs) / n:.3f}; most likely {collections.Counter(r[2] for r in rs).most_common(2)}; "
        f"entropy {sum(r[3] for r in rs) / n:.3f}"
    )
