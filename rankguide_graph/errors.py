"""The exceptions of rankguide_graph.

Every error names the offending value and says how to fix it. They subclass the built-in
exception a caller would expect (``ValueError`` for bad settings, ``OSError`` for loading),
so generic handlers keep working.
"""

from __future__ import annotations


class RankGuideError(Exception):
    """Base class of every error raised on purpose by rankguide_graph."""


class ConfigError(RankGuideError, ValueError):
    """A setting (threshold, layer, eps, budget, ...) is out of range or of the wrong type."""


class PromptError(RankGuideError, ValueError):
    """A prompt is empty, or does not fit the model's context window."""


class ModelLoadError(RankGuideError, OSError):
    """A model or tokenizer could not be loaded (missing path, unreachable hub, bad files)."""


class TokenizerMismatchError(RankGuideError, ValueError):
    """The SRM and the LRM do not share a tokenizer, so tokens cannot move between them."""


class CalibrationError(ConfigError):
    """A steering vector cannot be calibrated from these traces (e.g. no validation step)."""


class RunCancelled(RankGuideError):
    """A run was stopped because whoever asked for it has gone (a server client disconnected)."""
