// Portable building blocks shared by the CPU (C++) and CUDA kernels.
//
// Everything here is header-only and framework-free: it knows nothing of
// torch, so the same per-element math is compiled by the host compiler for the
// CPU kernels and by nvcc for the device kernels.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define RMPE_HD __host__ __device__ __forceinline__
#else
#define RMPE_HD inline
#endif

namespace rmpe {
namespace fp {

// Arithmetic rounded once per operation, never contracted into an FMA.
//
// The NMS decisions compare sums of these terms against thresholds; the
// reference (AlphaPose, torch on the CPU) rounds every multiply and add, so the
// device code must too. nvcc contracts a*b+c into an FMA by default; the
// intrinsics below forbid that on the device, and the host build passes
// -ffp-contract=off.
RMPE_HD float mul(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
RMPE_HD double mul(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
RMPE_HD float add(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
RMPE_HD double add(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}
RMPE_HD float sub(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
RMPE_HD double sub(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dsub_rn(a, b);
#else
  return a - b;
#endif
}
RMPE_HD float div(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
RMPE_HD double div(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __ddiv_rn(a, b);
#else
  return a / b;
#endif
}
RMPE_HD float sqrt(float a) {
#if defined(__CUDA_ARCH__)
  return __fsqrt_rn(a);
#else
  return std::sqrt(a);
#endif
}
RMPE_HD double sqrt(double a) {
#if defined(__CUDA_ARCH__)
  return __dsqrt_rn(a);
#else
  return std::sqrt(a);
#endif
}
RMPE_HD float exp(float a) {
#if defined(__CUDA_ARCH__)
  return ::expf(a);
#else
  return std::exp(a);
#endif
}
RMPE_HD double exp(double a) {
#if defined(__CUDA_ARCH__)
  return ::exp(a);
#else
  return std::exp(a);
#endif
}
RMPE_HD float tanh(float a) {
#if defined(__CUDA_ARCH__)
  return ::tanhf(a);
#else
  return std::tanh(a);
#endif
}
RMPE_HD double tanh(double a) {
#if defined(__CUDA_ARCH__)
  return ::tanh(a);
#else
  return std::tanh(a);
#endif
}
template <typename T>
RMPE_HD bool isfinite(T a) {
#if defined(__CUDA_ARCH__)
  return ::isfinite(a);
#else
  return std::isfinite(a);
#endif
}

// Python's min(a, b) / max(a, b) on two numbers: the first argument unless the
// second compares strictly smaller (larger). Differs from fmin/fmax on NaN.
template <typename T>
RMPE_HD T py_min(T a, T b) {
  return b < a ? b : a;
}
template <typename T>
RMPE_HD T py_max(T a, T b) {
  return b > a ? b : a;
}

}  // namespace fp
}  // namespace rmpe
