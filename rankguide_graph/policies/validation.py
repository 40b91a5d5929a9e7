"""Eager checks for policy settings, with messages that name the value and the fix."""

from __future__ import annotations

from rankguide_graph.errors import ConfigError


def check_int(name: str, value: object, *, minimum: int, hint: str = "") -> int:
    """Return ``value`` if it is an int ``>= minimum``, else raise ``ConfigError``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} (={value!r}) must be an int >= {minimum}")
    if value < minimum:
        extra = f" ({hint})" if hint else ""
        raise ConfigError(f"{name} (={value}) must be >= {minimum}{extra}")
    return value


def check_number(
    name: str, value: object, *, minimum: float | None = None, maximum: float | None = None
) -> float:
    """Return ``value`` as a float if it is a real number within the bounds, else raise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} (={value!r}) must be a number, e.g. 0.9")
    if value != value:  # NaN
        raise ConfigError(f"{name} (=nan) must be a number, e.g. 0.9")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} (={value}) must be >= {minimum}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} (={value}) must be <= {maximum}")
    return float(value)
