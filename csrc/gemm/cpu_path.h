// Which instruction-set path the GEMM runs: AVX-512, AVX2+FMA or portable C++.
//
// The extension is built with portable flags (no -march=native), so the fast paths live in
// functions compiled for a specific ISA with __attribute__((target(...))) and are chosen at run
// time from what this CPU (and its OS) supports. GEMMLAB_CPU=avx512|avx2|generic forces a path;
// it is read on every call (getenv is cheap next to a GEMM) so tests can switch paths in one process.
#pragma once

#include <string>
#include <vector>

namespace gemmlab {

enum class CpuPath { generic = 0, avx2 = 1, avx512 = 2 };

const char* path_name(CpuPath path);

// Whether this CPU can run the path (generic: always).
bool path_supported(CpuPath path);

// The paths this CPU can run, fastest first.
std::vector<std::string> supported_paths();

// The path the next product will use: GEMMLAB_CPU if set (raises a c10::Error, seen in Python as
// ValueError/RuntimeError, if it names an unknown or unsupported path), else the fastest supported.
CpuPath selected_path();

// Testing hook: pretend the CPU supports nothing above `ceiling` ("avx512", "avx2", "generic"),
// or lift the pretence with an empty string. Lets tests exercise the "unsupported path" error on
// a CPU that supports everything.
void set_path_ceiling(const std::string& ceiling);

}  // namespace gemmlab
