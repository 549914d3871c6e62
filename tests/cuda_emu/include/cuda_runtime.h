// The few CUDA runtime calls csrc/cuda/cuda_context.h makes, for the emulated
// build (there is no device: one emulated GPU, index 0; errors are the
// emulation's launch-configuration errors).
#pragma once

#include "emu_runtime.h"

using cudaError_t = int;
constexpr cudaError_t cudaSuccess = 0;

inline cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int) { return cudaSuccess; }
inline cudaError_t cudaGetLastError() { return emu::take_last_error(); }
inline const char* cudaGetErrorString(cudaError_t e) { return emu::error_string(e); }
