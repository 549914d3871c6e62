// CPU kernels of the pose NMS family: all-pairs similarity, greedy NMS with
// AlphaPose-style merging, soft-OKS-NMS. Per-pose and per-pair math comes from
// common/pose_nms_common.h (shared with the CUDA kernels). Images of a batch
// are independent segments and run in parallel.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <numeric>
#include <vector>

#include "common/pose_nms_common.h"
#include "common/pose_nms_host.h"

namespace rmpe {
namespace {

// Validated, read-only views of the inputs plus the per-pose meta.
template <typename T>
struct PreparedPoses {
  int64_t N = 0, K = 0;
  const T* xy = nullptr;       // [N, K, 2]
  std::vector<T> s;            // [N, K] effective joint scores
  std::vector<PoseMeta<T>> meta;
  at::Tensor rank_t;           // [N] ranking score (kept alive for `rank`)
  const T* rank = nullptr;
  const int64_t* img = nullptr;
};

template <typename T>
PreparedPoses<T> prepare_cpu(const char* op, const at::Tensor& poses, const at::Tensor& joint_scores,
                             const at::Tensor& boxes, const c10::optional<at::Tensor>& scores,
                             const c10::optional<at::Tensor>& image_index, int64_t method, const Params& p) {
  const bool fix_zeros = zero_fix(method);  // AlphaPose turns zero joint scores into 1e-5
  PreparedPoses<T> pp;
  pp.N = poses.size(0);
  pp.K = poses.size(1);
  pp.xy = poses.data_ptr<T>();
  const T* js = joint_scores.data_ptr<T>();
  const T* bx = boxes.data_ptr<T>();
  pp.rank_t = scores.has_value() ? *scores : default_rank(joint_scores, method);
  pp.rank = pp.rank_t.template data_ptr<T>();
  pp.img = image_index.has_value() ? image_index->data_ptr<int64_t>() : nullptr;
  const int64_t N = pp.N, K = pp.K;
  pp.s.resize(N * K);
  pp.meta.resize(N);
  const T ref_alpha = T(p[param::kRefAlpha]), box_frac = T(method == kPaper ? p[param::kBoxFrac] : 0.0);
  int32_t err = 0;
  for (int64_t i = 0; i < N; ++i) {
    err |= prepare_pose(pp.xy + i * K * 2, js + i * K, bx + i * 4, K, fix_zeros, ref_alpha, box_frac,
                        pp.s.data() + i * K, pp.meta[i]);
    if (scores.has_value() && !fp::isfinite(pp.rank[i])) err |= kBadScores;
    if (pp.img && pp.img[i] < 0) err |= kBadImageIndex;
  }
  raise_input_errors(op, err);
  return pp;
}

// Poses grouped by image (ascending image id, ascending index inside an
// image): `by_img` and the segment starts `seg` (size nseg + 1).
void group_by_image(int64_t N, const int64_t* img, std::vector<int64_t>& by_img, std::vector<int64_t>& seg) {
  by_img.resize(N);
  std::iota(by_img.begin(), by_img.end(), 0);
  seg.assign(1, 0);
  if (N == 0) return;
  if (img) {
    const int64_t max_id = *std::max_element(img, img + N);
    if (max_id < 4 * N + 1024) {  // counting sort: stable and linear
      std::vector<int64_t> start(max_id + 2, 0);
      for (int64_t i = 0; i < N; ++i) ++start[img[i] + 1];
      std::partial_sum(start.begin(), start.end(), start.begin());
      for (int64_t i = 0; i < N; ++i) by_img[start[img[i]]++] = i;
    } else {
      std::stable_sort(by_img.begin(), by_img.end(), [img](int64_t a, int64_t b) { return img[a] < img[b]; });
    }
    for (int64_t t = 1; t < N; ++t)
      if (img[by_img[t]] != img[by_img[t - 1]]) seg.push_back(t);
  }
  seg.push_back(N);
}

template <typename T>
std::tuple<at::Tensor, at::Tensor> pose_similarity_typed(const at::Tensor& poses, const at::Tensor& joint_scores,
                                                         const at::Tensor& boxes, int64_t method, const Params& p,
                                                         const c10::optional<at::Tensor>& sigmas) {
  const auto pp = prepare_cpu<T>("rmpe_ext::pose_similarity", poses, joint_scores, boxes, c10::nullopt,
                                 c10::nullopt, method, p);
  const int64_t N = pp.N, K = pp.K;
  at::Tensor sim = at::empty({N, N}, poses.options());
  at::Tensor match = at::empty({N, N}, poses.options().dtype(at::kInt));
  at::Tensor vars = method == kOks ? oks_vars(*sigmas) : at::Tensor();
  T* S = sim.data_ptr<T>();
  int32_t* M = match.data_ptr<int32_t>();
  with_criterion<T>(method, p, K, vars.defined() ? vars.data_ptr<T>() : nullptr, [&](const auto& crit) {
    at::parallel_for(0, N, std::max<int64_t>(1, 2048 / std::max<int64_t>(N, 1)), [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        for (int64_t j = 0; j < N; ++j) {
          const auto r = crit.score(pp.xy + i * K * 2, &pp.s[i * K], pp.xy + j * K * 2, &pp.s[j * K], K,
                                    pp.meta[i], pp.meta[j]);
          S[i * N + j] = r.sim;
          M[i * N + j] = r.match;
        }
      }
    });
  });
  return {sim, match};
}

std::tuple<at::Tensor, at::Tensor> pose_similarity_cpu(const at::Tensor& poses, const at::Tensor& joint_scores,
                                                       const at::Tensor& boxes, int64_t method,
                                                       at::ArrayRef<double> params,
                                                       const c10::optional<at::Tensor>& sigmas) {
  const char* op = "rmpe_ext::pose_similarity";
  const Params p = check_args(op, poses, joint_scores, boxes, c10::nullopt, c10::nullopt, method, params, sigmas);
  const auto P = poses.contiguous(), S = joint_scores.contiguous(), B = boxes.contiguous();
  const auto sig = sigmas.has_value() ? c10::optional<at::Tensor>(sigmas->contiguous()) : c10::nullopt;
  std::tuple<at::Tensor, at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(poses.scalar_type(), "pose_similarity_cpu",
                             [&] { out = pose_similarity_typed<scalar_t>(P, S, B, method, p, sig); });
  return out;
}

// Greedy suppression over one image: poses `order[0..n)` sorted by descending
// ranking score. Writes the picks at pick[0..cnt) and each pose's slot (the
// position of the pick whose group holds it); returns cnt. Evaluates only the
// pairs whose reference is a pick and, through a sweep over the joint boxes
// sorted by their left edge, only those the far-pair test cannot rule out.
// `removed` (indexed by pose) is zero on entry.
//
// With AlphaPose's quirks the pick is removed only through its own criterion:
// a pick that does not match itself but removes others stays, and is picked
// again at once (with fewer poses left: the whole-body criterion depends on
// that number); a pick that removes nothing, itself included, is removed alone.
template <typename T, typename Crit>
int64_t greedy_segment(const PreparedPoses<T>& pp, const Crit& crit, bool alphapose_quirks, const int64_t* order,
                       int64_t n, int64_t* pick, int64_t* slot_of, uint8_t* removed) {
  const int64_t K = pp.K;
  std::vector<int64_t> by_x(order, order + n);
  std::sort(by_x.begin(), by_x.end(), [&](int64_t a, int64_t b) { return pp.meta[a].bx0 < pp.meta[b].bx0; });
  std::vector<T> left(n);
  T wmax = 0, mag_max = 0, area_max = 0;
  for (int64_t t = 0; t < n; ++t) {
    const PoseMeta<T>& m = pp.meta[by_x[t]];
    left[t] = m.bx0;
    wmax = fp::py_max(wmax, m.bx1 - m.bx0);
    mag_max = fp::py_max(mag_max, m.mag);
    area_max = fp::py_max(area_max, m.area);
  }
  int64_t cnt = 0, alive = n;
  for (int64_t a = 0; a < n;) {
    const int64_t i = order[a];
    if (removed[i]) {
      ++a;
      continue;
    }
    const T* ki = pp.xy + i * K * 2;
    const T* si = &pp.s[i * K];
    const PoseMeta<T>& mi = pp.meta[i];
    // a pose within reach has its left edge in [bx0 - R - wmax, bx1 + R]
    const T R = crit.max_radius(mi, mag_max, area_max);
    const T lo_x = mi.bx0 - R - wmax, hi_x = mi.bx1 + R;
    int64_t members = 0;
    for (int64_t t = std::lower_bound(left.begin(), left.end(), lo_x) - left.begin(); t < n && !(left[t] > hi_x);
         ++t) {
      const int64_t j = by_x[t];
      if (removed[j] || j == i) continue;
      const PoseMeta<T>& mj = pp.meta[j];
      if (crit.may_relate(mi, mj) && crit.decide(ki, si, pp.xy + j * K * 2, &pp.s[j * K], K, mi, mj, alive)) {
        removed[j] = 1;
        slot_of[j] = cnt;
        ++members;
      }
    }
    const bool self = !alphapose_quirks || members == 0 || crit.decide(ki, si, ki, si, K, mi, mi, alive);
    alive -= members;
    if (self) {
      removed[i] = 1;
      slot_of[i] = cnt;
      --alive;
      ++a;
    }
    pick[cnt++] = i;
  }
  return cnt;
}

// AlphaPose's p_merge_fast for every pick of one image, in AlphaPose's order
// of summation (members by ascending index), then the score/area tests. A
// joint whose group has no weight (no member within the radius, or scores
// summing to 0) is NaN in AlphaPose; the other methods keep the pick's joint.
template <typename T>
void merge_segment(const PreparedPoses<T>& pp, const Params& p, bool alphapose, const int64_t* members, int64_t n,
                   const int64_t* pick, const int64_t* slot_of, int64_t cnt, T* out_xy, T* out_s, uint8_t* kept) {
  const int64_t K = pp.K;
  const bool merge = p[param::kMerge] != 0;
  const T cap = T(p[param::kMergeCap]);
  if (merge) {
    std::vector<T> masked(n * K), total(cnt * K, T(0));
    for (int64_t t = 0; t < n; ++t) {
      const int64_t j = members[t], sl = slot_of[j], pk = pick[sl];
      const T r = fp::py_min(pp.meta[pk].ref, cap);
      for (int64_t k = 0; k < K; ++k) {
        const T m = merge_masked_score(pp.xy + pk * K * 2, pp.xy + j * K * 2, &pp.s[j * K], k, r);
        masked[t * K + k] = m;
        total[sl * K + k] = fp::add(total[sl * K + k], m);
      }
    }
    std::fill(out_xy, out_xy + cnt * K * 2, T(0));
    std::fill(out_s, out_s + cnt * K, T(0));
    for (int64_t t = 0; t < n; ++t) {
      const int64_t j = members[t], sl = slot_of[j];
      const T* kj = pp.xy + j * K * 2;
      for (int64_t k = 0; k < K; ++k) {
        const T m = masked[t * K + k];
        const T w = fp::div(m, total[sl * K + k]);
        T* o = out_xy + (sl * K + k) * 2;
        o[0] = fp::add(o[0], fp::mul(kj[2 * k], w));
        o[1] = fp::add(o[1], fp::mul(kj[2 * k + 1], w));
        out_s[sl * K + k] = fp::add(out_s[sl * K + k], fp::mul(m, w));
      }
    }
    for (int64_t sl = 0; sl < cnt && !alphapose; ++sl) {
      for (int64_t k = 0; k < K; ++k) {
        if (total[sl * K + k] != T(0)) continue;
        out_xy[(sl * K + k) * 2] = pp.xy[(pick[sl] * K + k) * 2];
        out_xy[(sl * K + k) * 2 + 1] = pp.xy[(pick[sl] * K + k) * 2 + 1];
        out_s[sl * K + k] = pp.s[pick[sl] * K + k];
      }
    }
  } else {
    for (int64_t sl = 0; sl < cnt; ++sl) {
      std::copy(pp.xy + pick[sl] * K * 2, pp.xy + (pick[sl] + 1) * K * 2, out_xy + sl * K * 2);
      std::copy(&pp.s[pick[sl] * K], &pp.s[pick[sl] * K] + K, out_s + sl * K);
    }
  }
  const T score_thresh = T(p[param::kScoreThresh]), area_thresh = T(p[param::kAreaThresh]);
  for (int64_t sl = 0; sl < cnt; ++sl) {
    const T* ps = &pp.s[pick[sl] * K];
    T pick_max = ps[0], merged_max = out_s[sl * K], xmin = 0, xmax = 0, ymin = 0, ymax = 0;
    for (int64_t k = 0; k < K; ++k) {
      pick_max = nan_max_step(pick_max, ps[k], k == 0);
      merged_max = nan_max_step(merged_max, out_s[sl * K + k], k == 0);
      py_minmax_step(out_xy[(sl * K + k) * 2], k == 0, xmin, xmax);
      py_minmax_step(out_xy[(sl * K + k) * 2 + 1], k == 0, ymin, ymax);
    }
    kept[sl] = alphapose_slot_kept(pick_max, merged_max, xmin, xmax, ymin, ymax, score_thresh, area_thresh);
  }
}

template <typename T>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> pose_nms_typed(
    const at::Tensor& poses, const at::Tensor& joint_scores, const at::Tensor& boxes,
    const c10::optional<at::Tensor>& scores, const c10::optional<at::Tensor>& image_index, int64_t method,
    const Params& p, const c10::optional<at::Tensor>& sigmas) {
  const bool quirks = method == kAlphaPose || method == kWholeBody;
  const auto pp = prepare_cpu<T>("rmpe_ext::pose_nms", poses, joint_scores, boxes, scores, image_index, method, p);
  const int64_t N = pp.N, K = pp.K;
  std::vector<int64_t> by_img, seg;
  group_by_image(N, pp.img, by_img, seg);
  const int64_t nseg = static_cast<int64_t>(seg.size()) - 1;

  std::vector<int64_t> order(by_img), lpick(N), lslot(N), count(nseg);
  std::vector<uint8_t> removed(N, 0);
  at::Tensor vars = method == kOks ? oks_vars(*sigmas) : at::Tensor();
  with_criterion<T>(method, p, K, vars.defined() ? vars.data_ptr<T>() : nullptr, [&](const auto& crit) {
    at::parallel_for(0, nseg, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t g = lo; g < hi; ++g) {
        const int64_t b = seg[g], e = seg[g + 1];
        std::stable_sort(order.begin() + b, order.begin() + e,
                         [&](int64_t x, int64_t y) { return pp.rank[x] > pp.rank[y]; });
        count[g] = greedy_segment(pp, crit, quirks, order.data() + b, e - b, lpick.data() + b, lslot.data(),
                                  removed.data());
      }
    });
  });

  // merge every pick's group (picks of image g at [offset[g], offset[g+1]))
  std::vector<int64_t> offset(nseg + 1, 0);
  std::partial_sum(count.begin(), count.end(), offset.begin() + 1);
  const int64_t P = offset[nseg];
  std::vector<int64_t> picks(P);
  std::vector<T> merged(P * K * 2), merged_s(P * K);
  std::vector<uint8_t> kept(P);
  at::parallel_for(0, nseg, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t g = lo; g < hi; ++g) {
      const int64_t b = seg[g], e = seg[g + 1], off = offset[g];
      std::copy(lpick.begin() + b, lpick.begin() + b + count[g], picks.begin() + off);
      merge_segment(pp, p, quirks, by_img.data() + b, e - b, picks.data() + off, lslot.data(), count[g],
                    merged.data() + off * K * 2, merged_s.data() + off * K, kept.data() + off);
    }
  });

  // keep the picks that pass the tests, in order; map every pose to its group
  std::vector<int64_t> position(P);
  int64_t M = 0;
  for (int64_t sl = 0; sl < P; ++sl) position[sl] = kept[sl] ? M++ : -1;
  at::Tensor keep = at::empty({M}, poses.options().dtype(at::kLong));
  at::Tensor out_xy = at::empty({M, K, 2}, poses.options());
  at::Tensor out_s = at::empty({M, K}, poses.options());
  at::Tensor group = at::empty({N}, poses.options().dtype(at::kLong));
  int64_t* keep_p = keep.data_ptr<int64_t>();
  T* out_xy_p = out_xy.data_ptr<T>();
  T* out_s_p = out_s.data_ptr<T>();
  for (int64_t sl = 0; sl < P; ++sl) {
    const int64_t m = position[sl];
    if (m < 0) continue;
    keep_p[m] = picks[sl];
    std::copy(merged.begin() + sl * K * 2, merged.begin() + (sl + 1) * K * 2, out_xy_p + m * K * 2);
    std::copy(merged_s.begin() + sl * K, merged_s.begin() + (sl + 1) * K, out_s_p + m * K);
  }
  int64_t* group_p = group.data_ptr<int64_t>();
  for (int64_t g = 0; g < nseg; ++g)
    for (int64_t t = seg[g]; t < seg[g + 1]; ++t) group_p[by_img[t]] = position[offset[g] + lslot[by_img[t]]];
  return {keep, out_xy, out_s, group};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> pose_nms_cpu(
    const at::Tensor& poses, const at::Tensor& joint_scores, const at::Tensor& boxes,
    const c10::optional<at::Tensor>& scores, const c10::optional<at::Tensor>& image_index, int64_t method,
    at::ArrayRef<double> params, const c10::optional<at::Tensor>& sigmas) {
  const char* op = "rmpe_ext::pose_nms";
  const Params p = check_args(op, poses, joint_scores, boxes, scores, image_index, method, params, sigmas);
  auto contig = [](const c10::optional<at::Tensor>& t) {
    return t.has_value() ? c10::optional<at::Tensor>(t->contiguous()) : c10::nullopt;
  };
  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(poses.scalar_type(), "pose_nms_cpu", [&] {
    out = pose_nms_typed<scalar_t>(poses.contiguous(), joint_scores.contiguous(), boxes.contiguous(), contig(scores),
                                   contig(image_index), method, p, contig(sigmas));
  });
  return out;
}

template <typename T>
std::tuple<at::Tensor, at::Tensor> soft_oks_nms_typed(const at::Tensor& poses, const at::Tensor& joint_scores,
                                                      const at::Tensor& boxes, const at::Tensor& scores,
                                                      const c10::optional<at::Tensor>& image_index, const Params& p,
                                                      const at::Tensor& sigmas, int64_t max_dets, bool linear) {
  const auto pp =
      prepare_cpu<T>("rmpe_ext::soft_oks_nms", poses, joint_scores, boxes, scores, image_index, kOks, p);
  const int64_t N = pp.N, K = pp.K;
  std::vector<int64_t> by_img, seg;
  group_by_image(N, pp.img, by_img, seg);
  const int64_t nseg = static_cast<int64_t>(seg.size()) - 1;
  const at::Tensor vars = oks_vars(sigmas);
  const auto crit = make_oks<T>(p, vars.data_ptr<T>(), K);
  const T thresh = T(p[param::kOksThresh]);
  std::vector<int64_t> keep(N), count(nseg);
  std::vector<T> kept_score(N);
  at::parallel_for(0, nseg, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t g = lo; g < hi; ++g) {
      const int64_t b = seg[g], e = seg[g + 1];
      std::vector<int64_t> alive(by_img.begin() + b, by_img.begin() + e);
      std::vector<T> cur(alive.size());
      for (size_t t = 0; t < alive.size(); ++t) cur[t] = pp.rank[alive[t]];
      int64_t cnt = 0;
      while (!alive.empty() && (max_dets < 0 || cnt < max_dets)) {
        size_t best = 0;  // first maximum: ties go to the lowest index
        for (size_t t = 1; t < alive.size(); ++t)
          if (cur[t] > cur[best]) best = t;
        const int64_t i = alive[best];
        keep[b + cnt] = i;
        kept_score[b + cnt++] = cur[best];
        alive.erase(alive.begin() + best);
        cur.erase(cur.begin() + best);
        for (size_t t = 0; t < alive.size(); ++t) {
          const int64_t j = alive[t];
          const T oks = crit.score(pp.xy + i * K * 2, &pp.s[i * K], pp.xy + j * K * 2, &pp.s[j * K], K,
                                   pp.meta[i], pp.meta[j])
                            .sim;
          cur[t] = soft_rescore(cur[t], oks, thresh, linear);
        }
      }
      count[g] = cnt;
    }
  });
  std::vector<int64_t> offset(nseg + 1, 0);
  std::partial_sum(count.begin(), count.end(), offset.begin() + 1);
  at::Tensor out_keep = at::empty({offset[nseg]}, poses.options().dtype(at::kLong));
  at::Tensor out_score = at::empty({offset[nseg]}, poses.options());
  for (int64_t g = 0; g < nseg; ++g) {
    std::copy(keep.begin() + seg[g], keep.begin() + seg[g] + count[g], out_keep.data_ptr<int64_t>() + offset[g]);
    std::copy(kept_score.begin() + seg[g], kept_score.begin() + seg[g] + count[g],
              out_score.data_ptr<T>() + offset[g]);
  }
  return {out_keep, out_score};
}

std::tuple<at::Tensor, at::Tensor> soft_oks_nms_cpu(const at::Tensor& poses, const at::Tensor& joint_scores,
                                                    const at::Tensor& boxes, const at::Tensor& scores,
                                                    const c10::optional<at::Tensor>& image_index,
                                                    at::ArrayRef<double> params, const at::Tensor& sigmas,
                                                    int64_t max_dets, bool linear) {
  const char* op = "rmpe_ext::soft_oks_nms";
  const Params p = check_args(op, poses, joint_scores, boxes, scores, image_index, kOks, params, sigmas);
  check_soft_oks(op, p, max_dets, linear);
  std::tuple<at::Tensor, at::Tensor> out;
  const auto img = image_index.has_value() ? c10::optional<at::Tensor>(image_index->contiguous()) : c10::nullopt;
  AT_DISPATCH_FLOATING_TYPES(poses.scalar_type(), "soft_oks_nms_cpu", [&] {
    out = soft_oks_nms_typed<scalar_t>(poses.contiguous(), joint_scores.contiguous(), boxes.contiguous(),
                                       scores.contiguous(), img, p, sigmas.contiguous(), max_dets, linear);
  });
  return out;
}

}  // namespace
}  // namespace rmpe

TORCH_LIBRARY_IMPL(rmpe_ext, CPU, m) {
  m.impl("pose_similarity", &rmpe::pose_similarity_cpu);
  m.impl("pose_nms", &rmpe::pose_nms_cpu);
  m.impl("soft_oks_nms", &rmpe::soft_oks_nms_cpu);
}
