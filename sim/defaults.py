"""The simulation settings every caller shares (sim.runner, the compiler's simulate step, the CLI).

A light module (no cocotb, no amaranth), so the command line can name the defaults in its --help.
"""

# Random flow control applied to every simulated stream unless told otherwise: the output is not
# ready in this share of the cycles, and this share of the input beats come after an idle gap.
DEFAULT_BACKPRESSURE = 0.5
DEFAULT_GAPS = 0.3
SIMULATION_MODES = ("fast", "cycle")
# Both benches' clock (the per-cycle bench's cocotb Clock, the fast harness's `timescale and loop).
CLOCK_PERIOD_NS = 10
