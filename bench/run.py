"""`make bench`: measure xnorflow end to end and write bench/results.json, bench/results.md and the
README's results table (between the bench markers).

Every figure is measured in this run. Timings that are cheap to repeat (golden throughput, compile
time) are medians over repeats; training, simulation and synthesis run once per configuration and
say so (n=1). Models are trained once and cached in bench/work/models.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

# The anchors we measure against (published figures; their builds need Vivado and take hours).
ANCHORS = [
    {"name": "FINN SFC-max (ZC706)", "fps": 12.3e6, "luts": 91_000, "accuracy": None, "dataset": "MNIST"},
    {"name": "BNN-PYNQ LFC-W1A1 (Z7020)", "fps": 357e3, "luts": 28_400, "accuracy": 0.984, "dataset": "MNIST"},
]

CONFIGS = [
    {"arch": "tfc", "dataset": "digits", "board": "icebreaker"},
    {"arch": "tfc", "dataset": "fashion-mnist", "board": "icebreaker"},
    # The default folding: the fastest design that fits, every weight in a block, within 25% of the
    # 85F's LUTs (compiler/fit.py: what nextpnr routes in minutes at 70 MHz).
    {"arch": "sfc", "dataset": "fashion-mnist", "board": "ulx3s-85f"},
    # SFC near the 85F's block-RAM bandwidth: half its LUTs (II 47 since the fit costs its adapters,
    # all 208 DP16KD), with the PLL at 95 MHz (2.02M frames/s at II 47) and nextpnr's default seed.
    # The `make bench-sweep` points of this design over seeds 1-4: bench/sweep-sfc-85f-share0.5-seeds.json.
    {"arch": "sfc", "dataset": "fashion-mnist", "board": "ulx3s-85f", "variant": "lut50", "lut_share": 0.5,
     "clock_mhz": 95},
    # LFC trained 4 epochs (87% on Fashion-MNIST, the figure its 15 epochs reach within 1.5 points),
    # every test image simulated.
    {"arch": "lfc", "dataset": "fashion-mnist", "board": "ulx3s-85f", "epochs": 4},
    # 8-bit pixels into a binary-weight first layer (DESIGN.md 2b), the same nets and recipe otherwise.
    {"arch": "tfc", "dataset": "fashion-mnist", "board": "icebreaker", "variant": "8bit", "input_bits": 8},
    {"arch": "sfc", "dataset": "fashion-mnist", "board": "ulx3s-85f", "variant": "8bit", "input_bits": 8},
    # The conv nets: scnv with its own recipe (training/train.py), every test image simulated. Their
    # PLL is set below the ~60-66 MHz their builds reached (bench/records.md, "Routing conv designs",
    # "scnv and cnv builds ..."): one build of 30-40 minutes instead of a 90 MHz try and a rebuild.
    {"arch": "scnv", "dataset": "fashion-mnist", "board": "ulx3s-85f", "clock_mhz": 50},
    # FINN's CNV wants 32x32xC images and CIFAR-10 is not on this machine: Fashion-MNIST written in
    # CIFAR-10's binary format (`fashion_as_cifar10`), 2 epochs on 10,000 images, so the hardware
    # figures are the real 32x32x3 CNV's and its accuracy says nothing about CIFAR-10.
    {"arch": "cnv", "dataset": "fashion-32x32x3", "board": "ulx3s-85f", "epochs": 2, "sim_images": 500,
     "clock_mhz": 55},
    # scnv on 8-bit pixels (DESIGN.md 2b: an int_conv first layer).
    {"arch": "scnv", "dataset": "fashion-mnist", "board": "ulx3s-85f", "variant": "8bit", "input_bits": 8,
     "clock_mhz": 50},
    # The training options of issue 15 on 1- and 8-bit inputs: distillation from a float teacher of the
    # same architecture (trained once per arch into work/models, `xnorflow train --float`) and
    # BinaryConnect's stochastic weights. They change the weights and thresholds only, so each builds
    # nearly the design of its plain row (scnv's at its plain rows' 50 MHz).
    *[{"arch": arch, "dataset": "fashion-mnist", "board": board, "variant": f"{bits_name}{option_name}", **bits,
       **option, **({"clock_mhz": 50} if arch == "scnv" else {})}
      for arch, board in (("tfc", "icebreaker"), ("sfc", "ulx3s-85f"), ("scnv", "ulx3s-85f"))
      for bits_name, bits in (("", {}), ("8bit-", {"input_bits": 8}))
      for option_name, option in (("teacher", {"teacher": "float"}), ("stochastic", {"stochastic_weights": True}))],
    # scnv's recipe for issue 13's 90%: 8-bit inputs, distilled from its float self trained first in the same
    # run (`--teacher auto`, so the training time is the whole recipe's) with the activations trained by
    # ApproxSign's gradient, on two threads to fit 15 minutes (bench/records.md, "scnv: ApproxSign with a
    # teacher").
    {"arch": "scnv", "dataset": "fashion-mnist", "board": "ulx3s-85f", "variant": "8bit-auto-approxsign",
     "input_bits": 8, "teacher": "auto", "activation_grad": "approxsign", "threads": 2, "clock_mhz": 50},
]

# Sweeps `make bench-sweep` runs (bench/run.py --sweep NAME): points built at once on a LocalCluster of
# one worker per core, to find a seed that meets the clock without naming one by hand (goals: wall
# time <= 0.6x the points' summed build times, best frames/s at clock >= 2M). Hours of CPU on a
# 2-core machine.
SWEEPS = {
    # SFC as the fit builds it at --lut-share 0.5 (II 47 since the fit costs adapters), at the clock
    # that makes 2M frames/s at that II, over nextpnr seeds 1-4.
    "sfc-85f-share0.5-seeds": {"arch": "sfc", "dataset": "fashion-mnist", "boards": "ulx3s-85f", "lut_shares": "0.5",
                               "clocks": "95", "seeds": "1-4", "images": 300},
}


def run_sweep_bench(name: str, out: Path, log) -> dict:
    """Run one of SWEEPS into out/work/sweeps/NAME; returns its figures (also in out/sweep-NAME.json)."""
    from distributed import Client

    from xnorflow.compiler.sweep import grid_points, local_cluster, run_sweep

    sweep = SWEEPS[name]
    work = out / "work"
    model_path, _ = trained_model(work, sweep["arch"], sweep["dataset"], log)
    points = grid_points([(str(model_path.absolute()), f"{sweep['arch']}-{sweep['dataset']}")], sweep["boards"],
                         lut_shares=sweep.get("lut_shares"), foldings=sweep.get("foldings"), clocks=sweep.get("clocks"),
                         seeds=sweep.get("seeds"))
    cluster = local_cluster()
    started = time.perf_counter()
    with Client(cluster) as client:
        workers = len(client.scheduler_info()["workers"])
        log(f"sweep {name}: {len(points)} points on {workers} workers")
        outcome = run_sweep(points, work / "sweeps" / name, images=sweep["images"], client=client)
    cluster.close()
    wall = time.perf_counter() - started
    # Each point's own build time, measured while it shared the machine with the others: their sum is
    # what the points took one after another at that speed (an upper bound of a serial run's time).
    summed = sum(r["seconds"] or 0 for r in outcome["rows"])
    met = [r for r in outcome["rows"] if (r["report"] or {}).get("timing_met") and r["report"].get("fps_at_clock")]
    best = max(met, key=lambda r: r["report"]["fps_at_clock"], default=None)
    figures = {"sweep": name, "measured_at": time.strftime("%Y-%m-%d %H:%M"), "points": len(points),
               "workers": workers, "wall_seconds": round(wall, 1), "summed_point_seconds": round(summed, 1),
               "wall_over_sum": round(wall / summed, 3) if summed else None,
               "failed": outcome["failed"], "best_point": best and best["point"],
               "best_fps_at_clock": best and best["report"]["fps_at_clock"],
               "fmax_by_point": {r["point"]: (r["report"] or {}).get("fmax_mhz") for r in outcome["rows"]}}
    (out / f"sweep-{name}.json").write_text(json.dumps(figures, indent=2))
    return figures


def config_name(config: dict) -> str:
    """tfc-digits-icebreaker, or with a variant's suffix (sfc-fashion-mnist-ulx3s-85f-lut50)."""
    base = f"{config['arch']}-{config['dataset']}-{config['board']}"
    return f"{base}-{config['variant']}" if config.get("variant") else base


def timed(fn, repeats=1):
    """(result of the last call, median seconds over repeats)."""
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return result, statistics.median(times)


def fashion_as_cifar10(work: Path, train_images: int = 10_000) -> str:
    """Fashion-MNIST as a CIFAR-10 binary folder (``cifar10:DIR``): each 28x28 image centred in 32x32
    with 0 pixels and copied to three channels, the first ``train_images`` training images over the
    five batch files and the whole test set; written once under ``work``."""
    from xnorflow.training.datasets import load_dataset

    folder = work / "data" / "fashion-32x32x3"
    if not (folder / "test_batch.bin").is_file():
        data = load_dataset("fashion-mnist")
        folder.mkdir(parents=True, exist_ok=True)

        def records(images, labels):
            padded = np.zeros((len(images), 32, 32), dtype=np.uint8)
            padded[:, 2:30, 2:30] = images.reshape(-1, 28, 28)
            rgb = np.repeat(padded[:, None], 3, axis=1).reshape(len(images), -1)
            return np.hstack([labels.astype(np.uint8)[:, None], rgb]).tobytes()

        parts = np.array_split(np.arange(train_images), 5)
        for n, part in enumerate(parts, start=1):
            (folder / f"data_batch_{n}.bin").write_bytes(records(data.train_images[part], data.train_labels[part]))
        (folder / "test_batch.bin").write_bytes(records(data.test_images, data.test_labels))
    return f"cifar10:{folder}"


# Bench-only dataset names -> the function that writes them and returns the dataset argument.
DERIVED_DATASETS = {"fashion-32x32x3": fashion_as_cifar10}


# Configuration keys that are training options (training.train.train's keywords).
TRAIN_OPTIONS = ("epochs", "input_bits", "teacher", "stochastic_weights", "activation_grad", "threads")


def trained_model(work: Path, arch: str, dataset: str, log, **options) -> tuple[Path, dict]:
    """The model file of ``arch`` on ``dataset`` trained with ``options`` (TRAIN_OPTIONS), trained once.
    ``teacher="float"`` distils from the float ``arch`` trained once for every model that asks for it."""
    from xnorflow.training.model_file import load_model_file
    from xnorflow.training.train import train

    suffix = "".join(f"-{key}{value}" for key, value in sorted(options.items()) if value is not None)
    path = work / "models" / f"{arch}-{dataset}{suffix}.pt"
    record = load_model_file(path) if path.exists() else None
    stale = record is not None and stale_model_reason(record, arch, options)
    if stale:
        log(f"retraining {path.name}: {stale}")
    if stale or record is None:
        source = DERIVED_DATASETS[dataset](work) if dataset in DERIVED_DATASETS else dataset
        if options.get("teacher") == "float":
            options = {**options, "teacher": float_teacher(work, arch, dataset, source, options.get("epochs"), log)}
        log(f"training {arch} on {dataset}{' with ' + suffix[1:] if suffix else ''}")
        train(arch, source, path, progress=False, **{k: v for k, v in options.items() if v is not None})
        record = load_model_file(path)
    return path, record


def float_teacher(work: Path, arch: str, dataset: str, source: str, epochs: int | None, log) -> Path:
    """The float ``arch`` (`xnorflow train --float`) the bench's distilled models learn from, trained once
    per recipe: a cached teacher trained with another recipe than today's, or one that does not read as a
    teacher of ``arch`` on ``source`` (training/distill.py's checks), is retrained."""
    from xnorflow.training.datasets import canonical_dataset_name
    from xnorflow.training.distill import load_teacher_file
    from xnorflow.training.model_file import ModelFileError
    from xnorflow.training.train import train

    path = work / "models" / f"{arch}-{dataset}{'' if epochs is None else f'-epochs{epochs}'}-float.pt"
    reason = None
    if path.exists():
        try:
            _, record = load_teacher_file(path, arch, canonical_dataset_name(source))
        except ModelFileError as exc:
            reason = f"the cached one is unusable ({exc})"
        else:
            changed = recipe_changes(record["train"], record["dataset"], arch, {"epochs": epochs})
            reason = changed and f"the cached one's {', '.join(changed)} differ from today's recipe"
    if reason or not path.exists():
        log(f"training the float {arch} on {dataset} (a teacher)" + (f": {reason}" if reason else ""))
        train(arch, source, path, progress=False, epochs=epochs, float_model=True)
    return path


def recipe_changes(train: dict, dataset: str, arch: str, options: dict) -> list[str]:
    """The recipe keys (epochs, batch size, lr) in which a model file's ``train`` record differs from what
    training ``arch`` on ``dataset`` with ``options`` uses today."""
    from xnorflow.training.train import recipe_defaults

    defaults = recipe_defaults(dataset, arch)
    wanted = {**defaults, **{k: v for k, v in options.items() if k in defaults and v is not None}}
    return [k for k in ("epochs", "batch_size", "lr") if train.get(k) != wanted[k]]


def stale_model_reason(record: dict, arch: str, options: dict) -> str | None:
    """Why a cached model file is not what training ``arch`` with ``options`` gives today (the zoo's
    layer structure, or the default recipe), or None when it is."""
    from xnorflow.training.datasets import BITS_FORMAT, input_scale
    from xnorflow.training.model_file import extract_layers
    from xnorflow.training.zoo import build_model

    fmt = record["input"]
    norm = None if fmt["format"] == BITS_FORMAT else (fmt["mean"], input_scale(fmt))
    shape = tuple(record["image_shape"])
    zoo = extract_layers(build_model(arch, shape, n_classes=record["n_classes"], input_norm=norm), image_shape=shape)

    def structure(layers):
        return [(layer["kind"], layer.get("pool"), layer.get("padding"), layer.get("in_shape")) for layer in layers]

    if structure(zoo) != structure(record["layers"]):
        return "the zoo's layers changed since it was trained"
    changed = recipe_changes(record["train"], record["dataset"], arch, options)
    return f"its {', '.join(changed)} differ from today's recipe" if changed else None


def golden_throughput(model_path: Path, repeats: int = 5, frames: int = 20_000) -> dict:
    """Images/s of the golden model on one core (its numba kernel is single-threaded), after one warm-up
    call so JIT compilation is not timed."""
    from xnorflow.compiler.model import model_from_file_dict
    from xnorflow.compiler.passes import lower_to_spec, streamline
    from xnorflow.sim import golden
    from xnorflow.training.model_file import load_model_file

    spec = lower_to_spec(streamline(model_from_file_dict(load_model_file(model_path))))
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2, (frames, spec.input_bits), dtype=np.uint8)
    golden.execute(spec, bits[:1])
    _, seconds = timed(lambda: golden.execute(spec, bits), repeats)
    return {"golden_images_per_s": frames / seconds, "golden_frames": frames, "golden_repeats": repeats}


def run_config(config: dict, work: Path, synth: bool, sim_images: int | None, log) -> dict:
    from xnorflow.compiler.build import compile_model, simulate_build, synthesize_build
    from xnorflow.compiler.report import read_report
    from xnorflow.sim.native import native_rate

    arch, dataset, board = config["arch"], config["dataset"], config["board"]
    name = config_name(config)
    model_path, record = trained_model(work, arch, dataset, log, **{k: config[k] for k in TRAIN_OPTIONS if k in config})
    build = work / "builds" / name
    row = {"config": name, "measured_at": time.strftime("%Y-%m-%d %H:%M"), **{k: v for k, v in config.items() if k in ("arch", "dataset", "board", "lut_share", "pnr_seed", *TRAIN_OPTIONS)},
           "teacher_accuracy": (record["train"].get("teacher") or {}).get("accuracy"),
           "folding": "by hand" if config.get("folding") else (
               f"fastest within {config['lut_share']:.0%} of the LUTs (--lut-share)" if config.get("lut_share")
               else "fastest that fits"),
           "train_seconds": record["train"].get("seconds"),
           "train_epochs": record["train"].get("epochs")}

    log(f"{name}: compile (median of 3)")
    _, row["compile_seconds_median"] = timed(
        lambda: compile_model(model_path, build, board_name=board, folding=config.get("folding"),
                              lut_share=config.get("lut_share"), log=lambda *_: None), repeats=3)

    sim_images = config.get("sim_images", sim_images)
    # Fast mode with the default gaps and backpressure, first in one simulator process, then in the
    # default chunks (one per core): the report keeps the second run, the row both rates.
    log(f"{name}: simulate {'all' if sim_images is None else sim_images} test images in Verilator, one process")
    one = simulate_build(build, images=sim_images, progress=False, chunks=1)["simulation"]
    row["sim_one_process_seconds"] = one["sim_seconds"]
    row["sim_one_process_images_per_s"] = one["images_per_second"]
    log(f"{name}: simulate them again in the default chunks")
    t0 = time.perf_counter()
    simulate_build(build, images=sim_images, progress=False)
    row["sim_seconds"] = time.perf_counter() - t0
    log(f"{name}: the native rate of its harness (bare C++ loop)")
    native = native_rate(build, work / "native" / name, images=sim_images)
    row["native_frames_per_cpu_s"] = native["frames_per_cpu_second"]
    row["native_cycles_per_cpu_s"] = native["cycles_per_cpu_second"]
    if synth and config.get("synth", True):
        log(f"{name}: synthesize for {board}")
        synthesize_build(build, progress=False, clock_mhz=config.get("clock_mhz", "auto"), seed=config.get("pnr_seed"))
    report = read_report(build)
    row.update({key: report.get(key) for key in (
        "accuracy_torch", "accuracy_golden", "torch_golden_agreement", "accuracy_rtl", "images_simulated",
        "rtl_mismatches", "cycles_per_frame", "analytic_cycles_per_frame", "latency_cycles", "fmax_mhz", "fps",
        "luts", "ffs", "brams", "synth_seconds", "device", "layers", "fps_at_clock", "clock_mhz", "timing_met",
        "clock_attempts_mhz", "fmax_attempts_mhz", "seed_attempts")})
    row["bound_cycles_per_frame"] = (report.get("memory_bandwidth") or {}).get("bound_cycles_per_frame")
    row["estimate_luts"] = (report.get("estimate") or {}).get("luts")
    row["estimate_brams"] = (report.get("estimate") or {}).get("brams")
    sim = report.get("simulation") or {}
    row["rtl_images_per_s"] = sim.get("images_per_second")
    row["sim_chunks_seconds"] = sim.get("sim_seconds")       # the simulators' run alone, no build or set-up
    row["sim_chunks"] = len(sim.get("chunks") or [])
    row["sim_parallel_speedup"] = (row["sim_one_process_seconds"] / row["sim_chunks_seconds"]
                                   if row["sim_chunks_seconds"] and row["sim_chunks"] > 1 else None)
    # A simulator process of simulate against the bare C++ loop (sim/native.py) on the same harness:
    # cycles per CPU second of each, so the ratio does not depend on what else the machine runs.
    row["sim_cycles_per_cpu_s"] = sim.get("cycles_per_cpu_second")
    row["sim_over_native"] = (row["sim_cycles_per_cpu_s"] / row["native_cycles_per_cpu_s"]
                              if row["sim_cycles_per_cpu_s"] and row["native_cycles_per_cpu_s"] else None)
    row["sim_workers"] = sim.get("workers")
    row["verilator_build_seconds"] = sim.get("verilator_build_seconds")
    row["fps_per_lut"] = row["fps"] / row["luts"] if row.get("fps") and row.get("luts") else None
    row.update(golden_throughput(model_path))
    return row


def merged_rows(results_file: Path, new_rows: list[dict]) -> list[dict]:
    """Rows of an earlier run for other configurations, replaced where this run measured them again
    (so configurations can be measured in separate runs), in the order of CONFIGS."""
    rows = {}
    if results_file.exists():
        rows = {r["config"]: r for r in json.loads(results_file.read_text()).get("results", [])}
    rows.update({r["config"]: r for r in new_rows})
    order = [config_name(c) for c in CONFIGS]
    return sorted(rows.values(), key=lambda r: order.index(r["config"]) if r["config"] in order else len(order))


def fmt(value, kind=""):
    if value is None:
        return "—"
    if kind == "pct":
        return f"{100 * value:.2f}%"
    if kind == "int":
        return f"{value:,.0f}"
    if kind == "s":
        return f"{value:.1f} s"
    if kind == "f1":
        return f"{value:.1f}"
    if kind == "f2":
        return f"{value:.2f}"
    from xnorflow.compiler.report import format_figure

    return format_figure(value)


def markdown_table(rows: list[dict]) -> str:
    header = ("| config | accuracy torch / golden / RTL | mismatches | II meas. / analytic | Fmax MHz | "
              "frames/s | clock MHz | frames/s at clock | fps/LUT | LUTs (est.) | mem. blocks (est.) | compile | "
              "synth | RTL img/s | sim / native Mcycles per CPU s |")
    lines = [header, "|" + "|".join("---" for _ in range(15)) + "|"]
    for r in rows:
        lines.append("| " + " | ".join([
            f"{r['arch'].upper()} / {r['dataset']} / {r['board']}"
            + variant_options(r),
            " / ".join(fmt(r.get(k), "pct") for k in ("accuracy_torch", "accuracy_golden", "accuracy_rtl")),
            f"{fmt(r.get('rtl_mismatches'))} of {fmt(r.get('images_simulated'), 'int')}",
            f"{fmt(r.get('cycles_per_frame'))} / {fmt(r.get('analytic_cycles_per_frame'))}",
            fmt(r.get("fmax_mhz"), "f1"),
            fmt(r.get("fps"), "int"),
            fmt(r.get("clock_mhz"), "f1"),
            fmt(r.get("fps_at_clock"), "int"),
            fmt(r.get("fps_per_lut"), "f1"),
            f"{fmt(r.get('luts'), 'int')} ({fmt(r.get('estimate_luts'), 'int')})",
            f"{fmt(r.get('brams'))} ({fmt(r.get('estimate_brams'))})",
            fmt(r.get("compile_seconds_median"), "s"),
            fmt(r.get("synth_seconds"), "s"),
            fmt(r.get("rtl_images_per_s"), "int"),
            " / ".join(fmt(r[k] / 1e6, "f2") if r.get(k) else "—"
                       for k in ("sim_cycles_per_cpu_s", "native_cycles_per_cpu_s")),
        ]) + " |")
    lines.append("")
    lines.append("— : not measured in this run. RTL accuracy is over the images simulated. Frames/s are at Fmax (DESIGN.md); each bitstream runs at the "
                 "clock its PLL was set to, at or below Fmax, which gives the frames/s at clock (`clock_mhz`, `fps_at_clock` in each build's "
                 "report.json, bench/work/builds/).")
    lines.append("")
    lines.append(options_table(rows))
    lines.append("")
    lines.append(bandwidth_table(rows))
    lines.append("")
    lines.append("The memory-bandwidth bound is the cycles per frame in which every memory block of the board, read at "
                 "its widest every cycle, delivers the weight bits a frame reads (a conv's once per output pixel): a bound "
                 "for weights in block RAM, which weights kept in logic (TFC on digits) can beat. At the default LUT share "
                 "the LUTs, not the blocks, bind SFC and LFC.")
    lines.append("")
    lines.append("| anchor (published) | accuracy | frames/s | LUTs | fps/LUT | build |")
    lines.append("|---|---|---|---|---|---|")
    for a in ANCHORS:
        lines.append(f"| {a['name']} | {fmt(a['accuracy'], 'pct')} ({a['dataset']}) | {fmt(a['fps'], 'int')} | "
                     f"{fmt(a['luts'], 'int')} | {a['fps'] / a['luts']:.1f} | Vivado, hours |")
    return "\n".join(lines)


def options_table(rows: list[dict]) -> str:
    """The Fashion-MNIST rows of TFC, SFC and scnv by input bits and training option (issue 15): accuracy
    and the hardware each model was built into."""
    lines = [("| net / board | inputs | training | epochs | accuracy torch / golden / RTL | II | LUTs | mem. blocks | "
              "Fmax MHz | frames/s at clock |"), "|---|---|---|---|---|---|---|---|---|---|"]
    nets = ("tfc", "sfc", "scnv")
    chosen = [r for r in rows if r.get("dataset") == "fashion-mnist" and r["arch"] in nets and not r.get("lut_share")]
    for r in sorted(chosen, key=lambda r: (nets.index(r["arch"]), r.get("input_bits") or 1,
                                          bool(r.get("teacher")) + 2 * bool(r.get("stochastic_weights")),
                                          bool(r.get("activation_grad")))):
        training = ("distilled from a float teacher" + (f" ({fmt(r['teacher_accuracy'], 'pct')})" if r.get("teacher_accuracy") else "")
                    if r.get("teacher") else "stochastic weights" if r.get("stochastic_weights") else "plain")
        training += (f", {r['activation_grad']} gradient" if r.get("activation_grad") else "") + (
            f", {r['threads']} threads" if r.get("threads") else "")
        lines.append(f"| {r['arch'].upper()} / {r['board']} | {r.get('input_bits') or 1}-bit | {training} | "
                     f"{fmt(r.get('train_epochs'), 'int')} | "
                     + " / ".join(fmt(r.get(k), "pct") for k in ("accuracy_torch", "accuracy_golden", "accuracy_rtl"))
                     + f" | {fmt(r.get('cycles_per_frame'), 'int')} | {fmt(r.get('luts'), 'int')} | {fmt(r.get('brams'))} | "
                       f"{fmt(r.get('fmax_mhz'), 'f1')} | {fmt(r.get('fps_at_clock'), 'int')} |")
    lines += ["", ("Every model above is simulated in Verilator on all 10,000 test images against the golden model. The "
                   "training options change the weights and thresholds only, so each builds nearly its plain row's "
                   "design (the thresholds' range sets their width, which can move the fit by a step: SFC 8-bit with "
                   "stochastic weights is II 329). scnv's rows are built with their PLL at 50 MHz. The training seed "
                   "moves scnv's accuracy more than distillation does (bench/records.md, \"scnv with 8-bit inputs over "
                   "seeds\"). scnv's approxsign row is issue 13's recipe: its float teacher is trained first in the "
                   "same run (`--teacher auto`), so its training time is the whole recipe's, on two threads; with "
                   "ApproxSign's gradient the distilled scnv gains over seeds 0-2 (bench/records.md, \"scnv: "
                   "ApproxSign with a teacher\").")]
    return "\n".join(lines)


def bandwidth_table(rows: list[dict]) -> str:
    """Each row's II against its memory-bandwidth bound: the cycles per frame if every block the board
    has were read at its full width every cycle (compiler/fit.py; the `memory_bandwidth` of report.json)."""
    lines = ["| config | II | memory-bandwidth bound | II / bound | LUTs | mem. blocks | frames/s at clock |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        ii, bound = r.get("cycles_per_frame"), r.get("bound_cycles_per_frame")
        lines.append(f"| {r['arch'].upper()} / {r['dataset']} / {r['board']}{variant_options(r)} | {fmt(ii, 'int')} | "
                     f"{fmt(bound, 'int')} | {fmt(ii / bound if ii and bound else None, 'f2')} | {fmt(r.get('luts'), 'int')} | "
                     f"{fmt(r.get('brams'))} | {fmt(r.get('fps_at_clock'), 'int')} |")
    return "\n".join(lines)


def variant_options(row: dict) -> str:
    """' (--lut-share 0.5 --pnr-seed 2)': the options a row was built with beyond the defaults."""
    options = [f"{option} {row[key]:g}" for key, option in (("lut_share", "--lut-share"), ("pnr_seed", "--pnr-seed"),
                                                             ("input_bits", "--input-bits"), ("epochs", "--epochs"))
               if row.get(key)]
    options += ["--stochastic-weights"] * bool(row.get("stochastic_weights"))
    options += [f"--{key.replace('_', '-')} {row[key]}" for key in ("teacher", "activation_grad", "threads") if row.get(key)]
    return f" ({' '.join(options)})" if options else ""


def extra_lines(rows: list[dict]) -> str:
    lines = []
    for r in rows:
        when = f"measured {r['measured_at']}" if r.get("measured_at") else "measured in an earlier session, older RTL"
        lines.append(f"- {r['config']} ({when}): folding {r.get('folding', 'fastest that fits')}, golden model {fmt(r.get('golden_images_per_s'), 'int')} images/s "
                     f"(one core, median of {r.get('golden_repeats')}), training {fmt(r.get('train_seconds'), 's')} "
                     f"({r.get('train_epochs')} epochs{', its float teacher included' if r.get('teacher') == 'auto' else ''}"
                     + (f", {r['threads']} threads" if r.get("threads") else "") + f"), Verilator build {fmt(r.get('verilator_build_seconds'), 's')}, "
                     f"simulation of {fmt(r.get('images_simulated'), 'int')} images {fmt(r.get('sim_seconds'), 's')}"
                     + simulation_scaling(r) + ", "
                     f"torch–golden agreement {fmt(r.get('torch_golden_agreement'), 'pct')}"
                     + synthesis_attempts(r))
    return "\n".join(lines)


def simulation_scaling(row: dict) -> str:
    """' (simulators alone: 8.1 s in one process, 4.3 s in 2 chunks, 1.88x, a simulator process at 0.95x
    the native loop's cycles per CPU second)' from a row's figures; '' when the row predates them."""
    if not row.get("sim_one_process_seconds"):
        return ""
    parts = [f"simulators alone: {fmt(row['sim_one_process_seconds'], 's')} in one process"]
    if row.get("sim_parallel_speedup"):
        parts.append(f"{fmt(row['sim_chunks_seconds'], 's')} in {row['sim_chunks']} chunks, "
                     f"{row['sim_parallel_speedup']:.2f}x")
    if row.get("sim_over_native"):
        parts.append(f"a simulator process at {row['sim_over_native']:.2f}x the native loop's cycles per CPU second")
    return f" ({', '.join(parts)})"


def synthesis_attempts(row: dict) -> str:
    """', nextpnr builds (clock MHz, seed: Fmax MHz): 90, seed 2: 99.2' from a row's attempts; '' if none."""
    from xnorflow.boards.synth import NEXTPNR_DEFAULT_SEED

    clocks, fmaxes = row.get("clock_attempts_mhz") or [], row.get("fmax_attempts_mhz") or []
    seeds = row.get("seed_attempts") or [None] * len(clocks)
    builds = [f"{clock:g}, seed {seed or NEXTPNR_DEFAULT_SEED}: {fmt(fmax, 'f1')}"
              for clock, seed, fmax in zip(clocks, seeds, fmaxes)]
    return f", nextpnr builds (clock MHz, seed: Fmax MHz): {'; '.join(builds)}" if builds else ""


def update_readme(table: str, extras: str, meta: dict) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    if start not in text or end not in text:
        return
    body = (f"{start}\n_Measured by `make bench` on {meta['date']} ({meta['machine']}); "
            f"regenerated, not typed._\n\n{table}\n\n{extras}\n{end}")
    before, rest = text.split(start, 1)
    after = rest.split(end, 1)[1]
    readme.write_text(before + body + after)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    parser.add_argument("--configs", default="all", help="comma-separated indices into CONFIGS, or 'all'")
    parser.add_argument("--no-synth", action="store_true")
    parser.add_argument("--sim-images", type=int, default=None, help="images to simulate (default: all)")
    parser.add_argument("--render", action="store_true",
                        help="measure nothing: rewrite results.md and the README table from results.json")
    parser.add_argument("--sweep", choices=sorted(SWEEPS), default=None,
                        help="run this sweep of SWEEPS instead of the configurations (writes sweep-NAME.json)")
    args = parser.parse_args(argv)

    def log(message):
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    if args.sweep:
        print(json.dumps(run_sweep_bench(args.sweep, args.out, log), indent=2))
        return 0
    work = args.out / "work"
    configs = CONFIGS if args.configs == "all" else [CONFIGS[int(i)] for i in args.configs.split(",")]
    meta = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}"}
    args.out.mkdir(parents=True, exist_ok=True)
    results_file = args.out / "results.json"
    if args.render:
        configs = []
        meta = json.loads(results_file.read_text())["meta"]
    for config in configs:
        # Saved after every configuration: a long run that stops keeps what it measured.
        rows = merged_rows(results_file, [run_config(config, work, not args.no_synth, args.sim_images, log)])
        results_file.write_text(json.dumps({"meta": meta, "anchors": ANCHORS, "results": rows},
                                           indent=2, default=float))
    rows = merged_rows(results_file, [])
    table, extras = markdown_table(rows), extra_lines(rows)
    (args.out / "results.md").write_text(f"# xnorflow benchmark\n\n{meta['date']}, {meta['machine']}\n\n"
                                         f"{table}\n\n{extras}\n")
    update_readme(table, extras, meta)
    print(table)
    print(extras)
    return 0


if __name__ == "__main__":
    sys.exit(main())
