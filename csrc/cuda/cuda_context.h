// The CUDA context the kernels run in: device guard, current stream, launch
// check. The .cu files include only this (and ATen's core headers), so they
// compile against a CPU build of torch too (CI compile-checks every kernel on
// a machine without a GPU); cuda_context.cpp, built only for CUDA torch,
// supplies the stream from torch's CUDA runtime.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <cuda_runtime.h>

namespace rmpe {
namespace cuda {

// torch's current stream on `device` (cuda_context.cpp).
cudaStream_t current_stream(const at::Device& device);

// Makes `device` current for the scope (what c10::cuda::CUDAGuard does).
class DeviceGuard {
 public:
  explicit DeviceGuard(const at::Device& device) {
    TORCH_CHECK(device.is_cuda(), "rmpe_ext: expected a CUDA device, got ", device);
    TORCH_CHECK(cudaGetDevice(&prev_) == cudaSuccess, "rmpe_ext: cudaGetDevice failed");
    if (prev_ != device.index()) TORCH_CHECK(cudaSetDevice(device.index()) == cudaSuccess, "rmpe_ext: cudaSetDevice failed");
  }
  ~DeviceGuard() {
    int cur = -1;
    if (cudaGetDevice(&cur) == cudaSuccess && cur != prev_) cudaSetDevice(prev_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = 0;
};

// After every launch: surfaces configuration errors with the kernel's name.
inline void check_launch(const char* kernel) {
  const cudaError_t e = cudaGetLastError();
  TORCH_CHECK(e == cudaSuccess, "rmpe_ext: launch of ", kernel, " failed: ", cudaGetErrorString(e));
}

constexpr int kThreads = 256;
inline unsigned blocks_for(int64_t work, int64_t per_block = kThreads) {
  const int64_t b = (work + per_block - 1) / per_block;
  return static_cast<unsigned>(b < 1 ? 1 : (b > 2147483647 ? 2147483647 : b));
}

}  // namespace cuda
}  // namespace rmpe
