// The machine's own limit, measured: multiply-add throughput of one ISA path on a number of
// threads, with no memory traffic, so `gemmlab bench` can say what share of it a GEMM reaches.
#pragma once

#include "cpu_path.h"

namespace gemmlab {

// GFLOP/s (2 flops per multiply-add) of `threads` threads, each running independent chains of
// vector multiply-adds in registers on `path` (which must be supported here), for float32 or
// float64, counted in each thread's CPU time (a process that shares our cores does not lower it).
// Measured once per (path, dtype, threads) and process: tens of milliseconds. With `refresh`, it
// is measured again and the higher of the two kept: on a shared machine one measurement can fall
// in a slow stretch (gemmlab bench once read 95 GFLOP/s before a run whose products reached 140).
double peak_gflops(CpuPath path, bool is_double, int threads, bool refresh = false);

}  // namespace gemmlab
