// Per-pose and per-pair math of the pose NMS family, shared by the CPU and the
// CUDA kernels (the formulas: docs/design.md, section 2).
//
// Conventions: a pose is K joints, `xy` points at 2*K values (x0, y0, x1, y1,
// ...) in image pixels, `s` at K joint confidences; a box is (x1, y1, x2, y2).
// Row i of every pair relation is the reference (the more confident pose), so
// asymmetric terms (AlphaPose's ref_dist_i, the paper's window from B_i) use i.
#pragma once

#include "common/macros.h"

namespace rmpe {

// Method ids (docs/design.md section 2; the binary exports them with the
// params layout below: torch.ops.rmpe_ext._nms_params_layout()).
enum PoseMethod : int64_t { kAlphaPose = 0, kPaper = 1, kOks = 2, kWholeBody = 3 };

// Layout of the `params` list that every pose-NMS op takes: slots 0..11 depend
// on the method, 12..16 are shared. The names, slots and valid ranges of the
// fields are tabulated once (kParamSpecs, common/pose_nms_host.h); Python
// builds its lists from that table, which the binary exports.
namespace param {
constexpr int kMethodSlots = 12;
// AlphaPose (docs/design.md 2.2) and AlphaPose's whole-body variant (2.4)
constexpr int kDelta1 = 0, kMu = 1, kDelta2 = 2, kGamma = 3, kMatchThresh = 4, kPckCap = 5;
// whole-body only: the face and hand parts' radius factors and weights
constexpr int kFaceFactor = 6, kHandFactor = 7, kFaceWeightScore = 8, kHandWeightScore = 9, kFaceWeightDist = 10,
              kHandWeightDist = 11;
// Paper (docs/design.md 2.1)
constexpr int kSigma1 = 0, kSigma2 = 1, kLambda = 2, kEta = 3, kBoxFrac = 4;
// OKS (docs/design.md 2.3)
constexpr int kOksThresh = 0, kVisThresh = 1;  // vis threshold -inf: every joint counts
// Shared: ref_dist_i = alpha * max(w_i, h_i); merge radius min(ref_dist_i, cap);
// a kept pose must reach score_thresh (pick and merged) and area_thresh.
constexpr int kRefAlpha = 12, kMerge = 13, kMergeCap = 14, kScoreThresh = 15, kAreaThresh = 16;
constexpr int kCount = 17;
}  // namespace param

// Error bits reported by prepare_pose (and by the CUDA status word).
enum PoseInputError : int32_t {
  kBadPoses = 1,       // non-finite joint coordinate
  kBadJointScores = 2, // non-finite joint score
  kBadBoxes = 4,       // non-finite box coordinate
  kBadBoxOrder = 8,    // x2 < x1 or y2 < y1
  kBadScores = 16,     // non-finite ranking score
  kBadImageIndex = 32, // negative image index
};

// What the pair relations need of one pose, computed once per pose.
template <typename T>
struct PoseMeta {
  T bx0, by0, bx1, by1;  // bounding box of the joints (for the far-pair test)
  T ref;                 // alpha * max(box w, box h)
  T half_w, half_h;      // paper's KSim window: box_frac * (w, h) / 2
  T area;                // box area (OKS)
  T mag;                 // largest |coordinate| of the joints (rounding margin)
};

// Validates one pose and fills its meta. `s_out` receives the effective joint
// scores (AlphaPose turns exact zeros into 1e-5; the caller's tensor is never
// written). Returns a mask of PoseInputError bits.
template <typename T>
RMPE_HD int32_t prepare_pose(const T* xy, const T* s_in, const T* box, int64_t K, bool zero_fix,
                             T ref_alpha, T box_frac, T* s_out, PoseMeta<T>& m) {
  int32_t err = 0;
  T x0 = xy[0], y0 = xy[1], x1 = xy[0], y1 = xy[1], mag = T(0);
  for (int64_t n = 0; n < K; ++n) {
    const T x = xy[2 * n], y = xy[2 * n + 1];
    if (!fp::isfinite(x) || !fp::isfinite(y)) err |= kBadPoses;
    x0 = x < x0 ? x : x0;
    x1 = x > x1 ? x : x1;
    y0 = y < y0 ? y : y0;
    y1 = y > y1 ? y : y1;
    const T ax = x < T(0) ? -x : x, ay = y < T(0) ? -y : y;
    mag = ax > mag ? ax : mag;
    mag = ay > mag ? ay : mag;
    T s = s_in[n];
    if (!fp::isfinite(s)) err |= kBadJointScores;
    if (zero_fix && s == T(0)) s = T(1e-5);
    s_out[n] = s;
  }
  for (int j = 0; j < 4; ++j)
    if (!fp::isfinite(box[j])) err |= kBadBoxes;
  const T w = fp::sub(box[2], box[0]), h = fp::sub(box[3], box[1]);
  if (!(w >= T(0)) || !(h >= T(0))) err |= kBadBoxOrder;
  m.bx0 = x0;
  m.by0 = y0;
  m.bx1 = x1;
  m.by1 = y1;
  m.ref = fp::mul(ref_alpha, fp::py_max(w, h));
  m.half_w = fp::mul(box_frac, w) / T(2);
  m.half_h = fp::mul(box_frac, h) / T(2);
  m.area = fp::mul(w, h);
  m.mag = mag;
  return err;
}

// Euclidean distance of joint n of two poses, rounded as torch rounds
// sqrt(sum(pow(a - b, 2))).
template <typename T>
RMPE_HD T joint_dist(const T* a, const T* b, int64_t n) {
  const T dx = fp::sub(a[2 * n], b[2 * n]);
  const T dy = fp::sub(a[2 * n + 1], b[2 * n + 1]);
  return fp::sqrt(fp::add(fp::mul(dx, dx), fp::mul(dy, dy)));
}

// Lower bound of every joint distance of two poses: the gap between their
// joint boxes along x and along y.
template <typename T>
RMPE_HD void joint_box_gap(const PoseMeta<T>& a, const PoseMeta<T>& b, T& gx, T& gy) {
  gx = fp::py_max(fp::py_max(fp::sub(b.bx0, a.bx1), fp::sub(a.bx0, b.bx1)), T(0));
  gy = fp::py_max(fp::py_max(fp::sub(b.by0, a.by1), fp::sub(a.by0, b.by1)), T(0));
}

// The criteria's far-pair test for a radius R: false only when the joint boxes
// of a and b are more than R apart along x or y (then no joint pair is within R).
template <typename T>
RMPE_HD bool joint_boxes_within(const PoseMeta<T>& a, const PoseMeta<T>& b, T R) {
  T gx, gy;
  joint_box_gap(a, b, gx, gy);
  return !(gx > R || gy > R);
}

// Slack added to a far-pair radius R so that rounding in the gap and in the
// joint distances can never turn a related pair into a rejected one; `mag`
// bounds the magnitude of the coordinates involved.
template <typename T>
RMPE_HD T reach_slack(T reach, T mag) {
  const T eps = sizeof(T) == 4 ? T(1.1920929e-07) : T(2.220446049250313e-16);
  return reach * T(1e-3) + T(64) * eps * fp::py_max(T(1), mag);
}

// Result of comparing a reference pose i with a pose j.
template <typename T>
struct PairScore {
  T sim;          // the similarity (AlphaPose simi, paper d, OKS)
  int32_t match;  // AlphaPose PCK count; paper: joints in the KSim window; OKS: joints counted
};

// AlphaPose's parametric pose distance (docs/design.md 2.2): simi and the PCK count.
template <typename T>
struct AlphaPoseCriterion {
  static constexpr bool kDependsOnRemaining = false;  // see WholeBodyCriterion
  T delta1, mu, delta2, gamma, pck_cap, reach;  // reach: far-pair radius (inf = never reject)
  int64_t match_thresh;

  RMPE_HD PairScore<T> score(const T* ki, const T* si, const T* kj, const T* sj, int64_t K,
                             const PoseMeta<T>& mi, const PoseMeta<T>&) const {
    const T r = fp::py_min(mi.ref, pck_cap);
    T ksum = T(0), hsum = T(0);
    int32_t cnt = 0;
    for (int64_t n = 0; n < K; ++n) {
      const T d = joint_dist(ki, kj, n);
      if (d <= T(1))
        ksum = fp::add(ksum, fp::mul(fp::tanh(fp::div(si[n], delta1)), fp::tanh(fp::div(sj[n], delta1))));
      hsum = fp::add(hsum, fp::exp(fp::div(-d, delta2)));
      if (fp::div(d, r) <= T(1)) ++cnt;
    }
    return {fp::add(ksum, fp::mul(mu, hsum)), cnt};
  }
  RMPE_HD bool suppresses(const PairScore<T>& p) const { return p.sim > gamma || p.match >= match_thresh; }
  // suppresses(score(...)) with less work: the PCK count needs no exp/tanh
  // and, once it reaches match_thresh, decides alone.
  RMPE_HD bool decide(const T* ki, const T* si, const T* kj, const T* sj, int64_t K, const PoseMeta<T>& mi,
                      const PoseMeta<T>& mj, int64_t /*n_rem: see WholeBodyCriterion*/ = 0) const {
    if (match_thresh <= 0) return true;
    const T r = fp::py_min(mi.ref, pck_cap);
    int64_t cnt = 0;
    for (int64_t n = 0; n < K; ++n)
      if (fp::div(joint_dist(ki, kj, n), r) <= T(1) && ++cnt >= match_thresh) return true;
    return score(ki, si, kj, sj, K, mi, mj).sim > gamma;
  }
  // False only when no joint of j can be close enough to i to matter: j's
  // joint box is more than radius_to(mi, mj.mag) away from i's along x or y.
  RMPE_HD T radius_to(const PoseMeta<T>& mi, T mag_j) const {
    const T R = fp::py_max(reach, fp::py_min(mi.ref, pck_cap));
    return R + reach_slack(R, fp::py_max(mi.mag, mag_j));
  }
  RMPE_HD bool may_relate(const PoseMeta<T>& mi, const PoseMeta<T>& mj) const {
    return joint_boxes_within(mi, mj, radius_to(mi, mj.mag));
  }
  // Bound of that radius over every j with |coordinates| <= mag_max, area <= area_max.
  RMPE_HD T max_radius(const PoseMeta<T>& mi, T mag_max, T) const { return radius_to(mi, mag_max); }
};

// The paper's KSim + lambda * HSim (docs/design.md 2.1, Eqs. 8-10).
template <typename T>
struct PaperCriterion {
  static constexpr bool kDependsOnRemaining = false;
  T sigma1, sigma2, lambda, eta, reach;  // reach: radius beyond which HSim cannot reach eta

  RMPE_HD PairScore<T> score(const T* ki, const T* si, const T* kj, const T* sj, int64_t K,
                             const PoseMeta<T>& mi, const PoseMeta<T>&) const {
    T ksum = T(0), hsum = T(0);
    int32_t cnt = 0;
    for (int64_t n = 0; n < K; ++n) {
      const T dx = fp::sub(ki[2 * n], kj[2 * n]), dy = fp::sub(ki[2 * n + 1], kj[2 * n + 1]);
      const T adx = dx < T(0) ? -dx : dx, ady = dy < T(0) ? -dy : dy;
      if (adx <= mi.half_w && ady <= mi.half_h) {
        ksum = fp::add(ksum, fp::mul(fp::tanh(fp::div(si[n], sigma1)), fp::tanh(fp::div(sj[n], sigma1))));
        ++cnt;
      }
      const T d2 = fp::add(fp::mul(dx, dx), fp::mul(dy, dy));
      hsum = fp::add(hsum, fp::exp(fp::div(-d2, sigma2)));
    }
    return {fp::add(ksum, fp::mul(lambda, hsum)), cnt};
  }
  RMPE_HD bool suppresses(const PairScore<T>& p) const { return p.sim > eta; }
  RMPE_HD bool decide(const T* ki, const T* si, const T* kj, const T* sj, int64_t K, const PoseMeta<T>& mi,
                      const PoseMeta<T>& mj, int64_t /*n_rem: see WholeBodyCriterion*/ = 0) const {
    return suppresses(score(ki, si, kj, sj, K, mi, mj));
  }
  // False only when j is outside i's KSim window for every joint and too far
  // for HSim to reach eta.
  RMPE_HD bool may_relate(const PoseMeta<T>& mi, const PoseMeta<T>& mj) const {
    T gx, gy;
    joint_box_gap(mi, mj, gx, gy);
    const T mag = fp::py_max(mi.mag, mj.mag);
    const bool window =
        !(gx > mi.half_w + reach_slack(mi.half_w, mag) || gy > mi.half_h + reach_slack(mi.half_h, mag));
    const T R = reach + reach_slack(reach, mag);
    return window || !(gx > R || gy > R);
  }
  RMPE_HD T max_radius(const PoseMeta<T>& mi, T mag_max, T) const {
    const T mag = fp::py_max(mi.mag, mag_max);
    const T w = fp::py_max(mi.half_w, mi.half_h);
    return fp::py_max(w + reach_slack(w, mag), reach + reach_slack(reach, mag));
  }
};

// Object keypoint similarity as in COCO / mmpose oks_iou:
// mean over counted joints of exp(-d^2 / vars_n / ((a_i + a_j)/2 + eps) / 2),
// vars_n = (2 sigma_n)^2; with a visibility threshold only joints whose both
// scores exceed it count, and no counted joint gives 0.
template <typename T>
struct OksCriterion {
  static constexpr bool kDependsOnRemaining = false;
  const T* vars;  // K + 1 values: (2 sigma_n)^2 for each joint, then their maximum
  int64_t K;
  T thresh, vis_thresh, log_inv_thresh;
  bool use_vis;

  RMPE_HD PairScore<T> score(const T* ki, const T* si, const T* kj, const T* sj, int64_t K,
                             const PoseMeta<T>& mi, const PoseMeta<T>& mj) const {
    const T area = fp::add(fp::div(fp::add(mi.area, mj.area), T(2)), T(2.220446049250313e-16));
    T sum = T(0);
    int32_t cnt = 0;
    for (int64_t n = 0; n < K; ++n) {
      if (use_vis && !(si[n] > vis_thresh && sj[n] > vis_thresh)) continue;
      const T dx = fp::sub(ki[2 * n], kj[2 * n]), dy = fp::sub(ki[2 * n + 1], kj[2 * n + 1]);
      const T d2 = fp::add(fp::mul(dx, dx), fp::mul(dy, dy));
      const T e = fp::div(fp::div(fp::div(d2, vars[n]), area), T(2));
      sum = fp::add(sum, fp::exp(-e));
      ++cnt;
    }
    return {cnt > 0 ? fp::div(sum, T(cnt)) : T(0), cnt};
  }
  RMPE_HD bool suppresses(const PairScore<T>& p) const { return p.sim > thresh; }
  RMPE_HD bool decide(const T* ki, const T* si, const T* kj, const T* sj, int64_t K, const PoseMeta<T>& mi,
                      const PoseMeta<T>& mj, int64_t /*n_rem: see WholeBodyCriterion*/ = 0) const {
    return suppresses(score(ki, si, kj, sj, K, mi, mj));
  }
  // Every term exp(-e_n) <= exp(-g^2 / (2 vars_max A)) <= thresh once the gap
  // g^2 >= 2 vars_max A ln(1/thresh), A the mean area: then OKS <= thresh.
  RMPE_HD T radius_to(const PoseMeta<T>& mi, T area_j, T mag_j) const {
    if (!(thresh > T(0) && thresh < T(1))) return T(1) / T(0);
    const T A = fp::div(fp::add(mi.area, area_j), T(2)) + T(2.220446049250313e-16);
    const T R = fp::sqrt(T(2) * vars[K] * A * log_inv_thresh);
    return R + reach_slack(R, fp::py_max(mi.mag, mag_j));
  }
  RMPE_HD bool may_relate(const PoseMeta<T>& mi, const PoseMeta<T>& mj) const {
    return joint_boxes_within(mi, mj, radius_to(mi, mj.area, mj.mag));
  }
  RMPE_HD T max_radius(const PoseMeta<T>& mi, T mag_max, T area_max) const {
    return radius_to(mi, area_max, mag_max);
  }
};

// AlphaPose's whole-body criterion (docs/design.md 2.4; master's pose_nms for
// 133 and 136 keypoints), as AlphaPose computes it. With d_n the joint
// distances, `low_n` = [s_j^n < score_thresh] (the other pose's score) and the
// parts by position from the end (body: all but the last 110, face: the next
// 68, hands: the last 42):
//   sim = mean_body(st) + fws mean_face(st) + hws mean_hands(st)
//       + mu (mean_body(dt) + fwd mean_face(dt) + hwd mean_hands(dt)),
//   st_n = [d_n <= 1 and low_n] tanh(s_i^n / delta1) tanh(s_j^n / delta1),
//   dt_n = [not low_n] exp(-d_n / (delta2 f_part)), f = 1, face_factor, hand_factor;
// the match count by absolute position: joints 0..25 within r = min(ref_i,
// pck_cap), 26..93 within face_factor r, 94.. within hand_factor r. AlphaPose
// normalizes that count by the rows still in play: match = count K / (4 n_rem c_i),
// c_i the pick's joints scoring above score_thresh / 2 (0 when c_i = 0), so
// whether i removes j depends on how many poses remain when i is picked.
template <typename T>
struct WholeBodyCriterion {
  // decisions depend on the poses still in play: no precomputed suppression
  // matrix (the CUDA kernels evaluate each pick's row when it is taken)
  static constexpr bool kDependsOnRemaining = true;
  T delta1, mu, gamma, pck_cap, match_thresh, score_thresh, half_score_thresh;
  T delta2_body, delta2_face, delta2_hand;  // delta2 times the part's factor (host, double)
  T face_factor, hand_factor, fws, hws, fwd, hwd;
  T reach;  // beyond it no pair scores above gamma (inf: unbounded)

  RMPE_HD PairScore<T> score(const T* ki, const T* si, const T* kj, const T* sj, int64_t K,
                             const PoseMeta<T>& mi, const PoseMeta<T>&) const {
    const T r = fp::py_min(mi.ref, pck_cap);
    const int64_t face0 = K - 110, hand0 = K - 42;
    T st[3] = {T(0), T(0), T(0)}, dt[3] = {T(0), T(0), T(0)};
    int32_t cnt = 0;
    for (int64_t n = 0; n < K; ++n) {
      const T d = joint_dist(ki, kj, n);
      const bool low = sj[n] < score_thresh;
      const int part = n < face0 ? 0 : (n < hand0 ? 1 : 2);
      if (d <= T(1) && low)
        st[part] = fp::add(st[part], fp::mul(fp::tanh(fp::div(si[n], delta1)), fp::tanh(fp::div(sj[n], delta1))));
      if (!low) {
        const T dl = part == 0 ? delta2_body : (part == 1 ? delta2_face : delta2_hand);
        dt[part] = fp::add(dt[part], fp::exp(fp::div(-d, dl)));
      }
      const T factor = n < 26 ? T(1) : (n < 94 ? face_factor : hand_factor);
      if (fp::div(d, r) <= factor) ++cnt;
    }
    const T nb = T(face0), nf = T(68), nh = T(42);
    const T score_part = fp::add(fp::add(fp::div(st[0], nb), fp::mul(fp::div(st[1], nf), fws)),
                                 fp::mul(fp::div(st[2], nh), hws));
    const T dist_part = fp::add(fp::add(fp::div(dt[0], nb), fp::mul(fp::div(dt[1], nf), fwd)),
                                fp::mul(fp::div(dt[2], nh), hwd));
    return {fp::add(score_part, fp::mul(mu, dist_part)), cnt};
  }
  // AlphaPose's normalized match of a pair's count when the pick has c joints
  // above score_thresh / 2 and n_rem poses remain: count / (2 n_rem c) / 2 * K.
  RMPE_HD T match_value(int32_t count, const T* si, int64_t K, int64_t n_rem) const {
    int64_t c = 0;
    for (int64_t n = 0; n < K; ++n) c += si[n] > half_score_thresh ? 1 : 0;
    const T m = T(2 * n_rem * c);  // AlphaPose's mask.sum()
    if (m < T(2)) return T(0);
    return fp::mul(fp::div(fp::div(T(count), m), T(2)), T(K));
  }
  RMPE_HD bool decide(const T* ki, const T* si, const T* kj, const T* sj, int64_t K, const PoseMeta<T>& mi,
                      const PoseMeta<T>& mj, int64_t n_rem) const {
    const PairScore<T> p = score(ki, si, kj, sj, K, mi, mj);
    return p.sim > gamma || match_value(p.match, si, K, n_rem) >= match_thresh;
  }
  // Beyond `reach` no pair scores above gamma; beyond max(face, hand, 1) times
  // the PCK radius no joint matches (unless match_thresh <= 0: everything does).
  RMPE_HD T radius_to(const PoseMeta<T>& mi, T mag_j) const {
    if (!(match_thresh > T(0))) return T(1) / T(0);
    const T f = fp::py_max(T(1), fp::py_max(face_factor, hand_factor));
    const T R = fp::py_max(reach, f * fp::py_min(mi.ref, pck_cap));
    return R + reach_slack(R, fp::py_max(mi.mag, mag_j));
  }
  RMPE_HD bool may_relate(const PoseMeta<T>& mi, const PoseMeta<T>& mj) const {
    return joint_boxes_within(mi, mj, radius_to(mi, mj.mag));
  }
  RMPE_HD T max_radius(const PoseMeta<T>& mi, T mag_max, T) const { return radius_to(mi, mag_max); }
};

// Soft-OKS rescoring (mmpose _rescore): gaussian s * exp(-oks^2 / thr), or
// linear s * (1 - oks) where oks >= thr.
template <typename T>
RMPE_HD T soft_rescore(T score, T oks, T thresh, bool linear) {
  if (linear) return oks >= thresh ? fp::mul(score, fp::sub(T(1), oks)) : score;
  return fp::mul(score, fp::exp(fp::div(-fp::mul(oks, oks), thresh)));
}

// AlphaPose p_merge_fast, one joint of one member: the member's masked score
// s * [||k_pick - k_member|| <= r].
template <typename T>
RMPE_HD T merge_masked_score(const T* k_pick, const T* k_member, const T* s_member, int64_t n, T r) {
  return fp::mul(s_member[n], joint_dist(k_pick, k_member, n) <= r ? T(1) : T(0));
}

// Python's builtin max()/min() over a sequence: keep the first element and
// replace it only by a strictly larger (smaller) one; NaNs never replace.
template <typename T>
RMPE_HD void py_minmax_step(T v, bool first, T& lo, T& hi) {
  if (first) {
    lo = hi = v;
  } else {
    if (v > hi) hi = v;
    if (v < lo) lo = v;
  }
}

// torch.max over values: NaN if any value is NaN.
template <typename T>
RMPE_HD T nan_max_step(T acc, T v, bool first) {
  if (first) return v;
  if (v != v || acc != acc) return v != v ? v : acc;
  return v > acc ? v : acc;
}

// AlphaPose's final tests of one pick (docs/design.md 2.2 step 4) given the pick's own
// max joint score, the merged max score and the merged pose's joint extent.
template <typename T>
RMPE_HD bool alphapose_slot_kept(T pick_max, T merged_max, T xmin, T xmax, T ymin, T ymax, T score_thresh,
                                 T area_thresh) {
  if (pick_max < score_thresh) return false;
  if (merged_max < score_thresh) return false;
  const T area = fp::mul(fp::mul(T(2.25), fp::sub(xmax, xmin)), fp::sub(ymax, ymin));
  return !(area < area_thresh);
}

}  // namespace rmpe
