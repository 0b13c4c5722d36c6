// Run-time ISA detection and the GEMMLAB_CPU override (see cpu_path.h).

#include "cpu_path.h"

#include <c10/util/Exception.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace gemmlab {
namespace {

// -1: no ceiling; otherwise the highest CpuPath value tests allow us to report as supported.
std::atomic<int> g_ceiling{-1};

bool hardware_supports(CpuPath path) {
  switch (path) {
    case CpuPath::generic:
      return true;
#if defined(__x86_64__) || defined(__i386__)
    // libgcc's __builtin_cpu_supports also checks (via XGETBV) that the OS saves the wider
    // registers, so a feature the kernel has not enabled reads as absent.
    case CpuPath::avx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case CpuPath::avx512:
      // The AVX-512 micro-kernels use F (the 512-bit FMAs), VL and DQ (in the target attribute).
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma");
#endif
    default:
      return false;
  }
}

bool parse(const char* text, CpuPath* out) {
  for (CpuPath p : {CpuPath::avx512, CpuPath::avx2, CpuPath::generic}) {
    if (std::strcmp(text, path_name(p)) == 0) {
      *out = p;
      return true;
    }
  }
  return false;
}

}  // namespace

const char* path_name(CpuPath path) {
  switch (path) {
    case CpuPath::avx512: return "avx512";
    case CpuPath::avx2: return "avx2";
    default: return "generic";
  }
}

bool path_supported(CpuPath path) {
  const int ceiling = g_ceiling.load(std::memory_order_relaxed);
  if (ceiling >= 0 && static_cast<int>(path) > ceiling) return false;
  return hardware_supports(path);
}

std::vector<std::string> supported_paths() {
  std::vector<std::string> names;
  for (CpuPath p : {CpuPath::avx512, CpuPath::avx2, CpuPath::generic})
    if (path_supported(p)) names.emplace_back(path_name(p));
  return names;
}

CpuPath selected_path() {
  const char* forced = std::getenv("GEMMLAB_CPU");
  if (forced != nullptr && forced[0] != '\0') {
    CpuPath path;
    TORCH_CHECK_VALUE(parse(forced, &path), "GEMMLAB_CPU=", forced,
                      " is not a gemmlab CPU path; use avx512, avx2 or generic (or unset it)");
    if (!path_supported(path)) {
      std::string have;
      for (const auto& name : supported_paths()) have += (have.empty() ? "" : ", ") + name;
      TORCH_CHECK(false, "GEMMLAB_CPU=", forced, " asks for the ", forced,
                  " path, which this CPU does not support; supported here: ", have);
    }
    return path;
  }
  for (CpuPath p : {CpuPath::avx512, CpuPath::avx2})
    if (path_supported(p)) return p;
  return CpuPath::generic;
}

void set_path_ceiling(const std::string& ceiling) {
  if (ceiling.empty()) {
    g_ceiling.store(-1);
    return;
  }
  CpuPath path;
  TORCH_CHECK_VALUE(parse(ceiling.c_str(), &path), "unknown CPU path '", ceiling, "'; use avx512, avx2 or generic");
  g_ceiling.store(static_cast<int>(path));
}

}  // namespace gemmlab
