// The engine of the CUDA emulation (see docs/cuda_emulation.md).
//
// A launch runs its blocks one after another on the calling OS thread. A
// block's threads are fibers (cooperative, a stack each, a handful of
// instructions to switch). A fiber runs until it arrives at a barrier (a warp
// collective or __syncthreads) or exits; the scheduler then picks the next
// ready fiber by the schedule policy (seeded random, lowest thread first,
// highest thread first). A barrier releases its fibers when all of them have
// arrived; they are then ready and resume in the order the policy picks.
//
// Everything CUDA leaves undefined and this model can see is an error with a
// message naming the kernel, block, warp and lanes: a lane calling a warp
// intrinsic with a mask that excludes it, lanes of one mask meeting at
// different intrinsics or lines or with different masks, a lane exiting while
// others wait for it, a shuffle reading a lane outside the mask, a deadlock.
#include "emu_runtime.h"

#include <ATen/ATen.h>
#include <torch/library.h>

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <numeric>
#include <string>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EMU_ASAN 1
#endif
#endif
#ifdef EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#if !defined(__x86_64__)
#error "cuda_emu: the fiber switch is written for x86-64 (SysV); port emu_switch for this architecture"
#endif

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

namespace rmpe {
namespace cuda {
// The emulated device has one stream; kernels run when launched.
cudaStream_t current_stream(const at::Device&) { return nullptr; }
}  // namespace cuda
}  // namespace rmpe

// ---------------------------------------------------------------- fiber switch
//
// emu_switch(save, load): pushes the callee-saved registers, stores the stack
// pointer in *save, loads `load`, pops and returns into the other fiber. A new
// fiber's stack is laid out so that the first switch "returns" into
// emu_fiber_start, which calls r13(r12) = fiber_main(fiber).
extern "C" void emu_switch(void** save, void* load);
extern "C" void emu_fiber_start();
asm(R"(
  .text
  .globl emu_switch
  .type emu_switch, @function
emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size emu_switch, .-emu_switch

  .globl emu_fiber_start
  .type emu_fiber_start, @function
emu_fiber_start:
  movq %r12, %rdi
  callq *%r13
  ud2
  .size emu_fiber_start, .-emu_fiber_start
)");

namespace emu {
namespace {

// ---------------------------------------------------------------- configuration

enum class Policy { kRandom, kLowest, kHighest };

struct Config {
  Policy policy = Policy::kRandom;
  uint64_t seed = 1;
  bool garbage = true;
  std::vector<std::string> mutants;
};
Config g_cfg;
uint64_t g_launch_counter = 0, g_alloc_counter = 0;

struct Stats {
  int64_t launches = 0, blocks = 0, threads = 0, arrivals = 0, collectives = 0, block_barriers = 0;
};
Stats g_stats;

uint64_t mix(uint64_t x) {  // splitmix64
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
struct Rng {
  uint64_t s;
  uint64_t next() { return mix(s++); }
};

void fill_garbage(void* p, std::size_t n, uint64_t seed) {
  Rng r{seed};
  unsigned char* b = static_cast<unsigned char*>(p);
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const uint64_t v = r.next();
    std::memcpy(b + i, &v, 8);
  }
  if (i < n) {
    const uint64_t v = r.next();
    std::memcpy(b + i, &v, n - i);
  }
}

const char* op_name(Op op) {
  switch (op) {
    case kSyncwarp: return "__syncwarp";
    case kBallot: return "__ballot_sync";
    case kAny: return "__any_sync";
    case kAll: return "__all_sync";
    case kShfl: return "__shfl_sync";
    case kShflXor: return "__shfl_xor_sync";
    case kShflDown: return "__shfl_down_sync";
    case kShflUp: return "__shfl_up_sync";
    case kSyncthreads: return "__syncthreads";
  }
  return "?";
}

std::string lanes_str(uint64_t bits) {  // {0-3,5}
  std::string s = "{";
  bool first = true;
  for (int i = 0; i < 64; ++i) {
    if (!(bits >> i & 1)) continue;
    int j = i;
    while (j + 1 < 64 && (bits >> (j + 1) & 1)) ++j;
    s += (first ? "" : ",") + std::to_string(i) + (j > i ? "-" + std::to_string(j) : "");
    first = false;
    i = j;
  }
  return s + "}";
}

std::string hex(unsigned m) {
  char b[16];
  std::snprintf(b, sizeof b, "0x%08x", m);
  return b;
}

// ---------------------------------------------------------------- fibers and the block

enum FState { kReady, kRunning, kBlocked, kDone };

struct Arrival {
  Op op;
  const char* file;
  int line;
  unsigned mask;
  uint64_t value;
  int arg, width;
};

std::string site(const Arrival& a) { return std::string(op_name(a.op)) + " (" + a.file + ":" + std::to_string(a.line) + ")"; }

struct Fiber {
  void* sp = nullptr;
  char* stack_lo = nullptr;
  std::size_t stack_size = 0;
  int id = 0, warp = 0, lane = 0;
  uint3 tid{0, 0, 0};
  FState state = kReady;
  Arrival at{};
  uint64_t result = 0;
  void* fake_stack = nullptr;
};

struct Pending {  // a warp collective some lanes of its mask have reached
  Arrival at;     // the first arrival: op, site, mask, width
  unsigned arrived;
};

#ifdef EMU_ASAN
constexpr std::size_t kStackSize = 512 * 1024;
#else
constexpr std::size_t kStackSize = 128 * 1024;
#endif
constexpr std::size_t kSharedBytes = 48 * 1024;  // static __shared__ limit

struct Engine {
  std::mutex mu;  // one launch at a time
  // launch
  const char* kernel = nullptr;
  const char* file = nullptr;
  int line = 0;
  void (*body)(void*) = nullptr;
  void* ctx = nullptr;
  std::string policy_str;
  // block
  int n = 0;
  std::vector<Fiber> fibers;
  std::vector<std::vector<Pending>> pending;  // per warp
  std::vector<unsigned> exists, exited;       // per warp: lanes of the block, lanes that have exited
  int done = 0;
  bool bar_active = false;
  Arrival bar_at{};
  int bar_arrived = 0;
  std::vector<uint64_t> ready;  // bitset over fibers
  int nready = 0;
  Rng rng{0};
  std::string error;
  Fiber* cur = nullptr;
  void* main_sp = nullptr;
  const void* main_stack_lo = nullptr;
  std::size_t main_stack_size = 0;
  // shared memory
  alignas(64) unsigned char arena[kSharedBytes];
  std::size_t arena_used = 0;
  std::vector<std::pair<const void*, void*>> shared;
  uint64_t block_seed = 0;
};
Engine& E() {
  static Engine* e = new Engine();  // never destroyed: fiber stacks may be referenced at exit
  return *e;
}

std::string where(const Engine& e) {
  return std::string(e.kernel) + " (launched at " + e.file + ":" + std::to_string(e.line) + "), block (" +
         std::to_string(blockIdx.x) + "," + std::to_string(blockIdx.y) + "," + std::to_string(blockIdx.z) +
         "), schedule " + e.policy_str;
}

// ---------------------------------------------------------------- switching

void switch_in(Engine& e, Fiber& f) {  // scheduler -> fiber
#ifdef EMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, f.stack_lo, f.stack_size);
#endif
  emu_switch(&e.main_sp, f.sp);
#ifdef EMU_ASAN
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
}

void switch_out(Engine& e, Fiber& f) {  // fiber -> scheduler
#ifdef EMU_ASAN
  __sanitizer_start_switch_fiber(f.state == kDone ? nullptr : &f.fake_stack, e.main_stack_lo, e.main_stack_size);
#endif
  emu_switch(&f.sp, e.main_sp);
#ifdef EMU_ASAN
  __sanitizer_finish_switch_fiber(f.fake_stack, &e.main_stack_lo, &e.main_stack_size);
#endif
}

// Records the error and leaves the fiber for good (the block is abandoned).
[[noreturn]] void fail(Engine& e, const std::string& msg) {
  if (e.error.empty()) e.error = "CUDA emulation: " + where(e) + ": " + msg;
  Fiber& f = *e.cur;
  f.state = kBlocked;
  switch_out(e, f);
  std::abort();  // never resumed
}

void set_ready(Engine& e, Fiber& f) {
  f.state = kReady;
  e.ready[f.id >> 6] |= 1ull << (f.id & 63);
  ++e.nready;
}

int pick(Engine& e) {
  if (e.nready == 0) return -1;
  const int words = static_cast<int>(e.ready.size());
  int id = -1;
  if (g_cfg.policy == Policy::kLowest) {
    for (int w = 0; w < words && id < 0; ++w)
      if (e.ready[w]) id = w * 64 + __builtin_ctzll(e.ready[w]);
  } else if (g_cfg.policy == Policy::kHighest) {
    for (int w = words - 1; w >= 0 && id < 0; --w)
      if (e.ready[w]) id = w * 64 + 63 - __builtin_clzll(e.ready[w]);
  } else {
    int r = static_cast<int>(e.rng.next() % static_cast<uint64_t>(e.nready));
    for (int w = 0; w < words; ++w) {
      const int c = __builtin_popcountll(e.ready[w]);
      if (r >= c) {
        r -= c;
        continue;
      }
      uint64_t b = e.ready[w];
      for (int k = 0; k < r; ++k) b &= b - 1;
      id = w * 64 + __builtin_ctzll(b);
      break;
    }
  }
  e.ready[id >> 6] &= ~(1ull << (id & 63));
  --e.nready;
  return id;
}

void on_exit(Engine& e, Fiber& f) {
  f.state = kDone;
  ++e.done;
  const unsigned bit = 1u << f.lane;
  e.exited[f.warp] |= bit;
  for (const Pending& p : e.pending[f.warp])
    if (p.at.mask & bit)
      fail(e, "warp " + std::to_string(f.warp) + ": lane " + std::to_string(f.lane) + " exited while lanes " +
                  lanes_str(p.arrived) + " wait for it at " + site(p.at) + " (mask " + hex(p.at.mask) + ")");
  if (e.bar_arrived > 0)
    fail(e, "thread " + std::to_string(f.id) + " exited while " + std::to_string(e.bar_arrived) +
                " threads wait at " + site(e.bar_at));
}

void fiber_main(Fiber* fp) {
  Engine& e = E();
#ifdef EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &e.main_stack_lo, &e.main_stack_size);
#endif
  try {
    e.body(e.ctx);
  } catch (const std::exception& ex) {
    fail(e, std::string("the kernel threw: ") + ex.what());
  }
  on_exit(e, *fp);
  switch_out(e, *fp);
  std::abort();  // a finished fiber is never resumed
}

char* new_stack() {
  const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  void* p = mmap(nullptr, kStackSize + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  TORCH_CHECK(p != MAP_FAILED, "CUDA emulation: cannot map a fiber stack");
  mprotect(p, page, PROT_NONE);  // guard page: an overflow faults instead of corrupting
  return static_cast<char*>(p) + page;
}

void init_fiber(Fiber& f) {
  if (!f.stack_lo) {
    f.stack_lo = new_stack();
    f.stack_size = kStackSize;
  }
#ifdef EMU_ASAN
  ASAN_UNPOISON_MEMORY_REGION(f.stack_lo, f.stack_size);  // an abandoned fiber may have left poison
#endif
  uintptr_t top = reinterpret_cast<uintptr_t>(f.stack_lo + f.stack_size) & ~uintptr_t(15);
  void** sp = reinterpret_cast<void**>(top) - 7;
  sp[0] = nullptr;                                            // r15
  sp[1] = nullptr;                                            // r14
  sp[2] = reinterpret_cast<void*>(&fiber_main);               // r13
  sp[3] = &f;                                                 // r12
  sp[4] = nullptr;                                            // rbx
  sp[5] = nullptr;                                            // rbp
  sp[6] = reinterpret_cast<void*>(&emu_fiber_start);          // return address
  f.sp = sp;
  f.fake_stack = nullptr;
  f.state = kReady;
}

std::string deadlock_report(Engine& e) {
  std::string s = "deadlock: no thread can run; " + std::to_string(e.done) + " of " + std::to_string(e.n) +
                  " threads have exited";
  for (std::size_t w = 0; w < e.pending.size(); ++w)
    for (const Pending& p : e.pending[w])
      s += "; warp " + std::to_string(w) + ": lanes " + lanes_str(p.arrived) + " wait at " + site(p.at) +
           " for lanes " + lanes_str(p.at.mask & ~p.arrived) +
           ((p.at.mask & e.exited[w]) ? " (of which " + lanes_str(p.at.mask & e.exited[w]) + " have exited)" : "");
  if (e.bar_arrived) s += "; " + std::to_string(e.bar_arrived) + " threads wait at " + site(e.bar_at);
  return s;
}

void run_block(Engine& e, uint3 bid, const dim3& bd) {
  blockIdx = bid;
  e.block_seed = mix(e.rng.next());
  const int n = e.n;
  const int warps = (n + 31) / 32;
  e.pending.assign(warps, {});
  e.exists.assign(warps, 0);
  e.exited.assign(warps, 0);
  for (int w = 0; w < warps; ++w) {
    const int lanes = std::min(32, n - 32 * w);
    e.exists[w] = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1);
  }
  e.ready.assign((n + 63) / 64, 0);
  e.nready = 0;
  e.done = 0;
  e.bar_arrived = 0;
  e.arena_used = 0;
  e.shared.clear();
  for (int t = 0; t < n; ++t) {
    Fiber& f = e.fibers[t];
    f.id = t;
    f.warp = t / 32;
    f.lane = t % 32;
    f.tid = {static_cast<unsigned>(t % bd.x), static_cast<unsigned>((t / bd.x) % bd.y),
             static_cast<unsigned>(t / (bd.x * bd.y))};
    init_fiber(f);
    set_ready(e, f);
  }
  ++g_stats.blocks;
  g_stats.threads += n;
  for (int id; (id = pick(e)) >= 0;) {
    Fiber& f = e.fibers[id];
    f.state = kRunning;
    e.cur = &f;
    threadIdx = f.tid;
    switch_in(e, f);
    e.cur = nullptr;
    if (!e.error.empty()) return;
  }
  if (e.done != n) e.error = "CUDA emulation: " + where(e) + ": " + deadlock_report(e);
}

// ---------------------------------------------------------------- collectives

void complete(Engine& e, int warp, const Pending& p) {
  ++g_stats.collectives;
  Fiber* lanes = &e.fibers[warp * 32];
  const unsigned m = p.at.mask;
  uint64_t ballot = 0;
  for (int l = 0; l < 32; ++l)
    if ((m >> l & 1) && lanes[l].at.value) ballot |= 1ull << l;
  for (int l = 0; l < 32; ++l) {
    if (!(m >> l & 1)) continue;
    Fiber& f = lanes[l];
    const int w = p.at.width, arg = f.at.arg, seg = l & ~(w - 1);
    int src = -1;  // lane whose value this lane gets (-1: own value / not a shuffle)
    switch (p.at.op) {
      case kSyncwarp: f.result = 0; break;
      case kBallot: f.result = ballot; break;
      case kAny: f.result = ballot != 0; break;
      case kAll: f.result = ballot == m; break;
      case kShfl: src = seg | (arg & (w - 1)); break;
      case kShflXor: src = l ^ arg; if (src < 0 || src > 31 || (src & ~(w - 1)) > seg) src = l; break;
      case kShflDown: src = (l - seg) + arg >= w ? l : l + arg; break;
      case kShflUp: src = (l - seg) < arg ? l : l - arg; break;
      default: break;
    }
    if (src >= 0) {
      if (!(m >> src & 1))
        fail(e, "warp " + std::to_string(warp) + ": lane " + std::to_string(l) + " reads lane " + std::to_string(src) +
                    ", outside the mask " + hex(m) + ", at " + site(p.at));
      f.result = lanes[src].at.value;
    }
  }
  for (int l = 0; l < 32; ++l)
    if (m >> l & 1) set_ready(e, lanes[l]);
}

}  // namespace

uint64_t warp_collective(Op op, unsigned mask, uint64_t value, int arg, int width, const char* file, int line) {
  Engine& e = E();
  TORCH_CHECK(e.cur, "CUDA emulation: ", op_name(op), " called outside a kernel (", file, ":", line, ")");
  Fiber& f = *e.cur;
  ++g_stats.arrivals;
  const Arrival a{op, file, line, mask, value, arg, width};
  const std::string who = "warp " + std::to_string(f.warp) + ": lane " + std::to_string(f.lane);
  const unsigned bit = 1u << f.lane;
  if (!(mask & bit)) fail(e, who + " calls " + site(a) + " with mask " + hex(mask) + ", which excludes it");
  if (width < 1 || width > 32 || (width & (width - 1)))
    fail(e, who + " calls " + site(a) + " with width " + std::to_string(width) + " (a power of 2 up to 32)");
  if (mask & ~e.exists[f.warp])
    fail(e, who + " calls " + site(a) + " with mask " + hex(mask) + ", naming lanes " +
                lanes_str(mask & ~e.exists[f.warp]) + " the block does not have");
  if (mask & e.exited[f.warp])
    fail(e, who + " calls " + site(a) + " with mask " + hex(mask) + ", naming lanes " +
                lanes_str(mask & e.exited[f.warp]) + " that have exited");
  std::vector<Pending>& pend = e.pending[f.warp];
  std::size_t k = 0;
  while (k < pend.size() && !(pend[k].at.mask & mask)) ++k;
  if (k < pend.size()) {
    const Pending& p = pend[k];
    if (p.at.mask != mask || p.at.op != op || p.at.line != line || std::strcmp(p.at.file, file) != 0 ||
        p.at.width != width)
      fail(e, who + " arrives at " + site(a) + " with mask " + hex(mask) + " while lanes " + lanes_str(p.arrived) +
                  " wait at " + site(p.at) + " with mask " + hex(p.at.mask) +
                  (p.at.width != width ? " (widths " + std::to_string(width) + " and " + std::to_string(p.at.width) + ")"
                                       : ""));
  } else {
    pend.push_back({a, 0});
  }
  f.at = a;
  f.state = kBlocked;
  pend[k].arrived |= bit;
  if (pend[k].arrived == mask) {
    const Pending p = pend[k];
    pend.erase(pend.begin() + static_cast<std::ptrdiff_t>(k));
    complete(e, f.warp, p);
  }
  switch_out(e, f);
  return f.result;
}

void block_barrier(const char* file, int line) {
  Engine& e = E();
  TORCH_CHECK(e.cur, "CUDA emulation: __syncthreads called outside a kernel (", file, ":", line, ")");
  Fiber& f = *e.cur;
  const Arrival a{kSyncthreads, file, line, 0, 0, 0, 32};
  if (e.done)
    fail(e, "thread " + std::to_string(f.id) + " reaches " + site(a) + " after " + std::to_string(e.done) +
                " threads of the block have exited");
  if (e.bar_arrived && (e.bar_at.line != line || std::strcmp(e.bar_at.file, file) != 0))
    fail(e, "thread " + std::to_string(f.id) + " reaches " + site(a) + " while " + std::to_string(e.bar_arrived) +
                " threads wait at " + site(e.bar_at));
  for (const Pending& p : e.pending[f.warp])
    if (p.at.mask >> f.lane & 1)
      fail(e, "warp " + std::to_string(f.warp) + ": lane " + std::to_string(f.lane) + " reaches " + site(a) +
                    " while lanes " + lanes_str(p.arrived) + " wait for it at " + site(p.at));
  e.bar_at = a;
  f.at = a;
  f.state = kBlocked;
  if (++e.bar_arrived == e.n) {
    ++g_stats.block_barriers;
    e.bar_arrived = 0;
    for (int t = 0; t < e.n; ++t) set_ready(e, e.fibers[t]);
  }
  switch_out(e, f);
}

void* block_shared(const void* key, std::size_t size, std::size_t align) {
  Engine& e = E();
  for (const auto& kv : e.shared)
    if (kv.first == key) return kv.second;
  const std::size_t off = (e.arena_used + align - 1) / align * align;
  if (off + size > kSharedBytes)
    fail(e, "static __shared__ memory over " + std::to_string(kSharedBytes) + " bytes");
  void* p = e.arena + off;
  if (g_cfg.garbage) fill_garbage(p, size, mix(e.block_seed + off));
  e.arena_used = off + size;
  e.shared.emplace_back(key, p);
  return p;
}

bool mutant(const char* name) {
  for (const auto& m : g_cfg.mutants)
    if (m == name) return true;
  return false;
}

namespace {
int g_last_error = 0;
constexpr int kInvalidConfiguration = 9;
}  // namespace

int take_last_error() {
  const int e = g_last_error;
  g_last_error = 0;
  return e;
}
const char* error_string(int e) {
  return e == 0 ? "no error" : (e == kInvalidConfiguration ? "invalid configuration argument" : "unknown error");
}

void run_grid(const char* kernel, const char* file, int line, dim3 grid, dim3 block, std::size_t smem,
              void (*body)(void*), void* ctx) {
  Engine& e = E();
  std::lock_guard<std::mutex> lock(e.mu);
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  if (threads == 0 || threads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64 || grid.x == 0 ||
      grid.x > 2147483647u || grid.y == 0 || grid.y > 65535 || grid.z == 0 || grid.z > 65535 ||
      smem > kSharedBytes) {
    g_last_error = kInvalidConfiguration;
    return;
  }
  ++g_stats.launches;
  e.kernel = kernel;
  e.file = file;
  e.line = line;
  e.body = body;
  e.ctx = ctx;
  e.error.clear();
  e.n = static_cast<int>(threads);
  if (e.fibers.size() < threads) e.fibers.resize(threads);
  const uint64_t launch_seed = mix(mix(g_cfg.seed) + g_launch_counter++);
  e.rng = Rng{launch_seed};
  e.policy_str = g_cfg.policy == Policy::kLowest    ? "lowest-first"
                 : g_cfg.policy == Policy::kHighest ? "highest-first"
                                                    : "random (seed " + std::to_string(g_cfg.seed) + ")";
  gridDim = grid;
  blockDim = block;
  // blocks one after another: ascending, descending, or shuffled
  const uint64_t nb = uint64_t(grid.x) * grid.y * grid.z;
  std::vector<uint64_t> order(nb);
  std::iota(order.begin(), order.end(), 0);
  if (g_cfg.policy == Policy::kHighest) std::reverse(order.begin(), order.end());
  if (g_cfg.policy == Policy::kRandom)
    for (uint64_t i = nb; i > 1; --i) std::swap(order[i - 1], order[e.rng.next() % i]);
  for (uint64_t b : order) {
    const uint3 bid{static_cast<unsigned>(b % grid.x), static_cast<unsigned>((b / grid.x) % grid.y),
                    static_cast<unsigned>(b / (uint64_t(grid.x) * grid.y))};
    run_block(e, bid, block);
    if (!e.error.empty()) {
      const std::string msg = e.error;
      e.error.clear();
      TORCH_CHECK(false, msg);
    }
  }
}

at::Tensor empty(at::IntArrayRef size, at::TensorOptions options) {
  at::Tensor t = at::empty(size, options);
  if (g_cfg.garbage && t.numel()) fill_garbage(t.data_ptr(), t.nbytes(), mix(mix(g_cfg.seed) ^ ++g_alloc_counter));
  return t;
}
at::Tensor empty_like(const at::Tensor& like, at::TensorOptions options) {
  return empty(like.sizes(), like.options().merge_in(options));
}
at::Tensor empty_like(const at::Tensor& like) { return empty(like.sizes(), like.options()); }

// ---------------------------------------------------------------- control ops

namespace {

void configure(c10::string_view schedule, int64_t seed, bool garbage, c10::List<std::string> mutants) {
  const std::string s(schedule);
  if (s == "random") g_cfg.policy = Policy::kRandom;
  else if (s == "lowest-first") g_cfg.policy = Policy::kLowest;
  else if (s == "highest-first") g_cfg.policy = Policy::kHighest;
  else TORCH_CHECK(false, "CUDA emulation: schedule must be random, lowest-first or highest-first, got ", s);
  g_cfg.seed = static_cast<uint64_t>(seed);
  g_cfg.garbage = garbage;
  g_cfg.mutants.assign(mutants.begin(), mutants.end());
  g_launch_counter = 0;
  g_alloc_counter = 0;
}

std::vector<int64_t> stats() {
  return {g_stats.launches, g_stats.blocks,      g_stats.threads,
          g_stats.arrivals, g_stats.collectives, g_stats.block_barriers};
}

}  // namespace
}  // namespace emu

TORCH_LIBRARY_FRAGMENT(rmpe_ext_cuda_emu, m) {
  m.def("_emu_configure(str schedule, int seed, bool garbage, str[] mutants) -> ()", &emu::configure);
  m.def("_emu_stats() -> int[]", &emu::stats);
}
