"""The testbench's stream roles (sim/streams.py) in Verilator on a two-entry FIFO under random gaps
and stalls: the sink takes every beat the source sent, in order, and a monitor on either stream
(each with a ready) sees exactly the transfers the source and the sink made."""
import json
import sys
from pathlib import Path

import numpy as np

from xnorflow.sim.verilator_build import build_model, verilator_runner

FIFO = """
module stream_fifo(input clk, input rst,
                   input [7:0] i__payload, input i__valid, output i__ready,
                   output [7:0] o__payload, output o__valid, input o__ready);
  reg [7:0] mem [0:1];
  reg [1:0] count;
  reg rd, wr;
  wire take = i__valid && i__ready, give = o__valid && o__ready;
  assign i__ready = count != 2'd2;
  assign o__valid = count != 2'd0;
  assign o__payload = mem[rd];
  always @(posedge clk) begin
    if (rst) begin count <= 0; rd <= 0; wr <= 0; end
    else begin
      if (take) begin mem[wr] <= i__payload; wr <= ~wr; end
      if (give) rd <= ~rd;
      count <= count + {1'b0, take} - {1'b0, give};
    end
  end
endmodule
"""


def test_source_sink_and_monitors_see_every_transfer_once(tmp_path):
    verilog = tmp_path / "stream_fifo.v"
    verilog.write_text(FIFO)
    build_model(verilog, tmp_path / "obj", top="stream_fifo")
    rng = np.random.default_rng(0)
    frames = [[int(b) for b in rng.integers(0, 256, size=n)] for n in (3, 1, 5, 2, 4, 6)]
    config = {"frames": frames, "seed": 1, "gaps": 0.4, "stalls": 0.5, "results_file": str(tmp_path / "seen.json")}
    (tmp_path / "config.json").write_text(json.dumps(config))
    tb_dir = str(Path(__file__).parent)
    if tb_dir not in sys.path:
        sys.path.insert(0, tb_dir)
    verilator_runner().test(test_module="stream_roles_tb", hdl_toplevel="stream_fifo", hdl_toplevel_lang="verilog",
                            build_dir=tmp_path / "obj",
                            test_dir=tmp_path, extra_env={"XNORFLOW_STREAM_ROLES_TB": str(tmp_path / "config.json")})
    seen = json.loads((tmp_path / "seen.json").read_text())

    sent = [beat for frame in frames for beat in frame]
    assert (seen["frames_sent"], seen["beats_sent"]) == (len(frames), len(sent))
    assert [payload for _, payload in seen["sink"]] == sent
    assert seen["watch_out"] == seen["sink"]                   # the monitor sees the sink's transfers
    assert [payload for _, payload in seen["watch_in"]] == sent
    firsts = np.cumsum([0] + [len(frame) for frame in frames[:-1]])
    assert [seen["watch_in"][k][0] for k in firsts] == seen["accept_cycles"]
    cycles = [cycle for cycle, _ in seen["sink"]]
    assert cycles == sorted(set(cycles)), "one transfer a cycle at most"
    # The pause generators did pause: a gap or a stall somewhere, so the run took more cycles than beats.
    assert cycles[-1] - seen["watch_in"][0][0] > len(sent) + 2
