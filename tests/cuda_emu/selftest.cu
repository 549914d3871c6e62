// The emulation's own tests (tests/test_cuda_emu.py): kernels that break the
// CUDA execution model on purpose, whose error the emulation must report, and
// kernels whose results the test predicts. Built with the kernels of csrc/cuda
// (same rewrite), registered as torch.ops.rmpe_ext_cuda_emu._emu_selftest.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <string>

#include "cuda/cuda_context.h"

namespace {

constexpr unsigned kFull = 0xffffffffu;

// ---- broken on purpose

__global__ void lane_outside_mask(int64_t* out) { out[threadIdx.x] = __ballot_sync(1u, 1); }  // names lane 0 only

__global__ void divergent_intrinsics(int64_t* out) {
  const int lane = threadIdx.x & 31;
  out[threadIdx.x] = lane < 16 ? int64_t(__ballot_sync(kFull, 1)) : int64_t(__any_sync(kFull, 1));
}

__global__ void exit_while_waited(int64_t* out) {
  if ((threadIdx.x & 31) == 5) return;
  __syncwarp();
  out[threadIdx.x] = 1;
}

__global__ void divergent_syncthreads(int64_t* out) {
  if (threadIdx.x < 64) __syncthreads();
  out[threadIdx.x] = 1;
}

__global__ void shfl_outside_mask(int64_t* out) {
  if ((threadIdx.x & 31) < 2) out[threadIdx.x] = __shfl_sync(0x3u, int64_t(threadIdx.x), 5);
}

__global__ void warp_waits_on_syncthreads(int64_t* out) {
  if (threadIdx.x == 32) __syncwarp(0x3u);  // lanes 0 and 1 of warp 1: thread 33 never comes
  else __syncthreads();
  out[threadIdx.x] = 1;
}

// ---- results the test predicts

__global__ void warp_ops(int64_t* out) {  // [7, blockDim.x]
  const int t = threadIdx.x, lane = t & 31, n = blockDim.x;
  out[0 * n + t] = __ballot_sync(kFull, lane % 3 == 0);
  out[1 * n + t] = __any_sync(kFull, lane == 7);
  out[2 * n + t] = __all_sync(kFull, lane < 31);
  out[3 * n + t] = __shfl_sync(kFull, int64_t(t) * 10, lane + 3);  // lane + 3 > 31: modulo the width
  out[4 * n + t] = __shfl_xor_sync(kFull, int64_t(t), 5);
  out[5 * n + t] = __shfl_down_sync(kFull, int64_t(t), 3, 8);
  out[6 * n + t] = __shfl_up_sync(kFull, int64_t(t), 2, 16);
}

// Each block sums its global thread ids through a warp reduction and __shared__ memory.
__global__ void block_sums(int64_t* out) {
  __shared__ int64_t part[32];
  int64_t v = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    int64_t s = 0;
    for (unsigned w = 0; w < blockDim.x / 32; ++w) s += part[w];
    out[blockIdx.x] = s;
  }
}

__global__ void atomics(int* count, unsigned long long* bits, float* sum) {
  atomicAdd(count, 1);
  atomicOr(bits, 1ull << (threadIdx.x % 64));
  atomicAdd(sum, 0.5f);
}

at::Tensor selftest(c10::string_view which, int64_t threads) {
  const std::string c(which);
  const auto L = at::TensorOptions().dtype(at::kLong);
  cudaStream_t stream = nullptr;
  at::Tensor out = at::zeros({7 * threads}, L);
  int64_t* o = out.data_ptr<int64_t>();
  if (c == "lane_outside_mask") lane_outside_mask<<<1, threads, 0, stream>>>(o);
  else if (c == "divergent_intrinsics") divergent_intrinsics<<<1, threads, 0, stream>>>(o);
  else if (c == "exit_while_waited") exit_while_waited<<<1, threads, 0, stream>>>(o);
  else if (c == "divergent_syncthreads") divergent_syncthreads<<<1, threads, 0, stream>>>(o);
  else if (c == "shfl_outside_mask") shfl_outside_mask<<<1, threads, 0, stream>>>(o);
  else if (c == "warp_waits_on_syncthreads") warp_waits_on_syncthreads<<<1, threads, 0, stream>>>(o);
  else if (c == "warp_ops") warp_ops<<<1, threads, 0, stream>>>(o);
  else if (c == "block_sums") block_sums<<<7, threads, 0, stream>>>(o);
  else if (c == "atomics") {
    at::Tensor cnt = at::zeros({3}, L);
    atomics<<<5, threads, 0, stream>>>(reinterpret_cast<int*>(cnt.data_ptr<int64_t>()),
                                       reinterpret_cast<unsigned long long*>(cnt.data_ptr<int64_t>() + 1),
                                       reinterpret_cast<float*>(cnt.data_ptr<int64_t>() + 2));
    out = cnt;
  } else if (c == "bad_config") {
    warp_ops<<<1, 2048, 0, stream>>>(o);
  } else if (c == "garbage") {
    return at::empty({threads}, L);  // a fresh device allocation, as the kernels get it
  } else {
    TORCH_CHECK(false, "no self-test ", c);
  }
  rmpe::cuda::check_launch(c.c_str());
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(rmpe_ext_cuda_emu, m) { m.def("_emu_selftest(str which, int threads) -> Tensor", &selftest); }
