"""Average activated parameters per token: R2R's efficiency metric, for every policy.

R2R (§5) reports how many parameters a system runs per generated token: its SRM and router run
on every token, the LRM only on the tokens it writes, so the average is
``P_srm + P_router + P_lrm * (LRM token share)``. A step-level policy runs each model on the
tokens that model writes: ``(P_srm * SRM tokens + P_lrm * LRM tokens) / tokens``. Catch-up
prefills and discarded drafts are not counted (R2R counts decoding only). A remote LRM's size is
unknown here, so its runs have no figure.
"""

from __future__ import annotations

import functools

from rankguide_graph.context import RankGuideContext


@functools.lru_cache(maxsize=16)
def _parameters(srm: str, lrm: str, router: str | None, device: str | None, dtype: str | None):
    from rankguide_graph.backend.remote import is_remote
    from rankguide_graph.session import POOL

    if is_remote(lrm):
        return None
    sizes = {
        role: sum(p.numel() for p in POOL.load(path, device=device, dtype=dtype).model.parameters())
        for role, path in (("srm", srm), ("lrm", lrm))
    }
    sizes["router"] = 0
    if router:
        from rankguide_graph.policies.r2r import router_for

        loaded = router_for(router, POOL.load(srm, device=device, dtype=dtype))
        sizes["router"] = sum(
            p.numel() for p in loaded.router.parameters()
        )  # the SRM embedding is no parameter
    return sizes


def model_sizes(context: RankGuideContext) -> dict[str, int] | None:
    """Parameters of the run's SRM, LRM and (R2R) router; ``None`` for a remote LRM."""
    assert context.srm and context.lrm
    router = context.router if context.policy == "r2r" else None
    return _parameters(context.srm, context.lrm, router, context.device, context.dtype)


def activated_parameter_tokens(
    policy: str, tokens: dict[str, int], sizes: dict[str, int] | None
) -> float | None:
    """Parameters run summed over a run's kept tokens (divide by the tokens for the average)."""
    if sizes is None:
        return None
    srm, lrm = tokens.get("srm", 0), tokens.get("lrm", 0)
    if policy == "r2r":  # the SRM (and the router) run on every token, the LRM on its own
        return (srm + lrm) * (sizes["srm"] + sizes["router"]) + lrm * sizes["lrm"]
    return srm * sizes["srm"] + lrm * sizes["lrm"]
