"""Verilog export of the accelerator for Verilator (cocotb) and synthesis.

The top module has a plain ``sync`` domain (``clk``, synchronous active-high ``rst``) and these
ports (Amaranth names a stream member ``<port>__<member>``):

==================  =========  ======================================================================
port                direction  meaning
==================  =========  ======================================================================
clk, rst            in         clock, synchronous reset (active high)
i__payload          in         ``in_width`` input bits of a beat (see xnorflow.hw.network)
i__valid            in         a beat is on i__payload
i__ready            out        the beat is taken on this clock edge (when also valid)
o__payload          out        class index and scores, layout of ``xnorflow.hw.network.output_layout``
o__valid            out        one beat per frame
o__ready            in         the consumer takes the output beat
tap{k}_data         out        hidden layer k's output beat (pe_k bits)
tap{k}_valid        out        high on the cycle tap{k}_data is transferred
==================  =========  ======================================================================
"""
from __future__ import annotations

from pathlib import Path

from amaranth.back import verilog

from xnorflow.hw.network import Network
from xnorflow.hw.spec import NetworkSpec
from xnorflow.sim.layout import TOP, module_ports

STREAM_PORTS = ("clk", "rst", "i__payload", "i__valid", "i__ready", "o__payload", "o__valid", "o__ready")


class ExportError(RuntimeError):
    """The generated Verilog does not have the ports the testbenches rely on."""


def verilog_port_names(spec: NetworkSpec) -> list[str]:
    """Every port of the exported top, in the order listed in this module's docstring."""
    taps = [name for k in range(len(spec.layers) - 1) for name in (f"tap{k}_data", f"tap{k}_valid")]
    return [*STREAM_PORTS, *taps]


def export_verilog(spec: NetworkSpec, path: str | Path, name: str = TOP,
                   in_width: int | None = None) -> Path:
    """Write the Verilog of ``Network(spec, in_width)`` to ``path`` and return the path.

    The port names are checked against :func:`verilog_port_names`, so a change in Amaranth's naming
    fails here rather than in a testbench.
    """
    top = Network(spec, in_width=in_width)
    text = verilog.convert(top, name=name, emit_src=False)
    expected = set(verilog_port_names(spec))
    found = set(module_ports(text, name))
    if found != expected:
        raise ExportError(f"exported ports {sorted(found)} differ from the contract {sorted(expected)}: "
                          "update xnorflow.sim.export and the testbenches together")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
