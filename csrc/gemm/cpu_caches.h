// The data-cache sizes the cache blocking is derived from (blocking.h), read at run time from the
// CPU the process runs on: Linux's sysfs first, then the cpuid instruction, then a default.
#pragma once

#include <cstdint>
#include <string>

namespace gemmlab {

struct CacheSizes {
  int64_t l1d = 0, l2 = 0;  // bytes, per core
  int64_t l3 = 0;           // bytes per logical CPU sharing it (0: no L3)
  std::string source;       // "sysfs", "cpuid", "default" or "testing override"
};

// The cache blocking (KC, MC, NC) the packed loops use, derived from CacheSizes per path
// (derive_blocks in blocking.h).
struct CacheBlocks {
  int64_t kc, mc, nc;
};

// Read from a sysfs cache directory (normally /sys/devices/system/cpu/cpu0/cache): its index*/
// subdirectories' level, type, size and shared_cpu_list. Returns false, leaving `out` alone, unless
// both an L1 data (or unified) cache and an L2 are found.
bool read_sysfs_caches(const std::string& root, CacheSizes* out);

// What cache_sizes() uses when neither sysfs nor cpuid answers: typical of recent x86-64 cores.
CacheSizes default_caches();

// This CPU's caches: detected once per process (sysfs, else cpuid, else default), unless a test
// has set an override.
CacheSizes cache_sizes();

// Testing hook: make cache_sizes() return these sizes (bytes, each 1..2^40), so that the kernels run
// under other blocking; all zero lifts the override.
void set_cache_sizes_override(int64_t l1d, int64_t l2, int64_t l3);

}  // namespace gemmlab
