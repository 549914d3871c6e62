// csrc/cuda/cuda_context.h for the emulated build: the real header (launch
// check, kThreads, blocks_for, the current_stream declaration), but with a
// DeviceGuard that accepts the emulated device's tensors, which are CPU
// tensors. current_stream is defined in emu_runtime.cpp.
#pragma once

#include <cuda_runtime.h>

#define DeviceGuard DeviceGuard_of_the_cuda_build
#include_next <cuda/cuda_context.h>
#undef DeviceGuard

namespace rmpe {
namespace cuda {

class DeviceGuard {
 public:
  explicit DeviceGuard(const at::Device& device) {
    TORCH_CHECK(device.is_cpu(), "rmpe_ext (CUDA emulation): expected the emulated device's CPU tensors, got ", device);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;
};

}  // namespace cuda
}  // namespace rmpe
