"""The layout of a build folder as the simulation reads and writes it, the exported top's name and
ports, and the report keys the simulation measures: named once here for sim/, the compiler (which
writes the folder and merges the report) and the benches.

A build folder (written by ``xnorflow compile``, compiler/build.py) holds::

    spec.npz                  the lowered network (hw/spec.py)
    vectors.npz               golden test vectors: inputs, labels, golden scores and predictions
    verilog/xnorflow_top.v    the exported top (sim/export.py), module TOP
    sim/                      what ``xnorflow simulate`` writes (or the compiler's staging copy of it):
        obj/                  the Verilator model of the per-cycle bench (obj_waves/ when recording waves)
        obj_fast<N>/          the fast harness's model for chunks of up to N frames, beside harness<N>.v
        run/<name>/           one bench run: its config, frames, raw results, sim.log (fast chunks: chunk<k>/)
        results.json          every frame's RTL class and scores, the mismatches, the measurements
        mismatch_<image>.vcd  waves of a failing frame re-run alone (waves.vcd when asked, no mismatch)

Light on purpose (no NumPy, no cocotb, no Amaranth): compiler/report.py imports the report keys.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from xnorflow.errors import XnorflowError

TOP = "xnorflow_top"                 # the exported network's module name
SPEC_FILE = "spec.npz"
VECTORS_FILE = "vectors.npz"
VERILOG_DIR = "verilog"
SIM_DIR = "sim"
MODEL_DIR = "obj"                    # kept across simulations: the Verilator model cache
FAST_MODEL_DIR = "obj_fast"          # kept across simulations too: the fast harness's models
RESULTS_FILE = "results.json"

# The report.json keys (DESIGN.md section 4) a simulation measures and merges in.
SIMULATION_KEYS = ("images_simulated", "rtl_mismatches", "accuracy_rtl", "cycles_per_frame", "latency_cycles")


class SimulationError(XnorflowError):
    """The simulation cannot run or did not finish; the message names the cause and the fix."""


def verilog_file(build_dir) -> Path:
    """The exported top's Verilog in a build folder."""
    return Path(build_dir) / VERILOG_DIR / f"{TOP}.v"


@dataclass(frozen=True)
class BuildFolder:
    """The files of a compiled build folder that the simulation reads, and where it writes."""

    root: Path
    verilog: Path
    spec: Path
    vectors: Path
    sim_dir: Path        # where this run writes (build/sim, or the compiler's staging copy of it)

    @classmethod
    def open(cls, build_dir, sim_dir=None) -> BuildFolder:
        """The folder's files, checked to exist (SimulationError naming the missing one otherwise)."""
        root = Path(build_dir)
        if not root.is_dir():
            raise SimulationError(f"build folder {root} does not exist: run `xnorflow compile MODEL -o {root}` first")
        # Absolute: the simulator runs in its own working folder and reads these paths from there.
        root = root.resolve()
        sim_dir = Path(sim_dir).absolute() if sim_dir is not None else root / SIM_DIR
        folder = cls(root, verilog_file(root), root / SPEC_FILE, root / VECTORS_FILE, sim_dir)
        for path, what in ((folder.verilog, "Verilog"), (folder.spec, "spec"), (folder.vectors, "test vectors")):
            if not path.is_file():
                raise SimulationError(f"no {what} in {root} ({path.relative_to(root)} is missing): "
                                      f"run `xnorflow compile MODEL -o {root}` first")
        return folder

    def model_dir(self, waves: bool = False) -> Path:
        """The per-cycle bench's Verilator model (a separate one records waves)."""
        return self.sim_dir / ("obj_waves" if waves else MODEL_DIR)

    def fast_model(self, capacity: int) -> tuple[Path, Path]:
        """(model folder, harness Verilog) of the fast harness holding ``capacity`` frames; the
        source sits beside the folder, since a rebuild empties the folder."""
        models = self.sim_dir / FAST_MODEL_DIR
        return models / f"obj{capacity}", models / f"harness{capacity}.v"

    def run_dir(self, name: str) -> Path:
        """The working folder of one bench run (``chunk<k>`` for a fast chunk)."""
        return self.sim_dir / "run" / name

    @property
    def results_file(self) -> Path:
        return self.sim_dir / RESULTS_FILE

    def mismatch_waves(self, image: int) -> Path:
        return self.sim_dir / f"mismatch_{image}.vcd"

    @property
    def waves_file(self) -> Path:
        return self.sim_dir / "waves.vcd"


def module_ports(verilog_text: str, name: str = TOP) -> dict[str, int]:
    """Port name -> width of module ``name`` in Yosys-written Verilog, in declaration order."""
    match = re.search(rf"^module\s+\\?{re.escape(name)}\s*\((.*?)^endmodule", verilog_text, re.DOTALL | re.MULTILINE)
    if match is None:
        raise SimulationError(f"the Verilog has no module {name}: run `xnorflow compile` again to rewrite it")
    ports = {}
    for _direction, msb, lsb, port in re.findall(
            r"^\s*(input|output)\s+(?:wire\s+|reg\s+)?(?:\[(\d+):(\d+)\]\s*)?\\?([\w.$]+)\s*;",
            match.group(1), re.MULTILINE):
        ports[port] = abs(int(msb) - int(lsb)) + 1 if msb else 1
    return ports
