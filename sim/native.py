"""The native rate of a build's design: its fast harness under a bare C++ loop (sim/native_main.cpp).

The limit simulate's fast mode is measured against (`make bench`): the same harness, frames, random
gaps and backpressure and Verilator flags, with no cocotb and no VPI. Rates are cycles per CPU second,
so they do not depend on what else the machine runs.
"""
from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import numpy as np

from xnorflow.sim import harness
from xnorflow.sim.defaults import DEFAULT_BACKPRESSURE, DEFAULT_GAPS

NATIVE_MAIN = Path(__file__).with_name("native_main.cpp")


def native_rate(build_dir, work_dir, images: int | None = None, seed: int = 0) -> dict:
    """Build the harness with the bare loop into ``work_dir`` and run the build's test frames once.

    Returns {cycles, frames, cpu_seconds, cycles_per_cpu_second, frames_per_cpu_second, build_seconds}.
    """
    from xnorflow.hw.spec import NetworkSpec
    from xnorflow.sim.fast import SPEED_ARGS
    from xnorflow.sim.layout import SPEC_FILE, TOP, VECTORS_FILE, SimulationError, module_ports, verilog_file
    from xnorflow.sim.runner import resolve_ports
    from xnorflow.sim.verilator import activate_verilator
    from xnorflow.sim.verilator_build import VERILATOR_ARGS, verilated_mk_fixes

    build_dir, work_dir = Path(build_dir).resolve(), Path(work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    install = activate_verilator()
    spec = NetworkSpec.load(build_dir / SPEC_FILE)
    verilog = verilog_file(build_dir)
    widths = module_ports(verilog.read_text())
    ports, _ = resolve_ports(widths, spec)
    in_width = widths[ports["i_payload"]]
    with np.load(build_dir / VECTORS_FILE) as vectors:
        inputs = vectors["inputs"][:images] if images else vectors["inputs"]
    source = work_dir / "harness.v"
    source.write_text(harness.harness_verilog(TOP, ports, spec, in_width, harness.depth_for(len(inputs))))
    frames_file = work_dir / "frames.hex"
    harness.write_frames_hex(frames_file, inputs, in_width)
    obj = work_dir / "obj"
    started = time.perf_counter()
    commands = [
        [str(install.executable), "-cc", "--exe", "-Mdir", str(obj), "--top-module", harness.HARNESS_TOP,
         "--prefix", "Vtop", "-o", "native", *VERILATOR_ARGS, *SPEED_ARGS, str(NATIVE_MAIN), str(verilog),
         str(source)],
        ["make", "-j", "2", "-C", str(obj), "-f", "Vtop.mk", *verilated_mk_fixes()],
    ]
    for command in commands:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode:
            raise SimulationError(f"the native harness did not build: {result.stderr.strip().splitlines()[-1:]}")
    build_seconds = time.perf_counter() - started
    run = subprocess.run([str(obj / "native"), str(len(inputs)), str(harness.threshold(DEFAULT_GAPS)),
                          str(harness.threshold(DEFAULT_BACKPRESSURE)), str(seed),
                          f"+xnorflow_frames={frames_file}", f"+xnorflow_payloads={work_dir / 'payloads.hex'}",
                          f"+xnorflow_in={work_dir / 'in.hex'}", f"+xnorflow_out={work_dir / 'out.hex'}"],
                         capture_output=True, text=True, check=False)
    match = re.search(r"cycles (\d+) outputs (\d+) stuck (\d) cpu_seconds ([\d.]+)", run.stdout)
    if run.returncode or match is None:
        raise SimulationError(f"the native harness failed: {(run.stdout + run.stderr).strip()[-300:]}")
    cycles, outputs, stuck, cpu = int(match[1]), int(match[2]), int(match[3]), float(match[4])
    return {"cycles": cycles, "frames": outputs, "stuck": bool(stuck), "cpu_seconds": cpu,
            "cycles_per_cpu_second": cycles / cpu if cpu else None,
            "frames_per_cpu_second": outputs / cpu if cpu else None, "build_seconds": round(build_seconds, 1)}
