"""`xnorflow flow`: dataset -> trained model -> Verilog -> bit-exact RTL simulation -> bitstream -> report.

Every step writes into the build folder, and a step whose results are already there (for the same
inputs) is reused, so an interrupted flow resumes where it stopped.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from . import report as reports
from .build import compile_model, simulate_build, simulation_failed, synthesize_build
from .report import format_figure

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


def previous_compile_matches(report: dict, model_path: Path, args) -> bool:
    """A compile in the folder made from the same model, for the same board and folding request."""
    request = report.get("compile_request") or {}
    return (report.get("model_file") == str(model_path.resolve())
            and request == compile_request(args)
            and report.get("accuracy_golden") is not None)


def compile_request(args) -> dict:
    folding = [list(p) for p in args.folding] if args.folding else None
    return {"board": args.board, "fps": args.fps, "folding": folding, "lut_share": args.lut_share}


def run_flow(args) -> int:
    from xnorflow.training.train import format_summary, train

    build_dir = Path(args.output)
    names = ["train", "compile", "simulate", "synth", "report"]
    steps = Steps(names)
    model_path = Path(args.model) if args.model else build_dir / MODEL_NAME

    if args.model:
        steps.run("train", None, skip_reason=f"using {args.model}")
    elif model_path.exists():
        steps.run("train", None, skip_reason=f"reusing {model_path}")
    else:
        def do_train():
            build_dir.mkdir(parents=True, exist_ok=True)
            summary = train(args.arch, args.dataset, model_path, epochs=args.epochs, seed=args.seed,
                            progress=sys.stderr.isatty())
            print(format_summary(summary))
        steps.run("train", do_train)

    report = reports.read_report(build_dir)
    if previous_compile_matches(report, model_path, args):
        steps.run("compile", None, skip_reason="reusing the compiled design in the build folder")
    else:
        def do_compile():
            compile_model(model_path, build_dir, board_name=args.board, fps=args.fps, folding=args.folding,
                          lut_share=args.lut_share)
            reports.update_report(build_dir, compile_request=compile_request(args))
        steps.run("compile", do_compile)

    report = reports.read_report(build_dir)
    wanted = args.images or report.get("test_images")
    problems = []
    if report.get("images_simulated") and report["images_simulated"] >= (wanted or 0):
        steps.run("simulate", None, skip_reason=f"reusing {report['images_simulated']} simulated images")
    else:
        result = steps.run("simulate", lambda: simulate_build(build_dir, images=args.images,
                                                              progress=sys.stderr.isatty()))
        problems = result["problems"]

    report = reports.read_report(build_dir)
    if args.no_synth:
        steps.run("synth", None, skip_reason="skipped (--no-synth)")
    elif report.get("bitstream") and Path(report["bitstream"]).exists():
        steps.run("synth", None, skip_reason=f"reusing {report['bitstream']}")
    else:
        steps.run("synth", lambda: synthesize_build(build_dir, progress=sys.stderr.isatty(),
                                                    clock_mhz=args.clock_mhz, seed=args.pnr_seed))

    def do_report():
        from .html_report import write_html_report
        write_html_report(build_dir)
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
