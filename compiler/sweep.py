"""`xnorflow sweep`: a grid of designs (models x boards x foldings x clocks x nextpnr seeds) built in
parallel on Dask distributed, resumable, summarised in results.json, results.csv and report.html.

Each point of the grid is a normal xnorflow build folder (SWEEP/points/<name>/) that a Dask task fills
with `compile_model`, `simulate_build` and `synthesize_build`, each step reused when its recorded
inputs (compile_inputs, simulation.inputs, synthesis_inputs in report.json) are those the point asks
for: a point whose report is complete is never rebuilt, by this sweep or the next. A point that fails
is recorded with its error; one that may pass on a second try (its worker died, a tool crashed) is
retried once. Deterministic failures (a timing miss at a fixed clock and seed, a design that does not
fit, the RTL disagreeing with the golden model) are recorded without a retry: the same inputs give the
same result.

By default the tasks run on a `distributed.LocalCluster` with one single-threaded worker process per
core; ``scheduler="tcp://HOST:8786"`` sends them to a running cluster instead. The sweep folder must
then be on a path every worker sees at the same place (a shared file system): the tasks read the model
files from there and write the build folders there.

Progress: the workers send each point's start and the live synthesis phases (boards.synth.SynthProgress)
as Dask events (topic ``xnorflow-sweep``); the driver shows points done, running and failed.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import re
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from xnorflow.errors import XnorflowError

from . import build_folder
from . import report as reports

TOPIC = "xnorflow-sweep"
DEFAULT_IMAGES = 300
MAX_PNR_SEED = 2**31 - 1          # nextpnr reads --seed into a C int
RESULTS_JSON, RESULTS_CSV, REPORT_HTML = "results.json", "results.csv", "report.html"
POINTS_DIR, MODELS_DIR = "points", "models"


class SweepError(XnorflowError):
    """A sweep that cannot start (a bad grid, an unreachable scheduler); one line naming the fix."""


class PointFailed(XnorflowError):
    """A point whose build finished but whose result is wrong (the RTL disagrees with the golden model)."""


# --- the grid -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Point:
    """One design to build: everything its build folder's recorded inputs depend on."""
    model: str                      # absolute path of the model file
    label: str                      # names the model in the point's name (arch-dataset or the file's stem)
    board: str
    lut_share: float | None = None
    folding: str | None = None      # 'PE,SIMD;...' as given
    fps: float | None = None
    synth: bool = True
    clock_mhz: float | str = "auto"
    pnr_seed: int | None = None

    @property
    def name(self) -> str:
        parts = [self.label, self.board]
        if self.lut_share is not None:
            parts.append(f"share{self.lut_share:g}")
        if self.folding is not None:
            parts.append("fold" + self.folding.replace(",", "x").replace(";", "_"))
        if self.fps is not None:
            parts.append(f"fps{self.fps:g}")
        if self.synth:
            parts.append(f"clk{self.clock_mhz if isinstance(self.clock_mhz, str) else format(self.clock_mhz, 'g')}")
            parts.append(f"seed{self.pnr_seed if self.pnr_seed is not None else 'default'}")
        return re.sub(r"[^A-Za-z0-9.+_-]", "_", "-".join(parts))

    @property
    def folding_pairs(self) -> list[tuple[int, int]] | None:
        from .cli import parse_folding

        return parse_folding(self.folding) if self.folding else None


def parse_values(text: str | None, parse, option: str, hint: str) -> list:
    """'0.5,0.85' -> [0.5, 0.85]; None -> [None] (the option not given). An empty list is an error."""
    if text is None:
        return [None]
    values = []
    for item in (part.strip() for part in str(text).split(",")):
        if not item:
            continue
        try:
            values.extend(parse(item))
        except SweepError:
            raise
        except (ValueError, OverflowError):
            raise SweepError(f"{option} {text!r}: {item!r} is not {hint}") from None
    if not values:
        raise SweepError(f"{option} {text!r} gives no values, so the grid has no points: give at least one "
                         f"({hint})")
    return values


def _one(parse):
    return lambda item: [parse(item)]


def _seeds(item: str) -> list[int]:
    """'3' -> [3]; '1-4' -> [1, 2, 3, 4]."""
    low, _, high = item.partition("-")
    low, high = int(low), int(high) if high else int(low)
    if high < low:
        raise ValueError
    if not (1 <= low and high <= MAX_PNR_SEED):
        raise SweepError(f"--pnr-seeds {item}: nextpnr seeds are whole numbers from 1 to {MAX_PNR_SEED}")
    if high - low >= 10_000:
        raise SweepError(f"--pnr-seeds {item}: {high - low + 1} seeds is more than a sweep should build; "
                         "give at most 10000")
    return list(range(low, high + 1))


def _clock(item: str) -> float | str:
    if item in ("auto", "board"):
        return item
    value = float(item)
    if not (math.isfinite(value) and value > 0):
        raise ValueError
    return value


def _finite_positive(item: str) -> float:
    value = float(item)
    if not (math.isfinite(value) and value > 0):
        raise ValueError
    return value


def grid_points(models: list[tuple[str, str]], boards: str, lut_shares: str | None = None,
                foldings: list[str] | None = None, fps: str | None = None, clocks: str | None = None,
                seeds: str | None = None, synth: bool = True) -> list[Point]:
    """Every point of the grid, checked before anything runs (one line per bad value, SweepError).

    ``models``: (model file, label) pairs. ``boards``, ``lut_shares``, ``fps``, ``clocks``, ``seeds``:
    comma lists as on the command line (seeds may be ranges, '1-4'). At most one of ``lut_shares``,
    ``foldings`` and ``fps`` is the design axis (without any, each board's default folding); with
    ``foldings``, ``lut_shares`` are the LUT budgets the hand foldings are checked against."""
    from xnorflow.boards.registry import get_board

    from .build import check_clock, check_compile_options
    from .cli import parse_folding

    if fps is not None and (lut_shares is not None or foldings is not None):
        raise SweepError("give one design axis: --lut-share, --folding or --fps (they choose the folding in "
                         "different ways, so a grid of two of them is not meaningful; --lut-share with "
                         "--folding sets the LUT budget of the hand foldings)")
    if not synth and (clocks is not None or seeds is not None):
        raise SweepError("--clock-mhz and --pnr-seeds choose how points are synthesized: leave them out with "
                         "--no-synth, or drop --no-synth")
    if not models:
        raise SweepError("the grid has no models: give --model FILE or --arch and --dataset")
    board_list = [get_board(b) for b in parse_values(boards, _one(str), "--boards", "a board name")]
    shares = parse_values(lut_shares, _one(float), "--lut-share", "a share of the LUTs such as 0.5")
    fps_list = parse_values(fps, _one(_finite_positive), "--fps", "a positive number of frames/s")
    clock_list = parse_values("auto" if clocks is None else clocks, _one(_clock), "--clock-mhz", "auto, board or a frequency in MHz")
    seed_list = parse_values(seeds, _seeds, "--pnr-seeds", "a seed from 1 or a range such as 1-4")
    folding_list = [None]
    if foldings is not None:
        folding_list = [f.strip() for f in foldings if f.strip()]
        if not folding_list:
            raise SweepError("--folding gives no foldings, so the grid has no points: give one such as '8,16;4,8'")
        for text in folding_list:
            try:
                parse_folding(text)
            except argparse.ArgumentTypeError:
                raise SweepError(f"--folding {text!r}: give PE,SIMD per layer separated by ';', e.g. "
                                 "'8,16;4,8;4,8;1,8'") from None
    for board in board_list:
        for share in shares:
            check_compile_options(board, lut_share=share)
        for value in fps_list:
            check_compile_options(board, fps=value)
        for clock in clock_list:
            if synth and not isinstance(clock, str):
                check_clock(board, clock)
    points = []
    for model, label in models:
        for board in board_list:
            for share in shares:
                for folding in folding_list:
                    for target in fps_list:
                        for clock in (clock_list if synth else ["auto"]):
                            for seed in (seed_list if synth else [None]):
                                points.append(Point(model=str(model), label=label, board=board.name,
                                                    lut_share=share, folding=folding, fps=target, synth=synth,
                                                    clock_mhz=clock, pnr_seed=seed))
    names = [p.name for p in points]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SweepError(f"two points would share the build folder {duplicates[0]}: give each value once "
                         "(and models with different file names)")
    return points


# --- one point (runs on a worker) ------------------------------------------------------------------
def _worker_sink():
    """A function sending an event to the sweep's driver, when running in a Dask worker; else None."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None
    return lambda message: worker.log_event(TOPIC, message)


def build_point(point: Point | dict, build_dir, images: int | None = DEFAULT_IMAGES, sink=None) -> dict:
    """Compile, simulate (``images`` test images, None: all) and synthesize one point into
    ``build_dir``, reusing each step whose recorded inputs match. Returns {"point", "steps" (those
    that ran), "report", "seconds"}; raises on failure (PointFailed when the RTL disagrees)."""
    from xnorflow.sim.defaults import DEFAULT_BACKPRESSURE

    from .build import compile_model, simulate_build, simulation_failed, synthesize_build
    from .flow import compile_rerun_reason, simulate_rerun_reason, synth_rerun_reason

    point = point if isinstance(point, Point) else Point(**point)
    build_dir = Path(build_dir)
    sink = sink or _worker_sink() or (lambda message: None)
    started = time.perf_counter()
    sink({"point": point.name, "event": "started", "pid": os.getpid()})
    steps = []
    report = _report_if_any(build_dir)
    folding = point.folding_pairs
    request = {"board": point.board, "fps": point.fps, "folding": [list(p) for p in folding] if folding else None,
               "lut_share": point.lut_share, "dataset": None}
    if compile_rerun_reason(report, Path(point.model), request) is not None:
        sink({"point": point.name, "event": "phase", "line": "compiling"})
        compile_model(point.model, build_dir, board_name=point.board, fps=point.fps, folding=folding,
                      lut_share=point.lut_share, log=lambda *_: None)
        steps.append("compile")
        report = reports.read_report(build_dir)
    if simulate_rerun_reason(build_dir, report, images) is not None:
        sink({"point": point.name, "event": "phase", "line": f"simulating {images or 'all'} images in Verilator"})
        simulate_build(build_dir, images=images, backpressure=DEFAULT_BACKPRESSURE, progress=False)
        steps.append("simulate")
        report = reports.read_report(build_dir)
    if simulation_failed(report):
        raise PointFailed(f"the RTL disagrees with the golden model on {report.get('rtl_mismatches')} of "
                          f"{report.get('images_simulated')} images (details in {build_dir}/sim/results.json)")
    if point.synth and synth_rerun_reason(build_dir, report, point.clock_mhz, point.pnr_seed) is not None:
        synthesize_build(build_dir, progress=False, clock_mhz=point.clock_mhz, seed=point.pnr_seed,
                         on_progress=lambda e: sink({"point": point.name, "event": "phase", "line": e["line"]}))
        steps.append("synth")
        report = reports.read_report(build_dir)
    return {"point": point.name, "steps": steps, "report": report,
            "seconds": round(time.perf_counter() - started, 1)}


def _report_if_any(build_dir: Path) -> dict:
    if build_folder.is_owned(build_dir) if build_dir.is_dir() else False:
        return reports.read_report(build_dir)
    return reports.empty_report()


def point_complete(point: Point, build_dir: Path, images: int | None) -> bool:
    """Whether every step of the point is in its build folder for the point's inputs (nothing to run)."""
    from .build import simulation_failed
    from .flow import compile_rerun_reason, simulate_rerun_reason, synth_rerun_reason

    try:
        report = _report_if_any(build_dir)
        folding = point.folding_pairs
        request = {"board": point.board, "fps": point.fps, "lut_share": point.lut_share, "dataset": None,
                   "folding": [list(p) for p in folding] if folding else None}
        return (compile_rerun_reason(report, Path(point.model), request) is None
                and simulate_rerun_reason(build_dir, report, images) is None
                and not simulation_failed(report)
                and (not point.synth or synth_rerun_reason(build_dir, report, point.clock_mhz, point.pnr_seed) is None))
    except XnorflowError:
        return False


# --- the cluster ----------------------------------------------------------------------------------
def local_cluster(workers: int | None = None):
    """A LocalCluster of ``workers`` (default: one per core) single-threaded worker processes.

    A worker that dies fails its task at once (allowed-failures 0) so the sweep records the death and
    retries the point itself, once; each worker takes one point at a time (worker-saturation 1)."""
    import dask
    from distributed import LocalCluster

    with dask.config.set({"distributed.scheduler.allowed-failures": 0,
                          "distributed.scheduler.worker-saturation": 1.0}):
        return LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1, processes=True,
                            dashboard_address=":0", silence_logs=logging.CRITICAL)   # any free port


def connect(scheduler: str | None = None, workers: int | None = None, timeout: float = 10.0):
    """(client, cluster or None): a client of the scheduler at ``scheduler``, else of a new LocalCluster."""
    from distributed import Client

    if scheduler is None:
        cluster = local_cluster(workers)
        return Client(cluster), cluster
    if not re.match(r"^(tcp|tls|inproc|ucx|ws|wss)://[^\s/]+$", scheduler):
        raise SweepError(f"--scheduler {scheduler!r}: give the scheduler's address as tcp://HOST:8786")
    try:
        return Client(scheduler, timeout=f"{timeout}s"), None
    except (OSError, TimeoutError) as e:
        raise SweepError(f"cannot reach the Dask scheduler at {scheduler} ({type(e).__name__}): start it with "
                         f"`dask scheduler` and workers with `dask worker {scheduler}`, or leave --scheduler out "
                         "to run on this machine") from None


# --- the driver -----------------------------------------------------------------------------------
class Progress:
    """Points done, running and failed, with the latest phase of a running point."""

    def __init__(self, names: list[str], stream=None, log=None):
        self.state = dict.fromkeys(names, "waiting")
        self.phase: dict[str, str] = {}
        self.stream = stream or sys.stderr
        self.terminal = self.stream.isatty()
        self.log = log or (lambda line: print(line, file=self.stream, flush=True))
        self.started = time.perf_counter()
        self.lock = threading.Lock()
        self.last_counts = None

    def set(self, name: str, state: str, line: str | None = None) -> None:
        with self.lock:
            self.state[name] = state
            if state != "running":
                self.phase.pop(name, None)
        if line:
            self.say(line)
        self.draw()

    def event(self, message: dict) -> None:
        name = message.get("point")
        if name not in self.state:
            return
        with self.lock:
            if self.state[name] in ("waiting", "retrying"):
                self.state[name] = "running"
            if message.get("line"):
                self.phase[name] = message["line"]
        self.draw()

    def counts(self) -> dict:
        with self.lock:
            values = list(self.state.values())
        return {s: values.count(s) for s in ("done", "reused", "running", "failed", "waiting", "retrying")}

    def say(self, line: str) -> None:
        if self.terminal:
            self.stream.write("\r\x1b[K")
        self.log(line)

    def draw(self) -> None:
        c = self.counts()
        total = len(self.state)
        finished = c["done"] + c["reused"] + c["failed"]
        width = 24
        filled = int(width * finished / total) if total else width
        elapsed = int(time.perf_counter() - self.started)
        text = (f"[sweep] [{'#' * filled}{'.' * (width - filled)}] {finished}/{total}: {c['done']} built, "
                f"{c['reused']} reused, {c['running']} running, {c['failed']} failed, "
                f"{c['waiting'] + c['retrying']} waiting, {elapsed // 60}:{elapsed % 60:02d}")
        if self.terminal:
            with self.lock:
                phase = next(iter(self.phase.items()), None)
            if phase:
                text += f" | {phase[0]}: {phase[1].removeprefix('[synth] ')}"
            columns = os.get_terminal_size(self.stream.fileno()).columns if self.stream.isatty() else 200
            self.stream.write("\r\x1b[K" + text[:columns - 1])
            self.stream.flush()
        elif c != self.last_counts:
            self.log(text)
        self.last_counts = c

    def close(self) -> None:
        if self.terminal:
            self.stream.write("\n")
            self.stream.flush()


def error_line(error: BaseException) -> str:
    """A failed task's error as one line."""
    name = type(error).__name__
    if name == "KilledWorker":
        return "the worker running it died (killed, out of memory or lost): " + str(error).splitlines()[0][:200]
    text = str(error).strip().splitlines()[0] if str(error).strip() else name
    return text if isinstance(error, XnorflowError) else f"{name}: {text}"


def is_deterministic(error: BaseException) -> bool:
    """A failure the same inputs would repeat: bad input, a design that does not fit, a timing miss at a
    fixed clock and seed, RTL mismatches. Worker deaths, tool crashes and other errors are retried."""
    from xnorflow.boards.synth import SynthError

    if not isinstance(error, XnorflowError):
        return False
    if isinstance(error, SynthError):
        text = str(error)
        return "FAIL at" in text or "does not fit" in text or "timing is not met" in text
    return True


def run_sweep(points: list[Point], out_dir, images: int | None = DEFAULT_IMAGES, client=None,
              retries: int = 1, stream=None, on_event=None) -> dict:
    """Build every point of the grid on ``client``'s cluster; write results.json, results.csv and
    report.html in ``out_dir``; return {"rows", "built", "reused", "failed"}.

    ``retries``: how many times a point whose failure is not deterministic runs again. ``on_event``:
    also called with every event from the workers (tests use it to find a running task). Ctrl-C
    cancels what runs, keeps every finished point and writes the results so far, then re-raises."""
    from distributed import CancelledError

    out_dir = Path(out_dir).absolute()
    points_dir = out_dir / POINTS_DIR
    points_dir.mkdir(parents=True, exist_ok=True)
    dirs = {p.name: points_dir / p.name for p in points}
    by_name = {p.name: p for p in points}
    progress = Progress([p.name for p in points], stream=stream)
    rows: dict[str, dict] = {}
    attempts: dict[str, list[str]] = {p.name: [] for p in points}

    def handle(event):
        message = event[1] if isinstance(event, tuple) else event
        if on_event:
            on_event(message)
        progress.event(message)

    client.subscribe_topic(TOPIC, handle)
    futures = {}

    def submit(point: Point):
        key = f"xnorflow-sweep-{point.name}-{len(attempts[point.name])}-{uuid.uuid4().hex[:8]}"
        futures[client.submit(build_point, asdict(point), str(dirs[point.name]), images, key=key,
                              pure=False)] = point.name

    for point in points:
        if point_complete(point, dirs[point.name], images):
            rows[point.name] = result_row(point, dirs[point.name], "reused", report=reports.read_report(
                dirs[point.name]))
            progress.set(point.name, "reused")
        else:
            submit(point)
    write_results(out_dir, points, rows)
    try:
        while futures:
            finished = [f for f in futures if f.done()]
            if not finished:
                time.sleep(0.25)
                progress.draw()
                continue
            for future in finished:
                name = futures.pop(future)
                point = by_name[name]
                if future.status == "finished":
                    result = future.result()
                    rows[name] = result_row(point, dirs[name], "done", report=result["report"],
                                            steps=result["steps"], seconds=result["seconds"], errors=attempts[name])
                    progress.set(name, "done", f"[sweep] {name}: {summary(result['report'])} "
                                               f"({', '.join(result['steps']) or 'nothing'} in {result['seconds']:.0f} s)")
                    continue
                try:
                    error = future.exception()
                except CancelledError as e:
                    error = e
                message = error_line(error)
                attempts[name].append(message)
                if len(attempts[name]) <= retries and not is_deterministic(error):
                    progress.set(name, "retrying", f"[sweep] {name} failed ({message}): retrying")
                    submit(point)
                else:
                    rows[name] = result_row(point, dirs[name], "failed", report=_report_if_any(dirs[name]),
                                            errors=attempts[name])
                    progress.set(name, "failed", f"[sweep] {name} FAILED: {message}")
            write_results(out_dir, points, rows)
    except KeyboardInterrupt:
        for future in futures:
            future.cancel()
        write_results(out_dir, points, rows)
        progress.close()
        raise
    finally:
        if client.status == "running":           # not when it is closing after an interrupt
            client.unsubscribe_topic(TOPIC)
    progress.close()
    html = write_results(out_dir, points, rows, html=True)
    counts = progress.counts()
    return {"rows": [rows[p.name] for p in points], "built": counts["done"], "reused": counts["reused"],
            "failed": counts["failed"], "html": html}


def summary(report: dict) -> str:
    from .report import format_figure

    parts = [f"II {format_figure(report.get('cycles_per_frame'))}",
             f"{format_figure(report.get('rtl_mismatches'))} mismatches"]
    if report.get("luts") is not None:
        parts += [f"{format_figure(report.get('luts'))} LUTs", f"Fmax {format_figure(report.get('fmax_mhz'))} MHz",
                  f"{format_figure(report.get('fps_at_clock'))} frames/s at {format_figure(report.get('clock_mhz'))} MHz"]
    return ", ".join(parts)


# --- results --------------------------------------------------------------------------------------
POINT_COLUMNS = ("point", "status", "error", "attempts", "rebuilt", "seconds", "model", "board", "lut_share",
                 "folding", "fps_target", "clock_request_mhz", "pnr_seed", "build_dir")


def result_row(point: Point, build_dir: Path, status: str, report: dict | None = None, steps=(), seconds=None,
               errors=()) -> dict:
    """One point's row: what it is, how it went, and every figure of its report.json."""
    return {"point": point.name, "status": status, "error": errors[-1] if status == "failed" and errors else None,
            "attempts": len(errors) + (status == "done"), "errors": list(errors), "rebuilt": list(steps),
            "seconds": seconds, "model": point.model, "board": point.board, "lut_share": point.lut_share,
            "folding": point.folding, "fps_target": point.fps,
            "clock_request_mhz": point.clock_mhz if point.synth else None, "pnr_seed": point.pnr_seed,
            "build_dir": str(build_dir), "report": report or {}}


def flat_figures(report: dict) -> dict:
    """report.json's figures as CSV columns: scalars as they are, one level of dicts as 'a.b', lists and
    deeper values as JSON."""
    flat = {}
    for key, value in report.items():
        if isinstance(value, dict):
            for sub, inner in value.items():
                flat[f"{key}.{sub}"] = inner if isinstance(inner, (int, float, str, bool, type(None))) else \
                    json.dumps(inner)
        elif isinstance(value, list):
            flat[key] = json.dumps(value)
        else:
            flat[key] = value
    return flat


def write_results(out_dir: Path, points: list[Point], rows: dict, html: bool = False) -> Path | None:
    """results.json (every point, its status and full report), results.csv (one row a point); with
    ``html``, report.html. Points not finished (yet) are listed as such."""
    ordered = []
    for point in points:
        row = rows.get(point.name) or result_row(point, out_dir / POINTS_DIR / point.name, "not built")
        ordered.append(row)
    build_folder.write_atomically(out_dir / RESULTS_JSON, json.dumps(
        {"points": ordered, "written": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=1, default=str))
    flats = [{**{k: row[k] for k in POINT_COLUMNS if k != "rebuilt"}, "rebuilt": " ".join(row["rebuilt"]),
              **flat_figures(row["report"])} for row in ordered]
    columns = list(POINT_COLUMNS) + sorted({k for f in flats for k in f} - set(POINT_COLUMNS))
    tmp = out_dir / f".{RESULTS_CSV}.tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(flats)
    os.replace(tmp, out_dir / RESULTS_CSV)
    if html:
        from .sweep_report import write_sweep_report

        return write_sweep_report(out_dir, ordered)
    return None



# --- the best of N seeds for one build (`xnorflow synth --parallel-seeds N`) ------------------------
def _forward_progress(label: str, event: dict) -> None:
    """A synthesis phase event from a worker to the driver (picklable, for functools.partial)."""
    sink = _worker_sink()
    if sink:
        sink({"point": label, "event": "phase", "line": event["line"]})


def synthesize_seeds_in_parallel(spec, board_name: str, out_dir, seeds: list[int], progress: bool = True,
                                 expected_luts: int | None = None, workers: int | None = None,
                                 baud: int | None = None) -> dict:
    """`synthesize_at_best_clock`, but its first clock built with every seed of ``seeds`` at once as
    tasks on a LocalCluster (the sweep's machinery); the best build that meets the clock (highest
    Fmax) becomes ``out_dir``. When none meets it, the search goes on from the best seed's Fmax as
    `synthesize_at_best_clock` would (a lower clock, then the oscillator). The attempt lists hold
    every build, the parallel ones first (in seed order); ``synth_seconds`` is their total and
    ``synth_wall_seconds`` the time it took."""
    import functools
    import shutil

    from distributed import Client

    from xnorflow.boards.registry import get_board
    from xnorflow.boards.synth import next_attempt, synthesize, synthesize_at_best_clock

    board = get_board(board_name)
    out_dir = Path(out_dir)
    tries = out_dir.parent / f".{out_dir.name}-seeds"
    started = time.perf_counter()
    first_hz = board.pll_first_try_hz
    say = (lambda line: print(line, file=sys.stderr, flush=True)) if progress else (lambda line: None)
    cluster = local_cluster(min(len(seeds), workers or os.cpu_count() or 1))
    results, errors = {}, {}
    try:
        with Client(cluster) as client:
            client.subscribe_topic(TOPIC, lambda event: say(f"[seed {event[1]['point']}] {event[1].get('line', '')}"))
            say(f"[synth] {len(seeds)} seeds ({', '.join(map(str, seeds))}) at {first_hz / 1e6:g} MHz on "
                f"{len(client.scheduler_info()['workers'])} workers")
            futures = {seed: client.submit(synthesize, spec, board_name, str(tries / f"seed-{seed}"), progress=False,
                                           seed=seed, clock_hz=first_hz, timing_allow_fail=True, baud=baud,
                                           expected_luts=expected_luts, pure=False,
                                           on_progress=functools.partial(_forward_progress, str(seed)))
                       for seed in seeds}
            for seed, future in futures.items():
                try:
                    results[seed] = future.result()
                    say(f"[synth] seed {seed}: Fmax {results[seed]['fmax_mhz']} MHz at {first_hz / 1e6:g} MHz")
                except Exception as e:      # noqa: BLE001 - a seed's failure is recorded, the others go on
                    errors[seed] = error_line(e)
                    say(f"[synth] seed {seed} failed: {errors[seed]}")
            client.unsubscribe_topic(TOPIC)
    finally:
        cluster.close()
    if not results:
        shutil.rmtree(tries, ignore_errors=True)
        from xnorflow.boards.synth import SynthError
        raise SynthError(f"every seed failed; seed {seeds[0]}: {errors[seeds[0]]}")
    ranked = sorted(results, key=lambda s: (bool(results[s]["timing_met"]), results[s]["fmax_mhz"] or 0), reverse=True)
    best = ranked[0]
    parallel = [results[s] for s in sorted(results)]
    if results[best]["timing_met"]:
        shutil.rmtree(out_dir, ignore_errors=True)
        os.replace(tries / f"seed-{best}", out_dir)
        result = build_folder.relocate(results[best], tries / f"seed-{best}", out_dir)
        later = []
    else:
        action, clock_hz, seed = next_attempt(board.family, board.clock_hz, first_hz, best,
                                              [results[best]["fmax_mhz"]], reseeded=True)
        say(f"[synth] no seed met {first_hz / 1e6:g} MHz (best: seed {best}, Fmax {results[best]['fmax_mhz']} MHz): "
            f"going on {'at the board oscillator' if action == 'oscillator' else f'at {clock_hz / 1e6:g} MHz'}")
        if action == "oscillator":
            result = synthesize(spec, board_name, out_dir, progress=progress, seed=seed, expected_luts=expected_luts,
                                baud=baud)
        else:
            result = synthesize_at_best_clock(spec, board_name, out_dir, first_try_hz=clock_hz, progress=progress,
                                              seed=seed, expected_luts=expected_luts, baud=baud)
        later = [result]
    shutil.rmtree(tries, ignore_errors=True)
    for key in ("clock_attempts_mhz", "fmax_attempts_mhz", "seed_attempts"):
        result[key] = [v for r in parallel for v in r[key]] + [v for r in later for v in r[key]]
    result["attempt_seconds"] = [r["synth_seconds"] for r in parallel] + \
        [v for r in later for v in r.get("attempt_seconds", [r["synth_seconds"]])]
    result["synth_seconds"] = round(sum(result["attempt_seconds"]), 1)
    result["synth_wall_seconds"] = round(time.perf_counter() - started, 1)
    result["seed_errors"] = {str(k): v for k, v in errors.items()}
    return result


# --- the command ----------------------------------------------------------------------------------
SWEEP_MARKER = ".xnorflow-sweep"


def sweep_models(out_dir: Path, model_files, archs: str | None, datasets: str | None) -> list[tuple[str, str, tuple]]:
    """(model file, label, (arch, dataset) to train or None) per model of the grid; checked, nothing written."""
    from xnorflow.training.datasets import canonical_dataset_name
    from xnorflow.training.model_file import load_model_file
    from xnorflow.training.zoo import ARCHS

    if model_files and (archs or datasets):
        raise SweepError("give either --model files or --arch and --dataset to train, not both")
    if model_files:
        for path in model_files:
            load_model_file(path)                       # a missing or corrupt file: one line now
        return [(str(Path(path).absolute()), Path(path).stem, None) for path in model_files]
    arch_list = parse_values(archs or "tfc", _one(str), "--arch", "an architecture")
    dataset_list = parse_values(datasets or "digits", _one(str), "--dataset", "a dataset")
    for arch in arch_list:
        if arch not in ARCHS:
            raise SweepError(f"--arch {arch}: choose from {', '.join(ARCHS)}")
    models = []
    for arch in arch_list:
        for dataset in dataset_list:
            label = re.sub(r"[^A-Za-z0-9.+_-]", "_", f"{arch}-{Path(dataset).name if ':' in dataset else dataset}")
            models.append((str(out_dir.absolute() / MODELS_DIR / f"{label}.pt"), label,
                           (arch, canonical_dataset_name(dataset))))
    return models


def check_sweep_folder(out_dir: Path) -> None:
    """A sweep folder is new, empty, or one an earlier sweep made (it has the marker)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise SweepError(f"{out_dir} is a file: choose a folder for -o")
    for parent in out_dir.absolute().parents:
        if parent.exists() and not parent.is_dir():
            raise SweepError(f"cannot make the sweep folder {out_dir}: {parent} is a file")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / SWEEP_MARKER).is_file():
        raise SweepError(f"{out_dir} holds files a sweep did not make: choose a new or empty folder for -o")


def train_missing(models, epochs: int | None, log) -> None:
    """Train each --arch x --dataset model not in SWEEP/models yet (here, before the points run)."""
    from xnorflow.training.model_file import load_model_file
    from xnorflow.training.train import train

    for path, label, recipe in models:
        if recipe is None:
            continue
        if Path(path).exists():
            trained = load_model_file(path)
            if epochs is None or (trained.get("train") or {}).get("epochs") == epochs:
                continue
        log(f"[sweep] training {recipe[0]} on {recipe[1]} into {path}")
        train(recipe[0], recipe[1], path, epochs=epochs, progress=False)


def run_sweep_command(args) -> int:
    """`xnorflow sweep`: check everything, connect, train what is missing, build, report."""
    out_dir = Path(args.output).absolute()
    check_sweep_folder(out_dir)
    models = sweep_models(out_dir, args.model, args.arch, args.dataset)
    points = grid_points([(path, label) for path, label, _ in models], args.boards, lut_shares=args.lut_share,
                         foldings=args.folding, fps=args.fps, clocks=args.clock_mhz, seeds=args.pnr_seeds,
                         synth=not args.no_synth)
    images = None if args.all_images else args.images
    client, cluster = connect(args.scheduler, args.workers)
    try:
        workers = len(client.scheduler_info().get("workers", {}))
        print(f"[sweep] {len(points)} points on {workers} Dask workers ({args.scheduler or 'a LocalCluster here'}) "
              f"into {out_dir}", file=sys.stderr, flush=True)
        out_dir.mkdir(parents=True, exist_ok=True)
        build_folder.write_atomically(out_dir / SWEEP_MARKER, json.dumps({"created_by": "xnorflow sweep"}) + "\n")
        train_missing(models, args.epochs, lambda line: print(line, file=sys.stderr, flush=True))
        outcome = run_sweep(points, out_dir, images=images, client=client)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    print(f"xnorflow sweep: {len(points)} points: {outcome['built']} built, {outcome['reused']} reused, "
          f"{outcome['failed']} failed")
    from .sweep_report import best_bitstream

    for board in sorted({p.board for p in points}):
        best = best_bitstream([r for r in outcome["rows"] if r["board"] == board])
        if best:
            print(f"  best on {board}: {best['point']}: {summary(best['report'])}")
            print(f"    bitstream {best['report']['bitstream']}")
    for row in outcome["rows"]:
        if row["status"] == "failed":
            print(f"  FAILED {row['point']}: {row['error']}", file=sys.stderr)
    print(f"  results  {out_dir / RESULTS_CSV}, {out_dir / RESULTS_JSON}")
    print(f"  report   {outcome['html']}")
    return 1 if outcome["failed"] else 0


__all__ = ["Point", "SweepError", "build_point", "connect", "grid_points", "local_cluster", "run_sweep",
           "run_sweep_command"]
