"""Command-line options generated from :class:`~rankguide_graph.context.RankGuideContext`.

Every run setting becomes ``--field-name`` with the field's type, default and docstring as help,
so the CLI can never drift from the context it builds.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from functools import cache
from typing import Any

from rankguide_graph.context import RankGuideContext


@cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each attribute of a dataclass, read from its source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, after in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def _parser_for(annotation: Any) -> tuple[Any, list[str] | None]:
    """``(type converter, choices)`` for a field annotation such as ``int | None``."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = (
        args[0] if typing.get_origin(annotation) in (typing.Union, types.UnionType) else annotation
    )
    if typing.get_origin(base) is typing.Literal:
        return str, [str(c) for c in typing.get_args(base)]
    if base is bool:
        return bool, None  # a switch, see add_context_options
    if typing.get_origin(base) is list:
        return base, None  # one item per use of the option, see add_context_options
    if type(None) in typing.get_args(annotation):
        return _or_none(base), None
    return base, None


def _or_none(convert: Any) -> Any:
    """``convert``, with ``none`` read as ``None`` (for optional settings)."""

    def parse(text: str) -> Any:
        return None if text.strip().lower() == "none" else convert(text)

    parse.__name__ = getattr(convert, "__name__", "value")  # argparse names it in errors
    return parse


def add_context_options(parser: argparse.ArgumentParser, *, skip: tuple[str, ...] = ()) -> None:
    """Add ``--name`` for every context field not in ``skip``."""
    docs = field_docs(RankGuideContext)
    hints = typing.get_type_hints(RankGuideContext)
    group = parser.add_argument_group("run settings (RankGuideContext)")
    for f in dataclasses.fields(RankGuideContext):
        if f.name in skip:
            continue
        convert, choices = _parser_for(hints[f.name])
        # a list of strings (answer_stop): one item per use of the option, so
        # `--answer-stop END` is ["END"], not ["E", "N", "D"]
        many = typing.get_origin(convert) is list
        # A switch (--compile / --no-compile): an optional value would swallow the question.
        kind: dict[str, Any] = (
            {"action": argparse.BooleanOptionalAction}
            if convert is bool
            else {"action": "append", "type": str}
            if many
            else {"type": convert, "choices": choices}
        )
        repeat = " (repeat the option for more than one)" if many else ""
        group.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            **kind,
            default=argparse.SUPPRESS,
            help=f"{docs.get(f.name, '')}{repeat} (default: {f.default})",
        )


def context_settings(args: argparse.Namespace, *, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The context fields among the parsed options (unset options are absent), minus ``skip``."""
    names = {f.name for f in dataclasses.fields(RankGuideContext)} - set(skip)
    return {k: v for k, v in vars(args).items() if k in names}


def context_from_args(args: argparse.Namespace) -> RankGuideContext:
    """The context the parsed options describe (unset options keep their defaults)."""
    return RankGuideContext(**context_settings(args))


def add_problem_set_options(parser: argparse.ArgumentParser) -> None:
    """``--srm``, ``--data`` and ``--limit``: the SRM run over a JSONL problem set."""
    parser.add_argument("--srm", required=True, help="small reasoning model: directory or hub id")
    parser.add_argument(
        "--data", required=True, help='JSONL, one {"problem": ..., "answer": ...} per line'
    )
    parser.add_argument("--limit", type=int, default=None, help="use the first N problems only")
