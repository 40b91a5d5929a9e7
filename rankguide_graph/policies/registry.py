"""Policies by name: the built-in ones, and any a user registers."""

from __future__ import annotations

from typing import TypeVar

from rankguide_graph.errors import ConfigError
from rankguide_graph.policies.base import RoutingPolicy

P = TypeVar("P", bound=type[RoutingPolicy])
_POLICIES: dict[str, type[RoutingPolicy]] = {}


def register_policy(cls: P, *, replace: bool = False) -> P:
    """Make ``cls`` selectable as ``RankGuideContext(policy=cls.name)``; usable as a decorator."""
    if not (isinstance(cls, type) and issubclass(cls, RoutingPolicy)):
        raise ConfigError(f"{cls!r} is not a RoutingPolicy subclass")
    if not cls.name or not isinstance(cls.name, str):
        raise ConfigError(f"{cls.__name__}.name (={cls.name!r}) must be a non-empty string")
    if cls.name in _POLICIES and _POLICIES[cls.name] is not cls and not replace:
        raise ConfigError(
            f"a policy named {cls.name!r} is already registered ({_POLICIES[cls.name].__name__}): "
            "pick another name or pass replace=True"
        )
    _POLICIES[cls.name] = cls
    return cls


def get_policy_class(name: str) -> type[RoutingPolicy]:
    """The policy registered as ``name``."""
    try:
        return _POLICIES[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"policy (={name!r}) is not a known policy; choose one of {available_policies()} "
            "or register your own with rankguide_graph.policies.register_policy"
        ) from None


def available_policies() -> list[str]:
    """Names of every registered policy."""
    return sorted(_POLICIES)
