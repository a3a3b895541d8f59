"""The steps behind the command line: compile, simulate, synthesize, each writing into a build folder.

A build folder holds:
    report.json       the figures every step measured (compiler/report.py)
    spec.npz          the lowered, folded network (hw/spec.py)
    vectors.npz       golden test vectors: inputs, labels, golden and PyTorch predictions
    verilog/          the accelerator's Verilog (xnorflow_top.v)
    sim/              Verilator build and results (xnorflow simulate)
    synth/            synthesis products and the bitstream (xnorflow synth)
A step writes into a staging folder and moves its results in only once it has finished, so a failed
step never leaves half its output looking like a good build.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from xnorflow.hw.spec import NetworkSpec
from xnorflow.sim import golden

from . import report as reports
from .analysis import cycles_per_layer, estimate_resources
from .fit import expected_clock_hz, fastest_fitting_target, fold_for_board, lower_for_board, overflow
from .model import CompileError, model_from_file_dict
from .passes import streamline

SPEC_FILE = "spec.npz"
VECTORS_FILE = "vectors.npz"
VERILOG_DIR = "verilog"
TOP_NAME = "xnorflow_top"
# Everything a compile produces or invalidates; other files in the folder (a trained model.pt) stay.
COMPILE_OUTPUTS = (SPEC_FILE, VECTORS_FILE, VERILOG_DIR, "sim", "synth", reports.REPORT_NAME,
                   "report.html", "figures")


def load_spec(build_dir) -> NetworkSpec:
    path = Path(build_dir) / SPEC_FILE
    if not path.exists():
        raise CompileError(f"{build_dir} has no {SPEC_FILE}: run `xnorflow compile MODEL -o {build_dir}` first")
    return NetworkSpec.load(path)


def check_build_folder(out_dir: Path) -> None:
    """Refuse to write into a folder that holds something other than an xnorflow build."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise CompileError(f"{out_dir} is a file: choose a folder for -o")
    foreign = [p.name for p in out_dir.iterdir()
               if p.name not in COMPILE_OUTPUTS and p.suffix != ".pt" and not p.name.startswith(".")]
    if foreign and not (out_dir / reports.REPORT_NAME).exists():
        raise CompileError(f"{out_dir} already holds files that are not an xnorflow build ({foreign[0]}, ...): "
                           "choose a new folder for -o")


@contextmanager
def staging(out_dir: Path):
    """A scratch folder beside out_dir whose contents replace out_dir's compile outputs on success."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-staging-", dir=out_dir.parent))
    try:
        yield stage
        out_dir.mkdir(exist_ok=True)
        for name in COMPILE_OUTPUTS:
            old = out_dir / name
            if old.is_dir():
                shutil.rmtree(old)
            elif old.exists():
                old.unlink()
        for item in stage.iterdir():
            shutil.move(str(item), str(out_dir / item.name))
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def load_test_split(record: dict, dataset_override: str | None = None):
    """The model's test split, binarised by the model's own rule: (name, bits, labels)."""
    from xnorflow.training.datasets import binarize, load_dataset

    name = dataset_override or record["dataset"]
    data = load_dataset(name)
    bits = binarize(data.test_images, record["binarize"])
    if bits.shape[1] != record["in_features"]:
        raise CompileError(f"dataset {name} has {bits.shape[1]} input features but the model takes "
                           f"{record['in_features']}: compile with the dataset the model was trained on")
    return name, bits, data.test_labels.astype(np.int64)


def compile_model(model_path, out_dir, board_name: str = "icebreaker", fps: float | None = None,
                  folding: list[tuple[int, int]] | None = None, dataset: str | None = None,
                  log=print, lut_share: float | None = None) -> dict:
    """Model file -> spec, golden vectors and Verilog in out_dir; returns the report.

    ``lut_share``: the share of the board's LUTs the design may take (default: compiler.fit's
    LUT_BUDGET_SHARE for the family, what places and routes in minutes)."""
    from xnorflow.boards.registry import get_board
    from xnorflow.sim.export import export_verilog
    from xnorflow.training.model_file import load_model_file, model_from_file, predict

    started = time.perf_counter()
    out_dir = Path(out_dir)
    check_build_folder(out_dir)
    board = get_board(board_name)
    record = load_model_file(model_path)

    streamlined = streamline(model_from_file_dict(record))
    model, folding_reason = fold_for_board(streamlined, board, fps=fps, folding=folding, lut_share=lut_share)
    spec = lower_for_board(model, board)
    problems = overflow(spec, board, lut_share)
    if problems:
        best = fastest_fitting_target(streamlined, board, lut_share)
        raise CompileError(f"the design does not fit {board.name}: {'; '.join(problems)}: fold it more "
                           f"(without --folding, xnorflow picks the fastest folding that fits: {best} cycles "
                           "per frame), allow more of its LUTs with --lut-share (longer place and route) or choose a "
                           "bigger board")
    log(f"folding: {folding_reason}")
    for i, layer in enumerate(spec.layers):
        log(f"  layer {i}: {layer.n_in:>5} -> {layer.n_out:<5} PE={layer.pe:<4} SIMD={layer.simd:<4} "
            f"{layer.cycles} cycles/frame")

    dataset_name, bits, labels = load_test_split(record, dataset)
    log(f"golden model and PyTorch on {len(labels)} test images of {dataset_name}")
    result = golden.execute(spec, bits)
    torch_predictions = predict(model_from_file(record), bits)

    with staging(out_dir) as stage:
        spec.save(stage / SPEC_FILE)
        np.savez_compressed(stage / VECTORS_FILE, inputs=bits, labels=labels, golden_scores=result.scores,
                            golden_predictions=result.predictions, torch_predictions=torch_predictions)
        log("writing Verilog")
        export_verilog(spec, stage / VERILOG_DIR / f"{TOP_NAME}.v", name=TOP_NAME)
        cycles = cycles_per_layer(spec)
        report = reports.empty_report()
        report.update(
            arch=record["arch"], dataset=dataset_name, board=board.name, device=board.device,
            layers=cycles["layers"], analytic_cycles_per_frame=cycles["analytic_cycles_per_frame"],
            accuracy_torch=float(np.mean(torch_predictions == labels)),
            accuracy_golden=float(np.mean(result.predictions == labels)),
            torch_golden_agreement=float(np.mean(torch_predictions == result.predictions)),
            test_images=len(labels),
            folding_reason=folding_reason,
            clock_mhz=expected_clock_hz(board) / 1e6,
            estimate=estimate_resources(spec, board.family),
            model_file=str(Path(model_path).resolve()),
            compile_seconds=round(time.perf_counter() - started, 3),
        )
        reports.write_report(stage, report)
    return report


def require_build(build_dir) -> Path:
    build_dir = Path(build_dir)
    if not (build_dir / reports.REPORT_NAME).exists():
        raise CompileError(f"{build_dir} is not a compiled build folder (no report.json): "
                           f"run `xnorflow compile MODEL -o {build_dir}` first")
    return build_dir


def simulate_build(build_dir, images: int | None = None, backpressure: float = 0.5, waves: bool = False,
                   seed: int = 0, progress: bool = True) -> dict:
    """Run the build's Verilog in Verilator against the golden vectors; merge the figures into the report.

    Returns the report plus ``problems``: one human line per mismatching image (with the layer and neuron
    where it first diverges) and per failed check (a hung design, a failed mid-frame reset).
    """
    from xnorflow.sim.localise import mismatch_lines
    from xnorflow.sim.runner import simulate

    build_dir = require_build(build_dir)
    results = simulate(build_dir, images=images, backpressure=backpressure, waves=waves, seed=seed,
                       progress=progress)
    fields = {key: results.get(key) for key in reports.SIMULATION_KEYS}
    report = reports.read_report(build_dir)
    fields["fps"] = fps_from(report.get("fmax_mhz"), fields["cycles_per_frame"])
    fields["simulation"] = {
        "reset_mid_frame_ok": results.get("reset_mid_frame_ok"),
        "errors": results.get("errors") or [],
        "images_per_second": results.get("frames_per_second"),
        "sim_seconds": results.get("sim_seconds"),
        "verilator_build_seconds": results.get("verilator_build_seconds"),
        "backpressure": backpressure,
        "waves": str(results["waves"]) if results.get("waves") else None,
        "results_file": str(results.get("results_file")),
    }
    problems = mismatch_lines(results) + [f"check failed: {e}" for e in results.get("errors") or []]
    return {**reports.update_report(build_dir, **fields), "problems": problems}


def simulation_failed(report: dict) -> bool:
    """Mismatching images, or a check that did not pass (hang, mid-frame reset)."""
    return bool(report.get("rtl_mismatches")) or bool((report.get("simulation") or {}).get("errors"))


def fps_from(fmax_mhz, cycles_per_frame):
    """Frames per second from a measured Fmax and a measured II; null when either is missing."""
    if not fmax_mhz or not cycles_per_frame:
        return None
    return fmax_mhz * 1e6 / cycles_per_frame


def synthesize_build(build_dir, progress: bool = True, clock_mhz: float | str = "auto",
                     seed: int | None = None) -> dict:
    """Yosys + nextpnr for the build's board; merge utilisation, Fmax and fps into the report.

    ``clock_mhz``: "auto" builds with the board's PLL as fast as timing allows (a rebuild, at most
    a few, when the first clock is missed); a number builds with the PLL at that frequency (or the
    nearest below it) and fails if timing is not met; "board" builds at the board's oscillator.
    ``seed``: nextpnr's placement seed (None: its default).
    """
    from xnorflow.boards.registry import get_board
    from xnorflow.boards.synth import synthesize, synthesize_at_best_clock

    build_dir = require_build(build_dir)
    report = reports.read_report(build_dir)
    spec = load_spec(build_dir)
    out = build_dir / "synth"
    if clock_mhz == "auto":
        results = synthesize_at_best_clock(spec, report["board"], out, progress=progress, seed=seed)
    elif clock_mhz == "board":
        results = synthesize(spec, report["board"], out, progress=progress, seed=seed)
    else:
        results = synthesize(spec, report["board"], out, progress=progress, seed=seed,
                             clock_hz=float(clock_mhz) * 1e6)

    fields = {key: results.get(key) for key in reports.SYNTHESIS_KEYS if key in results}
    if fields.get("brams") is not None:
        fields["bram_bits"] = fields["brams"] * get_board(report["board"]).bram_block_bits
    fields["fps"] = fps_from(fields.get("fmax_mhz"), report.get("cycles_per_frame"))
    fields["fps_analytic"] = fps_from(fields.get("fmax_mhz"), report.get("analytic_cycles_per_frame"))
    # fps above is at Fmax (DESIGN.md); this is what the bitstream delivers at the clock it was
    # built for, when the UART is not the bottleneck.
    fields["fps_at_clock"] = fps_from(fields.get("clock_mhz"), report.get("cycles_per_frame"))
    fields["bitstream"] = str(results.get("bitstream")) if results.get("bitstream") else None
    return reports.update_report(build_dir, **fields)


__all__ = ["compile_model", "load_spec", "simulate_build", "synthesize_build"]
