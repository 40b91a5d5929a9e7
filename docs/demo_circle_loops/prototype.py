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
(``"P = boss of C. P is at the top."``, then ``Answer: P``): a confident wrong conclusion. This
is the recipe field ``circle_rounds`` (``ModelRecipe``; ``None``, circles left out, in the
shipped recipe); the script sets it to (2, 4), trains the SRM alone beside the shipped LRM
(``train-demo --lrm-from``), then runs it alone on the validation split and reads its failures
(``rankguide_graph.demo.failure_modes``).

    python docs/demo_circle_loops/prototype.py OUT [ERROR_RATE LOST_RATE [CIRCLE_LOST_RATE]]

(~6 min of training, then ~2 min). ``CIRCLE_LOST_RATE`` sets the recipe field
``circle_lost_rate``: the share of look-ups coming round a circle followed by 2-4 re-checks.
"""

import sys
from dataclasses import replace
from pathlib import Path

from rankguide_graph.demo import failure_modes, train
from rankguide_graph.demo.pair import demo_context, demo_dir
from rankguide_graph.demo.recipe import Recipe

ROUNDS = (2, 4)
"""How many times a training trace goes round the circle before stating a top."""

if __name__ == "__main__":
    out = Path(sys.argv[1])
    recipe = Recipe()
    srm = replace(recipe.srm, circle_rounds=ROUNDS)
    if len(sys.argv) > 2:
        srm = replace(srm, error_rate=float(sys.argv[2]), lost_rate=float(sys.argv[3]))
    if len(sys.argv) > 4:
        srm = replace(srm, circle_lost_rate=float(sys.argv[4]))
    recipe = replace(recipe, srm=srm)
    print("SRM error_rate", srm.error_rate, "lost_rate", srm.lost_rate, "circle_rounds", ROUNDS,
          "circle_lost_rate", srm.circle_lost_rate)  # fmt: skip
    train.train_demo_pair(out, recipe, lrm_from=demo_dir())
    readings = failure_modes.run_srm("demo-validation", None, srm=str(out / "srm"))
    print(failure_modes.markdown(failure_modes.summarise(readings, t_e=demo_context().t_e)))
