// The one file that needs torch's CUDA runtime headers (absent from CPU builds
// of torch); everything else CUDA-side includes only cuda_context.h.
#include "cuda/cuda_context.h"

#include <c10/cuda/CUDAStream.h>

namespace rmpe {
namespace cuda {

cudaStream_t current_stream(const at::Device& device) {
  return c10::cuda::getCurrentCUDAStream(device.index()).stream();
}

}  // namespace cuda
}  // namespace rmpe
