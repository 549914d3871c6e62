// CUDA kernels of the pose NMS family. Same per-pose and per-pair math as the
// CPU kernels (common/pose_nms_common.h); the work is laid out for the GPU:
//
//   prep      one thread per pose: checks, effective scores, per-pose meta
//   sort      (ATen) poses by image, then by descending score, stable
//   mask      one warp per pose row: suppression bitmask over the later poses
//             of its image (64 poses per word), far pairs rejected cheaply
//   scan      one warp per image: the greedy pass over the bitmask, on the
//             device (no host round trip), giving picks and merge groups
//             (the whole-body criterion, whose decisions depend on the poses
//             remaining, skips the mask: live_scan evaluates each pick's row)
//   merge     one warp per pick, a lane per joint: segmented weighted
//             reduction of the group (AlphaPose p_merge_fast) and the tests
//   compact   kept picks to the outputs, each pose's group
//
// One device-to-host copy at the end brings the kept count and the input
// error bits together. Everything runs on torch's current stream.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cstdint>
#include <tuple>
#include <type_traits>

#include "common/pose_nms_common.h"
#include "common/pose_nms_host.h"
#include "cuda/cuda_context.h"

namespace rmpe {
namespace {

using u64 = unsigned long long;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kWarpsPerBlock = cuda::kThreads / 32;

__device__ __forceinline__ int64_t global_thread() { return blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; }
__device__ __forceinline__ int64_t thread_stride() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }
__device__ __forceinline__ int64_t global_warp() { return global_thread() >> 5; }
__device__ __forceinline__ int64_t warp_stride() { return thread_stride() >> 5; }

// ---------------------------------------------------------------- prep

template <typename T>
__global__ void prep_kernel(int64_t N, int64_t K, const T* __restrict__ xy, const T* __restrict__ js,
                            const T* __restrict__ bx, const T* __restrict__ sc, const int64_t* __restrict__ img,
                            bool zero_fix, T ref_alpha, T box_frac, T* __restrict__ s_out,
                            PoseMeta<T>* __restrict__ meta, u64* __restrict__ status) {
  for (int64_t i = global_thread(); i < N; i += thread_stride()) {
    PoseMeta<T> m;
    int32_t err = prepare_pose(xy + i * K * 2, js + i * K, bx + i * 4, K, zero_fix, ref_alpha, box_frac,
                               s_out + i * K, m);
    meta[i] = m;
    if (sc && !fp::isfinite(sc[i])) err |= kBadScores;
    if (img && img[i] < 0) err |= kBadImageIndex;
    if (err) atomicOr(status, static_cast<u64>(err));
  }
}

// Per sorted position: the first and one-past-last position of its image.
__global__ void segment_kernel(int64_t N, const int64_t* __restrict__ img_sorted, int64_t* __restrict__ seg_begin,
                               int64_t* __restrict__ seg_end) {
  for (int64_t a = global_thread(); a < N; a += thread_stride()) {
    if (!img_sorted) {
      seg_begin[a] = 0;
      seg_end[a] = N;
      continue;
    }
    const int64_t v = img_sorted[a];
    int64_t lo = 0, hi = a;  // first position with image v
    while (lo < hi) {
      const int64_t mid = (lo + hi) >> 1;
      if (img_sorted[mid] < v) lo = mid + 1; else hi = mid;
    }
    seg_begin[a] = lo;
    lo = a + 1;
    hi = N;  // first position with image > v
    while (lo < hi) {
      const int64_t mid = (lo + hi) >> 1;
      if (img_sorted[mid] <= v) lo = mid + 1; else hi = mid;
    }
    seg_end[a] = lo;
  }
}

// ---------------------------------------------------------------- mask + scan

// Row a (sorted position) of its image's suppression matrix, as words of 64
// later poses: bit c of word w is set when pose a removes the pose at local
// column 64 w + c. The diagonal bit says whether a removes itself (always, but
// for AlphaPose, where it follows the criterion). Words before a's own are not
// written (never read).
template <typename T, typename Crit>
__global__ void mask_kernel(int64_t N, int64_t K, const T* __restrict__ xy, const T* __restrict__ s,
                            const PoseMeta<T>* __restrict__ meta, const int64_t* __restrict__ order,
                            const int64_t* __restrict__ seg_begin, const int64_t* __restrict__ seg_end, int64_t W,
                            Crit crit, bool quirks, u64* __restrict__ mask) {
  const int lane = threadIdx.x & 31;
  for (int64_t a = global_warp(); a < N; a += warp_stride()) {
    const int64_t b0 = seg_begin[a], n = seg_end[a] - b0, la = a - b0;
    const int64_t i = order[a];
    const T* ki = xy + i * K * 2;
    const T* si = s + i * K;
    const PoseMeta<T> mi = meta[i];
    for (int64_t w = la >> 6; w * 64 < n; ++w) {
      u64 word = 0;
      for (int h = 0; h < 2; ++h) {
        const int64_t lc = w * 64 + h * 32 + lane;
        bool bit = false;
        if (lc == la) {
          bit = !quirks || crit.decide(ki, si, ki, si, K, mi, mi);
        } else if (lc > la && lc < n) {
          const int64_t j = order[b0 + lc];
          const PoseMeta<T> mj = meta[j];
          bit = crit.may_relate(mi, mj) && crit.decide(ki, si, xy + j * K * 2, s + j * K, K, mi, mj);
        }
        word |= static_cast<u64>(__ballot_sync(kFullMask, bit)) << (32 * h);
      }
      if (lane == 0) mask[a * W + w] = word;
    }
  }
}

// The greedy pass over one image's bitmask, one warp per image (the warp of
// the image's first sorted position). Lane u handles words u, u + 32, ... of
// the removed set: only it writes them (the pick's own bit included). Writes
// the picks at pick_local[b0 + slot], every pose's slot at
// slot_local[position], the pick count at seg_count[b0].
//
// Every lane reads word v of the removed set to decide whether pose la is a
// pick; its owner writes that word in the same iteration. The __syncwarp
// between the two keeps every lane's decision the same (without it, a lane
// late to the read sees the pick's bit, skips the pick, and its count drifts
// from the others': the warp then deadlocks at the next __syncwarp).
__global__ void scan_kernel(int64_t N, const int64_t* __restrict__ order, const int64_t* __restrict__ seg_begin,
                            const int64_t* __restrict__ seg_end, int64_t W, const u64* __restrict__ mask,
                            bool quirks, u64* removed, int64_t* __restrict__ slot_local,
                            int64_t* __restrict__ pick_local, int64_t* __restrict__ seg_count) {
  const int lane = threadIdx.x & 31;
  for (int64_t a = global_warp(); a < N; a += warp_stride()) {
    if (seg_begin[a] != a) continue;
    const int64_t b0 = a, n = seg_end[a] - a, nw = (n + 63) >> 6;
    volatile u64* rem = removed + b0;  // ceil(n / 64) <= n words: segments never overlap
    int64_t cnt = 0;
    for (int64_t la = 0; la < n; ++la) {
      const int64_t v = la >> 6;
      const int bit = static_cast<int>(la & 63);
      if ((rem[v] >> bit) & 1ull) continue;  // the same for every lane: the last writes were before a __syncwarp
      __syncwarp();  // every lane has read rem[v] before lane v % 32 writes it below
      const u64* row = mask + (b0 + la) * W;
      const bool self = (row[v] >> bit) & 1ull;
      bool any = false;
      for (int64_t u = v + lane; u < nw; u += 32) {
        u64 g = row[u] & ~rem[u];
        if (u == v) g &= bit == 63 ? 0ull : (~0ull << (bit + 1));
        if (g) {
          any = true;
          for (u64 t = g; t; t &= t - 1) slot_local[b0 + u * 64 + (__ffsll(static_cast<long long>(t)) - 1)] = cnt;
        }
        if (u == v) g |= 1ull << bit;  // the pick leaves the set too
        if (g) rem[u] = rem[u] | g;
      }
      // AlphaPose: a pick that does not remove itself but removes others is
      // picked twice (its group, then itself alone); see greedy_segment (CPU).
      const int64_t twice = (quirks && !self && __any_sync(kFullMask, any)) ? 1 : 0;
      if (lane == 0) {
        const int64_t i = order[b0 + la];
        if (twice) pick_local[b0 + cnt] = i;
        pick_local[b0 + cnt + twice] = i;
        slot_local[b0 + la] = cnt + twice;
      }
      cnt += 1 + twice;
      __syncwarp();
    }
    if (lane == 0) seg_count[b0] = cnt;
  }
}

// The greedy pass for a criterion whose decisions depend on how many poses
// remain when a pick is taken (the whole-body one, kDependsOnRemaining): one
// warp per image evaluates the pick's row when it takes the pick, lane u the
// remaining poses at local columns la + 1 + u, la + 1 + u + 32, ... Writes what
// scan_kernel writes (picks, slots, pick count). `removed` holds one byte per
// sorted position, zero on entry. As greedy_segment (CPU): a pick that removes
// others but not itself stays and is taken again at once (fewer poses remain
// then); one that removes nothing is removed alone.
//
// Every lane reads removed[la] at the top of an iteration; the writes of the
// iteration before (removed[la] by lane 0, the members' bytes by their lanes)
// come before the __syncwarp that ends it, and within an iteration each
// column is read and written by one lane only.
template <typename T, typename Crit>
__global__ void live_scan_kernel(int64_t N, int64_t K, const T* __restrict__ xy, const T* __restrict__ s,
                                 const PoseMeta<T>* __restrict__ meta, const int64_t* __restrict__ order,
                                 const int64_t* __restrict__ seg_begin, const int64_t* __restrict__ seg_end,
                                 Crit crit, uint8_t* removed, int64_t* __restrict__ slot_local,
                                 int64_t* __restrict__ pick_local, int64_t* __restrict__ seg_count) {
  const int lane = threadIdx.x & 31;
  for (int64_t a = global_warp(); a < N; a += warp_stride()) {
    if (seg_begin[a] != a) continue;
    const int64_t b0 = a, n = seg_end[a] - a;
    volatile uint8_t* rem = removed + b0;
    int64_t cnt = 0, alive = n;
    for (int64_t la = 0; la < n;) {
      if (rem[la]) {
        ++la;
        continue;
      }
      const int64_t i = order[b0 + la];
      const T* ki = xy + i * K * 2;
      const T* si = s + i * K;
      const PoseMeta<T> mi = meta[i];
      int members = 0;
      for (int64_t lc = la + 1 + lane; lc < n; lc += 32) {
        if (rem[lc]) continue;
        const int64_t j = order[b0 + lc];
        const PoseMeta<T> mj = meta[j];
        if (crit.may_relate(mi, mj) && crit.decide(ki, si, xy + j * K * 2, s + j * K, K, mi, mj, alive)) {
          rem[lc] = 1;
          slot_local[b0 + lc] = cnt;
          ++members;
        }
      }
      for (int o = 16; o; o >>= 1) members += __shfl_xor_sync(kFullMask, members, o);
      const bool self = members == 0 || crit.decide(ki, si, ki, si, K, mi, mi, alive);  // the same in every lane
      alive -= members;
      if (lane == 0) {
        pick_local[b0 + cnt] = i;
        if (self) {
          rem[la] = 1;
          slot_local[b0 + la] = cnt;
        }
      }
      if (self) {
        --alive;
        ++la;
      }
      ++cnt;
      __syncwarp();
    }
    if (lane == 0) seg_count[b0] = cnt;
  }
}

// ---------------------------------------------------------------- merge

template <typename T>
__device__ __forceinline__ T warp_max(T v) {
  for (int o = 16; o; o >>= 1) {
    const T u = __shfl_xor_sync(kFullMask, v, o);
    v = u > v ? u : v;
  }
  return v;
}
template <typename T>
__device__ __forceinline__ T warp_min(T v) {
  for (int o = 16; o; o >>= 1) {
    const T u = __shfl_xor_sync(kFullMask, v, o);
    v = u < v ? u : v;
  }
  return v;
}

// One warp per pick (sorted position a stands for local slot a - b0 of its
// image); lane = joint. Members are found by scanning the image's poses in
// ascending index (by_index, their slots in slot_by_index; positions
// [b0, b0 + n) as in the sorted order) 32 at a time with a ballot, so the
// reduction sums in AlphaPose's order, as the CPU kernel does.
template <typename T>
__global__ void merge_kernel(int64_t N, int64_t K, const T* __restrict__ xy, const T* __restrict__ s,
                             const PoseMeta<T>* __restrict__ meta, const int64_t* __restrict__ by_index,
                             const int64_t* __restrict__ seg_begin, const int64_t* __restrict__ seg_end,
                             const int64_t* __restrict__ slot_by_index, const int64_t* __restrict__ pick_local,
                             const int64_t* __restrict__ seg_count, const int64_t* __restrict__ seg_incl,
                             bool merge, bool alphapose, T cap, T score_thresh, T area_thresh, T* __restrict__ merged,
                             T* __restrict__ merged_s, int64_t* __restrict__ picks_all,
                             int64_t* __restrict__ kept_all) {
  const int lane = threadIdx.x & 31;
  const T inf = T(1) / T(0);
  for (int64_t a = global_warp(); a < N; a += warp_stride()) {
    const int64_t b0 = seg_begin[a], ls = a - b0, cnt = seg_count[b0];
    if (ls >= cnt) continue;
    const int64_t n = seg_end[a] - b0;
    const int64_t gs = seg_incl[b0] - cnt + ls;
    const int64_t p = pick_local[b0 + ls];
    const T* kp = xy + p * K * 2;
    const T r = fp::py_min(meta[p].ref, cap);
    T pick_max = -inf, merged_max = -inf, xmin = inf, xmax = -inf, ymin = inf, ymax = -inf, x0 = 0, y0 = 0;
    bool merged_nan = false;
    for (int64_t k0 = 0; k0 < K; k0 += 32) {
      const int64_t k = k0 + lane;
      const bool active = k < K;
      T ax = 0, ay = 0, as = 0;
      if (merge) {
        T total = 0;
        for (int pass = 0; pass < 2; ++pass) {
          for (int64_t q0 = 0; q0 < n; q0 += 32) {
            const bool member = q0 + lane < n && slot_by_index[b0 + q0 + lane] == ls;
            for (unsigned bal = __ballot_sync(kFullMask, member); bal; bal &= bal - 1) {
              const int64_t j = by_index[b0 + q0 + __ffs(bal) - 1];
              if (!active) continue;
              const T m = merge_masked_score(kp, xy + j * K * 2, s + j * K, k, r);
              if (pass == 0) {
                total = fp::add(total, m);
              } else {
                const T wgt = fp::div(m, total);
                ax = fp::add(ax, fp::mul(xy[(j * K + k) * 2], wgt));
                ay = fp::add(ay, fp::mul(xy[(j * K + k) * 2 + 1], wgt));
                as = fp::add(as, fp::mul(m, wgt));
              }
            }
          }
        }
        if (!alphapose && active && total == T(0)) {  // no weight: keep the pick's joint (see merge_segment, CPU)
          ax = kp[2 * k];
          ay = kp[2 * k + 1];
          as = s[p * K + k];
        }
      } else if (active) {
        ax = kp[2 * k];
        ay = kp[2 * k + 1];
        as = s[p * K + k];
      }
      if (active) {
        merged[(gs * K + k) * 2] = ax;
        merged[(gs * K + k) * 2 + 1] = ay;
        merged_s[gs * K + k] = as;
        pick_max = s[p * K + k] > pick_max ? s[p * K + k] : pick_max;
        if (as != as) merged_nan = true; else merged_max = as > merged_max ? as : merged_max;
        if (ax == ax) { xmin = ax < xmin ? ax : xmin; xmax = ax > xmax ? ax : xmax; }
        if (ay == ay) { ymin = ay < ymin ? ay : ymin; ymax = ay > ymax ? ay : ymax; }
      }
      if (k0 == 0) {
        x0 = __shfl_sync(kFullMask, ax, 0);
        y0 = __shfl_sync(kFullMask, ay, 0);
      }
    }
    pick_max = warp_max(pick_max);
    merged_max = warp_max(merged_max);
    if (__any_sync(kFullMask, merged_nan)) merged_max = T(0) / T(0);  // torch.max propagates NaN
    xmin = warp_min(xmin);
    xmax = warp_max(xmax);
    ymin = warp_min(ymin);
    ymax = warp_max(ymax);
    // Python's max()/min() over the joints: NaN when the first is NaN, else
    // the extreme of the others (a NaN never replaces the running value)
    if (x0 != x0) xmin = xmax = x0;
    if (y0 != y0) ymin = ymax = y0;
    if (lane == 0) {
      picks_all[gs] = p;
      kept_all[gs] = alphapose_slot_kept(pick_max, merged_max, xmin, xmax, ymin, ymax, score_thresh, area_thresh);
    }
  }
}

// Thread t: copies kept slot t to its output position; maps sorted position t
// to its group. Thread 0 also stores the kept count in status[1].
template <typename T>
__global__ void compact_kernel(int64_t N, int64_t K, const int64_t* __restrict__ kept_all,
                               const int64_t* __restrict__ kept_incl, const int64_t* __restrict__ picks_all,
                               const T* __restrict__ merged, const T* __restrict__ merged_s,
                               const int64_t* __restrict__ order, const int64_t* __restrict__ seg_begin,
                               const int64_t* __restrict__ slot_local, const int64_t* __restrict__ seg_count,
                               const int64_t* __restrict__ seg_incl, int64_t* __restrict__ out_keep,
                               T* __restrict__ out_xy, T* __restrict__ out_s, int64_t* __restrict__ group,
                               u64* __restrict__ status) {
  for (int64_t t = global_thread(); t < N; t += thread_stride()) {
    if (kept_all[t]) {
      const int64_t m = kept_incl[t] - 1;
      out_keep[m] = picks_all[t];
      for (int64_t k = 0; k < 2 * K; ++k) out_xy[m * 2 * K + k] = merged[t * 2 * K + k];
      for (int64_t k = 0; k < K; ++k) out_s[m * K + k] = merged_s[t * K + k];
    }
    const int64_t b0 = seg_begin[t];
    const int64_t gs = seg_incl[b0] - seg_count[b0] + slot_local[t];
    group[order[t]] = kept_all[gs] ? kept_incl[gs] - 1 : -1;
    if (t == 0) status[1] = static_cast<u64>(kept_incl[N - 1]);
  }
}

// ---------------------------------------------------------------- similarity

template <typename T, typename Crit>
__global__ void similarity_kernel(int64_t N, int64_t K, const T* __restrict__ xy, const T* __restrict__ s,
                                  const PoseMeta<T>* __restrict__ meta, Crit crit, T* __restrict__ sim,
                                  int32_t* __restrict__ match) {
  for (int64_t t = global_thread(); t < N * N; t += thread_stride()) {
    const int64_t i = t / N, j = t - i * N;
    const PairScore<T> r = crit.score(xy + i * K * 2, s + i * K, xy + j * K * 2, s + j * K, K, meta[i], meta[j]);
    sim[t] = r.sim;
    match[t] = r.match;
  }
}

// ---------------------------------------------------------------- soft-OKS

// One warp per image: repeatedly take the best remaining pose (ties: lowest
// index), then rescore the others by their OKS with it.
template <typename T>
__global__ void soft_oks_kernel(int64_t N, int64_t K, const T* __restrict__ xy, const T* __restrict__ s,
                                const PoseMeta<T>* __restrict__ meta, const int64_t* __restrict__ order,
                                const int64_t* __restrict__ seg_begin, const int64_t* __restrict__ seg_end,
                                OksCriterion<T> crit, T thresh, bool linear, int64_t max_dets, T* cur,
                                int64_t* dead, int64_t* __restrict__ keep_local, T* __restrict__ kscore_local,
                                int64_t* __restrict__ seg_count) {
  const int lane = threadIdx.x & 31;
  for (int64_t a = global_warp(); a < N; a += warp_stride()) {
    if (seg_begin[a] != a) continue;
    const int64_t b0 = a, n = seg_end[a] - a;
    volatile T* vcur = cur + b0;
    volatile int64_t* vdead = dead + b0;
    int64_t cnt = 0;
    while (max_dets < 0 || cnt < max_dets) {
      int64_t best = -1;
      T best_s = 0;
      for (int64_t q = lane; q < n; q += 32) {
        if (vdead[q]) continue;
        const T v = vcur[q];
        if (best < 0 || v > best_s) {
          best = q;
          best_s = v;
        }
      }
      for (int o = 16; o; o >>= 1) {
        const int64_t ob = __shfl_xor_sync(kFullMask, best, o);
        const T os = __shfl_xor_sync(kFullMask, best_s, o);
        if (ob >= 0 && (best < 0 || os > best_s || (os == best_s && ob < best))) {
          best = ob;
          best_s = os;
        }
      }
      if (best < 0) break;
      const int64_t i = order[b0 + best];
      if (lane == 0) {
        vdead[best] = 1;
        keep_local[b0 + cnt] = i;
        kscore_local[b0 + cnt] = best_s;
      }
      __syncwarp();
      for (int64_t q = lane; q < n; q += 32) {
        if (vdead[q]) continue;
        const int64_t j = order[b0 + q];
        const T oks = crit.score(xy + i * K * 2, s + i * K, xy + j * K * 2, s + j * K, K, meta[i], meta[j]).sim;
        vcur[q] = soft_rescore(static_cast<T>(vcur[q]), oks, thresh, linear);
      }
      __syncwarp();
      ++cnt;
    }
    if (lane == 0) seg_count[b0] = cnt;
  }
}

template <typename T>
__global__ void soft_compact_kernel(int64_t N, const int64_t* __restrict__ seg_begin,
                                    const int64_t* __restrict__ seg_count, const int64_t* __restrict__ seg_incl,
                                    const int64_t* __restrict__ keep_local, const T* __restrict__ kscore_local,
                                    int64_t* __restrict__ out_keep, T* __restrict__ out_score,
                                    u64* __restrict__ status) {
  for (int64_t t = global_thread(); t < N; t += thread_stride()) {
    const int64_t b0 = seg_begin[t], ls = t - b0, cnt = seg_count[b0];
    if (ls < cnt) {
      const int64_t m = seg_incl[b0] - cnt + ls;
      out_keep[m] = keep_local[t];
      out_score[m] = kscore_local[t];
    }
    if (t == 0) status[1] = static_cast<u64>(seg_incl[N - 1]);
  }
}

// ---------------------------------------------------------------- host side

// Inputs, made contiguous, and the per-pose buffers prep_kernel fills.
template <typename T>
struct DevicePoses {
  int64_t N, K;
  at::Tensor xy, js, bx, sc, img;  // sc, img may be undefined
  at::Tensor s_eff, meta, rank, status;  // rank: the given scores, else default_rank
};

template <typename T>
DevicePoses<T> prepare_device(const at::Tensor& poses, const at::Tensor& joint_scores, const at::Tensor& boxes,
                              const c10::optional<at::Tensor>& scores, const c10::optional<at::Tensor>& image_index,
                              int64_t method, const Params& p, cudaStream_t stream) {
  DevicePoses<T> d;
  d.N = poses.size(0);
  d.K = poses.size(1);
  d.xy = poses.contiguous();
  d.js = joint_scores.contiguous();
  d.bx = boxes.contiguous();
  if (scores.has_value()) d.sc = scores->contiguous();
  d.rank = d.sc.defined() ? d.sc : default_rank(d.js, method);
  if (image_index.has_value()) d.img = image_index->contiguous();
  d.s_eff = at::empty({d.N, d.K}, poses.options());
  static_assert(sizeof(PoseMeta<T>) == 9 * sizeof(T), "PoseMeta layout");
  d.meta = at::empty({d.N, 9}, poses.options());
  d.status = at::zeros({2}, poses.options().dtype(at::kLong));
  if (d.N == 0) return d;
  const T box_frac = T(method == kPaper ? p[param::kBoxFrac] : 0.0);
  prep_kernel<T><<<cuda::blocks_for(d.N), cuda::kThreads, 0, stream>>>(
      d.N, d.K, d.xy.template data_ptr<T>(), d.js.template data_ptr<T>(), d.bx.template data_ptr<T>(),
      d.sc.defined() ? d.sc.template data_ptr<T>() : nullptr,
      d.img.defined() ? d.img.template data_ptr<int64_t>() : nullptr, zero_fix(method),
      T(p[param::kRefAlpha]), box_frac, d.s_eff.template data_ptr<T>(),
      reinterpret_cast<PoseMeta<T>*>(d.meta.template data_ptr<T>()), reinterpret_cast<u64*>(d.status.template data_ptr<int64_t>()));
  cuda::check_launch("prep_kernel");
  return d;
}

// The one synchronization: brings (error bits, count) to the host and raises
// on bad input.
inline int64_t finish(const char* op, const at::Tensor& status) {
  const at::Tensor h = status.to(at::kCPU);
  raise_input_errors(op, static_cast<int32_t>(h.data_ptr<int64_t>()[0]));
  return h.data_ptr<int64_t>()[1];
}

template <typename T>
inline const PoseMeta<T>* meta_ptr(const at::Tensor& meta) {
  return reinterpret_cast<const PoseMeta<T>*>(meta.data_ptr<T>());
}

template <typename T>
std::tuple<at::Tensor, at::Tensor> pose_similarity_typed(const at::Tensor& poses, const at::Tensor& joint_scores,
                                                         const at::Tensor& boxes, int64_t method, const Params& p,
                                                         const c10::optional<at::Tensor>& sigmas) {
  cudaStream_t stream = cuda::current_stream(poses.device());
  auto d = prepare_device<T>(poses, joint_scores, boxes, c10::nullopt, c10::nullopt, method, p, stream);
  const int64_t N = d.N, K = d.K;
  at::Tensor sim = at::empty({N, N}, poses.options());
  at::Tensor match = at::empty({N, N}, poses.options().dtype(at::kInt));
  if (N == 0) return {sim, match};
  at::Tensor vars = method == kOks ? oks_vars(*sigmas) : at::Tensor();
  with_criterion<T>(method, p, K, vars.defined() ? vars.data_ptr<T>() : nullptr, [&](const auto& crit) {
    similarity_kernel<<<cuda::blocks_for(N * N), cuda::kThreads, 0, stream>>>(
        N, K, d.xy.template data_ptr<T>(), d.s_eff.template data_ptr<T>(), meta_ptr<T>(d.meta), crit,
        sim.data_ptr<T>(), match.data_ptr<int32_t>());
  });
  cuda::check_launch("similarity_kernel");
  finish("rmpe_ext::pose_similarity", d.status);
  return {sim, match};
}

std::tuple<at::Tensor, at::Tensor> pose_similarity_cuda(const at::Tensor& poses, const at::Tensor& joint_scores,
                                                        const at::Tensor& boxes, int64_t method,
                                                        at::ArrayRef<double> params,
                                                        const c10::optional<at::Tensor>& sigmas) {
  const char* op = "rmpe_ext::pose_similarity";
  const Params p = check_args(op, poses, joint_scores, boxes, c10::nullopt, c10::nullopt, method, params, sigmas);
  cuda::DeviceGuard guard(poses.device());
  std::tuple<at::Tensor, at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(poses.scalar_type(), "pose_similarity_cuda",
                             [&] { out = pose_similarity_typed<scalar_t>(poses, joint_scores, boxes, method, p, sigmas); });
  return out;
}

// Sorted order of the poses: by image (when given), then by descending
// ranking score, ties by ascending index. Returns (order, image ids in that
// order or undefined).
inline std::pair<at::Tensor, at::Tensor> nms_order(const at::Tensor& rank, const at::Tensor& img) {
  at::Tensor order = std::get<1>(at::sort(rank, /*stable=*/true, /*dim=*/0, /*descending=*/true));
  if (!img.defined()) return {order, at::Tensor()};
  at::Tensor img1 = img.index_select(0, order);
  auto sorted = at::sort(img1, /*stable=*/true, /*dim=*/0, /*descending=*/false);
  return {order.index_select(0, std::get<1>(sorted)), std::get<0>(sorted)};
}

// Mask row width in 64-bit words: covers the largest image. Without a host
// synchronization when the whole batch fits in 8192 poses (mask <= 8 MiB).
inline int64_t mask_words(int64_t N, const at::Tensor& img_sorted) {
  if (!img_sorted.defined() || N <= 8192) return (N + 63) / 64;
  const at::Tensor counts = std::get<2>(at::unique_consecutive(img_sorted, false, true));
  return (counts.max().item<int64_t>() + 63) / 64;
}

template <typename T>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> pose_nms_typed(
    const at::Tensor& poses, const at::Tensor& joint_scores, const at::Tensor& boxes,
    const c10::optional<at::Tensor>& scores, const c10::optional<at::Tensor>& image_index, int64_t method,
    const Params& p, const c10::optional<at::Tensor>& sigmas) {
  const char* op = "rmpe_ext::pose_nms";
  cudaStream_t stream = cuda::current_stream(poses.device());
  auto d = prepare_device<T>(poses, joint_scores, boxes, scores, image_index, method, p, stream);
  const int64_t N = d.N, K = d.K;
  const auto L = poses.options().dtype(at::kLong);
  if (N == 0)
    return {at::empty({0}, L), at::empty({0, K, 2}, poses.options()), at::empty({0, K}, poses.options()),
            at::empty({0}, L)};
  const bool quirks = method == kAlphaPose || method == kWholeBody;
  const bool live = method == kWholeBody;  // decisions that depend on the poses remaining: live_scan_kernel

  auto ord = nms_order(d.rank, d.img);
  const at::Tensor order = ord.first, img_sorted = ord.second;
  const int64_t W = live ? 0 : mask_words(N, img_sorted);
  at::Tensor ws = at::empty({4, N}, L);  // seg_begin, seg_end, slot_local, pick_local
  at::Tensor zs = at::zeros({3, N}, L);  // seg_count, kept_all, removed words
  int64_t* seg_begin = ws[0].data_ptr<int64_t>();
  int64_t* seg_end = ws[1].data_ptr<int64_t>();
  int64_t* slot_local = ws[2].data_ptr<int64_t>();
  int64_t* pick_local = ws[3].data_ptr<int64_t>();
  int64_t* seg_count = zs[0].data_ptr<int64_t>();
  int64_t* kept_all = zs[1].data_ptr<int64_t>();
  u64* removed = reinterpret_cast<u64*>(zs[2].data_ptr<int64_t>());
  at::Tensor mask = at::empty({N, W}, L);
  const int64_t* order_p = order.data_ptr<int64_t>();
  const T* xy = d.xy.template data_ptr<T>();
  const T* s = d.s_eff.template data_ptr<T>();
  const PoseMeta<T>* meta = meta_ptr<T>(d.meta);
  const unsigned warp_blocks = cuda::blocks_for(N, kWarpsPerBlock);

  segment_kernel<<<cuda::blocks_for(N), cuda::kThreads, 0, stream>>>(
      N, img_sorted.defined() ? img_sorted.data_ptr<int64_t>() : nullptr, seg_begin, seg_end);
  cuda::check_launch("segment_kernel");
  at::Tensor vars = method == kOks ? oks_vars(*sigmas) : at::Tensor();
  with_criterion<T>(method, p, K, vars.defined() ? vars.data_ptr<T>() : nullptr, [&](const auto& crit) {
    if constexpr (std::decay_t<decltype(crit)>::kDependsOnRemaining) {
      live_scan_kernel<<<warp_blocks, cuda::kThreads, 0, stream>>>(N, K, xy, s, meta, order_p, seg_begin, seg_end,
                                                                   crit, reinterpret_cast<uint8_t*>(removed),
                                                                   slot_local, pick_local, seg_count);
      cuda::check_launch("live_scan_kernel");
    } else {
      mask_kernel<<<warp_blocks, cuda::kThreads, 0, stream>>>(N, K, xy, s, meta, order_p, seg_begin, seg_end, W,
                                                             crit, quirks,
                                                             reinterpret_cast<u64*>(mask.data_ptr<int64_t>()));
      cuda::check_launch("mask_kernel");
      scan_kernel<<<warp_blocks, cuda::kThreads, 0, stream>>>(N, order_p, seg_begin, seg_end, W,
                                                              reinterpret_cast<const u64*>(mask.data_ptr<int64_t>()),
                                                              quirks, removed, slot_local, pick_local, seg_count);
      cuda::check_launch("scan_kernel");
    }
  });
  const at::Tensor seg_incl = at::cumsum(zs[0], 0);

  // The merge sums each group in ascending pose index: the poses of each image
  // in that order (a stable sort by image keeps each image at the positions it
  // has in `order`), and the slot of each.
  const at::Tensor by_index = img_sorted.defined() ? std::get<1>(at::sort(d.img, /*stable=*/true, 0, false))
                                                   : at::arange(N, L);
  at::Tensor slot_of_pose = at::empty({N}, L);
  slot_of_pose.index_copy_(0, order, ws[2]);
  const at::Tensor slot_by_index = slot_of_pose.index_select(0, by_index);
  const int64_t* by_index_p = by_index.data_ptr<int64_t>();
  const int64_t* slot_by_index_p = slot_by_index.data_ptr<int64_t>();
  at::Tensor merged = at::empty({N, K, 2}, poses.options());
  at::Tensor merged_s = at::empty({N, K}, poses.options());
  at::Tensor picks_all = at::empty({N}, L);
  merge_kernel<T><<<warp_blocks, cuda::kThreads, 0, stream>>>(
      N, K, xy, s, meta, by_index_p, seg_begin, seg_end, slot_by_index_p, pick_local, seg_count,
      seg_incl.data_ptr<int64_t>(),
      p[param::kMerge] != 0, quirks, T(p[param::kMergeCap]), T(p[param::kScoreThresh]), T(p[param::kAreaThresh]),
      merged.data_ptr<T>(), merged_s.data_ptr<T>(), picks_all.data_ptr<int64_t>(), kept_all);
  cuda::check_launch("merge_kernel");
  const at::Tensor kept_incl = at::cumsum(zs[1], 0);

  at::Tensor keep = at::empty({N}, L);
  at::Tensor out_xy = at::empty({N, K, 2}, poses.options());
  at::Tensor out_s = at::empty({N, K}, poses.options());
  at::Tensor group = at::empty({N}, L);
  compact_kernel<T><<<cuda::blocks_for(N), cuda::kThreads, 0, stream>>>(
      N, K, kept_all, kept_incl.data_ptr<int64_t>(), picks_all.data_ptr<int64_t>(), merged.data_ptr<T>(),
      merged_s.data_ptr<T>(), order_p, seg_begin, slot_local, seg_count, seg_incl.data_ptr<int64_t>(),
      keep.data_ptr<int64_t>(), out_xy.data_ptr<T>(), out_s.data_ptr<T>(), group.data_ptr<int64_t>(),
      reinterpret_cast<u64*>(d.status.template data_ptr<int64_t>()));
  cuda::check_launch("compact_kernel");
  const int64_t M = finish(op, d.status);
  return {keep.narrow(0, 0, M), out_xy.narrow(0, 0, M), out_s.narrow(0, 0, M), group};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> pose_nms_cuda(
    const at::Tensor& poses, const at::Tensor& joint_scores, const at::Tensor& boxes,
    const c10::optional<at::Tensor>& scores, const c10::optional<at::Tensor>& image_index, int64_t method,
    at::ArrayRef<double> params, const c10::optional<at::Tensor>& sigmas) {
  const char* op = "rmpe_ext::pose_nms";
  const Params p = check_args(op, poses, joint_scores, boxes, scores, image_index, method, params, sigmas);
  cuda::DeviceGuard guard(poses.device());
  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(poses.scalar_type(), "pose_nms_cuda", [&] {
    out = pose_nms_typed<scalar_t>(poses, joint_scores, boxes, scores, image_index, method, p, sigmas);
  });
  return out;
}

template <typename T>
std::tuple<at::Tensor, at::Tensor> soft_oks_nms_typed(const at::Tensor& poses, const at::Tensor& joint_scores,
                                                      const at::Tensor& boxes, const at::Tensor& scores,
                                                      const c10::optional<at::Tensor>& image_index, const Params& p,
                                                      const at::Tensor& sigmas, int64_t max_dets, bool linear) {
  cudaStream_t stream = cuda::current_stream(poses.device());
  auto d = prepare_device<T>(poses, joint_scores, boxes, scores, image_index, kOks, p, stream);
  const int64_t N = d.N, K = d.K;
  const auto L = poses.options().dtype(at::kLong);
  if (N == 0) return {at::empty({0}, L), at::empty({0}, poses.options())};
  // poses by image, ascending index inside an image
  at::Tensor order, img_sorted;
  if (d.img.defined()) {
    auto sorted = at::sort(d.img, /*stable=*/true, /*dim=*/0, /*descending=*/false);
    img_sorted = std::get<0>(sorted);
    order = std::get<1>(sorted);
  } else {
    order = at::arange(N, L);
  }
  at::Tensor ws = at::empty({3, N}, L);  // seg_begin, seg_end, keep_local
  at::Tensor zs = at::zeros({2, N}, L);  // seg_count, dead
  at::Tensor cur = d.rank.index_select(0, order);
  at::Tensor kscore_local = at::empty({N}, poses.options());
  int64_t* seg_begin = ws[0].data_ptr<int64_t>();
  int64_t* seg_end = ws[1].data_ptr<int64_t>();
  segment_kernel<<<cuda::blocks_for(N), cuda::kThreads, 0, stream>>>(
      N, img_sorted.defined() ? img_sorted.data_ptr<int64_t>() : nullptr, seg_begin, seg_end);
  cuda::check_launch("segment_kernel");
  const at::Tensor vars = oks_vars(sigmas);
  soft_oks_kernel<T><<<cuda::blocks_for(N, kWarpsPerBlock), cuda::kThreads, 0, stream>>>(
      N, K, d.xy.template data_ptr<T>(), d.s_eff.template data_ptr<T>(), meta_ptr<T>(d.meta),
      order.data_ptr<int64_t>(), seg_begin, seg_end, make_oks<T>(p, vars.data_ptr<T>(), K),
      T(p[param::kOksThresh]), linear, max_dets, cur.data_ptr<T>(), zs[1].data_ptr<int64_t>(),
      ws[2].data_ptr<int64_t>(), kscore_local.data_ptr<T>(), zs[0].data_ptr<int64_t>());
  cuda::check_launch("soft_oks_kernel");
  const at::Tensor seg_incl = at::cumsum(zs[0], 0);
  at::Tensor out_keep = at::empty({N}, L);
  at::Tensor out_score = at::empty({N}, poses.options());
  soft_compact_kernel<T><<<cuda::blocks_for(N), cuda::kThreads, 0, stream>>>(
      N, seg_begin, zs[0].data_ptr<int64_t>(), seg_incl.data_ptr<int64_t>(), ws[2].data_ptr<int64_t>(),
      kscore_local.data_ptr<T>(), out_keep.data_ptr<int64_t>(), out_score.data_ptr<T>(),
      reinterpret_cast<u64*>(d.status.template data_ptr<int64_t>()));
  cuda::check_launch("soft_compact_kernel");
  const int64_t M = finish("rmpe_ext::soft_oks_nms", d.status);
  return {out_keep.narrow(0, 0, M), out_score.narrow(0, 0, M)};
}

std::tuple<at::Tensor, at::Tensor> soft_oks_nms_cuda(const at::Tensor& poses, const at::Tensor& joint_scores,
                                                     const at::Tensor& boxes, const at::Tensor& scores,
                                                     const c10::optional<at::Tensor>& image_index,
                                                     at::ArrayRef<double> params, const at::Tensor& sigmas,
                                                     int64_t max_dets, bool linear) {
  const char* op = "rmpe_ext::soft_oks_nms";
  const Params p = check_args(op, poses, joint_scores, boxes, scores, image_index, kOks, params, sigmas);
  check_soft_oks(op, p, max_dets, linear);
  cuda::DeviceGuard guard(poses.device());
  std::tuple<at::Tensor, at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(poses.scalar_type(), "soft_oks_nms_cuda", [&] {
    out = soft_oks_nms_typed<scalar_t>(poses, joint_scores, boxes, scores, image_index, p, sigmas.contiguous(),
                                       max_dets, linear);
  });
  return out;
}

}  // namespace
}  // namespace rmpe

TORCH_LIBRARY_IMPL(rmpe_ext, CUDA, m) {
  m.impl("pose_similarity", &rmpe::pose_similarity_cuda);
  m.impl("pose_nms", &rmpe::pose_nms_cuda);
  m.impl("soft_oks_nms", &rmpe::soft_oks_nms_cuda);
}
