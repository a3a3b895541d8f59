"""Calibrate the compiler's resource estimate against real Yosys + nextpnr runs.

Synthesizes a spread of networks (random weights and thresholds, memories placed by
`compiler.fit.place_for_board` exactly as the compiler does) for the board top (UART + Network) and
records into bench/calibration.json, per design:

- the spec's shape: layer sizes, (PE, SIMD) per layer, where each memory was placed;
- what `synthesize` reports (``luts`` is nextpnr's ICESTORM_LC on iCE40, TRELLIS_COMB on ECP5);
- Yosys' post-synthesis cell counts, in total and per block of the hierarchy (each MVTU, each width
  adapter, the UART/FIFO/top), read from the netlist Yosys hands to nextpnr: its cell names keep
  the hierarchy (``core.network.mvtu0....``);
- on iCE40, per block, the flip-flops and carries that cannot share a logic cell with a LUT (an FF
  whose D input is not the sole load of a LUT output, a carry with no LUT on its inputs), since a
  logic cell is one LUT4 + one FF + one carry and nextpnr spends a cell on each of these;
- where Yosys put every memory.

Designs run one at a time (the machine is shared). Usage::

    .venv/bin/python bench/calibrate_estimate.py                 # synthesize all designs
    .venv/bin/python bench/calibrate_estimate.py --only tfc64-a   # one design (merged into the file)
    .venv/bin/python bench/calibrate_estimate.py --reanalyse      # re-read the build folders
    .venv/bin/python bench/calibrate_estimate.py --table          # estimate vs synthesis, no synthesis
    .venv/bin/python bench/calibrate_estimate.py --fit            # refit compiler/analysis.py's LOGIC_MODELS

The full run took 10.4 minutes of synthesis on 2026-11-29 (bench/calibration.json: total_synth_seconds).

The stored figures are what tests/boards/test_estimate.py checks `estimate_resources` against.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter, defaultdict
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

import numpy as np

from xnorflow.boards.registry import get_board
from xnorflow.boards.synth import STAT_FILE, SynthError, synthesize
from xnorflow.compiler.analysis import estimate_resources
from xnorflow.compiler.fit import place_for_board
from xnorflow.hw.spec import LayerSpec, NetworkSpec

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "calibration.json"
DEFAULT_WORK = Path("/tmp/xnorflow-calibration")

TFC64 = [64, 64, 64, 64, 10]
TFC784 = [784, 64, 64, 64, 10]
SFC = [784, 256, 256, 256, 10]

# name -> (board, layer sizes, (PE, SIMD) per layer). Foldings span the SIMD widths, PE counts,
# and memory placements (all banks in EBR; some layers' banks in logic because EBR ran out).
DESIGNS = {
    "tfc64-a": ("icebreaker", TFC64, [(13, 13)] * 3 + [(2, 13)]),
    "tfc64-b": ("icebreaker", TFC64, [(4, 16)] * 3 + [(1, 16)]),
    "tfc64-c": ("icebreaker", TFC64, [(8, 16)] * 3 + [(2, 16)]),
    "tfc64-d": ("icebreaker", TFC64, [(2, 8)] * 3 + [(1, 8)]),
    "tfc784-a": ("icebreaker", TFC784, [(4, 32), (2, 16), (2, 16), (1, 16)]),
    "tfc784-b": ("icebreaker", TFC784, [(8, 32), (4, 16), (4, 16), (1, 16)]),
    "tfc784-c": ("icebreaker", TFC784, [(16, 16), (4, 16), (4, 16), (1, 16)]),
    "tfc784-d": ("icebreaker", TFC784, [(2, 16), (1, 8), (1, 8), (1, 8)]),
    # The compiler's own choice for Fashion-MNIST on the UP5K (banks that fill 16-bit EBRs).
    "tfc784-e": ("icebreaker", TFC784, [(22, 16), (1, 32), (2, 16), (3, 8)]),
    # Does not fit the UP5K: nextpnr stops after packing, which still tells the logic cells needed.
    "tfc64-e": ("icebreaker", TFC64, [(8, 32)] * 3 + [(2, 32)]),
    "sfc-a": ("ulx3s-85f", SFC, [(16, 32), (16, 16), (16, 16), (2, 16)]),
    "sfc-b": ("ulx3s-85f", SFC, [(32, 32), (32, 32), (32, 32), (5, 32)]),
}


# --- the designs -----------------------------------------------------------------------------------
def random_spec(sizes: list[int], folding: list[tuple[int, int]], seed: int = 0) -> NetworkSpec:
    """Random weight bits, and thresholds spread over the middle half of 0..n_in so that Yosys cannot
    shrink the threshold ROMs to a few varying low bits (as with a narrow spread)."""
    rng = np.random.default_rng(seed)
    layers = []
    for k, (n_in, n_out) in enumerate(pairwise(sizes)):
        weights = rng.integers(0, 2, size=(n_out, n_in), dtype=np.uint8)
        last = k == len(sizes) - 2
        thresholds = None if last else rng.integers(n_in // 4, 3 * n_in // 4 + 1, size=n_out).astype(np.int64)
        layers.append(LayerSpec(n_in, n_out, weights, thresholds))
    return NetworkSpec(tuple(layers), name="-".join(map(str, sizes))).with_folding(folding)


def placed_spec(board_name: str, sizes, folding, seed: int = 0) -> NetworkSpec:
    """The spec as the compiler builds it for the board (`place_for_board`)."""
    board = get_board(board_name)
    spec = place_for_board(random_spec(sizes, folding, seed), board)
    spec.validate()
    return spec


def spec_from_record(record: dict) -> NetworkSpec:
    """Rebuild a stored design's spec with its recorded memory placement: the same random weights and
    thresholds (its seed), since the threshold ROMs' widths depend on their contents."""
    spec = random_spec(record["sizes"], [tuple(f) for f in record["folding"]], record.get("seed", 0))
    return replace(spec, layers=placed_layers(spec, record))


def placed_layers(spec: NetworkSpec, record: dict) -> tuple:
    """``spec``'s layers with a stored design's memory placement and weight packing."""
    return tuple(replace(layer, weight_style=placed["weight_style"], buffer_style=placed["buffer_style"],
                         weight_packing=placed.get("weight_packing", 1))
                 for layer, placed in zip(spec.layers, record["layers"]))


# --- netlist analysis --------------------------------------------------------------------------------
def block_of(cell_name: str, adapters: set[str] = frozenset()) -> str:
    """The hierarchy block a cell of the flattened netlist belongs to: 'mvtu0', 'adapter1',
    'adapter_in', 'label_select' (the output op after the last MVTU, counted with that layer),
    'network' (the hidden layers' output registers and threshold comparators),
    'uart_rx', 'uart_tx', 'rx_fifo' or 'top' (the rest: board glue, the power-on reset timer).

    Yosys names a cell after a wire it drives, and a stream between two blocks is named after the
    consumer's input port (``core.network.adapter0.i__payload``), so cells named after an input
    payload are given to its producer: the FIFO for the first block, the adapter feeding an engine
    (``adapters``: those in the design), else the previous engine's output stage ('network').
    """
    parts = cell_name.split(".")
    if parts[:2] != ["core", "network"] or len(parts) < 3:
        if parts[0] == "core" and len(parts) > 2 and parts[1] in ("uart_rx", "uart_tx", "rx_fifo"):
            return parts[1]
        return "top"
    if len(parts) >= 4 and parts[2] == "label_select":
        return "label_select"
    if len(parts) < 4 or not re.match(r"(mvtu|adapter|slice)", parts[2]):
        return "network"
    # A width adapter's register slice (hw/network.py) counts as part of that adapter.
    block = re.sub(r"^slice", "adapter", parts[2])
    if not parts[3].startswith("i__payload"):
        return block
    if block == "adapter_in":
        return "rx_fifo"
    if block.startswith("adapter"):
        return "network"
    index = int(block.removeprefix("mvtu"))
    feeder = "adapter_in" if index == 0 else f"adapter{index - 1}"
    return feeder if feeder in adapters else ("rx_fifo" if index == 0 else "network")


def netlist_breakdown(netlist_file: Path, family: str) -> dict:
    """Cell counts per hierarchy block, plus on iCE40 the FFs and carries that need a logic cell of
    their own (nextpnr packs an FF with the LUT driving its D only when that LUT drives nothing else,
    and a carry with the LUT computing the same sum bit)."""
    netlist = json.loads(netlist_file.read_text())
    module = next(m for m in netlist["modules"].values() if m.get("attributes", {}).get("top"))
    cells = module["cells"]
    adapters = {name.split(".")[2] for name in cells if name.startswith("core.network.adapter")}
    per_block: dict[str, Counter] = defaultdict(Counter)
    for name, cell in cells.items():
        if not cell["type"].startswith("$"):
            per_block[block_of(name, adapters)][cell["type"]] += 1
    if family == "ice40":
        for block, unpaired in ice40_unpaired(cells, adapters).items():
            per_block[block].update(unpaired)
    return {block: dict(sorted(counts.items())) for block, counts in sorted(per_block.items())}


def ice40_unpaired(cells: dict, adapters: set[str]) -> dict[str, Counter]:
    drivers, loads = {}, defaultdict(int)
    for name, cell in cells.items():
        for port, bits in cell["connections"].items():
            direction = cell.get("port_directions", {}).get(port, "input")
            for bit in bits:
                if isinstance(bit, str):   # constant
                    continue
                if direction == "output":
                    drivers[bit] = name
                else:
                    loads[bit] += 1
    lut_inputs = set()
    for cell in cells.values():
        if cell["type"] == "SB_LUT4":
            c = cell["connections"]
            lut_inputs.add((str(c["I1"][0]), str(c["I2"][0]), str(c["I3"][0])))
    result: dict[str, Counter] = defaultdict(Counter)
    for name, cell in cells.items():
        kind = cell["type"]
        if kind.startswith("SB_DFF"):
            d = cell["connections"]["D"][0]
            driver = drivers.get(d) if not isinstance(d, str) else None
            paired = driver is not None and cells[driver]["type"] == "SB_LUT4" and loads[d] == 1
            if not paired:
                result[block_of(name, adapters)]["unpaired_ffs"] += 1
        elif kind == "SB_CARRY":
            c = cell["connections"]
            if (str(c["I0"][0]), str(c["I1"][0]), str(c["CI"][0])) not in lut_inputs:
                result[block_of(name, adapters)]["unpaired_carries"] += 1
    return result


def yosys_cells(build: Path) -> dict:
    stat = json.loads((build / STAT_FILE).read_text())
    design = stat.get("design") or next(iter(stat["modules"].values()))
    return {k: v for k, v in design["num_cells_by_type"].items() if not k.startswith("$")}


def nextpnr_cells(build: Path) -> dict:
    path = build / "xnorflow.report.json"
    if not path.is_file():   # nextpnr stopped before writing its report (the design did not fit)
        return {}
    report = json.loads(path.read_text())
    return {k: v["used"] for k, v in report["utilization"].items() if v["used"]}


def packed_logic_cells(build: Path) -> int | None:
    """When the design overflows the device, nextpnr's placer still says how many logic cells the
    packed design needs ("... of 5605 ICESTORM_LCs"): that is the figure to compare against."""
    log = build / "xnorflow.tim"
    text = log.read_text(errors="replace") if log.is_file() else ""
    found = re.search(r"of (\d+) ICESTORM_LCs", text)
    return int(found.group(1)) if found else None


# --- running -----------------------------------------------------------------------------------------
def design_record(name: str, spec: NetworkSpec, board_name: str, sizes, folding, seed: int) -> dict:
    return {
        "name": name, "board": board_name, "family": get_board(board_name).family,
        "sizes": list(sizes), "folding": [list(f) for f in folding], "seed": seed,
        "layers": [{"pe": l.pe, "simd": l.simd, "weight_style": l.weight_style,
                    "buffer_style": l.buffer_style, "weight_packing": l.weight_packing} for l in spec.layers],
    }


def measure(record: dict, build: Path, synthesized: dict | None) -> dict:
    """Add the tools' figures (from `synthesize`'s result when given, else re-read from the folder)."""
    from xnorflow.boards.synth import parse_reports
    board = get_board(record["board"])
    figures = synthesized or parse_reports(build, board)
    previous = record.get("synthesized", {})
    record["synthesized"] = {
        "luts": figures["luts"] if figures["luts"] is not None else packed_logic_cells(build),
        "ffs": figures["ffs"], "brams": figures["brams"], "fmax_mhz": figures["fmax_mhz"],
        "synth_seconds": figures.get("synth_seconds", previous.get("synth_seconds")),
        "stage_seconds": figures.get("stage_seconds", previous.get("stage_seconds")),
    }
    if "error" in previous and synthesized is None:
        record["synthesized"]["error"] = previous["error"]
    record["yosys_cells"] = yosys_cells(build)
    record["nextpnr_cells"] = nextpnr_cells(build)
    record["per_block"] = netlist_breakdown(build / "xnorflow.json", board.family)
    record["memories"] = figures["memories"]
    return record


def load(path: Path) -> dict:
    if path.is_file():
        return json.loads(path.read_text())
    return {"about": __doc__.splitlines()[0], "designs": {}}


def save(path: Path, data: dict) -> None:
    data["total_synth_seconds"] = round(sum(
        d["synthesized"].get("synth_seconds") or 0 for d in data["designs"].values()), 1)
    path.write_text(json.dumps(data, indent=1) + "\n")


def percent_error(estimated, measured) -> str:
    return f"{(estimated - measured) / measured:+.0%}" if estimated is not None and measured else "-"


def table(data: dict) -> str:
    """Estimate vs synthesis per design (Markdown), with the relative errors."""
    rows = ["design | board | est. luts | luts | err | est. ffs | ffs | err | est. brams | brams",
            "--- | --- | --- | --- | --- | --- | --- | --- | --- | ---"]
    for record in data["designs"].values():
        estimate = estimate_resources(spec_from_record(record), record["family"])
        got = record["synthesized"]
        rows.append(" | ".join(str(cell) for cell in (
            record["name"], record["board"],
            estimate["luts"], got.get("luts"), percent_error(estimate["luts"], got.get("luts")),
            estimate.get("ffs"), got.get("ffs"), percent_error(estimate.get("ffs"), got.get("ffs")),
            estimate["brams"], got.get("brams"))))
    return "\n".join(rows)


# --- fitting -----------------------------------------------------------------------------------------
def block_logic(counts: dict, family: str) -> float:
    """A block's share of the tools' logic figure, from its netlist cells: on iCE40 its LUTs plus the
    FFs and carries needing a cell of their own; on ECP5 its LUT4 slots: a DPR16X4 LUT RAM takes
    four plus two for its write port, and a CCU2C two plus one (nextpnr's TRELLIS_COMB exceeds its
    own "Total LUT4s" by about the number of CCU2Cs: 662 for 672 in both SFC runs)."""
    if family == "ice40":
        return counts.get("SB_LUT4", 0) + counts.get("unpaired_ffs", 0) + counts.get("unpaired_carries", 0)
    return counts.get("LUT4", 0) + 3 * counts.get("CCU2C", 0) + 6 * counts.get("TRELLIS_DPR16X4", 0)


def fit_rows(record: dict) -> list[tuple[dict, float]]:
    """(structural terms, measured logic) per engine (with the adapter feeding it and its share of the
    inter-engine registers) and for the board top, from one design's netlist breakdown."""
    from xnorflow.compiler.analysis import logic_terms
    family, blocks = record["family"], record["per_block"]
    spec = spec_from_record(record)
    hidden_pe = sum(layer.pe for layer in spec.layers[:-1])
    rows, in_width = [], 8
    for k, layer in enumerate(spec.layers):
        measured = block_logic(blocks.get(f"mvtu{k}", {}), family)
        measured += block_logic(blocks.get("adapter_in" if k == 0 else f"adapter{k - 1}", {}), family)
        if not layer.is_output:
            measured += block_logic(blocks.get("network", {}), family) * layer.pe / hidden_pe
        else:   # the label-select op after it, whose terms logic_terms counts with this layer
            measured += block_logic(blocks.get("label_select", {}), family)
        rows.append((logic_terms(layer, in_width, family), measured))
        in_width = layer.pe
    top = sum(block_logic(blocks.get(b, {}), family) for b in ("uart_rx", "uart_tx", "rx_fifo", "top"))
    rows.append(({"top": 1}, top))
    return rows


# Coefficients set from the structure rather than fitted. iCE40: every 64-input layer's buffer holds
# about 128 bits whatever its SIMD, so the data cannot tell buffer bits from the per-engine constant;
# a storage FF whose D is the write data cannot share a cell with a LUT (1 cell) plus its share of
# the SIMD-wide 2*SF:1 read multiplexer (about one LUT per word: 96 LUTs for 16 x 8:1, 117 for
# 13 x 10:1 measured) = 2. ECP5: the two SFC designs cannot separate the terms their networks
# share (their accumulators fitted to 0 LUTs, and the fit then folded LFC to 1024 PEs of one lane),
# so those come from the iCE40 fit (the same RTL and the same LUT4 mapping), except the
# deserializing adapter's, whose iCE40 figure holds a logic cell per flip-flop that ECP5 does not pay
# and of which each SFC has one of 32 bits only: set from the structure (compiler/analysis.py); and
# ram_bit, fitted once on the SFCs built with their input buffers in logic (bench/records.md,
# "Estimate calibration"), which the compiler no longer chooses for them.
FIXED = {"ice40": {"ram_bit": 2.0}, "ecp5": {"deserializer_bit": 1.0, "ram_bit": 0.86}}
UNCALIBRATED = ("int_lane_bit", "int_acc_bit", "window_bit", "serializer_bit", "narrowing_gearbox_bit")
FROM_ICE40 = {"ecp5": ("engine", "acc_bit", "score_bit", "block_mux", "rom_lut", "gearbox_bit")}


def fit(data: dict, family: str) -> dict:
    """Least-squares coefficients (relative error, non-negative) over every engine and top of the
    family's designs, and the packing factor: nextpnr's total over the netlist-counted total."""
    from scipy.optimize import nnls

    from xnorflow.compiler.analysis import LogicModel
    fixed = dict(FIXED.get(family, {}))
    if FROM_ICE40.get(family):
        ice40 = fit(data, "ice40")
        fixed.update({name: ice40[name] for name in FROM_ICE40[family]})
    # The integer-input engine's, the window generator's and the narrowing adapters' terms are not in
    # these designs: they keep their own values (compiler/analysis.py).
    names = [f for f in LogicModel.__dataclass_fields__ if f not in ("packing", *UNCALIBRATED) and f not in fixed]
    records = [r for r in data["designs"].values() if r["family"] == family]
    rows = [row for r in records for row in fit_rows(r)]
    remaining = [measured - sum(v * terms.get(n, 0) for n, v in fixed.items()) for terms, measured in rows]
    matrix = np.array([[terms.get(n, 0) / measured for n in names] for terms, measured in rows])
    target = np.array([rest / measured for rest, (_, measured) in zip(remaining, rows)])
    coefficients, _ = nnls(matrix, target)
    ratios = [r["synthesized"]["luts"] / sum(block_logic(c, family) for c in r["per_block"].values())
              for r in records if r["synthesized"].get("luts")]
    result = {**dict(zip(names, [round(float(c), 3) for c in coefficients])), **fixed}
    result["packing"] = round(float(np.mean(ratios)), 3)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="build folders (large)")
    parser.add_argument("--only", nargs="*", help="design names (default: all)")
    parser.add_argument("--reanalyse", action="store_true", help="re-read existing build folders")
    parser.add_argument("--table", action="store_true", help="print estimate vs synthesis and exit")
    parser.add_argument("--fit", action="store_true", help="print fitted LogicModel coefficients and exit")
    args = parser.parse_args(argv)

    data = load(args.out)
    if args.table:
        print(table(data))
        return 0
    if args.fit:   # ready to paste into compiler/analysis.py's LOGIC_MODELS
        for family in sorted({r["family"] for r in data["designs"].values()}):
            fields = ", ".join(f"{name}={value:g}" for name, value in fit(data, family).items())
            print(f'"{family}": LogicModel({fields}),')
        return 0
    names = args.only or list(DESIGNS)
    for name in names:
        board_name, sizes, folding = DESIGNS[name]
        seed = 0
        spec = placed_spec(board_name, sizes, folding, seed)
        record = design_record(name, spec, board_name, sizes, folding, seed)
        build = args.work / name
        if args.reanalyse:
            record["synthesized"] = data["designs"].get(name, {}).get("synthesized", {})
            measure(record, build, None)
        else:
            print(f"[calibrate] {name} on {board_name}: {folding}", file=sys.stderr, flush=True)
            started = time.perf_counter()
            try:
                result = synthesize(spec, board_name, build, progress=False)
            except SynthError as error:   # e.g. does not fit: keep what the tools did report
                print(f"[calibrate] {name}: {error}", file=sys.stderr, flush=True)
                record["synthesized"] = {"error": str(error),
                                         "synth_seconds": round(time.perf_counter() - started, 1)}
                result = None
            measure(record, build, result)
            result = record["synthesized"]
            print(f"[calibrate] {name}: {result['luts']} luts, {result['ffs']} ffs, {result['brams']} brams "
                  f"in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        data["designs"][name] = record
        save(args.out, data)
    print(table(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
