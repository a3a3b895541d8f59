// The fast harness's simulation loop: cocotb's Verilator main (cocotb/share/lib/verilator/verilator.cpp,
// BSD-3-Clause, cocotb contributors) with the clock of the harness (sim/harness.py) toggled here
// instead of by cocotb or a Verilog delay.
//
// Between cocotb's events the loop runs free: it toggles `clk` and evaluates the model, and hands
// control back to cocotb (the full callback regions of cocotb's loop) at cocotb's next timed
// callback, and every CHECK_CYCLES cycles to let value-change callbacks (`RisingEdge(done)`) fire.
// A value change is thus seen up to CHECK_CYCLES cycles late; the harness holds every output
// still once `done` is set, so nothing it reports moves in that time.
#include <stdio.h>

#include <memory>

#include "Vtop.h"
#include "verilated.h"
#include "verilated_vpi.h"

static vluint64_t main_time = 0;
static const int CHECK_CYCLES = 256;

double sc_time_stamp() { return main_time; }

extern "C" {
void vlog_startup_routines_bootstrap(void);
}

static inline bool settle_value_callbacks() {
    bool called = VerilatedVpi::callValueCbs(), again = called;
    while (again) again = VerilatedVpi::callValueCbs();
    return called;
}

// One time step with every callback region, as cocotb's own loop runs it.
static void full_step(Vtop *top) {
    do {
        do {
            top->eval_step();
            VerilatedVpi::clearEvalNeeded();
            VerilatedVpi::doInertialPuts();
            settle_value_callbacks();
        } while (VerilatedVpi::evalNeeded());
        VerilatedVpi::callCbs(cbReadWriteSynch);
        VerilatedVpi::doInertialPuts();
        settle_value_callbacks();
    } while (VerilatedVpi::evalNeeded());
    top->eval_end_step();
    VerilatedVpi::callCbs(cbReadOnlySynch);
}

int main(int argc, char **argv) {
    Verilated::commandArgs(argc, argv);
    std::unique_ptr<Vtop> top(new Vtop(""));
    Verilated::fatalOnVpiError(false);
    // Half a clock period (5 ns, sim/defaults.py CLOCK_PERIOD_NS / 2) in the model's time precision.
    vluint64_t half = 5;
    for (int p = Verilated::threadContextp()->timeprecision(); p < -9; ++p) half *= 10;

    vlog_startup_routines_bootstrap();
    VerilatedVpi::callCbs(cbStartOfSimulation);
    settle_value_callbacks();
    top->clk = 1;
    vluint64_t next_edge = half;   // clk falls at 5 ns, rises at 10 ns: rising edges at multiples of 10 ns

    while (!Verilated::gotFinish()) {
        full_step(top.get());
        if (Verilated::gotFinish()) break;
        const vluint64_t deadline = VerilatedVpi::cbNextDeadline();   // ~0 when cocotb waits on nothing timed
        // Run free up to the edge before cocotb's deadline, checking value callbacks now and then.
        int cycles = 0;
        bool handed_back = false;
        while (next_edge < deadline && !Verilated::gotFinish()) {
            main_time = next_edge;
            top->clk = !top->clk;
            top->eval();
            next_edge += half;
            if (top->clk && ++cycles >= CHECK_CYCLES) {
                cycles = 0;
                if (settle_value_callbacks() || VerilatedVpi::evalNeeded()) {
                    handed_back = true;
                    break;
                }
            }
        }
        if (handed_back || Verilated::gotFinish()) continue;
        if (deadline == static_cast<vluint64_t>(~0ULL)) break;
        main_time = deadline;
        VerilatedVpi::callCbs(cbNextSimTime);
        settle_value_callbacks();
        VerilatedVpi::callTimedCbs();
        settle_value_callbacks();
    }
    top->final();
    VerilatedVpi::callCbs(cbEndOfSimulation);
    return Verilated::threadContextp()->errorCount() > 0 ? 1 : 0;
}
