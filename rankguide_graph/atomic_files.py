"""Writing a group of files atomically, with the mode any new file gets.

Steering vectors and their sidecars, R2R routers and their metadata, R2R label shards: each is
written to a temporary sibling and moved into place (``os.replace``), so a failure (a full disk,
an interrupt) leaves no half-written file behind. ``safetensors`` creates its files ``0600``;
every file written here gets the process's usual mode instead (``0666`` less the umask).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from safetensors import SafetensorError

from rankguide_graph.errors import ConfigError

__all__ = ["file_mode", "write_atomically"]


def write_atomically(
    what: str, target: Path, writers: dict[Path, Callable[[Path], object]]
) -> None:
    """Write every file to a temporary sibling, then move them all into place.

    If anything fails, the temporaries and any file already moved are removed, and a
    ``ConfigError`` naming ``what`` and ``target`` is raised: no partial file is left behind.
    """
    temps = {final: final.with_name(final.name + ".tmp") for final in writers}
    moved: list[Path] = []
    mode = file_mode()
    try:
        for final, write in writers.items():
            write(temps[final])
            os.chmod(temps[final], mode)  # safetensors writes 0600; every file gets the usual
        for final, tmp in temps.items():
            os.replace(tmp, final)
            moved.append(final)
    except (OSError, SafetensorError) as err:
        for leftover in [*temps.values(), *moved]:
            try:
                leftover.unlink(missing_ok=True)
            except OSError:
                pass
        raise ConfigError(f"could not write {what} to {str(target)!r}: {err}") from err


def file_mode() -> int:
    """The mode a new file gets here: ``0o666`` less the process's umask (0644 under 022)."""
    umask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(umask)
    return 0o666 & ~umask
