"""Fast mode (sim/harness.py + sim/fast.py): the same verdicts as the per-cycle bench, in chunks."""
import itertools
import re

from sim_builds import sized_network, write_build_folder

from xnorflow.sim.fast import chunk_ranges
from xnorflow.sim.layout import module_ports
from xnorflow.sim.runner import simulate

SMALL = ([24, 16, 12, 6], [(3, 5), (4, 4), (2, 4)])    # partial beats and folds, a width adapter; II 30


def test_chunks_cover_the_frames_once_in_order():
    for frames in (1, 7, 200, 10_000):
        for chunks in (1, 2, 3, 16):
            ranges = chunk_ranges(frames, chunks)
            assert ranges[0][0] == 0 and ranges[-1][1] == frames
            assert all(a < b for a, b in ranges) and all(b == c for (_, b), (c, _) in itertools.pairwise(ranges))


def test_fast_mode_in_chunks_agrees_with_the_per_cycle_bench(tmp_path):
    spec = sized_network(*SMALL, seed=5)
    build = write_build_folder(tmp_path / "build", spec, frames=240)
    fast = simulate(build, seed=4, progress=False, mode="fast", chunks=3, sim_dir=tmp_path / "fast")
    cycle = simulate(build, seed=4, progress=False, mode="cycle", sim_dir=tmp_path / "cycle")
    for result in (fast, cycle):
        assert result["errors"] == [] and result["rtl_mismatches"] == 0
        assert result["images_simulated"] == 240
        assert result["cycles_per_frame"] == spec.analytic_cycles_per_frame == 30
        assert result["reset_mid_frame_ok"] is True
    assert fast["latency_cycles"] == cycle["latency_cycles"]
    assert [c["start"] for c in fast["chunks"]] == [0, 80, 160] and [c["seed"] for c in fast["chunks"]] == [4, 5, 6]
    assert fast["mode"] == "fast" and fast["cycles_simulated"] > 240 * 30


def with_output_ready_ignored(verilog: str) -> str:
    """The network's Verilog behind a wrapper that tells it the output is always taken: every frame
    whose output meets a not-ready cycle is lost. Correct without backpressure, broken with it."""
    core = re.sub(r"^module xnorflow_top\(", "module xnorflow_core(", verilog, count=1, flags=re.MULTILINE)
    ports = module_ports(verilog)
    declarations = []
    for name, width in ports.items():
        direction = "output" if name in ("i__ready", "o__payload", "o__valid") or name.startswith("tap") else "input"
        declarations.append(f"  {direction} [{width - 1}:0] {name};")
    connections = ", ".join(f".{name}({'1' if name == 'o__ready' else name})" for name in ports)
    return core + (f"\nmodule xnorflow_top({', '.join(ports)});\n" + "\n".join(declarations) +
                   f"\n  xnorflow_core core({connections});\nendmodule\n")


def test_a_handshake_bug_that_shows_only_under_backpressure_fails_in_fast_mode(tmp_path):
    spec = sized_network(*SMALL, seed=9)
    build = write_build_folder(tmp_path / "build", spec, frames=120)
    verilog = build / "verilog" / "xnorflow_top.v"
    verilog.write_text(with_output_ready_ignored(verilog.read_text()))
    calm = simulate(build, backpressure=0.0, gaps=0.3, seed=2, progress=False, mode="fast")
    assert calm["errors"] == [] and calm["rtl_mismatches"] == 0
    stressed = simulate(build, backpressure=0.5, gaps=0.3, seed=2, progress=False, mode="fast")
    assert stressed["errors"] or stressed["rtl_mismatches"]
    assert any("stuck" in e for e in stressed["errors"]), stressed["errors"]



def test_chunks_on_a_dask_local_cluster_give_the_local_results(tmp_path):
    from distributed import Client, LocalCluster

    spec = sized_network(*SMALL, seed=3)
    build = write_build_folder(tmp_path / "build", spec, frames=160)
    local = simulate(build, seed=1, progress=False, chunks=2, sim_dir=tmp_path / "local")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        remote = simulate(build, seed=1, progress=False, chunks=2, sim_dir=tmp_path / "dask", client=client)
    assert remote["errors"] == [] and remote["rtl_mismatches"] == 0
    assert [{k: v for k, v in c.items() if k not in ("seconds",)} for c in remote["chunks"]] == \
        [{k: v for k, v in c.items() if k not in ("seconds",)} for c in local["chunks"]]
    for key in ("images_simulated", "cycles_per_frame", "latency_cycles", "reset_mid_frame_ok", "cycles_simulated"):
        assert remote[key] == local[key], key
