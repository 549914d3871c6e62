// Host-side pieces of the pose NMS ops that both backends share: argument
// checks with messages that name the argument, the params list -> criterion
// builders, and the translation of input-error bits into an error message.
// Compiled by the host compiler (CPU kernels) and by nvcc (CUDA launchers);
// it needs only ATen's core headers, never the CUDA runtime of torch.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <string>

#include "common/pose_nms_common.h"

namespace rmpe {

using Params = std::array<double, param::kCount>;

inline std::string shape_str(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t d = 0; d < t.dim(); ++d) s += (d ? ", " : "") + std::to_string(t.size(d));
  return s + "]";
}

// Checks the common pose inputs; returns K. `op` prefixes every message.
inline int64_t check_pose_inputs(const char* op, const at::Tensor& poses, const at::Tensor& joint_scores,
                                 const at::Tensor& boxes, const c10::optional<at::Tensor>& scores,
                                 const c10::optional<at::Tensor>& image_index) {
  TORCH_CHECK(poses.dim() == 3 && poses.size(2) == 2, op, ": poses must have shape [N, K, 2], got ",
              poses.dim(), "-D tensor of shape ", shape_str(poses));
  const int64_t N = poses.size(0), K = poses.size(1);
  TORCH_CHECK(K >= 1, op, ": poses must have at least one joint (K >= 1), got shape ", shape_str(poses));
  TORCH_CHECK(poses.scalar_type() == at::kFloat || poses.scalar_type() == at::kDouble, op,
              ": poses must be float32 or float64, got ", poses.scalar_type());
  TORCH_CHECK(joint_scores.dim() == 2 && joint_scores.size(0) == N && joint_scores.size(1) == K, op,
              ": joint_scores must have shape [N, K] = [", N, ", ", K, "] to match poses, got ",
              shape_str(joint_scores));
  TORCH_CHECK(boxes.dim() == 2 && boxes.size(0) == N && boxes.size(1) == 4, op,
              ": boxes must have shape [N, 4] = [", N, ", 4] (x1, y1, x2, y2) to match poses, got ",
              shape_str(boxes));
  TORCH_CHECK(joint_scores.scalar_type() == poses.scalar_type(), op, ": joint_scores must have the dtype of poses (",
              poses.scalar_type(), "), got ", joint_scores.scalar_type());
  TORCH_CHECK(boxes.scalar_type() == poses.scalar_type(), op, ": boxes must have the dtype of poses (",
              poses.scalar_type(), "), got ", boxes.scalar_type());
  TORCH_CHECK(joint_scores.device() == poses.device(), op, ": joint_scores is on ", joint_scores.device(),
              " but poses is on ", poses.device());
  TORCH_CHECK(boxes.device() == poses.device(), op, ": boxes is on ", boxes.device(), " but poses is on ",
              poses.device());
  if (scores.has_value()) {
    const auto& s = *scores;
    TORCH_CHECK(s.dim() == 1 && s.size(0) == N, op, ": scores must have shape [N] = [", N, "], got ",
                shape_str(s));
    TORCH_CHECK(s.scalar_type() == poses.scalar_type(), op, ": scores must have the dtype of poses (",
                poses.scalar_type(), "), got ", s.scalar_type());
    TORCH_CHECK(s.device() == poses.device(), op, ": scores is on ", s.device(), " but poses is on ",
                poses.device());
  }
  if (image_index.has_value()) {
    const auto& b = *image_index;
    TORCH_CHECK(b.dim() == 1 && b.size(0) == N, op, ": image_index must have shape [N] = [", N, "], got ",
                shape_str(b));
    TORCH_CHECK(b.scalar_type() == at::kLong, op, ": image_index must be int64, got ", b.scalar_type());
    TORCH_CHECK(b.device() == poses.device(), op, ": image_index is on ", b.device(), " but poses is on ",
                poses.device());
  }
  return K;
}

// The fields of the params list: method (-1: every method), slot, name (as
// rmpe_ext.ops' params classes name them) and the range its formula and the
// far-pair bounds assume (every value a number: no NaN).
enum class ParamRange { kNumber, kNonNegative, kNonNegativeFinite, kPositiveFinite, kNumberOrNone };

struct ParamSpec {
  int64_t method;
  int slot;
  const char* name;
  ParamRange range;
};

inline constexpr int64_t kEveryMethod = -1;
inline constexpr const char* kMethodNames[] = {"alphapose", "paper", "oks", "wholebody"};
inline constexpr int64_t kNumMethods = 4;

inline constexpr ParamSpec kParamSpecs[] = {
    {kAlphaPose, param::kDelta1, "delta1", ParamRange::kPositiveFinite},
    {kAlphaPose, param::kMu, "mu", ParamRange::kNonNegativeFinite},
    {kAlphaPose, param::kDelta2, "delta2", ParamRange::kPositiveFinite},
    {kAlphaPose, param::kGamma, "gamma", ParamRange::kNumber},
    {kAlphaPose, param::kMatchThresh, "match_thresh", ParamRange::kNumber},
    {kAlphaPose, param::kPckCap, "pck_cap", ParamRange::kNonNegative},
    {kWholeBody, param::kDelta1, "delta1", ParamRange::kPositiveFinite},
    {kWholeBody, param::kMu, "mu", ParamRange::kNonNegativeFinite},
    {kWholeBody, param::kDelta2, "delta2", ParamRange::kPositiveFinite},
    {kWholeBody, param::kGamma, "gamma", ParamRange::kNumber},
    {kWholeBody, param::kMatchThresh, "match_thresh", ParamRange::kNumber},
    {kWholeBody, param::kPckCap, "pck_cap", ParamRange::kNonNegative},
    {kWholeBody, param::kFaceFactor, "face_factor", ParamRange::kPositiveFinite},
    {kWholeBody, param::kHandFactor, "hand_factor", ParamRange::kPositiveFinite},
    {kWholeBody, param::kFaceWeightScore, "face_weight_score", ParamRange::kNonNegativeFinite},
    {kWholeBody, param::kHandWeightScore, "hand_weight_score", ParamRange::kNonNegativeFinite},
    {kWholeBody, param::kFaceWeightDist, "face_weight_dist", ParamRange::kNonNegativeFinite},
    {kWholeBody, param::kHandWeightDist, "hand_weight_dist", ParamRange::kNonNegativeFinite},
    {kPaper, param::kSigma1, "sigma1", ParamRange::kPositiveFinite},
    {kPaper, param::kSigma2, "sigma2", ParamRange::kPositiveFinite},
    {kPaper, param::kLambda, "lam", ParamRange::kNonNegativeFinite},
    {kPaper, param::kEta, "eta", ParamRange::kNumber},
    {kPaper, param::kBoxFrac, "box_frac", ParamRange::kNonNegativeFinite},
    {kOks, param::kOksThresh, "thresh", ParamRange::kNumber},
    {kOks, param::kVisThresh, "vis_thresh", ParamRange::kNumberOrNone},  // None: -inf
    {kEveryMethod, param::kRefAlpha, "alpha", ParamRange::kNonNegativeFinite},
    {kEveryMethod, param::kMerge, "merge", ParamRange::kNumber},
    {kEveryMethod, param::kMergeCap, "merge_cap", ParamRange::kNonNegative},
    {kEveryMethod, param::kScoreThresh, "score_thresh", ParamRange::kNumber},
    {kEveryMethod, param::kAreaThresh, "area_thresh", ParamRange::kNumber},
};

inline void check_param(const char* op, double v, const char* name, ParamRange range) {
  switch (range) {
    case ParamRange::kNumber:
      TORCH_CHECK(!std::isnan(v), op, ": params.", name, " must be a number, got ", v);
      break;
    case ParamRange::kNumberOrNone:
      TORCH_CHECK(!std::isnan(v), op, ": params.", name, " must be a number or None, got ", v);
      break;
    case ParamRange::kNonNegative:
      TORCH_CHECK(v >= 0, op, ": params.", name, " must be >= 0, got ", v);
      break;
    case ParamRange::kNonNegativeFinite:
      TORCH_CHECK(v >= 0 && std::isfinite(v), op, ": params.", name, " must be >= 0 and finite, got ", v);
      break;
    case ParamRange::kPositiveFinite:
      TORCH_CHECK(v > 0 && std::isfinite(v), op, ": params.", name, " must be > 0 and finite, got ", v);
      break;
  }
}

inline Params read_params(const char* op, int64_t method, at::ArrayRef<double> params) {
  TORCH_CHECK(method >= 0 && method < kNumMethods, op,
              ": method must be 0 (alphapose), 1 (paper), 2 (oks) or 3 (wholebody), got ", method);
  TORCH_CHECK(static_cast<int64_t>(params.size()) == param::kCount, op, ": params must hold ", param::kCount,
              " numbers (see rmpe_ext.ops), got ", params.size());
  Params p;
  std::copy(params.begin(), params.end(), p.begin());
  for (const ParamSpec& f : kParamSpecs)
    if (f.method == method || f.method == kEveryMethod) check_param(op, p[f.slot], f.name, f.range);
  return p;
}

// The layout, for Python: "count=17;alphapose=0:delta1@0,mu@1,...;...;shared=-1:alpha@12,...".
inline std::string params_layout() {
  std::string s = "count=" + std::to_string(param::kCount);
  for (int64_t m = kEveryMethod; m < kNumMethods; ++m) {
    s += std::string(";") + (m < 0 ? "shared" : kMethodNames[m]) + "=" + std::to_string(m) + ":";
    bool first = true;
    for (const ParamSpec& f : kParamSpecs) {
      if (f.method != m) continue;
      s += std::string(first ? "" : ",") + f.name + "@" + std::to_string(f.slot);
      first = false;
    }
  }
  return s;
}

// OKS needs per-joint sigmas: [K] floating, on the device of poses.
inline void check_sigmas(const char* op, const c10::optional<at::Tensor>& sigmas, const at::Tensor& poses,
                         int64_t method) {
  if (method != kOks) return;
  TORCH_CHECK(sigmas.has_value(), op, ": the oks method needs sigmas ([K] per-joint sigmas)");
  const auto& s = *sigmas;
  TORCH_CHECK(s.dim() == 1 && s.size(0) == poses.size(1), op, ": sigmas must have shape [K] = [", poses.size(1),
              "], got ", shape_str(s));
  TORCH_CHECK(s.scalar_type() == poses.scalar_type(), op, ": sigmas must have the dtype of poses (",
              poses.scalar_type(), "), got ", s.scalar_type());
  TORCH_CHECK(s.device() == poses.device(), op, ": sigmas is on ", s.device(), " but poses is on ",
              poses.device());
}

// Every check of an op's arguments that needs no pass over the data (the
// values are checked by the kernels: see raise_input_errors); returns the params.
inline Params check_args(const char* op, const at::Tensor& poses, const at::Tensor& joint_scores,
                         const at::Tensor& boxes, const c10::optional<at::Tensor>& scores,
                         const c10::optional<at::Tensor>& image_index, int64_t method, at::ArrayRef<double> params,
                         const c10::optional<at::Tensor>& sigmas) {
  const int64_t K = check_pose_inputs(op, poses, joint_scores, boxes, scores, image_index);
  const Params p = read_params(op, method, params);
  TORCH_CHECK(method != kWholeBody || K > 110, op,
              ": the wholebody method needs K > 110 joints (COCO-WholeBody 133, Halpe 136: the last 110 are the face "
              "and the hands), got K = ", K);
  check_sigmas(op, sigmas, poses, method);
  return p;
}

// soft_oks_nms' own arguments: the gaussian rescoring divides by thresh.
inline void check_soft_oks(const char* op, const Params& p, int64_t max_dets, bool linear) {
  TORCH_CHECK(max_dets >= -1, op, ": max_dets must be >= 0, or -1 for no limit, got ", max_dets);
  TORCH_CHECK(linear || (p[param::kOksThresh] > 0 && std::isfinite(p[param::kOksThresh])), op,
              ": thresh must be > 0 and finite for the gaussian rescoring (exp(-oks^2 / thresh)), got ",
              p[param::kOksThresh]);
}

inline void raise_input_errors(const char* op, int32_t err) {
  if (!err) return;
  std::string msg;
  if (err & kBadPoses) msg += " poses contains NaN or infinite coordinates;";
  if (err & kBadJointScores) msg += " joint_scores contains NaN or infinite values;";
  if (err & kBadBoxes) msg += " boxes contains NaN or infinite values;";
  if (err & kBadBoxOrder) msg += " boxes must be (x1, y1, x2, y2) with x2 >= x1 and y2 >= y1;";
  if (err & kBadScores) msg += " scores contains NaN or infinite values;";
  if (err & kBadImageIndex) msg += " image_index contains negative values;";
  msg.pop_back();
  TORCH_CHECK(false, op, ":", msg);
}

// The default ranking score: torch's own mean of the effective joint scores
// (AlphaPose: zeros read as 1e-5), so the rounding, hence the order of nearly
// tied poses, is that of AlphaPose's pose_scores.mean(dim=1).
// AlphaPose's two formulations read joint scores of exactly 0 as 1e-5.
inline bool zero_fix(int64_t method) { return method == kAlphaPose || method == kWholeBody; }

inline at::Tensor default_rank(const at::Tensor& joint_scores, int64_t method) {
  if (zero_fix(method)) {
    // skip the rewrite when there is no zero (a CPU scan is cheaper than two ops)
    bool zeros = true;
    if (joint_scores.device().is_cpu() && joint_scores.is_contiguous()) {
      AT_DISPATCH_FLOATING_TYPES(joint_scores.scalar_type(), "default_rank", [&] {
        const scalar_t* s = joint_scores.data_ptr<scalar_t>();
        zeros = std::find(s, s + joint_scores.numel(), scalar_t(0)) != s + joint_scores.numel();
      });
    }
    if (zeros) return at::where(joint_scores == 0, at::Scalar(1e-5), joint_scores).mean(1);
  }
  return joint_scores.mean(1);
}

inline bool all_finite(std::initializer_list<double> v) {
  for (double x : v)
    if (!std::isfinite(x)) return false;
  return true;
}

template <typename T>
AlphaPoseCriterion<T> make_alphapose(const Params& p, int64_t K) {
  using namespace param;
  const double d1 = p[kDelta1], mu = p[kMu], d2 = p[kDelta2], g = p[kGamma], m = p[kMatchThresh], cap = p[kPckCap];
  AlphaPoseCriterion<T> c;
  c.delta1 = T(d1);
  c.mu = T(mu);
  c.delta2 = T(d2);
  c.gamma = T(g);
  c.pck_cap = T(cap);
  c.match_thresh = static_cast<int64_t>(std::ceil(std::max(-1e9, std::min(m, 1e9))));
  // Far-pair radius: beyond it no joint is within 1 px (KSim), none within the
  // PCK radius (added per pair), and mu * K * exp(-R / delta2) <= gamma.
  const bool bounded = all_finite({d1, mu, d2, g, m}) && d2 > 0 && mu >= 0 && g > 0 && m > 0;
  const double rh = mu * K > g ? d2 * std::log(mu * K / g) : 0.0;
  c.reach = bounded ? T(std::max(1.0, rh)) : std::numeric_limits<T>::infinity();
  return c;
}

template <typename T>
PaperCriterion<T> make_paper(const Params& p, int64_t K) {
  using namespace param;
  const double s1 = p[kSigma1], s2 = p[kSigma2], lam = p[kLambda], eta = p[kEta];
  PaperCriterion<T> c;
  c.sigma1 = T(s1);
  c.sigma2 = T(s2);
  c.lambda = T(lam);
  c.eta = T(eta);
  const bool bounded = all_finite({s1, s2, lam, eta}) && s2 > 0 && lam >= 0 && eta > 0;
  const double r = lam * K > eta ? std::sqrt(s2 * std::log(lam * K / eta)) : 0.0;
  c.reach = bounded ? T(r) : std::numeric_limits<T>::infinity();
  return c;
}

template <typename T>
WholeBodyCriterion<T> make_wholebody(const Params& p, int64_t /*K*/) {
  using namespace param;
  const double d2 = p[kDelta2], ff = p[kFaceFactor], hf = p[kHandFactor], mu = p[kMu], g = p[kGamma];
  const double fwd = p[kFaceWeightDist], hwd = p[kHandWeightDist];
  WholeBodyCriterion<T> c;
  c.delta1 = T(p[kDelta1]);
  c.mu = T(mu);
  c.gamma = T(g);
  c.pck_cap = T(p[kPckCap]);
  c.match_thresh = T(p[kMatchThresh]);
  c.score_thresh = T(p[kScoreThresh]);
  c.half_score_thresh = T(p[kScoreThresh] / 2);  // AlphaPose: scoreThreds / 2 in Python, then float32
  c.delta2_body = T(d2);
  c.delta2_face = T(d2 * ff);  // as AlphaPose: the product in Python floats
  c.delta2_hand = T(d2 * hf);
  c.face_factor = T(ff);
  c.hand_factor = T(hf);
  c.fws = T(p[kFaceWeightScore]);
  c.hws = T(p[kHandWeightScore]);
  c.fwd = T(fwd);
  c.hwd = T(hwd);
  // reach: the smallest R >= 1 (the score terms need d <= 1) with
  // mu (e^(-R/d2) + fwd e^(-R/(d2 ff)) + hwd e^(-R/(d2 hf))) <= gamma, which bounds
  // every mean of distance terms of a pair whose joints are all R or more apart
  const auto bound = [&](double R) {
    return mu * (std::exp(-R / d2) + fwd * std::exp(-R / (d2 * ff)) + hwd * std::exp(-R / (d2 * hf)));
  };
  double reach = std::numeric_limits<double>::infinity();
  if (std::isfinite(g) && g > 0) {
    double lo = 1.0, hi = 1.0;
    while (bound(hi) > g && hi < 1e15) hi *= 2;
    if (bound(hi) <= g) {
      for (int it = 0; it < 80 && hi > lo * (1 + 1e-12); ++it) {
        const double mid = 0.5 * (lo + hi);
        (bound(mid) > g ? lo : hi) = mid;
      }
      reach = hi;
    }
  }
  c.reach = T(reach);
  return c;
}

// `vars` points at K + 1 values on the device the kernel runs on (see
// oks_vars): (2 sigma_n)^2 per joint, then their maximum.
template <typename T>
OksCriterion<T> make_oks(const Params& p, const T* vars, int64_t K) {
  using namespace param;
  OksCriterion<T> c;
  c.vars = vars;
  c.K = K;
  c.thresh = T(p[kOksThresh]);
  c.use_vis = p[kVisThresh] > -std::numeric_limits<double>::infinity();  // -inf: every joint counts
  c.vis_thresh = T(c.use_vis ? p[kVisThresh] : 0.0);
  const double t = p[kOksThresh];
  c.log_inv_thresh = T(t > 0 && t < 1 ? std::log(1.0 / t) : 0.0);
  return c;
}

// The [K + 1] tensor OksCriterion reads: (2 sigma)^2 per joint, then the max.
// Stays on the device of `sigmas` (no host synchronization).
inline at::Tensor oks_vars(const at::Tensor& sigmas) {
  const at::Tensor v = (sigmas * 2).square();
  return at::cat({v, v.max().reshape({1})}).contiguous();
}

}  // namespace rmpe

namespace rmpe {

// Calls f(criterion) with the criterion the method names (runtime method ->
// compile-time type, so each kernel is instantiated once per criterion).
template <typename T, typename F>
void with_criterion(int64_t method, const Params& p, int64_t K, const T* vars, F&& f) {
  switch (method) {
    case kAlphaPose:
      f(make_alphapose<T>(p, K));
      break;
    case kPaper:
      f(make_paper<T>(p, K));
      break;
    case kWholeBody:
      f(make_wholebody<T>(p, K));
      break;
    default:
      f(make_oks<T>(p, vars, K));
      break;
  }
}

}  // namespace rmpe
