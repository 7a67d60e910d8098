"""Whether a process of a run is still there, by its pid (it may not be this process's child)."""

from __future__ import annotations

import os
from typing import Any


def alive(pid: Any) -> bool:
    """True while ``pid`` runs: False when it is gone or a zombie (it has ended, and whoever is its parent
    will reap it); True when it exists but belongs to someone else."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):  # no /proc (not Linux): existing is all there is to know
        return True
