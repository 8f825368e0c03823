"""The CPU's model name, for the machine line every benchmark writes next to its numbers."""

from __future__ import annotations

import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


def cpu_name(default: str = "") -> str:
    """The ``model name`` line of ``/proc/cpuinfo`` (Linux), else ``platform.processor()``, else ``default``.

    ``platform.processor()`` is empty or just the architecture on most Linux systems, which says nothing about how
    fast a timing should be, hence the cpuinfo line first.
    """
    try:
        for line in CPUINFO.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or default
