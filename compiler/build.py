"""The steps behind the command line: compile, simulate, synthesize, each writing into a build folder.

A build folder holds:
    report.json       the figures every step measured (compiler/report.py)
    spec.npz          the lowered, folded network (hw/spec.py)
    vectors.npz       golden test vectors: inputs, labels, golden and PyTorch predictions
    verilog/          the accelerator's Verilog (xnorflow_top.v)
    sim/              Verilator build and results (xnorflow simulate)
    synth/            synthesis products and the bitstream (xnorflow synth)
Each step claims and locks the folder and swaps its outputs in by renames once they are whole
(compiler/build_folder.py): a failed or interrupted step never leaves half its output looking like a
good build, and never deletes what xnorflow did not make. Each step records the inputs its result
depends on (``compile_inputs``, ``simulation.inputs``, ``synthesis_inputs``) so `flow` reuses a
result only when those are unchanged.
"""
from __future__ import annotations

import json
import math
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from xnorflow.hw.spec import NetworkSpec
from xnorflow.sim import golden
from xnorflow.sim.layout import (
    FAST_MODEL_DIR,
    MODEL_DIR,
    RESULTS_FILE,
    SIM_DIR,
    SIMULATION_KEYS,
    SPEC_FILE,
    TOP,
    VECTORS_FILE,
    VERILOG_DIR,
    verilog_file,
)

from . import build_folder
from . import report as reports
from .analysis import cycles_per_layer, estimate_resources, memory_bandwidth
from .fit import (
    design_for_compile,
    expected_clock_hz,
    fastest_fitting_target,
    lut_budget_share,
    overflow,
)
from .model import CompileError
from .passes import streamline
from .source import read_source

# Everything a compile produces or invalidates; other files in the folder (a trained model.pt) stay.
COMPILE_OUTPUTS = (SPEC_FILE, VECTORS_FILE, VERILOG_DIR, SIM_DIR, "synth", reports.REPORT_NAME,
                   "report.html", "figures")


def load_spec(build_dir) -> NetworkSpec:
    path = Path(build_dir) / SPEC_FILE
    if not path.exists():
        raise CompileError(f"{build_dir} has no {SPEC_FILE}: run `xnorflow compile MODEL -o {build_dir}` first")
    return NetworkSpec.load(path)


def load_vectors(build_dir) -> dict:
    """The build's golden test vectors (inputs, labels, golden and PyTorch predictions) as arrays."""
    path = Path(build_dir) / VECTORS_FILE
    try:
        with np.load(path, allow_pickle=False) as vectors:
            return {name: vectors[name] for name in vectors.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise CompileError(f"cannot read {path} ({e}): run `xnorflow compile MODEL -o {build_dir}` again") from None


def compile_model(model_path, out_dir, board_name: str = "icebreaker", fps: float | None = None,
                  folding: list[tuple[int, int]] | None = None, dataset: str | None = None,
                  log=print, lut_share: float | None = None) -> dict:
    """Model file (xnorflow .pt, or a QONNX .onnx graph) -> spec, golden vectors and Verilog in out_dir;
    returns the report.

    ``dataset``: the test split to evaluate on (default: the model file's own; a QONNX graph has none,
    and without one seeded random frames are compiled as test vectors and accuracy is null).

    ``lut_share``: the share of the board's LUTs the design may take (default: compiler.fit's
    LUT_BUDGET_SHARE for the family, what places and routes in minutes)."""
    from xnorflow.boards.registry import get_board
    from xnorflow.sim.export import export_verilog

    started = time.perf_counter()
    out_dir = Path(out_dir)
    board = get_board(board_name)
    check_compile_options(board, fps=fps, lut_share=lut_share)
    build_folder.check_claimable(out_dir, inputs=[model_path])   # fail fast, before any work
    model_digest = build_folder.file_digest(model_path)
    source = read_source(model_path)

    streamlined = streamline(source.model)
    spec, folding_reason = design_for_compile(streamlined, board, fps=fps, folding=folding, lut_share=lut_share)
    problems = overflow(spec, board, lut_share)
    if problems:
        best = fastest_fitting_target(streamlined, board, lut_share)
        raise CompileError(f"the design does not fit {board.name}: {'; '.join(problems)}: fold it more "
                           f"(without --folding, xnorflow picks the fastest folding that fits: {best} cycles "
                           "per frame), allow more of its LUTs with --lut-share (longer place and route) or choose a "
                           "bigger board")
    log(f"folding: {folding_reason}")
    bandwidth = memory_bandwidth(spec, board.family, board.bram_blocks)
    for i, (layer, memory) in enumerate(zip(spec.layers, bandwidth["layers"])):
        log(f"  layer {i}: {layer.n_in:>5} -> {layer.n_out:<5} PE={layer.pe:<4} SIMD={layer.simd:<4} "
            f"{layer.cycles} cycles/frame, weights {memory['weight_bits_per_cycle']} bits/cycle of the "
            f"{memory['block_bits_per_cycle']} its {memory['weight_blocks']} blocks give "
            f"({memory['weight_packing']} PEs per word)")
    log(f"  memory-bandwidth bound: {bandwidth['bound_cycles_per_frame']} cycles per frame "
        f"({board.bram_blocks} blocks x {bandwidth['block_width']} bits), chosen {bandwidth['cycles_per_frame']}")

    frames = source.test_frames(dataset)
    spec.meta["input"] = frames.input_format
    if frames.labels is None:
        log(f"golden model and the {source.reference_name} on {len(frames.bits)} seeded random frames "
            "(no --dataset: accuracy is not measured)")
    else:
        log(f"golden model and the {source.reference_name} on {len(frames.labels)} test images of {frames.dataset}")
    result = golden.execute(spec, frames.bits)
    reference = frames.reference_predictions
    labels = frames.labels

    def accuracy(predictions):
        return None if labels is None else float(np.mean(predictions == labels))

    folder = build_folder.claim(out_dir, inputs=[model_path])
    with build_folder.locked(folder), build_folder.transaction(folder, COMPILE_OUTPUTS) as stage:
        spec.save(stage / SPEC_FILE)
        vectors = {"inputs": frames.bits, "golden_scores": result.scores,
                   "golden_predictions": result.predictions, "torch_predictions": reference}
        if labels is not None:
            vectors["labels"] = labels
        np.savez_compressed(stage / VECTORS_FILE, **vectors)
        log("writing Verilog")
        export_verilog(spec, verilog_file(stage), name=TOP)
        cycles = cycles_per_layer(spec)
        report = reports.empty_report()
        report.update(
            arch=source.arch, dataset=frames.dataset, board=board.name, device=board.device,
            layers=cycles["layers"], analytic_cycles_per_frame=cycles["analytic_cycles_per_frame"],
            # For a QONNX graph, "torch" is the graph's own float32 execution (compiler/qonnx_import.py).
            accuracy_torch=accuracy(reference),
            accuracy_golden=accuracy(result.predictions),
            torch_golden_agreement=float(np.mean(reference == result.predictions)),
            test_images=len(frames.bits),
            model_format=source.format,
            folding_reason=folding_reason,
            # The clock the board's PLL is first set to, which the folding was chosen for; `clock_mhz`
            # (and `fps_at_clock`) stay null until a synthesis builds one.
            planned_clock_mhz=expected_clock_hz(board) / 1e6,
            estimate=estimate_resources(spec, board.family),
            memory_bandwidth=bandwidth,
            model_file=str(Path(model_path).resolve()),
            # What the compile read: a later step or flow reruns it when any of these differ.
            compile_inputs=compile_inputs(model_digest, board.name, fps, folding, lut_share, dataset),
            compile_seconds=round(time.perf_counter() - started, 3),
        )
        reports.write_report(stage, report)
    return report


def compile_inputs(model_digest, board, fps, folding, lut_share, dataset) -> dict:
    """The inputs a compile's result depends on: the model file's bytes and the options."""
    return {"model_sha256": model_digest, "board": board, "fps": fps,
            "folding": [list(p) for p in folding] if folding else None, "lut_share": lut_share,
            "dataset": dataset}


def check_compile_options(board, fps=None, lut_share=None) -> None:
    """Options that are wrong whatever the model: refused before anything is read or written."""
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise CompileError(f"--fps {fps}: give a positive number of frames per second, e.g. 100000")
    lut_budget_share(board, lut_share)      # its range check


def require_build(build_dir) -> Path:
    build_dir = build_folder.require_owned(build_dir)
    if not (build_dir / reports.REPORT_NAME).exists():
        raise CompileError(f"{build_dir} is not a compiled build folder (no report.json): "
                           f"run `xnorflow compile MODEL -o {build_dir}` first")
    return build_dir


def simulation_inputs(build_dir: Path, images, backpressure, seed) -> dict:
    """The inputs a simulation's result depends on (flow reruns it when any differ)."""
    return {"spec_sha256": build_folder.file_digest(build_dir / SPEC_FILE),
            "vectors_sha256": build_folder.file_digest(build_dir / VECTORS_FILE),
            "verilog_sha256": build_folder.file_digest(verilog_file(build_dir)),
            "images": images, "backpressure": backpressure, "seed": seed}


def synthesis_inputs(build_dir: Path, clock_mhz, seed, parallel_seeds: int | None = None,
                     baud: int | None = None) -> dict:
    """The inputs a synthesis's result depends on (flow reruns it when any differ); ``baud`` None is
    the board's fastest rate."""
    inputs = {"spec_sha256": build_folder.file_digest(build_dir / SPEC_FILE), "clock_mhz": clock_mhz,
              "pnr_seed": seed, "baud": baud}
    if parallel_seeds:
        inputs["parallel_seeds"] = parallel_seeds
    return inputs


def simulate_build(build_dir, images: int | None = None, backpressure: float | None = None, waves: bool = False,
                   seed: int = 0, progress: bool = True, mode: str = "fast", chunks: int | None = None,
                   scheduler: str | None = None) -> dict:
    """Run the build's Verilog in Verilator against the golden vectors; merge the figures into the report.

    Returns the report plus ``problems``: one human line per mismatching image (with the layer and neuron
    where it first diverges) and per failed check (a hung design, a failed mid-frame reset).
    """
    from xnorflow.sim.defaults import DEFAULT_BACKPRESSURE
    from xnorflow.sim.localise import mismatch_lines
    from xnorflow.sim.runner import simulate

    backpressure = DEFAULT_BACKPRESSURE if backpressure is None else backpressure
    if not 0.0 <= backpressure < 1.0:
        raise CompileError(f"--backpressure {backpressure}: give a probability in [0, 1), e.g. 0.3")
    build_dir = require_build(build_dir)
    if any(c.isspace() for c in str(build_dir.resolve())):
        raise CompileError(f"the build folder's path {str(build_dir.resolve())!r} has a space, which Verilator's "
                           "generated Makefile cannot take: compile into a folder whose path has no spaces")
    with build_folder.locked(build_dir):
        report = reports.read_report(build_dir)      # unreadable: refused before the simulation runs
        inputs = simulation_inputs(build_dir, images, backpressure, seed)
        with build_folder.transaction(build_dir, (SIM_DIR, reports.REPORT_NAME)) as stage:
            staged_sim = stage / SIM_DIR
            for models in (MODEL_DIR, FAST_MODEL_DIR):       # the Verilator model caches
                build_folder.link_tree(build_dir / SIM_DIR / models, staged_sim / models)
            with dask_client(scheduler) as client:
                results = simulate(build_dir, images=images, backpressure=backpressure, waves=waves, seed=seed,
                                   progress=progress, sim_dir=staged_sim, mode=mode, chunks=chunks, client=client)
            results = build_folder.relocate(results, staged_sim, build_dir.resolve() / SIM_DIR)
            _rewrite_paths(staged_sim / RESULTS_FILE, staged_sim, build_dir.resolve() / SIM_DIR)
            fields = {key: results.get(key) for key in SIMULATION_KEYS}
            # A synthesis already in the report gets its frames/s from this measured II too.
            fields["fps"] = fps_from(report.get("fmax_mhz"), fields["cycles_per_frame"])
            fields["fps_at_clock"] = fps_from(report.get("clock_mhz"), fields["cycles_per_frame"])
            fields["simulation"] = {
                "reset_mid_frame_ok": results.get("reset_mid_frame_ok"),
                "errors": results.get("errors") or [],
                "images_per_second": results.get("frames_per_second"),
                "sim_seconds": results.get("sim_seconds"),
                "verilator_build_seconds": results.get("verilator_build_seconds"),
                "backpressure": backpressure,
                "waves": str(results["waves"]) if results.get("waves") else None,
                "results_file": str(results.get("results_file")),
                "inputs": inputs,
                "mode": results.get("mode"),
                # fast mode: each chunk's frames [start, stop), seed, seconds and attempts
                "chunks": results.get("chunks"),
                "workers": len(results.get("chunks") or []) or 1,
                "cycles_simulated": results.get("cycles_simulated"),
                "cycles_per_cpu_second": results.get("cycles_per_cpu_second"),
            }
            report.update(fields)
            reports.write_report(stage, report)
    problems = mismatch_lines(results) + [f"check failed: {e}" for e in results.get("errors") or []]
    return {**report, "problems": problems}


@contextmanager
def dask_client(scheduler: str | None):
    """None: no client (local processes); "local": a new LocalCluster; else the scheduler's address."""
    if scheduler is None:
        yield None
        return
    from .sweep import connect

    client, cluster = connect(None if scheduler == "local" else scheduler)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def simulation_failed(report: dict) -> bool:
    """Mismatching images, or a check that did not pass (hang, mid-frame reset)."""
    return bool(report.get("rtl_mismatches")) or bool((report.get("simulation") or {}).get("errors"))


def fps_from(fmax_mhz, cycles_per_frame):
    """Frames per second from a measured Fmax and a measured II; null when either is missing."""
    if not fmax_mhz or not cycles_per_frame:
        return None
    return fmax_mhz * 1e6 / cycles_per_frame


def synthesize_build(build_dir, progress: bool = True, clock_mhz: float | str = "auto",
                     seed: int | None = None, on_progress=None, parallel_seeds: int | None = None,
                     baud: int | None = None) -> dict:
    """Yosys + nextpnr for the build's board; merge utilisation, Fmax and fps into the report.

    ``clock_mhz``: "auto" builds with the board's PLL as fast as timing allows (a rebuild, at most
    a few, when the first clock is missed); a number builds with the PLL at that frequency (or the
    nearest below it) and fails if timing is not met; "board" builds at the board's oscillator.
    ``seed``: nextpnr's placement seed (None: its default). ``on_progress``: called with each live
    phase event of the tools (boards.synth.SynthProgress). ``parallel_seeds`` (with "auto"): the first
    clock is built with that many nextpnr seeds (from ``seed``, default 1) at once on a Dask
    LocalCluster and the best is kept (compiler.sweep.synthesize_seeds_in_parallel). ``baud``: the
    board UART's rate (None: the fastest the board's USB-serial bridge takes that the clock makes).
    """
    from xnorflow.boards.registry import get_board
    from xnorflow.boards.synth import synthesize, synthesize_at_best_clock

    build_dir = require_build(build_dir)
    with build_folder.locked(build_dir):
        report = reports.read_report(build_dir)
        spec = load_spec(build_dir)
        board = get_board(report["board"])
        if clock_mhz not in ("auto", "board"):
            check_clock(board, float(clock_mhz))
        if parallel_seeds and clock_mhz != "auto":
            raise CompileError(f"--parallel-seeds tries seeds at the first clock of --clock-mhz auto, not at "
                               f"--clock-mhz {clock_mhz}: drop one of them (a sweep tries seeds at any clock)")
        inputs = synthesis_inputs(build_dir, clock_mhz, seed, parallel_seeds, baud)
        with build_folder.transaction(build_dir, ("synth", reports.REPORT_NAME)) as stage:
            out = stage / "synth"
            live = {"progress": progress, "seed": seed, "on_progress": on_progress, "baud": baud,
                    "expected_luts": (report.get("estimate") or {}).get("luts")}
            if clock_mhz == "auto" and parallel_seeds and parallel_seeds > 1:
                from .sweep import synthesize_seeds_in_parallel

                first = seed or 1
                results = synthesize_seeds_in_parallel(spec, board.name, out, list(range(first, first + parallel_seeds)),
                                                       progress=progress, expected_luts=live["expected_luts"],
                                                       baud=baud)
            elif clock_mhz == "auto":
                results = synthesize_at_best_clock(spec, board.name, out, **live)
            elif clock_mhz == "board":
                results = synthesize(spec, board.name, out, **live)
            else:
                results = synthesize(spec, board.name, out, clock_hz=float(clock_mhz) * 1e6, **live)
            results = build_folder.relocate(results, out, build_dir.resolve() / "synth")

            fields = {key: results.get(key) for key in reports.SYNTHESIS_KEYS if key in results}
            if fields.get("brams") is not None:
                fields["bram_bits"] = fields["brams"] * board.bram_block_bits
            fields["fps"] = fps_from(fields.get("fmax_mhz"), report.get("cycles_per_frame"))
            fields["fps_analytic"] = fps_from(fields.get("fmax_mhz"), report.get("analytic_cycles_per_frame"))
            # fps above is at Fmax (DESIGN.md); this is what the bitstream delivers at the clock it was
            # built for, when the UART is not the bottleneck.
            fields["fps_at_clock"] = fps_from(fields.get("clock_mhz"), report.get("cycles_per_frame"))
            fields["bitstream"] = str(results.get("bitstream")) if results.get("bitstream") else None
            if results.get("synth_wall_seconds") is not None:        # seeds built at once
                fields["synth_wall_seconds"] = results["synth_wall_seconds"]
            fields["synthesis_inputs"] = inputs
            report.update(fields)
            reports.write_report(stage, report)
    return report


def check_clock(board, clock_mhz: float) -> None:
    """A PLL clock the board can make, checked before any synthesis runs or any output is touched."""
    from xnorflow.boards.pll import LIMITS, PllError, plan_pll

    if not (math.isfinite(clock_mhz) and clock_mhz > 0):
        raise CompileError(f"--clock-mhz {clock_mhz}: give auto, board or a frequency in MHz such as 40")
    low, high = LIMITS[board.family].f_out
    if clock_mhz * 1e6 > high:
        raise CompileError(f"--clock-mhz {clock_mhz:g}: the {board.family} PLL makes {low / 1e6:g}-{high / 1e6:g} MHz; "
                           "ask for a frequency in that range, or auto for the fastest that meets timing")
    try:
        plan_pll(board.family, board.clock_hz, clock_mhz * 1e6)
    except PllError as e:
        raise CompileError(f"--clock-mhz {clock_mhz:g}: {e}") from None


def _rewrite_paths(json_file: Path, old: Path, new: Path) -> None:
    """A JSON file written while staging, with its paths as they are after the swap."""
    if json_file.is_file():
        text = json.dumps(build_folder.relocate(json.loads(json_file.read_text()), old, new), indent=1)
        build_folder.write_atomically(json_file, text)


__all__ = ["compile_model", "load_spec", "simulate_build", "synthesize_build"]
