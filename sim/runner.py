"""The simulation session: check a build folder's Verilog bit-exact against golden in Verilator.

    result = simulate("build/", images=1000)

reads ``build/spec.npz``, ``build/vectors.npz`` and ``build/verilog/xnorflow_top.v`` (written by
``xnorflow compile``), streams the frames through the fast harness (sim/fast.py, the default) or the
per-cycle cocotb bench (sim/cocotb_tb.py, run by `BenchSession`), localises the mismatches
(sim/localise.py) and returns the report figures (``images_simulated, rtl_mismatches, accuracy_rtl,
cycles_per_frame, latency_cycles``; sim/summary.py) with them. The Verilator models are built and
cached by sim/verilator_build.py; sim/layout.py lists the files written under ``build/sim/``.
"""
from __future__ import annotations

import json
import sys
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xnorflow.hw.ops import op_for
from xnorflow.hw.spec import NetworkSpec, SpecError
from xnorflow.hw.stream_format import output_width
from xnorflow.sim import golden
from xnorflow.sim.cocotb_tb import CONFIG_ENV
from xnorflow.sim.defaults import DEFAULT_BACKPRESSURE, DEFAULT_GAPS, SIMULATION_MODES
from xnorflow.sim.fast import run_fast
from xnorflow.sim.layout import TOP, BuildFolder, SimulationError, module_ports
from xnorflow.sim.localise import localise_mismatches, record_waves
from xnorflow.sim.summary import merge_report, summarise
from xnorflow.sim.verilator_build import build_model, verilator_runner

TB_MODULE = "xnorflow.sim.cocotb_tb"
MEASURE_FRAMES = 32       # clean back-to-back frames for the II and latency measurement
MAX_LOCALISED = 4         # failing images re-run alone with taps and waves
WAVES_FRAMES = 4          # frames recorded when waves are asked for and nothing failed


def _pick(ports: dict, candidates: list[str], what: str) -> str:
    for name in candidates:
        if name in ports:
            return name
    raise SimulationError(f"the Verilog top has no {what} port (looked for {', '.join(candidates)}; it has "
                          f"{', '.join(sorted(ports))}): re-export it with xnorflow.sim.export")


def resolve_ports(ports: dict[str, int], spec: NetworkSpec) -> tuple[dict, list[dict]]:
    """Map the testbench's roles to the top's port names and describe the per-layer taps.

    Roles are ``clk``, ``rst`` and ``<prefix>_<member>`` per stream (prefix ``i``, ``o``, ``tap<k>``;
    member ``payload``, ``valid``, ``ready``; a tap has no ready): how sim/streams.StreamBus binds a
    stream by its prefix. Each tap is described by its prefix, width, channels and beats per frame."""
    roles = {"clk": ["clk"], "rst": ["rst"]}
    for stream in ("i", "o"):
        for signal in ("payload", "valid", "ready"):
            roles[f"{stream}_{signal}"] = [f"{stream}__{signal}", f"{stream}_{signal}", f"{stream}__data"]
    names = {role: _pick(ports, cands, role) for role, cands in roles.items()}
    taps = []
    for k, layer in enumerate(spec.layers[:-1]):
        op = op_for(layer, k)
        prefix = f"tap{k}"
        names[f"{prefix}_payload"] = _pick(ports, [f"{prefix}_data", f"{prefix}__payload", f"{prefix}__data"],
                                           f"layer {k} tap data")
        names[f"{prefix}_valid"] = _pick(ports, [f"{prefix}_valid", f"{prefix}__valid"], f"layer {k} tap valid")
        taps.append({"prefix": prefix, "pe": op.out_width, "n_out": layer.n_out, "beats": op.beats_per_frame})
    expected_out = output_width(spec)
    if ports[names["o_payload"]] != expected_out:
        raise SimulationError(f"the Verilog's output beat has {ports[names['o_payload']]} bits, the spec needs "
                              f"{expected_out}: the build folder is stale, run `xnorflow compile` again")
    return names, taps


# --- one run of the testbench --------------------------------------------------------------------
@dataclass
class BenchSession:
    """Everything needed to run the testbench on a set of frames of one build folder."""

    folder: BuildFolder
    spec: NetworkSpec
    ports: dict
    taps: list
    in_width: int        # bits per input beat: the top's i__payload width (the host's beat)

    def run(self, name: str, image_ids: np.ndarray, inputs: np.ndarray, result: golden.GoldenResult, *,
            backpressure: float, gaps: float, seed: int, waves_file: Path | None = None,
            collect_taps: bool = False, clean_only: bool = False, reset_test: bool = True,
            measure_frames: int = MEASURE_FRAMES, progress: bool = False) -> dict:
        """Run the testbench once; returns the main test's JSON (plus "reset" when it ran)."""
        obj_dir = self.folder.model_dir(waves=waves_file is not None)
        build_seconds = build_model(self.folder.verilog, obj_dir, waves=waves_file is not None)
        run_dir = self.folder.run_dir(name)
        run_dir.mkdir(parents=True, exist_ok=True)
        frames_file = run_dir / "frames.npz"
        np.savez(frames_file, image_ids=np.asarray(image_ids, dtype=np.int64),
                 inputs=np.asarray(inputs, dtype=np.uint8),
                 expected_scores=result.scores, expected_predictions=result.predictions)
        results_file, reset_file = run_dir / "stream.json", run_dir / "reset.json"
        progress_file = run_dir / "progress"
        for stale in (results_file, reset_file, progress_file):
            stale.unlink(missing_ok=True)
        spec = self.spec
        config = {
            "frames_file": str(frames_file), "results_file": str(results_file),
            "reset_results_file": str(reset_file), "in_width": self.in_width,
            "n_classes": spec.n_classes, "index_width": spec.class_index_width,
            "score_width": spec.score_width, "ports": self.ports, "taps": self.taps,
            "analytic_ii": spec.analytic_cycles_per_frame, "backpressure": float(backpressure),
            "gaps": float(gaps), "seed": int(seed), "measure_frames": int(measure_frames),
            "collect_taps": bool(collect_taps), "clean_only": bool(clean_only),
            "progress_file": str(progress_file), "progress_every": 100,
        }
        config_file = run_dir / "config.json"
        config_file.write_text(json.dumps(config, indent=1))
        log = run_dir / "sim.log"
        test_args = ["--trace-file", str(waves_file)] if waves_file else []
        runner = verilator_runner()
        frames_total = (min(len(image_ids), measure_frames) + (0 if clean_only else len(image_ids)))

        def run_test():
            runner.test(test_module=TB_MODULE, hdl_toplevel=TOP, hdl_toplevel_lang="verilog",
                        build_dir=obj_dir, test_dir=run_dir, waves=waves_file is not None,
                        test_args=test_args, extra_env={CONFIG_ENV: str(config_file)},
                        testcase=None if reset_test else "stream_frames", seed=seed, log_file=log)

        start = time.perf_counter()
        failure = _run_with_progress(run_test, progress_file, frames_total, progress)
        seconds = time.perf_counter() - start
        if not results_file.is_file():
            tail = "".join(log.read_text(errors="replace").splitlines(True)[-8:]) if log.is_file() else ""
            raise SimulationError(f"the simulation ended without results ({failure or 'no error reported'}); "
                                  f"see {log}:\n{tail}")
        out = json.loads(results_file.read_text())
        if reset_test:
            out["reset"] = json.loads(reset_file.read_text()) if reset_file.is_file() else {
                "trials": [], "error": f"the reset test did not finish; see {log}"}
        out["sim_seconds"] = seconds
        out["verilator_build_seconds"] = build_seconds
        out["log"] = str(log)
        return out


def _run_with_progress(run_test, progress_file: Path, total: int, progress: bool) -> str | None:
    """Run the simulation in a thread; show its progress file as a bar on stderr when asked.

    Returns the failure message of the cocotb run (a failing cocotb test exits), or None.
    """
    failure: list[str] = []

    def target():
        try:
            run_test()
        except (SystemExit, RuntimeError) as e:   # cocotb's runner exits when a test fails
            failure.append(f"{type(e).__name__}: {e}")

    thread = threading.Thread(target=target, name="xnorflow-sim", daemon=True)
    thread.start()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=total, unit="frame", desc="RTL simulation", file=sys.stderr, leave=False)
    while thread.is_alive():
        thread.join(0.5)
        if bar is not None and progress_file.is_file():
            try:
                done = int(progress_file.read_text().split()[0])
            except (ValueError, IndexError, OSError):
                continue
            bar.update(done - bar.n)
    if bar is not None:
        bar.close()
    return failure[0] if failure else None


# --- the public entry point ----------------------------------------------------------------------
def load_vectors(folder: BuildFolder, images: int | None):
    try:
        with np.load(folder.vectors, allow_pickle=False) as data:
            inputs = data["inputs"].astype(np.uint8)
            labels = data["labels"].astype(np.int64) if "labels" in data else None
            golden_scores = data.get("golden_scores")
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise SimulationError(f"cannot read {folder.vectors} ({e}): run `xnorflow compile` again") from e
    if images is not None:
        if images < 1:
            raise SimulationError(f"--images {images}: give at least 1 image")
        inputs = inputs[:images]
        labels = labels[:images] if labels is not None else None
        golden_scores = golden_scores[:images] if golden_scores is not None else None
    if len(inputs) == 0:
        raise SimulationError(f"{folder.vectors} holds no test frames: run `xnorflow compile` again")
    return inputs, labels, golden_scores


def simulate(build_dir, images: int | None = None, backpressure: float = DEFAULT_BACKPRESSURE,
             gaps: float = DEFAULT_GAPS,
             waves: bool = False, seed: int = 0, progress: bool = True, update_report: bool = False,
             sim_dir=None, mode: str = "fast", chunks: int | None = None, client=None) -> dict:
    """Check the RTL of a build folder against the golden model on its test vectors.

    ``images`` limits the frames (the first N of vectors.npz). In the random-flow phase each cycle
    an output waits, it is held back with probability ``backpressure``; before each input beat an
    idle gap of 1..4 cycles comes with probability ``gaps``. A clean phase first measures the II
    and the latency on up to 32 frames (input always valid, output always ready).
    Returns the report keys (``images_simulated, rtl_mismatches, accuracy_rtl, cycles_per_frame,
    latency_cycles``) and ``mismatches`` (one dict per failing image, localised), ``waves`` (path
    or None), ``reset_mid_frame_ok``, ``errors``; writes build/sim/results.json and, with
    ``update_report`` (off: the compiler's simulate step owns report.json), merges the report keys
    into build/report.json. ``sim_dir``: write there instead of build/sim.

    ``mode``: "fast" (default) streams the frames through the Verilog harness of sim/harness.py in
    ``chunks`` parallel simulator processes (default: one per core, sim/fast.py), with no Python on
    the per-cycle path (on the workers of the Dask ``client`` when one is given); "cycle" drives
    every beat from the cocotb bench of sim/cocotb_tb.py. Both
    check every output against golden; a failing frame is re-run alone in the per-cycle bench with
    the layer taps for localisation.
    """
    if mode not in SIMULATION_MODES:
        raise SimulationError(f"simulation mode {mode!r}: choose one of {', '.join(SIMULATION_MODES)}")
    for name, p in (("backpressure", backpressure), ("gaps", gaps)):
        if not 0.0 <= p < 1.0:
            raise SimulationError(f"{name} {p} is not a probability in [0, 1): give e.g. 0.5")
    folder = BuildFolder.open(build_dir, sim_dir)
    try:
        spec = NetworkSpec.load(folder.spec)
        spec.validate()
    except SpecError as e:
        raise SimulationError(str(e)) from e
    inputs, labels, stored_scores = load_vectors(folder, images)
    if inputs.shape[1] != spec.input_bits:
        raise SimulationError(f"vectors.npz frames have {inputs.shape[1]} bits, the spec takes {spec.input_bits}: "
                              "run `xnorflow compile` again")
    expected = golden.execute(spec, inputs)
    if stored_scores is not None and not np.array_equal(stored_scores, expected.scores):
        raise SimulationError("vectors.npz golden scores disagree with spec.npz: the build folder is stale, "
                              "run `xnorflow compile` again")
    port_widths = module_ports(folder.verilog.read_text())
    ports, taps = resolve_ports(port_widths, spec)
    session = BenchSession(folder, spec, ports, taps, in_width=port_widths[ports["i_payload"]])
    image_ids = np.arange(len(inputs))
    folder.sim_dir.mkdir(parents=True, exist_ok=True)

    if mode == "fast":
        raw = run_fast(session, image_ids, inputs, expected, backpressure=backpressure, gaps=gaps, seed=seed,
                       chunks=chunks, progress=progress, client=client)
    else:
        raw = session.run("all", image_ids, inputs, expected, backpressure=backpressure, gaps=gaps,
                          seed=seed, progress=progress)
    result = summarise(spec, raw, labels)

    failing = sorted({m["image"] for m in raw["mismatches"]})
    result["mismatches"] = localise_mismatches(session, expected, inputs, raw["mismatches"],
                                               failing[:MAX_LOCALISED], seed=seed)
    result["waves"] = None
    if waves and not failing:
        result["waves"] = record_waves(session, expected, inputs, list(range(min(WAVES_FRAMES, len(inputs)))),
                                       seed=seed)
    elif failing:
        waves_files = [m["waves"] for m in result["mismatches"] if m.get("waves")]
        result["waves"] = waves_files[0] if waves_files else None

    result["results_file"] = str(folder.results_file)
    folder.results_file.write_text(json.dumps(
        {**result, "frames": raw["frames"], "measure": raw["measure"], "reset": raw.get("reset")}, indent=1))
    if result["errors"] and not result["images_simulated"]:
        raise SimulationError(f"the RTL simulation failed: {result['errors'][0]}")
    if update_report:
        merge_report(folder.root, result)
    return result
