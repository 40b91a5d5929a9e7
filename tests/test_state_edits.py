"""The ``sequence`` channel's edits: appends, rollbacks, and a rollback followed by new text."""

from __future__ import annotations

from rankguide_graph.context import RankGuideContext
from rankguide_graph.session import SESSIONS
from rankguide_graph.state import KeepTokens, apply_token_edits


def test_edits_apply_in_order_and_leave_the_old_value_alone():
    old = [1, 2, 3, 4]
    edits = [[5, 6], KeepTokens(keep=3, append=[]), KeepTokens(keep=2, append=[9, 9]), [7]]
    assert apply_token_edits(old, edits) == [1, 2, 9, 9, 7]
    assert old == [1, 2, 3, 4]
    # Batching-invariant, as DeltaChannel requires of a reducer.
    assert apply_token_edits(apply_token_edits(old, edits[:2]), edits[2:]) == apply_token_edits(
        old, edits
    )


def test_a_node_that_rolls_back_and_writes_again_carries_both(model_dirs):
    pair = model_dirs["llama"]
    context = RankGuideContext(srm=str(pair["srm"]), lrm=str(pair["lrm"]), max_step_tokens=8)
    run_id, session = SESSIONS.open(context)  # admitted: a row of each model's slot cache
    prompt = [1, 50, 60, 70]
    state = {"sequence": list(prompt)}
    session.start(prompt)
    engine = session.engine
    engine.generate_step("srm")
    update = session.text_update(state)
    assert isinstance(update["sequence"], list)  # an append: only the new tokens travel
    state = {"sequence": apply_token_edits(state["sequence"], [update["sequence"]])}
    assert state["sequence"] == engine.sequence

    engine.generate_step("srm")
    engine.truncate(len(prompt))  # roll back past what the state holds...
    engine.generate_step("lrm")  # ...and write again, in the same node
    update = session.text_update(state)
    edit = update["sequence"]
    assert isinstance(edit, dict) and edit["keep"] == len(prompt)
    assert apply_token_edits(state["sequence"], [edit]) == engine.sequence
    SESSIONS.close(run_id)
