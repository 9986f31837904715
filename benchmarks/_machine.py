"""The line every benchmark prints about the machine it ran on."""

from __future__ import annotations

import os
import platform


def machine() -> str:
    """System, architecture, cores, CPU model and Python version."""
    cpu = "unknown cpu"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    system = f"{platform.system()} {platform.machine()}"
    return f"{system}, {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"
