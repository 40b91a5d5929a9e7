"""The nodes of the reasoning graph, one file each, in the order of the method (paper Fig. 2).

``prepare`` -> ``steer`` (SRM boundary pass, Eq. 8) -> ``score`` (ranks and entropy, §3) ->
``route`` (Eq. 4 / Eq. 5 or a baseline's rule) -> ``srm_step`` | ``lrm_step`` (| ``verify`` for
draft-and-verify baselines) -> back to ``steer``; ``terminate`` closes thinking; ``answer``.
"""

from rankguide_graph.nodes.answer import answer, run_totals
from rankguide_graph.nodes.generate import lrm_step, srm_step
from rankguide_graph.nodes.prepare import prepare
from rankguide_graph.nodes.route import route
from rankguide_graph.nodes.score import score
from rankguide_graph.nodes.steer import steer
from rankguide_graph.nodes.terminate import terminate
from rankguide_graph.nodes.verify import verify

__all__ = [
    "answer",
    "lrm_step",
    "prepare",
    "route",
    "run_totals",
    "score",
    "srm_step",
    "steer",
    "terminate",
    "verify",
]
