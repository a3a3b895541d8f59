"""The `xnorflow` command: train, compile, simulate, synth, flow, run.

User errors (a bad model file, a dataset folder without its files, a network too big for the board)
are raised as subclasses of xnorflow.errors.XnorflowError; they end the command with one line on
stderr and exit code 2. Set XNORFLOW_DEBUG=1 to see the traceback as well.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

EXAMPLES = """\
examples:
  xnorflow train    --arch tfc --dataset digits -o model.pt
  xnorflow compile  model.pt --board icebreaker -o build/ [--fps 100000]
  xnorflow simulate build/ [--images 100]
  xnorflow synth    build/
  xnorflow flow     --arch tfc --dataset digits --board icebreaker -o build/
  xnorflow compile  model.onnx --dataset digits -o build/   # a QONNX graph (Brevitas export_qonnx)
  xnorflow export   model.pt -o model.onnx                  # an xnorflow model as a QONNX graph

datasets: digits (bundled with scikit-learn) | fashion-mnist (Debian's dataset-fashion-mnist or
$XNORFLOW_DATA) | idx:DIR (a folder with the four MNIST-format IDX files, optionally .gz) |
          cifar10:DIR (CIFAR-10's binary version: data_batch_1..5.bin, test_batch.bin; not shipped, download it)
boards:   icebreaker | ulx3s-25f | ulx3s-45f | ulx3s-85f | orangecrab
"""


def parse_folding(text: str) -> list[tuple[int, int]]:
    """'4,8;2,16;1,4' -> [(4, 8), (2, 16), (1, 4)]: PE,SIMD per layer."""
    try:
        pairs = [tuple(int(v) for v in part.split(",")) for part in text.split(";") if part.strip()]
        if not pairs or any(len(p) != 2 for p in pairs):
            raise ValueError
        return pairs
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad folding {text!r}: give PE,SIMD per layer separated by ';', e.g. '8,16;4,8;4,8;1,8'") from None


def checked_number(parse, accept, hint: str):
    """An argparse type: ``parse`` the text and keep values ``accept`` takes; else one line with ``hint``."""
    def check(text: str):
        try:
            value = parse(text)
        except ValueError:
            value = None
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"{text}: {hint}")
        return value
    return check


positive_int = checked_number(int, lambda v: v >= 1, "give a number >= 1")
seed_value = checked_number(int, lambda v: 0 <= v < 2**63, "give a whole number in 0 .. 2**63 - 1")
positive_float = checked_number(float, lambda v: math.isfinite(v) and v > 0, "give a positive number")
probability = checked_number(float, lambda v: 0.0 <= v < 1.0, "give a probability in [0, 1)")
input_bits_value = checked_number(int, lambda v: 1 <= v <= 8,
                                  "give 1 (binarised pixels) or the bits of an integer pixel, 2 .. 8 (8 for images)")


def add_training_options(p: argparse.ArgumentParser, defaults_none: bool = False) -> None:
    """The training options shared by train and flow (``defaults_none``: unset options stay None, so flow can
    tell an option given from its default when it reuses a model)."""
    from xnorflow.training.distill import DEFAULT_TEMPERATURE
    from xnorflow.training.layers import ACTIVATION_GRADIENTS, DEFAULT_ACTIVATION_GRADIENT

    p.add_argument("--input-bits", type=input_bits_value, default=None if defaults_none else 1, metavar="1|8",
                   help="bits per input pixel: 1 binarises each pixel by the dataset's threshold (default); 8 "
                        "feeds the 8-bit pixels, normalised by the dataset's mean and standard deviation, to a first "
                        "layer with binary weights (DESIGN.md 2b)")
    p.add_argument("--teacher", default=None, metavar="MODEL|auto",
                   help="distil from a float teacher: a file written by `xnorflow train --float`, or auto (the same "
                        "architecture trained in float first, same epochs and seed); recorded in the model file")
    p.add_argument("--temperature", type=positive_float, default=None if defaults_none else DEFAULT_TEMPERATURE,
                   help=f"distillation temperature T: loss = CE + T^2 KL(teacher/T || student/T) (default: "
                        f"{DEFAULT_TEMPERATURE:g})")
    p.add_argument("--stochastic-weights", action="store_true", default=None if defaults_none else False,
                   help="binarise weights stochastically while training (BinaryConnect: +1 with probability "
                        "hard_sigmoid(w)); inference uses the sign. Recorded in the model file")
    p.add_argument("--activation-grad", choices=tuple(ACTIVATION_GRADIENTS), default=None if defaults_none else
                   DEFAULT_ACTIVATION_GRADIENT,
                   help="the activations' straight-through gradient in training: hardtanh (1 inside [-1, 1], the "
                        "default) or approxsign (Bi-Real Net: 2 - 2|x| inside [-1, 1]); the forward pass, and so the "
                        "hardware, is the sign either way. Recorded in the model file")


def clock_choice(text: str) -> float | str:
    if text in ("auto", "board"):
        return text
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text}: give auto, board or a frequency in MHz such as 40")
    return value


def add_clock_option(p: argparse.ArgumentParser) -> None:
    from xnorflow.boards.registry import FIRST_TRY_HZ

    p.add_argument("--clock-mhz", type=clock_choice, default="auto", metavar="auto|board|MHZ",
                   help="the clock the bitstream runs at: auto (default) sets the board's PLL as fast as "
                        "timing allows: a first try per family (iCE40 "
                        f"{FIRST_TRY_HZ['ice40'] / 1e6:g} MHz, ECP5 {FIRST_TRY_HZ['ecp5'] / 1e6:g} MHz), a near miss "
                        "rebuilt once with another nextpnr seed, a wider one at a lower clock; a number "
                        "sets the PLL to it (or the nearest below) and fails if timing is not met; board "
                        "uses the board's oscillator, no PLL")
    p.add_argument("--pnr-seed", type=positive_int, default=None, metavar="N",
                   help="nextpnr's placement seed for the first build (default: nextpnr's, 1); a near "
                        "miss is rebuilt with N+1. A seed gives the same bitstream every time")
    p.add_argument("--baud", type=positive_int, default=None,
                   help="the board UART's baud rate (default: the fastest the board's USB-serial bridge "
                        "takes that the clock makes: 3000000 on the iCEBreaker and ULX3S, 115200 on the "
                        "OrangeCrab's adapter); report.json records it and `xnorflow run` uses it")


def add_board_options(p: argparse.ArgumentParser) -> None:
    from xnorflow.compiler.fit import LUT_BUDGET_SHARE

    p.add_argument("--board", default="icebreaker",
                   help="target board (default: icebreaker); sets the device the design must fit and its clock")
    p.add_argument("--fps", type=positive_float, default=None,
                   help="frames/s target: the cheapest folding that reaches it at the clock the board's "
                        "PLL is first set to "
                        "(default: the fastest folding that fits the board)")
    p.add_argument("--folding", type=parse_folding, default=None, metavar="PE,SIMD;...",
                   help="fold by hand: one PE,SIMD pair per layer, e.g. '8,16;4,8;4,8;1,8'")
    p.add_argument("--lut-share", type=float, default=None, metavar="SHARE",
                   help="the share of the board's LUTs the design may take, 0-1 (default: "
                        f"{LUT_BUDGET_SHARE['ice40']:g} on iCE40, {LUT_BUDGET_SHARE['ecp5']:g} on ECP5, what "
                        "places and routes in minutes); more allows faster foldings "
                        "that take longer to route (SFC on the ULX3S-85F at 0.5: II 48, 16 minutes)")


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a bad argument ends in one line (the contract for bad input), not usage + error."""

    def error(self, message: str):
        self.exit(2, f"xnorflow: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from xnorflow.sim.defaults import DEFAULT_BACKPRESSURE

    parser = OneLineErrorParser(
        prog="xnorflow",
        description="Binarized neural networks from PyTorch to a bit-exact streaming FPGA accelerator: "
                    "train, compile to Amaranth RTL, simulate in Verilator against a golden model, "
                    "synthesize with Yosys/nextpnr.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("train", help="train a binarized network and save a model file",
                       description="Train a BNN (binary weights and activations, batch-norm) with Adam.")
    p.add_argument("--arch", default="tfc",
                   help="tfc (64x3) | sfc (256x3) | lfc (1024x3) | scnv (conv, for 28x28) | cnv (FINN's CNV, for "
                        "32x32xC); conv nets pad by -1 on smaller images (default: tfc)")
    p.add_argument("--dataset", default="digits",
                   help="digits | fashion-mnist | idx:DIR | cifar10:DIR (binary version) (default: digits)")
    p.add_argument("-o", "--output", required=True, type=Path, help="model file to write, e.g. model.pt")
    p.add_argument("--epochs", type=positive_int, default=None, help="epochs (default: per dataset)")
    p.add_argument("--seed", type=seed_value, default=0, help="random seed (default: 0)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch threads (default: 1, so a seed trains the same model on every machine; "
                        "the thread count changes float sums and so the weights; the model file records it)")
    add_training_options(p)
    p.add_argument("--float", action="store_true", dest="float_model",
                   help="train the architecture in float on 8-bit pixels and write a teacher file for --teacher "
                        "(not a model xnorflow compiles)")

    p = sub.add_parser("compile", help="model file -> folded spec, golden vectors and Verilog",
                       description="Fold batch-norm into thresholds, choose the folding, write the spec, "
                                   "the golden test vectors and the Verilog into the build folder.")
    p.add_argument("model", type=Path, help="model file written by `xnorflow train`, or a QONNX graph (.onnx, "
                                            "e.g. from Brevitas's export_qonnx)")
    p.add_argument("-o", "--output", required=True, type=Path, help="build folder")
    p.add_argument("--dataset", default=None,
                   help="evaluate on this dataset instead of the model's own; a QONNX graph names none: "
                        "without --dataset it is compiled with seeded random frames and accuracy is not "
                        "measured (its input is read as pixel / the dataset's max value)")
    add_board_options(p)

    p = sub.add_parser("simulate", help="run the Verilog in Verilator (cocotb) against the golden model",
                       description="Stream test images through the RTL with random gaps and backpressure "
                                   "and compare every class score with the golden model.")
    p.add_argument("build", type=Path, help="build folder written by `xnorflow compile`")
    p.add_argument("--images", type=positive_int, default=None, help="images to simulate (default: all)")
    p.add_argument("--backpressure", type=probability, default=None,
                   help="probability that the output is not ready in a cycle (default: "
                        f"{DEFAULT_BACKPRESSURE})")
    p.add_argument("--waves", action="store_true", help="write a waveform of the run into build/sim")
    p.add_argument("--mode", choices=("fast", "cycle"), default="fast",
                   help="fast (default): a Verilog harness streams the frames with its own random gaps and "
                        "backpressure, no Python per cycle, in parallel chunks; cycle: cocotb drives every beat "
                        "(slower; mid-frame resets and waves of the whole run). Both check every output")
    p.add_argument("--chunks", type=positive_int, default=None,
                   help="fast mode: simulator processes running disjoint ranges of the frames at once "
                        "(default: one per core, at least 200 frames each)")
    p.add_argument("--scheduler", default=None, metavar="local|tcp://HOST:8786",
                   help="fast mode: run the chunks on Dask distributed workers: local (a LocalCluster of one "
                        "worker per core) or a scheduler's address; the workers must see the build folder "
                        "at the same path (default: local processes, no Dask)")
    p.add_argument("--seed", type=seed_value, default=0, help="seed for gaps and backpressure (default: 0)")

    p = sub.add_parser("synth", help="Yosys + nextpnr -> bitstream, utilisation and Fmax",
                       description="Synthesize the build for its board with the open flow (YoWASP).")
    p.add_argument("build", type=Path, help="build folder written by `xnorflow compile`")
    add_clock_option(p)
    p.add_argument("--parallel-seeds", type=positive_int, default=None, metavar="N",
                   help="with --clock-mhz auto: build the first clock with N nextpnr seeds at once (from "
                        "--pnr-seed, default 1) on a Dask LocalCluster of one worker per core and keep the best")

    p = sub.add_parser("flow", help="train (or take --model), compile, simulate, synthesize, report",
                       description="Everything from a dataset to a bitstream in one build folder; steps "
                                   "already done in the folder are reused.")
    p.add_argument("--arch", default=None,
                   help="tfc | sfc | lfc (default: tfc, or the arch of the model.pt already in the folder)")
    p.add_argument("--dataset", default=None,
                   help="digits | fashion-mnist | idx:DIR (default: digits, or the model's own)")
    p.add_argument("--model", type=Path, default=None,
                   help="use this model file (or QONNX .onnx graph) instead of training")
    p.add_argument("-o", "--output", required=True, type=Path, help="build folder")
    p.add_argument("--images", type=positive_int, default=None, help="images to simulate (default: all)")
    p.add_argument("--no-synth", action="store_true", help="stop before synthesis")
    add_clock_option(p)
    p.add_argument("--epochs", type=positive_int, default=None, help="training epochs (default: per dataset)")
    p.add_argument("--seed", type=seed_value, default=None,
                   help="training seed (default: 0). A model.pt already in the folder is reused only when "
                        "the --arch, --dataset, --seed, --epochs and training options given match it; otherwise "
                        "flow stops and says which differs")
    add_training_options(p, defaults_none=True)
    add_board_options(p)

    p = sub.add_parser("export", help="write an xnorflow model file as a QONNX graph (for qonnx, FINN)",
                       description="Write the model file as a QONNX graph of the form Brevitas exports: "
                                   "Sub BipolarQuant on the input (pixel / max value), MatMul(BipolarQuant(W)) "
                                   "[Add] [BatchNormalization] BipolarQuant per hidden layer, MatMul [Mul] out.")
    p.add_argument("model", type=Path, help="model file written by `xnorflow train`")
    p.add_argument("-o", "--output", required=True, type=Path, help="ONNX file to write, e.g. model.onnx")

    p = sub.add_parser("run", help="send test images to a board over its UART and measure accuracy",
                       description="Host driver: frames out over the serial port, class indices back.")
    p.add_argument("build", type=Path, help="build folder (its spec and test vectors)")
    p.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB1")
    p.add_argument("--images", type=positive_int, default=None, help="images to send (default: all)")
    p.add_argument("--baud", type=positive_int, default=None,
                   help="baud rate (default: the rate the build's bitstream was synthesized for, from its "
                        "report.json; 115200 for a build synthesized before the rate was recorded)")
    add_sweep_parser(sub)
    return parser


def add_sweep_parser(sub) -> None:
    from xnorflow.compiler.sweep import DEFAULT_IMAGES

    p = sub.add_parser(
        "sweep", help="build a grid of designs in parallel on Dask: results.csv and a Pareto report",
        description="Every point of models (--model, or --arch x --dataset) x --boards x one design axis "
                    "(--lut-share, --folding or --fps) x --clock-mhz x --pnr-seeds is compiled, simulated and "
                    "synthesized into its own build folder SWEEP/points/NAME/, as tasks on Dask distributed: a "
                    "LocalCluster of one worker process per core, or the cluster at --scheduler. A point whose "
                    "build folder already holds its results is not rebuilt; a failed point is recorded with its "
                    "error (retried once when the failure may not repeat: a worker that died, a tool crash). "
                    "Writes SWEEP/results.json, results.csv and report.html (frames/s at clock against LUTs, "
                    "the Pareto front and the best bitstream per board). Exits 1 when a point failed.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("-o", "--output", required=True, type=Path,
                   help="sweep folder (with --scheduler, on a path every worker sees at the same place)")
    p.add_argument("--model", action="append", type=Path, default=None, metavar="FILE",
                   help="a model file to sweep (repeat for several)")
    p.add_argument("--arch", default=None, help="comma list of architectures to train (tfc,sfc,lfc) into SWEEP/models")
    p.add_argument("--dataset", default=None, help="comma list of datasets for --arch (digits,fashion-mnist,idx:DIR)")
    p.add_argument("--epochs", type=positive_int, default=None, help="training epochs for --arch (default: per dataset)")
    p.add_argument("--boards", default="icebreaker", help="comma list of boards")
    p.add_argument("--lut-share", default=None, metavar="S,S,...",
                   help="design axis: comma list of LUT shares in (0, 1] (the fastest folding within each); "
                        "with --folding, the LUT budgets the hand foldings may take")
    p.add_argument("--folding", action="append", default=None, metavar="PE,SIMD;...",
                   help="design axis: a folding by hand (repeat for several)")
    p.add_argument("--fps", default=None, metavar="F,F,...", help="design axis: comma list of frames/s targets")
    p.add_argument("--clock-mhz", default=None, metavar="auto|board|MHZ,...",
                   help="comma list of clocks (default: auto, as in `xnorflow synth`); a point at a fixed clock "
                        "that misses timing is recorded as failed")
    p.add_argument("--pnr-seeds", default=None, metavar="N,N-M,...",
                   help="comma list of nextpnr seeds or ranges, e.g. 1-4 (default: nextpnr's own)")
    p.add_argument("--images", type=positive_int, default=DEFAULT_IMAGES,
                   help="test images each point simulates in Verilator (a few hundred keeps a sweep fast; "
                        "`xnorflow simulate POINT --images N` checks more later)")
    p.add_argument("--all-images", action="store_true", help="simulate every test image (overrides --images)")
    p.add_argument("--no-synth", action="store_true", help="compile and simulate only (no --clock-mhz/--pnr-seeds)")
    p.add_argument("--scheduler", default=None, metavar="tcp://HOST:8786",
                   help="a running Dask scheduler (workers started with `dask worker tcp://HOST:8786`); "
                        "default: a LocalCluster on this machine")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="LocalCluster worker processes (default: one per core)")


def is_user_error(error: BaseException) -> bool:
    """Errors xnorflow raises on purpose for bad input, as opposed to bugs."""
    from xnorflow.errors import XnorflowError

    return isinstance(error, XnorflowError)


def print_summary(report: dict, keys) -> None:
    from xnorflow.compiler.report import format_figure

    for key in keys:
        print(f"  {key:<26} {format_figure(report.get(key))}")


def cmd_train(args) -> int:
    from xnorflow.compiler.flow import training_options
    from xnorflow.training.train import format_summary, train

    summary = train(args.arch, args.dataset, args.output, epochs=args.epochs, seed=args.seed,
                    threads=args.threads, progress=sys.stderr.isatty(), **training_options(args),
                    float_model=args.float_model)
    print(format_summary(summary))
    return 0


def cmd_compile(args) -> int:
    from xnorflow.compiler.build import compile_model

    report = compile_model(args.model, args.output, board_name=args.board, fps=args.fps, folding=args.folding,
                           lut_share=args.lut_share,
                           dataset=args.dataset)
    print(f"compiled into {args.output}/ in {report['compile_seconds']:.1f} s")
    print_summary(report, ("accuracy_torch", "accuracy_golden", "torch_golden_agreement",
                           "analytic_cycles_per_frame"))
    return 0


def cmd_simulate(args) -> int:
    from xnorflow.compiler.build import simulate_build, simulation_failed

    report = simulate_build(args.build, images=args.images, backpressure=args.backpressure, waves=args.waves,
                            mode=args.mode, chunks=args.chunks, scheduler=args.scheduler,
                            seed=args.seed, progress=sys.stderr.isatty())
    print_summary(report, ("images_simulated", "rtl_mismatches", "accuracy_rtl", "accuracy_golden",
                           "cycles_per_frame", "analytic_cycles_per_frame", "latency_cycles"))
    for line in report["problems"]:
        print(f"  {line}", file=sys.stderr)
    if simulation_failed(report):
        print(f"xnorflow: error: the RTL disagrees with the golden model ({report['rtl_mismatches']} images "
              f"differ; details in {args.build}/sim/results.json)", file=sys.stderr)
        return 1
    return 0


def cmd_synth(args) -> int:
    from xnorflow.compiler.build import synthesize_build

    report = synthesize_build(args.build, progress=sys.stderr.isatty(), clock_mhz=args.clock_mhz, seed=args.pnr_seed,
                              parallel_seeds=args.parallel_seeds, baud=args.baud)
    print_summary(report, ("device", "luts", "ffs", "brams", "sprams", "dsps", "fmax_mhz", "fps", "clock_mhz", "baud",
                           "timing_met", "fps_at_clock", "synth_seconds"))
    print(f"  bitstream                {report.get('bitstream')}")
    return 0


def cmd_flow(args) -> int:
    from xnorflow.compiler.flow import run_flow

    return run_flow(args)


def cmd_export(args) -> int:
    from xnorflow.compiler.qonnx_export import export_qonnx_file

    path = export_qonnx_file(args.model, args.output)
    print(f"wrote {path} (QONNX: run it with qonnx's execute_onnx, compile it with `xnorflow compile {path}`)")
    return 0


def cmd_run(args) -> int:

    from xnorflow.boards.host import DEFAULT_BAUD, run_on_board
    from xnorflow.compiler import report as reports
    from xnorflow.compiler.build import load_spec, load_vectors, require_build

    build = require_build(args.build)
    spec = load_spec(build)
    vectors = load_vectors(build)
    inputs, labels, golden = vectors["inputs"], vectors.get("labels"), vectors.get("golden_predictions")
    if args.images is not None:
        inputs = inputs[:args.images]
        labels = None if labels is None else labels[:args.images]
        golden = None if golden is None else golden[:args.images]
    baud = args.baud or reports.read_report(build).get("baud") or DEFAULT_BAUD
    result = run_on_board(args.port, spec, inputs, labels, baudrate=baud, golden=golden)
    print(f"  frames                   {result['frames']}")
    accuracy = "not measured (no labels)" if result["accuracy"] is None else f"{result['accuracy']:.4f}"
    print(f"  accuracy                 {accuracy}")
    if golden is not None:
        print(f"  golden agreement         {result['golden_agreement']:.4f} "
              f"({result['golden_mismatches']} frames differ from the golden model)")
    print(f"  frames/s                 {result['fps']:,.1f} (host to board and back, over the UART at {baud:,} baud)")
    if result["golden_mismatches"]:
        first = result["mismatched_frames"][0]
        print(f"xnorflow: error: the board disagrees with the golden model on {result['golden_mismatches']} of "
              f"{result['frames']} frames (first: frame {first}, board class {result['predictions'][first]}, "
              f"golden {golden[first]}): is the bitstream built from {args.build}? "
              f"`xnorflow simulate {args.build}` checks the RTL", file=sys.stderr)
        return 1
    return 0


def cmd_sweep(args) -> int:
    from xnorflow.compiler.sweep import run_sweep_command

    return run_sweep_command(args)


COMMANDS = {"train": cmd_train, "compile": cmd_compile, "simulate": cmd_simulate, "synth": cmd_synth,
            "flow": cmd_flow, "export": cmd_export, "run": cmd_run, "sweep": cmd_sweep}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("xnorflow: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if os.environ.get("XNORFLOW_DEBUG"):
            raise
        if isinstance(error, OSError) and not is_user_error(error):
            # The file system said no (a read-only folder, a full disk, a missing path): name it.
            where = f" ({error.filename})" if error.filename else ""
            print(f"xnorflow: error: {error.strerror or error}{where}: check that the path exists and that you "
                  "can write there", file=sys.stderr)
            return 2
        if not is_user_error(error):
            raise
        print(f"xnorflow: error: {str(error).splitlines()[0] if str(error) else type(error).__name__}",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
