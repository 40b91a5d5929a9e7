"""Policy ``r2r`` in the graph: a router file routes single SRM tokens to the LRM.

At the extremes the run must equal the single-model baselines run through the same graph: a
threshold of 1.0 (never route) gives exactly ``srm-only``'s reasoning and answer, 0.0 (always
route) exactly ``lrm-only``'s, with the token counts (``written``) saying who wrote what.
"""

from __future__ import annotations

import pytest

from rankguide_graph.context import RankGuideContext
from rankguide_graph.errors import ConfigError
from rankguide_graph.graph import build_graph
from rankguide_graph.session import SESSIONS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

QUESTION = "Add 5 and 9."
BUDGET = dict(max_steps=4, max_step_tokens=16, max_answer_tokens=6)


@pytest.fixture(scope="module")
def pair(model_dirs):
    return {role: str(path) for role, path in model_dirs["llama"].items()}


@pytest.fixture(scope="module")
def router_path(llama_router):
    return llama_router


def _run(pair, policy, **kwargs):
    context = RankGuideContext(srm=pair["srm"], lrm=pair["lrm"], policy=policy, **BUDGET, **kwargs)
    return build_graph().invoke({"question": QUESTION}, context=context)


def _text(out):
    return out["reasoning"], out["answer"], [s["n_tokens"] for s in out["steps"]]


def test_threshold_one_is_srm_only(pair, router_path):
    out = _run(pair, "r2r", router=router_path, router_threshold=1.0)
    assert _text(out) == _text(_run(pair, "srm-only"))
    assert out["totals"]["lrm_token_share"] == 0.0
    assert all(s["written"]["lrm"] == 0 for s in out["steps"])
    assert {s["decision"]["rule"] for s in out["steps"]} == {"r2r"}


def test_threshold_zero_is_the_lrm_token_by_token(pair, router_path):
    out = _run(pair, "r2r", router=router_path, router_threshold=0.0)
    assert _text(out) == _text(_run(pair, "lrm-only"))
    assert out["totals"]["lrm_token_share"] == 1.0
    assert all(s["model"] == "srm" and s["written"]["srm"] == 0 for s in out["steps"])


def test_the_router_s_own_threshold_mixes_both_and_counts_each(pair, router_path):
    out = _run(pair, "r2r", router=router_path)
    totals = out["totals"]
    written = {"srm": 0, "lrm": 0}
    for step in out["steps"]:
        assert sum(step["written"].values()) == step["n_tokens"]
        for name, n in step["written"].items():
            written[name] += n
    assert totals["tokens"]["srm"] + totals["tokens"]["lrm"] == (
        totals["reasoning_tokens"] + totals["answer_tokens"]
    )
    assert written["srm"] <= totals["tokens"]["srm"] and written["lrm"] <= totals["tokens"]["lrm"]
    assert len(SESSIONS) == 0


def test_r2r_without_a_router_is_refused_with_the_fix(pair):
    with pytest.raises(ConfigError, match="needs a router: pass router=PATH"):
        _run(pair, "r2r")
    with pytest.raises(ConfigError, match="router_threshold"):
        RankGuideContext(srm=pair["srm"], lrm=pair["lrm"], policy="r2r", router_threshold=1.5)
