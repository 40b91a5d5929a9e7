"""Step scorers used by the baselines.

- :mod:`.prm`: :class:`ProcessRewardModel`, the process reward model of the TRIM baseline
  (Qwen2.5-Math-PRM input convention), scoring each reasoning step in [0, 1].
"""

from rankguide_graph.scoring.prm import (
    DEFAULT_PRM_SYSTEM,
    DEFAULT_STEP_SEPARATOR,
    ProcessRewardModel,
)

__all__ = ["DEFAULT_PRM_SYSTEM", "DEFAULT_STEP_SEPARATOR", "ProcessRewardModel"]
