// The CUDA vocabulary for compiling csrc/cuda/*.cu as host C++ (build.py
// puts `#include "emu.h"` ahead of each rewritten .cu file).
//
// Order matters: every host header the .cu files use is included here first,
// then __CUDA_ARCH__ is defined, so the shared headers (csrc/common/*.h) take
// their device branches (__fmul_rn, __double2ll_rn, ...) while ATen and c10,
// already included, never see it.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>
#include <torch/library.h>

#include <math.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "emu_runtime.h"

// ---------------------------------------------------------------- keywords

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
// build.py rewrites every `__shared__ T name[...];` into per-block storage; a
// form it does not know stays and fails to compile here.
#define __shared__ __shared___declaration_not_rewritten_by_cuda_emu

// ---------------------------------------------------------------- warp intrinsics
//
// Each is a barrier among the lanes of `mask`: every lane named must arrive at
// the same intrinsic (same source line) with the same mask; the emulation
// reports a lane outside its mask, lanes meeting at different intrinsics, a
// lane that exits while others wait for it, and deadlocks.

#define EMU_SITE const char *emu_file = __builtin_FILE(), int emu_line = __builtin_LINE()

namespace emu {
template <typename T>
inline uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "cuda_emu: shuffle of a type over 8 bytes");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <typename T>
inline T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}
}  // namespace emu

inline void __syncthreads(EMU_SITE) { emu::block_barrier(emu_file, emu_line); }
inline void __syncwarp(unsigned mask = 0xffffffffu, EMU_SITE) {
  emu::warp_collective(emu::kSyncwarp, mask, 0, 0, 32, emu_file, emu_line);
}
inline unsigned __ballot_sync(unsigned mask, int pred, EMU_SITE) {
  return static_cast<unsigned>(emu::warp_collective(emu::kBallot, mask, pred != 0, 0, 32, emu_file, emu_line));
}
inline int __any_sync(unsigned mask, int pred, EMU_SITE) {
  return static_cast<int>(emu::warp_collective(emu::kAny, mask, pred != 0, 0, 32, emu_file, emu_line));
}
inline int __all_sync(unsigned mask, int pred, EMU_SITE) {
  return static_cast<int>(emu::warp_collective(emu::kAll, mask, pred != 0, 0, 32, emu_file, emu_line));
}
template <typename T>
inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = 32, EMU_SITE) {
  return emu::from_bits<T>(
      emu::warp_collective(emu::kShfl, mask, emu::to_bits(var), src_lane, width, emu_file, emu_line));
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32, EMU_SITE) {
  return emu::from_bits<T>(
      emu::warp_collective(emu::kShflXor, mask, emu::to_bits(var), lane_mask, width, emu_file, emu_line));
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32, EMU_SITE) {
  return emu::from_bits<T>(emu::warp_collective(emu::kShflDown, mask, emu::to_bits(var), static_cast<int>(delta),
                                                width, emu_file, emu_line));
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32, EMU_SITE) {
  return emu::from_bits<T>(emu::warp_collective(emu::kShflUp, mask, emu::to_bits(var), static_cast<int>(delta),
                                                width, emu_file, emu_line));
}

// `__shared__ T name[...];` becomes `auto& name = emu_shared<T[...]>([] {});`:
// one object per declaration (the lambda's type) and per block.
template <typename T, typename Tag>
inline T& emu_shared(Tag) {
  static char key;
  return *static_cast<T*>(emu::block_shared(&key, sizeof(T), alignof(T)));
}

// ---------------------------------------------------------------- atomics
//
// Fibers are cooperative: nothing runs between the read and the write.

template <typename T, typename F>
inline T emu_atomic_rmw(T* p, F f) {
  const T old = *p;
  *p = f(old);
  return old;
}
#define EMU_ATOMIC_ADD(T) \
  inline T atomicAdd(T* p, T v) { return emu_atomic_rmw(p, [v](T o) { return o + v; }); }
EMU_ATOMIC_ADD(int)
EMU_ATOMIC_ADD(unsigned)
EMU_ATOMIC_ADD(unsigned long long)
EMU_ATOMIC_ADD(float)
EMU_ATOMIC_ADD(double)
#undef EMU_ATOMIC_ADD
#define EMU_ATOMIC_INT(T)                                                                                   \
  inline T atomicOr(T* p, T v) { return emu_atomic_rmw(p, [v](T o) { return o | v; }); }                \
  inline T atomicAnd(T* p, T v) { return emu_atomic_rmw(p, [v](T o) { return o & v; }); }               \
  inline T atomicXor(T* p, T v) { return emu_atomic_rmw(p, [v](T o) { return o ^ v; }); }               \
  inline T atomicMax(T* p, T v) { return emu_atomic_rmw(p, [v](T o) { return o < v ? v : o; }); }       \
  inline T atomicMin(T* p, T v) { return emu_atomic_rmw(p, [v](T o) { return v < o ? v : o; }); }       \
  inline T atomicExch(T* p, T v) { return emu_atomic_rmw(p, [v](T) { return v; }); }                    \
  inline T atomicCAS(T* p, T cmp, T v) { return emu_atomic_rmw(p, [cmp, v](T o) { return o == cmp ? v : o; }); }
EMU_ATOMIC_INT(int)
EMU_ATOMIC_INT(unsigned)
EMU_ATOMIC_INT(unsigned long long)
#undef EMU_ATOMIC_INT

// ---------------------------------------------------------------- integer intrinsics

inline int __ffs(int x) { return x ? __builtin_ctz(static_cast<unsigned>(x)) + 1 : 0; }
inline int __ffsll(long long x) { return x ? __builtin_ctzll(static_cast<unsigned long long>(x)) + 1 : 0; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x ? __builtin_clz(static_cast<unsigned>(x)) : 32; }
inline int __clzll(long long x) { return x ? __builtin_clzll(static_cast<unsigned long long>(x)) : 64; }

// ---------------------------------------------------------------- fixed-rounding arithmetic
//
// One IEEE operation each, rounded to nearest even; the build passes
// -ffp-contract=off, so none is fused with a neighbour (as on the device).

inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline double __dsqrt_rn(double a) { return std::sqrt(a); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }

// Conversions as the hardware does them (PTX cvt.rni): round to nearest even,
// clamp to the destination range, NaN -> 0 for 32-bit results and MININT for
// 64-bit ones. (The host's static_cast is undefined there.)
template <typename I, typename F>
inline I emu_cvt_rni(F v, I nan_value) {
  if (v != v) return nan_value;
  const F r = std::nearbyint(v);
  if (r <= static_cast<F>(std::numeric_limits<I>::min())) return std::numeric_limits<I>::min();
  if (r >= static_cast<F>(std::numeric_limits<I>::max())) return std::numeric_limits<I>::max();
  return static_cast<I>(r);
}
inline long long __double2ll_rn(double v) { return emu_cvt_rni<long long>(v, std::numeric_limits<long long>::min()); }
inline long long __float2ll_rn(float v) { return emu_cvt_rni<long long>(v, std::numeric_limits<long long>::min()); }
inline int __double2int_rn(double v) { return emu_cvt_rni<int>(v, 0); }
inline int __float2int_rn(float v) { return emu_cvt_rni<int>(v, 0); }

// ---------------------------------------------------------------- the device side from here on

#define __CUDA_ARCH__ 900
