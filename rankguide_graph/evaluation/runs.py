"""What an evaluation runs: one :class:`PolicyRun` per policy and threshold setting.

A run is a policy name plus the context fields it overrides (``{"t_e": 0.7}``); its label
(``rankguide[t_e=0.7]``) names it in tables and plots. ``--sweep`` expands each policy over a
grid of thresholds; the default grids are the paper's (RankGuide Appendix A.2, the Fig. 4 ablation
grid):

- RankGuide: ``T_e in {0.7, 0.9, 1.0, 1.1} x T_r1 in {7, 8} x T_r2 in {60, 70}``;
- GlimpRouter: the same entropy thresholds ``{0.7, 0.9, 1.0, 1.1}`` ("for fair comparison");
- SpecReason: acceptance score ``T_a in {7, 8, 9}``;
- TRIM: the paper is silent; ``{0.3, 0.5, 0.7}`` around TRIM-Thr's 0.5 on the [0, 1] score.

A grid is written ``policy:field=v1,v2;field=v3`` on the command line (:func:`parse_grid`); a
policy given several grids runs the points of each, in order, each point once (two corners of a
grid without the whole product between them).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rankguide_graph.context import RankGuideContext
from rankguide_graph.errors import ConfigError
from rankguide_graph.policies.registry import get_policy_class

__all__ = ["DEFAULT_GRIDS", "PolicyRun", "expand_runs", "parse_grid", "parse_policies"]

Grid = dict[str, tuple[Any, ...]]

DEFAULT_GRIDS: dict[str, Grid] = {
    "rankguide": {"t_e": (0.7, 0.9, 1.0, 1.1), "t_r1": (7, 8), "t_r2": (60, 70)},
    "glimprouter": {"glimpse_threshold": (0.7, 0.9, 1.0, 1.1)},
    "specreason": {"accept_score": (7, 8, 9)},
    "trim": {"accept_score": (0.3, 0.5, 0.7)},
    "r2r": {"router_threshold": (0.05, 0.1, 0.2, 0.3, 0.5)},
}
"""The threshold grid ``--sweep`` runs per policy (policies without one run once); R2R's is
the router's probability threshold (its file holds the one chosen on validation)."""


@dataclass(frozen=True)
class PolicyRun:
    """One policy with the context fields it overrides."""

    policy: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    """Context fields set for this run (thresholds of a sweep point)."""
    sweep: bool = False
    """Part of a threshold sweep (drawn as a curve), not a policy's default point."""

    @property
    def label(self) -> str:
        """``policy`` or ``policy[field=value,...]``."""
        if not self.settings:
            return self.policy
        inner = ",".join(f"{k}={v}" for k, v in sorted(self.settings.items()))
        return f"{self.policy}[{inner}]"

    def context(self, base: RankGuideContext) -> RankGuideContext:
        """``base`` with this run's policy and settings (validated)."""
        return dataclasses.replace(base, policy=self.policy, **dict(self.settings))


def parse_policies(text: str) -> list[str]:
    """``"srm-only,rankguide"`` -> names, each checked against the registry; no duplicates."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ConfigError(
            f"--policies (={text!r}) names no policy: e.g. srm-only,lrm-only,rankguide"
        )
    for name in names:
        get_policy_class(name)  # unknown names fail here, listing the known ones
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"--policies (={text!r}) names {', '.join(duplicates)} twice")
    return names


def parse_grid(text: str) -> tuple[str, Grid]:
    """``"rankguide:t_e=0.5,0.7;t_r1=3,4"`` -> ``("rankguide", {"t_e": (0.5, 0.7), ...})``."""
    policy, sep, body = text.partition(":")
    if not sep or not policy.strip() or not body.strip():
        raise ConfigError(
            f"--grid (={text!r}) must look like POLICY:FIELD=V1,V2;FIELD=V3, "
            "e.g. rankguide:t_e=0.7,0.9;t_r1=7,8"
        )
    fields = {f.name: f for f in dataclasses.fields(RankGuideContext)}
    grid: Grid = {}
    for part in body.split(";"):
        name, eq, values = part.partition("=")
        name = name.strip()
        if not eq or name not in fields:
            raise ConfigError(
                f"--grid (={text!r}): {name!r} is not a run setting; use fields of "
                "RankGuideContext such as t_e, t_r1, t_r2, glimpse_threshold, accept_score"
            )
        grid[name] = tuple(_number(v.strip(), text) for v in values.split(",") if v.strip())
        if not grid[name]:
            raise ConfigError(f"--grid (={text!r}) gives no value for {name}")
    return policy.strip(), grid


def _number(value: str, text: str) -> int | float:
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"--grid (={text!r}): {value!r} is not a number") from None


def expand_runs(
    policies: Sequence[str],
    *,
    sweep: bool,
    grids: Mapping[str, Grid | Sequence[Grid]] | None = None,
) -> list[PolicyRun]:
    """Each policy's default run, then (with ``sweep``) one run per point of its grid.

    ``grids`` replaces :data:`DEFAULT_GRIDS` per policy, with one grid or several (their points
    in order, a point already listed skipped).
    """
    chosen = {**DEFAULT_GRIDS, **(grids or {})}
    runs = [PolicyRun(policy) for policy in policies]
    if not sweep:
        return runs
    for policy in policies:
        value = chosen.get(policy) or []
        seen: list[dict[str, Any]] = []
        for grid in [value] if isinstance(value, dict) else value:
            names = sorted(grid)
            for values in itertools.product(*(grid[n] for n in names)):
                point = dict(zip(names, values, strict=True))
                if point not in seen:
                    seen.append(point)
                    runs.append(PolicyRun(policy, point, sweep=True))
    return runs
