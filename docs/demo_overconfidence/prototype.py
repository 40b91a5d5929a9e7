"""Prototype (not shipped): the taught-wrong bosses as a wrong column, not a circle.

The shipped SRM is taught four bosses wrong as one of the person's own grand-reports
(:func:`rankguide_graph.demo.task.misremembered`), so in its world those chains go round a
circle and are left out of its training problems; measured, it then writes such a person only
to correct it (``docs/demo_eval/taught_wrong_probe.txt``) and is seldom overconfident. Here the
same four people are taught a boss at the right level in another column instead, so their
chains reach a (wrong) top in the SRM's world and are in its training traces, stated as firmly
as any other fact. The script patches ``task.misremembered`` / ``task.srm_world`` in this
process only, trains the SRM alone beside the shipped LRM (``train-demo --lrm-from``), then runs
it alone on the validation split and reads its failures
(:func:`rankguide_graph.demo.failure_modes.run_srm` with its ``srm``).

    python docs/demo_overconfidence/prototype.py OUT [ERROR_RATE LOST_RATE]   # ~6 min, ~1 min

ERROR_RATE and LOST_RATE replace the SRM recipe's (0.1 and 0.5) when given.
"""
import random
import sys
from dataclasses import replace
from functools import cache
from pathlib import Path

from rankguide_graph.demo import failure_modes, task, train
from rankguide_graph.demo.pair import demo_context, demo_dir
from rankguide_graph.demo.recipe import Recipe

original = task.misremembered()


@cache
def wrong_column() -> dict[int, int]:
    """Each taught-wrong person -> a person one level up whose chain ends at another top."""
    w = task.world()
    rng = random.Random(task.WORLD_SEED + 2)
    out = {}
    for person in original:
        top = w.chain(person)[-1]
        above = sorted(p for p in w.people if w.level[p] == w.level[person] - 1
                       and w.chain(p)[-1] != top)  # fmt: skip
        out[person] = rng.choice(above)
    return out


@cache
def srm_world() -> task.World:
    w = task.world()
    return task.World({**w.boss, **wrong_column()}, w.level)


# The tokenizer is trained on task text: built before the patch, it is the shipped pair's (which
# --lrm-from requires; every person is one token either way).
tokenizer = train.build_task_tokenizer(Recipe())
train.build_task_tokenizer = lambda recipe: tokenizer
task.misremembered, task.srm_world = wrong_column, srm_world
out = Path(sys.argv[1])
print("taught wrong:", wrong_column())
recipe = Recipe()
if len(sys.argv) > 2:
    srm = replace(recipe.srm, error_rate=float(sys.argv[2]), lost_rate=float(sys.argv[3]))
    recipe = replace(recipe, srm=srm)
print("SRM error_rate", recipe.srm.error_rate, "lost_rate", recipe.srm.lost_rate)
train.train_demo_pair(out, recipe, lrm_from=demo_dir())
readings = failure_modes.run_srm("demo-validation", None, srm=str(out / "srm"))
print(failure_modes.markdown(failure_modes.summarise(readings, t_e=demo_context().t_e)))
