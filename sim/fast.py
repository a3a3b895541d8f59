"""Fast mode of `simulate`: frames streamed by the Verilog harness (sim/harness.py), in chunks that
run as parallel simulator processes, every output checked against golden afterwards.

Per chunk, one Verilator process runs the cocotb test `sim/fast_tb.py`, which drives the harness
through its phases: (chunk 0 only) a clean phase on the first frames for the II and the latency and
the three mid-frame resets, each followed by clean frames; then the random-flow phase on the chunk's
frames with input gaps and output backpressure. Chunks are disjoint ranges of the frames, each with
its own seed (``seed + chunk``), merged in frame order, so results do not depend on how many run at
once. A chunk whose simulator process fails is run once more before its error is reported.
"""
from __future__ import annotations

import itertools
import json
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from xnorflow.hw.stream_format import beats_per_frame
from xnorflow.sim import harness
from xnorflow.sim.layout import TOP
from xnorflow.sim.scoreboard import Scoreboard, steady_state_ii, watchdog_cycles
from xnorflow.sim.verilator_build import build_model, verilator_runner

FAST_TB_MODULE = "xnorflow.sim.fast_tb"
# Verilator built for speed: its own optimisations, X values resolved once, the C++ at -O2 with GCC
# allowed to inline into Verilator's huge evaluation functions (its growth limits otherwise leave
# every VL_COUNTONES_I of the popcount trees a call), and x86-64's POPCNT where the machine is one
# (bench/records.md, "Verilator flags", records the rates these give).
SPEED_CFLAGS = ["-O2", "--param", "large-function-growth=1000", "--param", "large-function-insns=100000",
                "--param", "inline-unit-growth=1000", *(["-mpopcnt"] if platform.machine() in ("x86_64", "AMD64") else [])]
SPEED_ARGS = ["-O3", "--x-assign", "fast", "--x-initial", "fast", "-CFLAGS", " ".join(SPEED_CFLAGS)]
MAIN_CPP = Path(__file__).with_name("fast_main.cpp")     # the free-running clock loop
RESET_POINTS = ("input", "compute", "output-held")
RESET_CHECK_FRAMES = 3
TAIL_CYCLES = 1000        # cycles watched after the last expected output for a spurious one


def default_chunks(frames: int) -> int:
    """One chunk per core, and no chunk under 200 frames (a chunk costs a process start)."""
    return max(1, min(os.cpu_count() or 1, frames // 200))


def chunk_ranges(frames: int, chunks: int) -> list[tuple[int, int]]:
    """``chunks`` contiguous, nearly equal [start, stop) ranges covering 0 .. frames."""
    chunks = max(1, min(chunks, frames))
    edges = np.linspace(0, frames, chunks + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges)]


class FastSession:
    """The harness build of one build folder and the runs of its chunks."""

    def __init__(self, session):
        self.session = session           # sim.runner.BenchSession: folder, spec, ports, in_width
        spec = session.spec
        self.beats_per_frame = beats_per_frame(spec.input_bits, session.in_width)

    def build(self, frames: int) -> tuple[Path, float | None]:
        """The harness model for chunks of up to ``frames`` frames; returns (obj_dir, build seconds)."""
        capacity = harness.depth_for(max(frames, RESET_CHECK_FRAMES + 1))
        obj_dir, source = self.session.folder.fast_model(capacity)
        source.parent.mkdir(parents=True, exist_ok=True)
        text = harness.harness_verilog(TOP, self.session.ports, self.session.spec,
                                       self.session.in_width, capacity)
        if not source.is_file() or source.read_text() != text:
            # Replaced, not edited: the file may be a hard link into the previous simulation's cache.
            staged = source.with_name(source.name + ".new")
            staged.write_text(text)
            os.replace(staged, source)
        seconds = build_model(self.session.folder.verilog, obj_dir, top=harness.HARNESS_TOP,
                                          extra_sources=[source], extra_args=SPEED_ARGS, main_cpp=MAIN_CPP)
        return obj_dir, seconds

    def phases(self, chunk: int, frames: int, run_dir: Path, *, backpressure: float, gaps: float,
               seed: int, measure_frames: int, reset_test: bool) -> list[dict]:
        spec = self.session.spec
        layers = len(spec.layers)
        base = {"seed": seed + chunk, "tail": TAIL_CYCLES}

        def phase(name, count, gap, stall, **extra):
            return {**base, **extra, "name": name, "frames": int(count),
                    "gap_threshold": harness.threshold(gap), "stall_threshold": harness.threshold(stall),
                    "watchdog": watchdog_cycles(spec.analytic_cycles_per_frame, layers, gap, stall),
                    "files": {key: str(run_dir / f"{name}.{key}.hex") for key in ("payloads", "in", "out")}}

        out = []
        if chunk == 0 and measure_frames:
            out.append(phase("clean", min(frames, measure_frames), 0.0, 0.0))
        if chunk == 0 and reset_test:
            ii, beats = spec.analytic_cycles_per_frame, self.beats_per_frame
            after = {"input": max(1, beats // 2), "compute": beats + max(1, ii // 2),
                     "output-held": beats + 4 * ii * layers}
            for where in RESET_POINTS:
                stall = 1.0 - 1.0 / harness.PROBABILITY_ONE if where == "output-held" else 0.0
                out.append(phase(f"interrupted-{where}", 1, 0.0, stall, reset_after=after[where]))
                out.append(phase(f"after-reset-{where}", min(frames, RESET_CHECK_FRAMES), 0.0, 0.0))
        out.append(phase("random", frames, gaps, backpressure))
        return out

    def run_chunk(self, chunk: int, start: int, stop: int, inputs: np.ndarray, obj_dir: Path, *,
                  backpressure: float, gaps: float, seed: int, measure_frames: int, reset_test: bool,
                  progress_file: Path | None) -> dict:
        run_dir = self.session.folder.run_dir(f"chunk{chunk}")
        run_dir.mkdir(parents=True, exist_ok=True)
        frames_file = run_dir / "frames.hex"
        harness.write_frames_hex(frames_file, inputs[start:stop], self.session.in_width)
        dump = {key: str(run_dir / f"dump.{key}.hex") for key in ("payloads", "in", "out")}
        phases = self.phases(chunk, stop - start, run_dir, backpressure=backpressure, gaps=gaps, seed=seed,
                             measure_frames=measure_frames, reset_test=reset_test)
        config = {"phases": phases, "dump": dump, "status_file": str(run_dir / "status.json"),
                  "progress_file": str(progress_file) if progress_file else None}
        config_file = run_dir / "config.json"
        config_file.write_text(json.dumps(config, indent=1))
        plusargs = [f"+xnorflow_frames={frames_file}", f"+xnorflow_payloads={dump['payloads']}",
                    f"+xnorflow_in={dump['in']}", f"+xnorflow_out={dump['out']}"]
        log = run_dir / "sim.log"
        error = None
        for attempt in range(2):           # a failed simulator process is run once more
            Path(config["status_file"]).unlink(missing_ok=True)
            started = time.perf_counter()
            try:
                verilator_runner(main_cpp=MAIN_CPP).test(
                    test_module=FAST_TB_MODULE, hdl_toplevel=harness.HARNESS_TOP, hdl_toplevel_lang="verilog",
                    build_dir=obj_dir, test_dir=run_dir, plusargs=plusargs, seed=seed + chunk,
                    extra_env={"XNORFLOW_FAST_CONFIG": str(config_file)}, log_file=log)
            except (SystemExit, RuntimeError) as e:
                error = f"{type(e).__name__}: {e}"
            seconds = time.perf_counter() - started
            if Path(config["status_file"]).is_file():
                error = None
                break
        status = json.loads(Path(config["status_file"]).read_text()) if error is None else []
        return {"chunk": chunk, "start": start, "stop": stop, "seed": seed + chunk, "phases": phases,
                "status": status, "error": error, "seconds": seconds, "attempts": attempt + 1, "log": str(log)}

    @staticmethod
    def read_phase(phase: dict, count: int) -> tuple[list[int], list[int], list[int]]:
        files = phase["files"]
        return (harness.read_hex(Path(files["payloads"]), count), harness.read_hex(Path(files["in"]), count),
                harness.read_hex(Path(files["out"]), count))


def run_fast(session, image_ids, inputs, expected, *, backpressure: float, gaps: float, seed: int,
             chunks: int | None = None, measure_frames: int = 32, reset_test: bool = True,
             progress: bool = False, client=None) -> dict:
    """All frames through the harness in parallel chunks; returns the per-cycle bench's raw result
    format (frames, mismatches, errors, measure, reset) plus ``chunks``.

    ``client``: a Dask distributed client whose workers run the chunks (they must see the build
    folder at the same path); without one, local threads each drive a simulator process. A chunk
    whose task is lost (a worker died) is submitted once more."""
    spec = session.spec
    frames = len(inputs)
    ranges = chunk_ranges(frames, chunks or default_chunks(frames))
    fast = FastSession(session)
    # Sized for the whole run, not the largest chunk: a run in one chunk or in several shares a build.
    obj_dir, build_seconds = fast.build(frames)
    progress_files = [session.folder.run_dir(f"chunk{k}.progress") for k in range(len(ranges))]
    for path in progress_files:
        path.unlink(missing_ok=True)

    def one(k):
        a, b = ranges[k]
        return fast.run_chunk(k, a, b, inputs, obj_dir, backpressure=backpressure, gaps=gaps, seed=seed,
                              measure_frames=measure_frames, reset_test=reset_test,
                              progress_file=progress_files[k] if progress else None)

    started = time.perf_counter()
    total = frames + (measure_frames if reset_test else 0)
    if client is None:
        with ThreadPoolExecutor(max_workers=len(ranges)) as pool:
            futures = [pool.submit(one, k) for k in range(len(ranges))]
            if progress:
                _show_progress(futures, progress_files, total)
            chunk_results = [f.result() for f in futures]
    else:
        from concurrent.futures import CancelledError

        from distributed import KilledWorker

        futures = [client.submit(one, k, pure=False) for k in range(len(ranges))]
        if progress:
            _show_progress(futures, progress_files, total)
        chunk_results = []
        for k, future in enumerate(futures):
            try:
                chunk_results.append(future.result())
            except (KilledWorker, CancelledError, OSError):      # a lost worker: the chunk runs once more
                chunk_results.append(client.submit(one, k, pure=False).result())
    seconds = time.perf_counter() - started

    board = Scoreboard(spec.n_classes, spec.class_index_width, spec.score_width, image_ids, expected.scores,
                       expected.predictions)
    result = {"frames": [], "mismatches": [], "errors": [], "measure": {"frames": 0}, "reset": {"trials": []}}
    for chunk in chunk_results:
        a, b = chunk["start"], chunk["stop"]
        if chunk["error"]:
            result["errors"].append(f"chunk {chunk['chunk']} (frames {a}-{b - 1}) failed twice: {chunk['error']}; "
                                    f"see {chunk['log']}")
            continue
        statuses = {s["name"]: s for s in chunk["status"]}
        for phase in chunk["phases"]:
            status = statuses.get(phase["name"], {})
            if phase.get("reset_after") is not None:
                continue
            count = phase["frames"]
            frame_ids = np.arange(a, a + count)
            payloads, accepted, produced = fast.read_phase(phase, min(count, status.get("outputs", 0)))
            records = [board.check(int(frame), payload) for payload, frame in zip(payloads, frame_ids)]
            problem = None
            if status.get("stuck"):
                problem = (f"no output for {phase['watchdog']} cycles after {status['outputs']} of {count} "
                           "frames: the design is stuck")
            elif status.get("extra"):
                problem = f"{status['extra']} output beat(s) more than the {count} frames sent"
            if phase["name"] == "clean":
                result["measure"] = {"frames": len(records), "cycles_per_frame": steady_state_ii(produced),
                                     "latency_cycles": (produced[0] - accepted[0]) if produced else None,
                                     "output_cycles": produced, "accept_cycles": accepted}
                result["mismatches"] += [r for r in records if "mismatch" in r]
                if problem:
                    result["errors"].append(f"clean phase: {problem}")
            elif phase["name"].startswith("after-reset-"):
                where = phase["name"][len("after-reset-"):]
                bad = [r for r in records if "mismatch" in r]
                result["reset"]["trials"].append({
                    "reset_during": where, "frames_after": frame_ids.tolist(), "outputs": len(records),
                    "error": problem, "mismatches": bad,
                    "ok": problem is None and len(records) == count and not bad})
            else:
                for record, accept, output in zip(records, accepted, produced):
                    record.update(accept_cycle=accept, output_cycle=output, phase="random", chunk=chunk["chunk"])
                result["frames"] += records
                result["mismatches"] += [r for r in records if "mismatch" in r]
                if problem:
                    result["errors"].append(f"random-flow phase of chunk {chunk['chunk']} (gaps {gaps}, "
                                            f"backpressure {backpressure}): {problem}")
    result["chunks"] = [{key: c[key] for key in ("chunk", "start", "stop", "seed", "seconds", "attempts", "error")}
                        for c in chunk_results]
    result["sim_seconds"] = seconds
    result["verilator_build_seconds"] = build_seconds
    result["log"] = chunk_results[0]["log"] if chunk_results else None
    runs = [s for c in chunk_results for s in c["status"] if "cycles" in s]
    result["cycles_simulated"] = sum(s["cycles"] for s in runs)
    cpu = sum(s.get("cpu_seconds", 0.0) for s in runs)
    result["cycles_per_cpu_second"] = result["cycles_simulated"] / cpu if cpu else None
    result["mode"] = "fast"
    if not reset_test:
        result.pop("reset")
    return result


def _show_progress(futures, progress_files: list[Path], total: int) -> None:
    import sys

    from tqdm import tqdm
    bar = tqdm(total=total, unit="frame", desc="RTL simulation", file=sys.stderr, leave=False)
    while not all(f.done() for f in futures):
        time.sleep(0.5)
        done = 0
        for path in progress_files:
            try:
                done += int(path.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                pass
        bar.update(max(0, done - bar.n))
    bar.close()
