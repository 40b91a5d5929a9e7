"""The embedded demo pair: where it lives in the package, its run settings, its problems.

The pair is in ``rankguide_graph/data/demo/`` (``srm/``, ``lrm/``: HuggingFace checkpoints that
``AutoModelForCausalLM`` / ``AutoTokenizer`` load; ``recipe.json``: how they were trained and
their measured accuracies; ``settings.json``: the run settings chosen for them on the validation
split, see :func:`demo_context`).
"""

from __future__ import annotations

import dataclasses
import json
from importlib import resources
from pathlib import Path
from typing import Any

from rankguide_graph.context import RankGuideContext
from rankguide_graph.demo import task
from rankguide_graph.errors import ConfigError
from rankguide_graph.evaluation.datasets import Problem

__all__ = ["DEMO_DATASETS", "demo_context", "demo_dir", "demo_problems", "demo_settings"]

DEMO_DATASETS = {"demo": "test", "demo-validation": "validation", "demo-train": "train"}
"""Dataset names of the demo task and the split each reads (thresholds are tuned on validation;
``demo-train`` is what the pair and its R2R router were trained on)."""


def demo_dir() -> Path:
    """The directory of the embedded pair; a clear error if this install has none."""
    path = Path(str(resources.files("rankguide_graph") / "data" / "demo"))
    for part in ("srm", "lrm"):
        if not (path / part / "config.json").is_file():
            raise ConfigError(
                f"the embedded demo pair is missing ({path / part} has no config.json): "
                "reinstall rankguide-graph, or rebuild it with `rankguide train-demo --out "
                f"{path}`"
            )
    return path


def demo_settings() -> dict[str, Any]:
    """The pair's model paths and the run settings chosen for it (``settings.json``).

    A steering vector or R2R router file named there is resolved against the pair's directory.
    """
    root = demo_dir()
    settings: dict[str, Any] = {"srm": str(root / "srm"), "lrm": str(root / "lrm")}
    path = root / "settings.json"
    if path.is_file():
        settings.update(json.loads(path.read_text())["context"])
    for name in ("steering_vector", "router"):  # files named relative to the pair's directory
        value = settings.get(name)
        if value is not None and not Path(value).is_absolute():
            settings[name] = str(root / value)
    return settings


def demo_context(**overrides: Any) -> RankGuideContext:
    """A :class:`RankGuideContext` for the embedded pair: its paths, its settings, ``overrides``."""
    settings = {**demo_settings(), **overrides}
    fields = {f.name for f in dataclasses.fields(RankGuideContext)}
    return RankGuideContext(**{k: v for k, v in settings.items() if k in fields})


def demo_problems(dataset: str = "demo", limit: int | None = None) -> list[Problem]:
    """All problems of a demo split, or its first ``limit`` (``"demo"`` is the test split)."""
    if dataset not in DEMO_DATASETS:
        raise ConfigError(f"dataset (={dataset!r}) must be one of {sorted(DEMO_DATASETS)}")
    split = DEMO_DATASETS[dataset]
    return [
        Problem(id=f"{split}-{i}", problem=p.question, answer=str(p.answer), line=i + 1)
        for i, p in enumerate(task.problems(split, limit))
    ]
