// Cache-size detection (see cpu_caches.h).

#include "cpu_caches.h"

#include <c10/util/Exception.h>

#include <atomic>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <mutex>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace gemmlab {
namespace {

bool read_line(const std::filesystem::path& file, std::string* line) {
  std::ifstream in(file);
  return static_cast<bool>(std::getline(in, *line));
}

// "48K", "2048K", "1M", "32768" (bytes) -> bytes; 0 when unreadable.
int64_t parse_size(const std::string& text) {
  size_t used = 0;
  int64_t value = 0;
  try {
    value = std::stoll(text, &used);
  } catch (const std::exception&) {
    return 0;
  }
  const char unit = used < text.size() ? static_cast<char>(std::toupper(text[used])) : '\0';
  const int64_t scale = unit == 'K' ? 1 << 10 : unit == 'M' ? 1 << 20 : unit == 'G' ? 1 << 30 : 1;
  return value > 0 ? value * scale : 0;
}

// "0-1,4,6-7" -> 5; 1 when unreadable (the cache is then counted as the CPU's own).
int64_t count_cpus(const std::string& list) {
  int64_t count = 0;
  size_t pos = 0;
  while (pos < list.size()) {
    size_t end = list.find(',', pos);
    if (end == std::string::npos) end = list.size();
    const std::string range = list.substr(pos, end - pos);
    try {
      const size_t dash = range.find('-');
      count += dash == std::string::npos ? 1 : std::stoll(range.substr(dash + 1)) - std::stoll(range.substr(0, dash)) + 1;
    } catch (const std::exception&) {
      return 1;
    }
    pos = end + 1;
  }
  return count > 0 ? count : 1;
}

#if defined(__x86_64__) || defined(__i386__)
// cpuid's deterministic cache parameters: leaf 4 on Intel, 0x8000001D on AMD (same layout).
bool read_cpuid_caches(CacheSizes* out) {
  unsigned a, b, c, d;
  if (!__get_cpuid(0, &a, &b, &c, &d)) return false;
  const bool amd = b == 0x68747541;  // "Auth"(enticAMD)
  const unsigned leaf = amd ? 0x8000001D : 4;
  if (amd && (!__get_cpuid(0x80000000, &a, &b, &c, &d) || a < leaf)) return false;
  if (!amd && a < leaf) return false;
  CacheSizes found;
  for (unsigned i = 0; i < 16; ++i) {
    __cpuid_count(leaf, i, a, b, c, d);
    const unsigned type = a & 0x1F, level = (a >> 5) & 0x7;
    if (type == 0) break;  // no more caches
    if (type == 2) continue;  // instruction cache
    const int64_t bytes = int64_t((b >> 22) + 1) * ((b >> 12 & 0x3FF) + 1) * ((b & 0xFFF) + 1) * (int64_t(c) + 1);
    const int64_t sharing = ((a >> 14) & 0xFFF) + 1;
    if (level == 1) found.l1d = bytes;
    if (level == 2) found.l2 = bytes;
    if (level == 3) found.l3 = bytes / sharing;
  }
  if (found.l1d <= 0 || found.l2 <= 0) return false;
  found.source = "cpuid";
  *out = found;
  return true;
}
#else
bool read_cpuid_caches(CacheSizes*) { return false; }
#endif

CacheSizes detect() {
  CacheSizes sizes;
  if (read_sysfs_caches("/sys/devices/system/cpu/cpu0/cache", &sizes) || read_cpuid_caches(&sizes)) return sizes;
  return default_caches();
}

std::mutex g_override_mutex;
CacheSizes g_override;  // source empty: none
std::atomic<bool> g_overridden{false};

}  // namespace

bool read_sysfs_caches(const std::string& root, CacheSizes* out) {
  namespace fs = std::filesystem;
  std::error_code error;
  CacheSizes found;
  for (fs::directory_iterator it(root, error), end; !error && it != end; it.increment(error)) {
    if (it->path().filename().string().rfind("index", 0) != 0) continue;
    std::string level, type, size, shared;
    if (!read_line(it->path() / "level", &level) || !read_line(it->path() / "type", &type) ||
        !read_line(it->path() / "size", &size)) {
      continue;
    }
    if (type != "Data" && type != "Unified") continue;
    const int64_t bytes = parse_size(size);
    const int64_t sharing = read_line(it->path() / "shared_cpu_list", &shared) ? count_cpus(shared) : 1;
    if (level == "1") found.l1d = bytes;
    if (level == "2") found.l2 = bytes;
    if (level == "3") found.l3 = bytes / sharing;
  }
  if (found.l1d <= 0 || found.l2 <= 0) return false;
  found.source = "sysfs";
  *out = found;
  return true;
}

CacheSizes default_caches() { return {32 << 10, 1 << 20, 2 << 20, "default"}; }

CacheSizes cache_sizes() {
  static const CacheSizes detected = detect();
  if (g_overridden.load(std::memory_order_acquire)) {
    std::lock_guard<std::mutex> lock(g_override_mutex);
    return g_override;
  }
  return detected;
}

void set_cache_sizes_override(int64_t l1d, int64_t l2, int64_t l3) {
  std::lock_guard<std::mutex> lock(g_override_mutex);
  if (l1d == 0 && l2 == 0 && l3 == 0) {
    g_overridden.store(false, std::memory_order_release);
    return;
  }
  constexpr int64_t most = int64_t(1) << 40;
  for (const int64_t bytes : {l1d, l2, l3}) {
    TORCH_CHECK_VALUE(bytes > 0 && bytes <= most, "cache sizes must all be 1..2^40 bytes (or all 0 to lift the override); "
                      "got L1d ", l1d, ", L2 ", l2, ", L3 ", l3);
  }
  g_override = {l1d, l2, l3, "testing override"};
  g_overridden.store(true, std::memory_order_release);
}

}  // namespace gemmlab
