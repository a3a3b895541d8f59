// The native rate of a design: the fast harness (sim/harness.py) driven by a bare C++ loop, no
// cocotb, no VPI. It runs one random-flow phase and prints the cycles simulated and the CPU seconds
// they took; sim/native.py builds and runs it, `make bench` reports simulate's rate against it.
// Arguments: n_frames gap_threshold stall_threshold seed (thresholds in 1/65536), plusargs as the
// harness reads them (+xnorflow_frames=FILE, +xnorflow_payloads=..., +xnorflow_in=..., +xnorflow_out=...).
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <memory>

#include "Vtop.h"
#include "verilated.h"

double sc_time_stamp() { return 0; }

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s n_frames gap_threshold stall_threshold seed [+plusargs]\n", argv[0]);
        return 2;
    }
    Verilated::commandArgs(argc, argv);
    std::unique_ptr<Vtop> top(new Vtop(""));
    top->n_frames = strtoul(argv[1], nullptr, 10);
    top->gap_threshold = strtoul(argv[2], nullptr, 10);
    top->stall_threshold = strtoul(argv[3], nullptr, 10);
    top->seed = strtoul(argv[4], nullptr, 10);
    top->watchdog = 100000000u;
    top->tail = 1000;
    top->rst = 1;
    for (int i = 0; i < 3; ++i) {
        top->clk = 0; top->eval();
        top->clk = 1; top->eval();
    }
    top->rst = 0;
    timespec start, stop;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &start);
    while (!top->done && !Verilated::gotFinish()) {
        top->clk = 0; top->eval();
        top->clk = 1; top->eval();
    }
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &stop);
    top->final();
    double seconds = (stop.tv_sec - start.tv_sec) + 1e-9 * (stop.tv_nsec - start.tv_nsec);
    printf("cycles %u outputs %u stuck %d cpu_seconds %.6f\n", (unsigned)top->cycle, (unsigned)top->outputs_seen,
           (int)top->stuck, seconds);
    return 0;
}
