"""`xnorflow flow`: dataset -> trained model -> Verilog -> bit-exact RTL simulation -> bitstream -> report.

Every step writes into the build folder, and a step whose results are already there for the same
inputs (the model file's bytes, the spec's, the options that change the result: compiler/build.py
records them) is reused, so an interrupted flow resumes where it stopped; the flow says why each step
reruns. It holds the folder's lock for the whole run.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from xnorflow.sim.defaults import DEFAULT_BACKPRESSURE
from xnorflow.training.model_file import load_model_file

from . import build_folder
from . import report as reports
from .build import (
    check_compile_options,
    compile_inputs,
    compile_model,
    simulate_build,
    simulation_failed,
    simulation_inputs,
    synthesis_inputs,
    synthesize_build,
)
from .model import CompileError
from .qonnx_import import import_qonnx
from .report import format_figure
from .source import is_onnx

MODEL_NAME = "model.pt"

SUMMARY = (
    ("accuracy (torch / golden / RTL)", None),
    ("RTL mismatches", "rtl_mismatches"),
    ("images simulated", "images_simulated"),
    ("II measured / analytic (cycles)", None),
    ("latency (cycles)", "latency_cycles"),
    ("Fmax (MHz)", "fmax_mhz"),
    ("frames/s at Fmax", "fps"),
    ("frames/s at the bitstream clock", "fps_at_clock"),
    ("LUTs", "luts"),
    ("memory blocks", "brams"),
)


class Steps:
    """A one-line-per-step progress display: '[2/5] compile ... done in 3.1 s'."""

    def __init__(self, names):
        self.names = list(names)
        self.started = time.perf_counter()

    def run(self, name, action, skip_reason=None):
        index = self.names.index(name) + 1
        prefix = f"[{index}/{len(self.names)}] {name}"
        if skip_reason:
            print(f"{prefix}: {skip_reason}", flush=True)
            return None
        print(f"{prefix} ...", flush=True)
        t0 = time.perf_counter()
        result = action()
        print(f"{prefix} done in {time.perf_counter() - t0:.1f} s", flush=True)
        return result


def summary_lines(report: dict, build_dir: Path) -> list[str]:
    lines = []
    for label, key in SUMMARY:
        if label.startswith("accuracy"):
            value = " / ".join(format_figure(report.get(k)) for k in ("accuracy_torch", "accuracy_golden", "accuracy_rtl"))
        elif label.startswith("II"):
            value = f"{format_figure(report.get('cycles_per_frame'))} / {format_figure(report.get('analytic_cycles_per_frame'))}"
        else:
            value = format_figure(report.get(key))
        lines.append(f"  {label:<34} {value}")
    lines.append(f"  {'report':<34} {build_dir / reports.REPORT_NAME}")
    if (build_dir / "report.html").exists():
        lines.append(f"  {'report for people':<34} {build_dir / 'report.html'}")
    return lines


def changed(previous: dict | None, current: dict, labels: dict) -> str | None:
    """Why a step must rerun: the first recorded input that differs, in words; None if none does."""
    if not previous:
        return "no earlier result in the build folder"
    for key, value in current.items():
        if previous.get(key) != value:
            label = labels.get(key, key)
            if key.endswith("sha256"):
                return f"{label} changed"
            return f"{label} changed ({previous.get(key)} -> {value})"
    return None


def compile_request(args) -> dict:
    folding = [list(p) for p in args.folding] if args.folding else None
    # A QONNX graph names no dataset: --dataset is the test split it is compiled with.
    dataset = args.dataset if args.model and is_onnx(args.model) else None
    return {"board": args.board, "fps": args.fps, "folding": folding, "lut_share": args.lut_share,
            "dataset": dataset}


# Why each step reruns: its recorded inputs (compiler/build.py) against the current ones, in words.
COMPILE_LABELS = {"model_sha256": "the model file", "board": "--board", "fps": "--fps", "folding": "--folding",
                  "lut_share": "--lut-share", "dataset": "--dataset"}
SIMULATION_LABELS = {"spec_sha256": "the spec", "vectors_sha256": "the test vectors", "verilog_sha256": "the Verilog",
                     "backpressure": "backpressure", "seed": "the simulation seed"}
SYNTHESIS_LABELS = {"spec_sha256": "the spec", "clock_mhz": "--clock-mhz", "pnr_seed": "--pnr-seed",
                    "baud": "--baud"}


def compile_rerun_reason(report: dict, model_path: Path, request: dict) -> str | None:
    """Why the compile must run again (``request``: `compile_request`'s dict); None to reuse it."""
    current = compile_inputs(build_folder.file_digest(model_path), **{k: request[k] for k in
                             ("board", "fps", "folding", "lut_share", "dataset")})
    why = changed(report.get("compile_inputs"), current, COMPILE_LABELS)
    if why is None and report.get("accuracy_golden") is None:
        return "the earlier compile did not finish"
    return why


def simulate_rerun_reason(build_dir: Path, report: dict, images: int | None) -> str | None:
    """Why the flow's simulation (``images``, None: all) must run again; None to reuse it."""
    wanted = images or report.get("test_images")
    previous = (report.get("simulation") or {}).get("inputs") or {}
    current = simulation_inputs(build_dir, previous.get("images"), DEFAULT_BACKPRESSURE, 0)
    why = changed(previous, current, SIMULATION_LABELS)
    if why is None and not (report.get("images_simulated") and report["images_simulated"] >= (wanted or 0)):
        return f"{wanted} images wanted, {report.get('images_simulated') or 0} simulated"
    return why


def synth_rerun_reason(build_dir: Path, report: dict, clock_mhz, seed, baud: int | None = None) -> str | None:
    """Why synthesis at ``clock_mhz`` with nextpnr ``seed`` and the UART at ``baud`` must run again;
    None to reuse it."""
    why = changed(report.get("synthesis_inputs"), synthesis_inputs(build_dir, clock_mhz, seed, baud=baud),
                  SYNTHESIS_LABELS)
    if why is None and not (report.get("bitstream") and Path(report["bitstream"]).is_file()):
        return "no bitstream in the build folder"
    return why


def training_options(args) -> dict:
    """train()'s keyword arguments for the training options of train and flow (unset: train's defaults)."""
    given = {"input_bits": args.input_bits, "teacher": args.teacher, "temperature": args.temperature,
             "stochastic_weights": args.stochastic_weights, "activation_grad": args.activation_grad}
    return {key: value for key, value in given.items() if value is not None}


def check_model_matches(record: dict, model_path: Path, args) -> None:
    """A model file already in the build folder must be what the options given ask for.

    Only options given on the command line are compared; a mismatch is refused (never retrained over
    silently: the file may be the user's own)."""
    from xnorflow.training.datasets import canonical_dataset_name
    from xnorflow.training.layers import DEFAULT_ACTIVATION_GRADIENT

    trained = record.get("train") or {}
    fmt = record.get("input") or {}
    teacher = trained.get("teacher") or {}
    asked = {"--arch": (args.arch, record.get("arch")),
             "--dataset": (args.dataset and canonical_dataset_name(args.dataset), record.get("dataset")),
             "--seed": (args.seed, trained.get("seed")),
             "--epochs": (args.epochs, trained.get("epochs")),
             "--input-bits": (args.input_bits, fmt.get("bits", 1)),
             "--teacher": (args.teacher and (args.teacher if args.teacher == "auto" else str(Path(args.teacher).resolve())),
                           teacher.get("source")),
             "--temperature": (args.temperature, teacher.get("temperature")),
             "--stochastic-weights": (args.stochastic_weights, bool(trained.get("stochastic_weights"))),
             "--activation-grad": (args.activation_grad, trained.get("activation_grad", DEFAULT_ACTIVATION_GRADIENT))}
    for option, (wanted, has) in asked.items():
        if wanted is not None and wanted != has:
            raise CompileError(f"{model_path} was trained with {option} {has}, not {wanted}: pass {option} {has} "
                               f"to use it, or move {model_path} away to train a new model into the folder")


def run_flow(args) -> int:
    build_dir = Path(args.output)
    model_path = Path(args.model) if args.model else build_dir / MODEL_NAME
    from xnorflow.boards.registry import get_board

    check_compile_options(get_board(args.board), fps=args.fps, lut_share=args.lut_share)
    if args.model and is_onnx(model_path):
        import_qonnx(model_path)             # a graph xnorflow cannot compile fails before the folder is touched
    elif args.model:
        load_model_file(model_path)          # a bad --model fails before the folder is touched
    folder = build_folder.claim(build_dir, inputs=[model_path])
    with build_folder.locked(folder):
        return _run_flow_locked(args, folder, model_path)


def _run_flow_locked(args, build_dir: Path, model_path: Path) -> int:
    from xnorflow.training.train import format_summary, train

    names = ["train", "compile", "simulate", "synth", "report"]
    steps = Steps(names)

    if args.model:
        steps.run("train", None, skip_reason=f"using {args.model}")
    elif model_path.exists():
        check_model_matches(load_model_file(model_path), model_path, args)
        steps.run("train", None, skip_reason=f"reusing {model_path} (its arch, dataset, seed, epochs and training "
                                             "options match the options given)")
    else:
        def do_train():
            summary = train(args.arch or "tfc", args.dataset or "digits", model_path, epochs=args.epochs,
                            seed=args.seed or 0, progress=sys.stderr.isatty(), **training_options(args))
            print(format_summary(summary))
        steps.run("train", do_train)

    report = reports.read_report(build_dir)
    request = compile_request(args)
    why = compile_rerun_reason(report, model_path, request)
    if why is None:
        steps.run("compile", None, skip_reason="reusing the compiled design (same model file and options)")
    else:
        print(f"  compiling: {why}", flush=True)
        steps.run("compile", lambda: compile_model(model_path, build_dir, board_name=args.board, fps=args.fps,
                                                   folding=args.folding, lut_share=args.lut_share,
                                                   dataset=request["dataset"]))

    report = reports.read_report(build_dir)
    why = simulate_rerun_reason(build_dir, report, args.images)
    problems = []
    if why is None:
        steps.run("simulate", None, skip_reason=f"reusing {report['images_simulated']} simulated images "
                                                "(same spec, vectors and Verilog)")
    else:
        print(f"  simulating: {why}", flush=True)
        result = steps.run("simulate", lambda: simulate_build(build_dir, images=args.images,
                                                              backpressure=DEFAULT_BACKPRESSURE,
                                                              progress=sys.stderr.isatty()))
        problems = result["problems"]

    report = reports.read_report(build_dir)
    if args.no_synth:
        steps.run("synth", None, skip_reason="skipped (--no-synth)")
    else:
        why = synth_rerun_reason(build_dir, report, args.clock_mhz, args.pnr_seed, args.baud)
        if why is None:
            steps.run("synth", None, skip_reason=f"reusing {report['bitstream']} (same spec, clock, seed and baud)")
        else:
            print(f"  synthesizing: {why}", flush=True)
            steps.run("synth", lambda: synthesize_build(build_dir, progress=sys.stderr.isatty(),
                                                        clock_mhz=args.clock_mhz, seed=args.pnr_seed,
                                                        baud=args.baud))

    def do_report():
        from .html_report import FIGURES_DIR, write_html_report
        with build_folder.transaction(build_dir, ("report.html", FIGURES_DIR)) as stage:
            write_html_report(build_dir, stage)
    steps.run("report", do_report)

    report = reports.read_report(build_dir)
    print(f"\nxnorflow flow: {report.get('arch')} on {report.get('dataset')} for {report.get('board')} "
          f"({report.get('device')}) in {time.perf_counter() - steps.started:.0f} s")
    print("\n".join(summary_lines(report, build_dir)))
    for line in problems:
        print(f"  {line}", file=sys.stderr)
    if simulation_failed(report):
        print(f"xnorflow: error: {report['rtl_mismatches']} images differ between RTL and golden model",
              file=sys.stderr)
        return 1
    return 0
