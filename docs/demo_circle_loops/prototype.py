"""Prototype: the SRM's taught-wrong circles in its own training traces, gone round and ended.

The shipped SRM is taught four bosses wrong as one of the person's own grand-reports
(:func:`rankguide_graph.demo.task.misremembered`): in its world a chain through such a person P
goes round a circle of three look-ups (P -> grand-report G -> G's boss C -> P), every one a
fact it knows firmly. Those chains never reach a top, so the shipped recipe leaves them out of
the SRM's training problems; measured, the SRM then writes such a person only to correct it
(``docs/demo_eval/taught_wrong_probe.txt``) and is seldom overconfident. This is the paper's
overconfidence (§3.1): confident steps that repeat, a trajectory that collapses.

Here the SRM's training traces of those problems climb its world as written: up to P, round the
circle ``rounds`` times (2-4, each three confident look-ups, with the recipe's checks and
corrections like any other look-up), and then state the person they stand on as the top
(``"P = boss of C. P is at the top."``, then ``Answer: P``): a confident wrong conclusion. The
script patches ``task.solution_trace`` and ``training_data.training_pool`` in this process only,
trains the SRM alone beside the shipped LRM (``train-demo --lrm-from``), then runs it alone on
the validation split and reads its failures (``rankguide_graph.demo.failure_modes``).

    python docs/demo_circle_loops/prototype.py OUT [ERROR_RATE LOST_RATE]   # ~6 min, then ~1 min
"""

import random
import sys
from dataclasses import replace
from pathlib import Path

from rankguide_graph.demo import failure_modes, task, tool_phase, train, training_data
from rankguide_graph.demo.pair import demo_context, demo_dir
from rankguide_graph.demo.recipe import Recipe

ROUNDS = (2, 4)
"""How many times a training trace goes round the circle before stating a top."""

whole_trace = task.solution_trace


def looping_trace(problem, rng, *, verify_rate, error_rate, in_world=None, lost_rate=0.0):
    """``task.solution_trace``, and for a chain that goes round a circle: round it, then stop."""
    w = in_world or task.world()
    if w.reaches_top(problem.start):
        return whole_trace(problem, rng, verify_rate=verify_rate, error_rate=error_rate,
                           in_world=in_world, lost_rate=lost_rate)  # fmt: skip
    path, seen = [problem.start], {problem.start}
    while (boss := w.boss[path[-1]]) not in seen:  # up to the circle's first person, P
        path.append(boss)
        seen.add(boss)
    circle = path[path.index(boss) :]  # G, C, P: P's taught boss G and back up to P
    path += circle * rng.randint(*ROUNDS)  # round it, ending at P each time
    text, spans = task.start_text(problem.start), []
    look_ups = list(zip(path, path[1:], strict=False))
    for i, (person, boss) in enumerate(look_ups):
        last = i == len(look_ups) - 1
        ending = f" {boss} is at the top." if last else f" Next: boss of {boss}."
        if rng.random() < error_rate:
            peers = [p for p in w.people if w.level[p] == w.level[boss] and p != boss]
            wrong = rng.choice(peers)
            spans.append((len(text), len(text) + len(str(wrong))))
            text += f"{wrong} = boss of {person}. Next: boss of {wrong}.\n\n"
            text += f"Wait, {wrong} is wrong: boss of {person} = {boss}.{ending}\n\n"
            if lost_rate and rng.random() < lost_rate:
                for opening in task.LOST_OPENINGS[: rng.randint(*task.LOST_CHECKS)]:
                    text += f"{opening} boss of {person} = {boss}.{ending}\n\n"
        else:
            text += f"{boss} = boss of {person}.{ending}\n\n"
            if rng.random() < verify_rate:
                text += f"Wait, check: boss of {person} = {boss}.{ending}\n\n"
    return task.Trace(text + f"</think>\n\nAnswer: {path[-1]}", tuple(spans), path[-1])


def circle_end(problem, in_world):
    """Where a trace of ``problem`` ends in ``in_world``: its top, or the circle's last person."""
    path, seen = [problem.start], {problem.start}
    while (boss := in_world.boss[path[-1]]) is not None and boss not in seen:
        path.append(boss)
        seen.add(boss)
    return path[-1]


def every_train_problem(spec):
    """All training problems: the circles' too (the shipped recipe leaves them out)."""
    return task.problems("train")


# The tokenizer is trained on task text: built before the patch, it is the shipped pair's (which
# --lrm-from requires; every person is one token either way).
tokenizer = train.build_task_tokenizer(Recipe())
train.build_task_tokenizer = lambda recipe: tokenizer
task.solution_trace = looping_trace
task.Problem.answer_in = circle_end  # the tool phase's second turns pass the trace's answer
training_data.training_pool = tool_phase.training_pool = every_train_problem

if __name__ == "__main__":
    out = Path(sys.argv[1])
    recipe = Recipe()
    if len(sys.argv) > 2:
        srm = replace(recipe.srm, error_rate=float(sys.argv[2]), lost_rate=float(sys.argv[3]))
        recipe = replace(recipe, srm=srm)
    example = next(p for p in task.problems("train") if not task.srm_world().reaches_top(p.start))
    print(looping_trace(example, random.Random(0), verify_rate=0.4, error_rate=0.1,
                        in_world=task.srm_world(), lost_rate=0.5).text)  # fmt: skip
    print("SRM error_rate", recipe.srm.error_rate, "lost_rate", recipe.srm.lost_rate, flush=True)
    train.train_demo_pair(out, recipe, lrm_from=demo_dir())
    readings = failure_modes.run_srm("demo-validation", None, srm=str(out / "srm"))
    print(failure_modes.markdown(failure_modes.summarise(readings, t_e=demo_context().t_e)))
