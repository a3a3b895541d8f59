"""Verilog export: the port names the testbenches rely on, and its speed on an SFC-sized net."""
from __future__ import annotations

import re
import resource
import time
from dataclasses import replace

from hw_harness import sized_network

from xnorflow.sim.export import export_verilog, verilog_port_names
from xnorflow.sim.layout import module_ports


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def port_width(text: str, port: str) -> int:
    match = re.search(rf"^\s*(?:input|output)\s+(?:\[(\d+):0\]\s+)?{port};", text, re.MULTILINE)
    assert match, f"port {port} not declared"
    return int(match.group(1)) + 1 if match.group(1) else 1


def test_export_has_the_documented_ports(tmp_path):
    spec = sized_network([64, 32, 10], [(8, 16), (5, 8)], seed=0)
    path = export_verilog(spec, tmp_path / "top.v", name="xnorflow_top")
    text = path.read_text()
    assert sorted(module_ports(text, "xnorflow_top")) == sorted(verilog_port_names(spec))
    assert port_width(text, "i__payload") == 16
    assert port_width(text, "o__payload") == spec.class_index_width + spec.n_classes * spec.score_width
    assert port_width(text, "tap0_data") == 8
    assert port_width(text, "tap0_valid") == 1


def test_export_with_a_host_width(tmp_path):
    spec = sized_network([64, 32, 10], [(8, 16), (5, 8)], seed=0)
    text = export_verilog(spec, tmp_path / "top.v", in_width=8).read_text()
    assert port_width(text, "i__payload") == 8


def test_sfc_export_is_quick(tmp_path):
    """SFC 784-256-256-256-10 at II = 256: well under the 10 s model-to-Verilog budget (CPU time,
    so that other jobs on the machine do not make it flaky)."""
    spec = sized_network([784, 256, 256, 256, 10], [(16, 49), (16, 32), (16, 32), (10, 16)], seed=0)
    start, wall = cpu_seconds(), time.perf_counter()
    path = export_verilog(spec, tmp_path / "sfc.v")
    spent, wall = cpu_seconds() - start, time.perf_counter() - wall
    print(f"SFC export: {spent:.2f} s CPU, {wall:.2f} s wall")
    assert path.stat().st_size > 0
    assert spent < 10, f"SFC export took {spent:.1f} s of CPU"


def test_memory_styles_reach_yosys(tmp_path):
    """The spec's weight/buffer style becomes the memories' ram_style/rom_style; "auto" sets none."""
    spec = sized_network([64, 32, 10], [(8, 16), (5, 8)], seed=0)
    styled = replace(spec, layers=tuple(replace(layer, weight_style="block", buffer_style="logic")
                                        for layer in spec.layers))
    text = export_verilog(styled, tmp_path / "styled.v").read_text()
    weight_banks = sum(layer.pe for layer in spec.layers)
    assert len(re.findall(r'\(\* ram_style = "block" \*\)', text)) == weight_banks
    assert len(re.findall(r'\(\* ram_style = "logic" \*\)', text)) == len(spec.layers)   # input buffers
    assert "ram_style" not in export_verilog(spec, tmp_path / "auto.v").read_text()
