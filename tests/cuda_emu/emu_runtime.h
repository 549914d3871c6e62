// The engine of the CUDA emulation: what emu.h's CUDA vocabulary calls into.
// Implemented in emu_runtime.cpp (its own translation unit, so every call from
// kernel code into a barrier is opaque to the optimizer: memory is reloaded
// after it, as after a real barrier). See docs/cuda_emulation.md.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstddef>
#include <cstdint>
#include <tuple>
#include <type_traits>
#include <utility>

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};

// The built-in variables of the running fiber (the scheduler sets them at
// every switch; the emulation runs one launch at a time).
extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;
constexpr int warpSize = 32;

struct CUstream_st;
using cudaStream_t = CUstream_st*;

namespace emu {

// A warp-level collective or a block barrier (the intrinsic a fiber waits at).
enum Op : int { kSyncwarp, kBallot, kAny, kAll, kShfl, kShflXor, kShflDown, kShflUp, kSyncthreads };

// One lane's arrival at a warp collective: returns that lane's result (the
// bits of a ballot, the bits of the shuffled value, ...). `value` holds the
// lane's operand bits, `arg` the source lane / xor mask / delta.
uint64_t warp_collective(Op op, unsigned mask, uint64_t value, int arg, int width, const char* file, int line);
void block_barrier(const char* file, int line);

// Per-block storage of a __shared__ declaration (one per `key`), filled with
// garbage when the block starts using it.
void* block_shared(const void* key, std::size_t size, std::size_t align);

// Whether the named mutant (a deliberately broken kernel, see build.py) is on.
bool mutant(const char* name);

// Kernel launch: runs every block of the grid, one after another, each
// block's threads as fibers. `body(ctx)` runs the kernel for the current
// fiber. Launch configuration errors set the last error (cudaGetLastError);
// protocol errors (deadlock, lane outside its mask, ...) throw.
void run_grid(const char* kernel, const char* file, int line, dim3 grid, dim3 block, std::size_t smem,
              void (*body)(void*), void* ctx);
int take_last_error();  // 0 = success
const char* error_string(int e);

// <<<grid, block, smem, stream>>>(args) is rewritten (build.py) into
// Launch(name, file, line, grid, block, smem, stream).run(kernel_caller, args...).
class Launch {
 public:
  Launch(const char* kernel, const char* file, int line, dim3 grid, dim3 block, std::size_t smem = 0,
         cudaStream_t = nullptr)
      : kernel_(kernel), file_(file), line_(line), grid_(grid), block_(block), smem_(smem) {}

  template <typename F, typename... A>
  void run(F fn, A&&... args) {
    // the parameters, evaluated once on the host; every thread gets copies
    using Params = std::tuple<std::decay_t<A>...>;
    struct Ctx {
      F fn;
      Params params;
    } ctx{fn, Params(std::forward<A>(args)...)};
    run_grid(kernel_, file_, line_, grid_, block_, smem_,
             [](void* p) {
               Ctx& c = *static_cast<Ctx*>(p);
               std::apply(c.fn, static_cast<const Params&>(c.params));
             },
             &ctx);
  }

 private:
  const char* kernel_;
  const char* file_;
  int line_;
  dim3 grid_, block_;
  std::size_t smem_;
};

// Device allocations (at::empty / at::empty_like in the .cu files, rewritten):
// filled with seeded garbage so that a read of memory no kernel wrote shows.
at::Tensor empty(at::IntArrayRef size, at::TensorOptions options = {});
at::Tensor empty_like(const at::Tensor& like);
at::Tensor empty_like(const at::Tensor& like, at::TensorOptions options);

}  // namespace emu
