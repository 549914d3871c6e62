// Per-element math of the affine kernels (STN sampler, SDTN inverse, heatmap
// decode), shared by the CPU and the CUDA kernels.
//
// One convention inside: pixel coordinates with pixel (i, j) centred at
// (x = j, y = i), as OpenCV. theta_px is a 2x3 map from an output (crop) pixel
// to an input (image) pixel: x = t0 j + t1 i + t2, y = t3 j + t4 i + t5. The
// torch convention (normalized theta, align_corners) is converted to this one
// in rmpe_ext/ops/affine.py (docs/design.md, section 1).
#pragma once

#include "common/macros.h"

namespace rmpe {

enum Padding : int64_t { kPadZeros = 0, kPadBorder = 1, kPadConstant = 2 };

// The bilinear neighbourhood of a source point, with torch's grid_sample
// rounding: weights (x0 + 1 - x) and (x - x0), taps outside the image read the
// padding value, border padding clamps the point (and zeroes its gradient).
template <typename T>
struct Tap {
  int64_t x0, y0;  // top-left tap
  T x, y;          // the (clamped) point
  T gx, gy;        // d(clamped point) / d(point): 0 where border clamping is active
  bool nan;        // non-finite point: the output is NaN and nothing is read
};

template <typename T>
RMPE_HD T clamp_with_grad(T v, int64_t size, T& grad) {
  // torch's clip_coordinates_set_grad: the gradient is 0 at and beyond the edges
  if (v <= T(0)) {
    grad = T(0);
    return T(0);
  }
  const T hi = T(size - 1);
  if (v >= hi) {
    grad = T(0);
    return hi;
  }
  grad = T(1);
  return v;
}

template <typename T>
RMPE_HD Tap<T> make_tap(T x, T y, int64_t W, int64_t H, int64_t padding) {
  Tap<T> t;
  t.gx = t.gy = T(1);
  t.nan = !(fp::isfinite(x) && fp::isfinite(y));
  if (t.nan) {
    t.x0 = t.y0 = 0;
    t.x = t.y = T(0);
    return t;
  }
  if (padding == kPadBorder) {
    x = clamp_with_grad(x, W, t.gx);
    y = clamp_with_grad(y, H, t.gy);
  }
  // Far outside, every tap is outside whatever the exact point: clamp so the
  // tap indices stay representable (the value and gradient do not change:
  // all four taps read the padding value).
  x = x < T(-2) ? T(-2) : (x > T(W + 1) ? T(W + 1) : x);
  y = y < T(-2) ? T(-2) : (y > T(H + 1) ? T(H + 1) : y);
  t.x = x;
  t.y = y;
  t.x0 = static_cast<int64_t>(::floor(x));
  t.y0 = static_cast<int64_t>(::floor(y));
  return t;
}

template <typename T>
struct TapWeights {
  T nw, ne, sw, se;
};

template <typename T>
RMPE_HD TapWeights<T> tap_weights(const Tap<T>& t) {
  const T x0 = T(t.x0), y0 = T(t.y0), x1 = x0 + T(1), y1 = y0 + T(1);
  return {fp::mul(x1 - t.x, y1 - t.y), fp::mul(t.x - x0, y1 - t.y), fp::mul(x1 - t.x, t.y - y0),
          fp::mul(t.x - x0, t.y - y0)};
}

RMPE_HD bool in_image(int64_t x, int64_t y, int64_t W, int64_t H) { return x >= 0 && y >= 0 && x < W && y < H; }

// Value of a tap: the image where inside, the padding value outside.
template <typename T, typename Load>
RMPE_HD T tap_value(const Load& load, int64_t x, int64_t y, int64_t W, int64_t H, T pad) {
  return in_image(x, y, W, H) ? load(y * W + x) : pad;
}

// The weighted sum of the four tap values, in torch's order (nw, ne, sw, se).
template <typename T>
RMPE_HD T blend(const TapWeights<T>& w, T nw, T ne, T sw, T se) {
  return fp::add(fp::add(fp::add(fp::mul(nw, w.nw), fp::mul(ne, w.ne)), fp::mul(sw, w.sw)), fp::mul(se, w.se));
}

// Bilinear sample of one channel; load(offset) reads the channel at y * W + x.
template <typename T, typename Load>
RMPE_HD T bilinear(const Tap<T>& t, const TapWeights<T>& w, const Load& load, int64_t W, int64_t H, T pad) {
  if (t.nan) return T(0) / T(0);
  return blend(w, tap_value(load, t.x0, t.y0, W, H, pad), tap_value(load, t.x0 + 1, t.y0, W, H, pad),
               tap_value(load, t.x0, t.y0 + 1, W, H, pad), tap_value(load, t.x0 + 1, t.y0 + 1, W, H, pad));
}

// d(sample)/d(point) of one channel times the upstream gradient g, added to
// (gx, gy) (torch's grid_sampler_2d_backward, bilinear).
template <typename T, typename Load>
RMPE_HD void bilinear_point_grad(const Tap<T>& t, const Load& load, int64_t W, int64_t H, T pad, T g, T& gx,
                                 T& gy) {
  const T x0 = T(t.x0), y0 = T(t.y0), x1 = x0 + T(1), y1 = y0 + T(1);
  const T nw = tap_value(load, t.x0, t.y0, W, H, pad), ne = tap_value(load, t.x0 + 1, t.y0, W, H, pad);
  const T sw = tap_value(load, t.x0, t.y0 + 1, W, H, pad), se = tap_value(load, t.x0 + 1, t.y0 + 1, W, H, pad);
  gx += g * ((ne - nw) * (y1 - t.y) + (se - sw) * (t.y - y0));
  gy += g * ((sw - nw) * (x1 - t.x) + (se - ne) * (t.x - x0));
}

// Image index of crop n (batch_index[n], or n without one), or -1 when out of
// range: the kernels then write NaN and read nothing.
RMPE_HD int64_t crop_image(const int64_t* batch_index, int64_t n, int64_t B) {
  const int64_t b = batch_index ? batch_index[n] : n;
  return (b >= 0 && b < B) ? b : -1;
}

// theta_px applied to output pixel (j, i).
template <typename T>
RMPE_HD void affine_point(const T* th, T j, T i, T& x, T& y) {
  x = fp::add(fp::add(fp::mul(th[0], j), fp::mul(th[1], i)), th[2]);
  y = fp::add(fp::add(fp::mul(th[3], j), fp::mul(th[4], i)), th[5]);
}

// ---- the sampler's work for one output pixel, shared by the CPU and CUDA
// kernels: input [B, C, H, W] stored as S, computed as T; output and upstream
// gradient [N, C, h, w]; crop n reads image b (-1: out of range, NaN out).
struct SampleGeom {
  int64_t C, h, w, H, W;
};

// The tap of output pixel (j, i) of a crop with pixel theta `th`.
template <typename T>
RMPE_HD Tap<T> pixel_tap(const T* th, int64_t j, int64_t i, const SampleGeom& g, int64_t padding, int64_t b) {
  T x, y;
  affine_point(th, T(j), T(i), x, y);
  Tap<T> t = make_tap(x, y, g.W, g.H, padding);
  if (b < 0) t.nan = true;
  return t;
}

// Forward: out[n, :, i, j].
template <typename T, typename S>
RMPE_HD void sample_pixel(const S* in, const T* th, int64_t b, int64_t n, int64_t i, int64_t j, const SampleGeom& g,
                          int64_t padding, T pad, S* out) {
  const Tap<T> t = pixel_tap(th, j, i, g, padding, b);
  const TapWeights<T> wt = tap_weights(t);
  for (int64_t c = 0; c < g.C; ++c) {
    const S* plane = in + ((b < 0 ? 0 : b) * g.C + c) * g.H * g.W;
    const auto load = [plane](int64_t off) { return static_cast<T>(plane[off]); };
    out[((n * g.C + c) * g.h + i) * g.w + j] = static_cast<S>(bilinear(t, wt, load, g.W, g.H, pad));
  }
}

// Backward to theta: d loss / d (x, y) of the point of pixel (j, i), summed
// over channels (0 where border clamping holds it, NaN where the tap is NaN).
template <typename T, typename S>
RMPE_HD void sample_point_grad(const S* in, const S* go, const T* th, int64_t b, int64_t n, int64_t i, int64_t j,
                               const SampleGeom& g, int64_t padding, T pad, T& gx, T& gy) {
  const Tap<T> t = pixel_tap(th, j, i, g, padding, b);
  gx = gy = T(0);
  if (t.nan) {
    gx = gy = T(0) / T(0);
    return;
  }
  for (int64_t c = 0; c < g.C; ++c) {
    const S* plane = in + (b * g.C + c) * g.H * g.W;
    const auto load = [plane](int64_t off) { return static_cast<T>(plane[off]); };
    bilinear_point_grad(t, load, g.W, g.H, pad, static_cast<T>(go[((n * g.C + c) * g.h + i) * g.w + j]), gx, gy);
  }
  gx *= t.gx;
  gy *= t.gy;
}

// Adds a point gradient to the six sums d loss / d theta_px
// (x = t0 j + t1 i + t2, y = t3 j + t4 i + t5), accumulated in A.
template <typename A, typename T>
RMPE_HD void add_theta_grad(A* s, T gx, T gy, int64_t j, int64_t i) {
  s[0] += A(gx) * A(j);
  s[1] += A(gx) * A(i);
  s[2] += A(gx);
  s[3] += A(gy) * A(j);
  s[4] += A(gy) * A(i);
  s[5] += A(gy);
}

// f(offset y * W + x, weight) for each of the four taps inside the image.
template <typename T, typename F>
RMPE_HD void for_each_tap(const Tap<T>& t, const TapWeights<T>& w, int64_t W, int64_t H, F&& f) {
  if (in_image(t.x0, t.y0, W, H)) f(t.y0 * W + t.x0, w.nw);
  if (in_image(t.x0 + 1, t.y0, W, H)) f(t.y0 * W + t.x0 + 1, w.ne);
  if (in_image(t.x0, t.y0 + 1, W, H)) f((t.y0 + 1) * W + t.x0, w.sw);
  if (in_image(t.x0 + 1, t.y0 + 1, W, H)) f((t.y0 + 1) * W + t.x0 + 1, w.se);
}

// Interpolation of the uint8 crop kernel.
enum CropInterp : int64_t { kInterpBilinear = 0, kInterpBilinearU8 = 1, kInterpOpenCV4 = 2 };

// A sample rounded to uint8 as OpenCV >= 5 stores it (nearest, ties to even, saturated).
RMPE_HD float round_u8(float v) {
  const float r = ::rintf(v);
  return r < 0.f ? 0.f : (r > 255.f ? 255.f : r);
}

// OpenCV 4's warpAffine(INTER_LINEAR) in fixed point, reproduced bit for bit:
// the point of output pixel (j, i) under the inverse map M (double, as
// warpAffine holds it) is rounded to 1/32 pixel, and the uint8 taps are
// blended with 15-bit weights and rounded. Taps outside the image read `cval`.
//
// cv_round is OpenCV's saturate_cast<int>(double): nearest, ties to even,
// clamped to the int32 range, NaN to INT_MIN (as x86's cvRound gives it), so a
// huge or non-finite map lands far outside the frame instead of overflowing.
RMPE_HD int64_t cv_round(double v) {
  if (!(v >= -2147483648.0)) return -2147483647 - 1;  // NaN too
  if (v >= 2147483647.0) return 2147483647;
#if defined(__CUDA_ARCH__)
  return __double2ll_rn(v);
#else
  return static_cast<int64_t>(std::nearbyint(v));
#endif
}

struct CvTap {
  int64_t x0, y0;  // top-left tap
  int32_t fx, fy;  // position inside the pixel, in 1/32
};

RMPE_HD CvTap cv_tap(const double* M, int64_t j, int64_t i) {
  constexpr double kScale = 1024.0;  // AB_SCALE: 10 fractional bits
  const int64_t X0 = cv_round(fp::mul(fp::add(fp::mul(M[1], double(i)), M[2]), kScale)) + 16;
  const int64_t Y0 = cv_round(fp::mul(fp::add(fp::mul(M[4], double(i)), M[5]), kScale)) + 16;
  const int64_t X = (X0 + cv_round(fp::mul(fp::mul(M[0], double(j)), kScale))) >> 5;
  const int64_t Y = (Y0 + cv_round(fp::mul(fp::mul(M[3], double(j)), kScale))) >> 5;
  CvTap t;
  const int64_t x0 = X >> 5, y0 = Y >> 5;  // saturate_cast<short>
  t.x0 = x0 < -32768 ? -32768 : (x0 > 32767 ? 32767 : x0);
  t.y0 = y0 < -32768 ? -32768 : (y0 > 32767 ? 32767 : y0);
  t.fx = static_cast<int32_t>(X & 31);
  t.fy = static_cast<int32_t>(Y & 31);
  return t;
}

// The 15-bit weights of a tap (they sum to 32768) and the rounded blend.
struct CvWeights {
  int32_t w00, w01, w10, w11;
};
RMPE_HD CvWeights cv_weights(const CvTap& t) {
  return {(32 - t.fy) * (32 - t.fx) * 32, (32 - t.fy) * t.fx * 32, t.fy * (32 - t.fx) * 32, t.fy * t.fx * 32};
}
RMPE_HD int32_t cv_blend(const CvWeights& w, int32_t v00, int32_t v01, int32_t v10, int32_t v11) {
  const int32_t r = (v00 * w.w00 + v01 * w.w01 + v10 * w.w10 + v11 * w.w11 + (1 << 14)) >> 15;
  return r < 0 ? 0 : (r > 255 ? 255 : r);
}

// The uint8 result of one channel; load(offset) reads the channel at y * W + x.
template <typename Load>
RMPE_HD int32_t cv_bilinear(const CvTap& t, const Load& load, int64_t W, int64_t H, int32_t cval) {
  const auto v = [&](int64_t x, int64_t y) { return in_image(x, y, W, H) ? int32_t(load(y * W + x)) : cval; };
  return cv_blend(cv_weights(t), v(t.x0, t.y0), v(t.x0 + 1, t.y0), v(t.x0, t.y0 + 1), v(t.x0 + 1, t.y0 + 1));
}

// Normalization of the uint8 crops: per channel c, out = (v / 255 - mean) / std
// for uint8-valued samples (the OpenCV modes, AlphaPose's arithmetic), and
// v * scale + shift (scale = 1 / (255 std), shift = -mean / std) for the exact
// bilinear mode.
struct CropNorm {
  float mean[4], std[4], scale[4], shift[4];
};
RMPE_HD float crop_normalize_u8(const CropNorm& n, int c, float v) {
  return fp::div(fp::sub(fp::div(v, 255.f), n.mean[c]), n.std[c]);
}
RMPE_HD float crop_normalize(const CropNorm& n, int c, float v) { return fp::add(fp::mul(v, n.scale[c]), n.shift[c]); }
// The uint8 border value of the OpenCV modes (the host checks that `value` is
// finite for them; NaN reads as 0 so that no cast is undefined).
RMPE_HD int32_t crop_cval(float value) {
  return static_cast<int32_t>(::rintf(value > 0.f ? (value < 255.f ? value : 255.f) : 0.f));
}

// Whether the six numbers of a crop's map are finite: a crop whose map is not
// is NaN in every mode (as the float sampler gives it), and nothing is read.
RMPE_HD bool theta_finite(const double* M) {
  bool ok = true;
  for (int k = 0; k < 6; ++k) ok = ok && fp::isfinite(M[k]);
  return ok;
}

// The SDTN inverse (paper Eqs. 3-4): gamma = [A^-1, -A^-1 t] for theta = [A, t].
// Returns false when A is singular or too close to it for the dtype T (|det|
// below 64 eps_T of |a d| + |b c|), when theta is not finite, or when gamma
// does not fit in T; gamma is then NaN. Computed in double whatever T is: the
// determinant of a tiny but regular float32 matrix (1e-30 I: det 1e-60) would
// underflow in float32 and read as singular.
template <typename T>
RMPE_HD bool affine_invert(const T* th, T* g) {
  const double a = th[0], b = th[1], c = th[3], d = th[4], t0 = th[2], t1 = th[5];
  const double det = fp::sub(fp::mul(a, d), fp::mul(b, c));
  const double eps = sizeof(T) == 4 ? 1.1920929e-07 : 2.220446049250313e-16;
  const double ad = fp::mul(a, d), bc = fp::mul(b, c);
  const double scale = (ad < 0 ? -ad : ad) + (bc < 0 ? -bc : bc);
  const double adet = det < 0 ? -det : det;
  bool ok = fp::isfinite(det) && fp::isfinite(t0) && fp::isfinite(t1) && adet > 64 * eps * scale;
  double r[6] = {0, 0, 0, 0, 0, 0};
  if (ok) {
    r[0] = fp::div(d, det);
    r[1] = fp::div(-b, det);
    r[3] = fp::div(-c, det);
    r[4] = fp::div(a, det);
    r[2] = -fp::add(fp::mul(r[0], t0), fp::mul(r[1], t1));
    r[5] = -fp::add(fp::mul(r[3], t0), fp::mul(r[4], t1));
    const double lim = sizeof(T) == 4 ? 3.4028234663852886e38 : 1.7976931348623157e308;  // T's largest
    for (int k = 0; k < 6; ++k) ok = ok && r[k] >= -lim && r[k] <= lim;
    for (int k = 0; k < 6 && ok; ++k) g[k] = static_cast<T>(r[k]);
  }
  if (!ok)
    for (int k = 0; k < 6; ++k) g[k] = T(0) / T(0);
  return ok;
}

// Gradient of the SDTN inverse (paper Eqs. 5-6), with G = A^-1 (from gamma):
// dJ/dt = -G^T dJ/dgamma3,  dJ/dA = -G^T (dJ/dG - dJ/dgamma3 t^T) G^T.
template <typename T>
RMPE_HD void affine_invert_backward(const T* th, const T* g, const T* dg, T* dth) {
  const T G00 = g[0], G01 = g[1], G10 = g[3], G11 = g[4];
  const T t0 = th[2], t1 = th[5];
  const T u0 = dg[2], u1 = dg[5];  // dJ/dgamma3
  // M = dJ/dG - u t^T
  const T M00 = dg[0] - u0 * t0, M01 = dg[1] - u0 * t1, M10 = dg[3] - u1 * t0, M11 = dg[4] - u1 * t1;
  // P = G^T M
  const T P00 = G00 * M00 + G10 * M10, P01 = G00 * M01 + G10 * M11;
  const T P10 = G01 * M00 + G11 * M10, P11 = G01 * M01 + G11 * M11;
  // dJ/dA = -P G^T
  dth[0] = -(P00 * G00 + P01 * G01);
  dth[1] = -(P00 * G10 + P01 * G11);
  dth[3] = -(P10 * G00 + P11 * G01);
  dth[4] = -(P10 * G10 + P11 * G11);
  dth[2] = -(G00 * u0 + G10 * u1);
  dth[5] = -(G01 * u0 + G11 * u1);
}

// AlphaPose's heatmap decode for one joint: argmax (first maximum; NaN counts
// as the maximum, as numpy's argmax), coordinates (0, 0) unless the maximum is
// > 0, then a quarter-pixel step towards the larger neighbour when
// 1 < px < w - 1 and 1 < py < h - 1. `load(offset)` reads the heatmap.
template <typename T, typename Load>
RMPE_HD void alphapose_refine(const Load& load, int64_t h, int64_t w, int64_t idx, T maxval, bool quarter, T& px,
                              T& py) {
  const int64_t ix = idx % w, iy = idx / w;
  if (!(maxval > T(0))) {
    px = py = T(0);
    return;
  }
  px = T(ix);
  py = T(iy);
  if (quarter && 1 < ix && ix < w - 1 && 1 < iy && iy < h - 1) {
    const T dx = load(iy * w + ix + 1) - load(iy * w + ix - 1);
    const T dy = load((iy + 1) * w + ix) - load((iy - 1) * w + ix);
    px += dx > T(0) ? T(0.25) : (dx < T(0) ? T(-0.25) : T(0));
    py += dy > T(0) ? T(0.25) : (dy < T(0) ? T(-0.25) : T(0));
  }
}

// The heatmap -> image map of crop n: given as a map (6 values), or from a crop
// box (x1, y1, x2, y2) as AlphaPose back-projects it, isotropic by the box
// width: x = x1 + u * bw / w, y = (y1 + y2) / 2 + (v - h / 2) * bw / w.
RMPE_HD void decode_map(const double* src, bool boxes, int64_t h, int64_t w, double* m) {
  if (!boxes) {
    for (int k = 0; k < 6; ++k) m[k] = src[k];
    return;
  }
  const double a = (src[2] - src[0]) / double(w);
  m[0] = a;
  m[1] = 0;
  m[2] = src[0];
  m[3] = 0;
  m[4] = a;
  m[5] = src[1] + (src[3] - src[1]) * 0.5 - a * (double(h) / 2);
}

}  // namespace rmpe
