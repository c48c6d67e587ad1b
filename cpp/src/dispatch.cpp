// Which instruction-set level runs: the best one both this build and this CPU support, unless
// set_active_isa() asked for a lower one. CPU support is read from CPUID and, for the register
// state the OS saves on a context switch, from XGETBV. And which schedule the engine runs: its
// own choice unless set_schedule() (or MLPGRAD_SCHEDULE, read once at load) forced one.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "mlpgrad/mlp.hpp"

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#endif

namespace mlpgrad {
namespace {

#if defined(__x86_64__) || defined(_M_X64)
uint64_t xgetbv0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (uint64_t(edx) << 32) | eax;
}

Isa detect() {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return Isa::generic;
  const bool osxsave = c & (1u << 27), avx = c & (1u << 28), fma = c & (1u << 12);
  if (!(osxsave && avx && fma)) return Isa::generic;
  const uint64_t xcr0 = xgetbv0();
  if ((xcr0 & 0x6) != 0x6) return Isa::generic;  // XMM and YMM state
  if (__get_cpuid_max(0, nullptr) < 7) return Isa::generic;
  __cpuid_count(7, 0, a, b, c, d);
  const bool avx2 = b & (1u << 5);
  if (!avx2) return Isa::generic;
  // AVX-512 F, DQ, BW, VL (the x86-64-v4 set we compile for) and opmask/ZMM state enabled by the OS.
  const bool avx512 = (b & (1u << 16)) && (b & (1u << 17)) && (b & (1u << 30)) && (b & (1u << 31));
  if (avx512 && (xcr0 & 0xE0) == 0xE0) return Isa::avx512;
  return Isa::avx2;
}
#else
Isa detect() { return Isa::generic; }
#endif

Isa build_limit(Isa isa) {
#ifndef MLPGRAD_HAVE_AVX512
  if (isa == Isa::avx512) isa = Isa::avx2;
#endif
#ifndef MLPGRAD_HAVE_AVX2
  if (isa == Isa::avx2) isa = Isa::generic;
#endif
  return isa;
}

const Isa kBest = build_limit(detect());
std::atomic<int> g_active{static_cast<int>(kBest)};

Schedule schedule_from_env() {
  const char* env = std::getenv("MLPGRAD_SCHEDULE");
  if (env && std::strcmp(env, "chunked") == 0) return Schedule::chunked;
  if (env && std::strcmp(env, "layered") == 0) return Schedule::layered;
  return Schedule::automatic;  // unset, "default", "narrow" (the narrow engine where the widths allow it)
}
std::atomic<int> g_schedule{static_cast<int>(schedule_from_env())};

}  // namespace

Isa best_isa() { return kBest; }
Isa active_isa() { return static_cast<Isa>(g_active.load(std::memory_order_relaxed)); }
void set_active_isa(Isa isa) {
  g_active.store(std::min(static_cast<int>(isa), static_cast<int>(kBest)), std::memory_order_relaxed);
}

Schedule schedule() { return static_cast<Schedule>(g_schedule.load(std::memory_order_relaxed)); }
void set_schedule(Schedule s) { g_schedule.store(static_cast<int>(s), std::memory_order_relaxed); }

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    default: return "generic";
  }
}

}  // namespace mlpgrad
