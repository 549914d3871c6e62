// CPU kernels of the affine ops: the fused affine sampler (forward, backward to
// the input and to theta), the uint8 HWC crop-and-normalize fast path, the
// SDTN inverse and its gradient, and the batched heatmap decode. Per-element
// math from common/affine_common.h, shared with the CUDA kernels.
#include <ATen/ATen.h>
#include <ATen/EmptyTensor.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <c10/core/CPUAllocator.h>
#include <torch/library.h>

#include <cstdlib>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "common/affine_common.h"
#include "common/affine_host.h"
#include "cpu/simd_avx2.h"

namespace rmpe {
namespace {

constexpr int64_t kRowGrain = 8;  // output rows per parallel task

// uint8 -> float by table: a load instead of a conversion in the crop loops
struct U8ToFloat {
  float v[256];
  constexpr U8ToFloat() : v() {
    for (int k = 0; k < 256; ++k) v[k] = float(k);
  }
  float operator[](int k) const { return v[k]; }
};
constexpr U8ToFloat kU8ToFloat{};

// ---------------------------------------------------------------- sampler

template <typename scalar_t>
void sample_forward(const at::Tensor& input, const at::Tensor& theta, const int64_t* bidx, at::Tensor& out,
                    int64_t padding, double value) {
  using acc_t = at::opmath_type<scalar_t>;
  const SampleGeom g{out.size(1), out.size(2), out.size(3), input.size(2), input.size(3)};
  const int64_t B = input.size(0);
  const scalar_t* in = input.data_ptr<scalar_t>();
  const acc_t* th = theta.data_ptr<acc_t>();
  scalar_t* o = out.data_ptr<scalar_t>();
  const acc_t pad = padding == kPadConstant ? acc_t(value) : acc_t(0);
  at::parallel_for(0, out.size(0) * g.h, kRowGrain, [&](int64_t lo, int64_t hi) {
    for (int64_t row = lo; row < hi; ++row) {
      const int64_t n = row / g.h, i = row % g.h, b = crop_image(bidx, n, B);
      for (int64_t j = 0; j < g.w; ++j) sample_pixel(in, th + n * 6, b, n, i, j, g, padding, pad, o);
    }
  });
}

// d loss / d theta_px of every crop, summed in double over its pixels.
template <typename scalar_t>
void sample_backward_theta(const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& theta,
                           const int64_t* bidx, at::Tensor& grad_theta, int64_t padding, double value) {
  using acc_t = at::opmath_type<scalar_t>;
  const SampleGeom g{grad_out.size(1), grad_out.size(2), grad_out.size(3), input.size(2), input.size(3)};
  const int64_t B = input.size(0);
  const scalar_t* in = input.data_ptr<scalar_t>();
  const scalar_t* go = grad_out.data_ptr<scalar_t>();
  const acc_t* th = theta.data_ptr<acc_t>();
  acc_t* gt = grad_theta.data_ptr<acc_t>();
  const acc_t pad = padding == kPadConstant ? acc_t(value) : acc_t(0);
  at::parallel_for(0, grad_out.size(0), 1, [&](int64_t lo, int64_t hi) {
    for (int64_t n = lo; n < hi; ++n) {
      const int64_t b = crop_image(bidx, n, B);
      double s[6] = {0, 0, 0, 0, 0, 0};
      for (int64_t i = 0; i < g.h; ++i)
        for (int64_t j = 0; j < g.w; ++j) {
          acc_t gx, gy;
          sample_point_grad(in, go, th + n * 6, b, n, i, j, g, padding, pad, gx, gy);
          add_theta_grad(s, gx, gy, j, i);
        }
      for (int k = 0; k < 6; ++k) gt[n * 6 + k] = acc_t(s[k]);
    }
  });
}

// d loss / d input: every (image, channel) plane gathers what the crops of its
// image scattered to it, crops in order (deterministic, no atomics).
template <typename scalar_t>
void sample_backward_input(const at::Tensor& grad_out, const at::Tensor& theta, const int64_t* bidx,
                           at::Tensor& grad_in_acc, int64_t padding) {
  using acc_t = at::opmath_type<scalar_t>;
  const SampleGeom g{grad_out.size(1), grad_out.size(2), grad_out.size(3), grad_in_acc.size(2),
                     grad_in_acc.size(3)};
  const int64_t N = grad_out.size(0), B = grad_in_acc.size(0);
  const scalar_t* go = grad_out.data_ptr<scalar_t>();
  const acc_t* th = theta.data_ptr<acc_t>();
  acc_t* gi = grad_in_acc.data_ptr<acc_t>();
  at::parallel_for(0, B * g.C, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t plane = lo; plane < hi; ++plane) {
      const int64_t b = plane / g.C, c = plane % g.C;
      acc_t* dst = gi + plane * g.H * g.W;
      for (int64_t n = 0; n < N; ++n) {
        if (crop_image(bidx, n, B) != b) continue;
        const scalar_t* gplane = go + (n * g.C + c) * g.h * g.w;
        for (int64_t i = 0; i < g.h; ++i)
          for (int64_t j = 0; j < g.w; ++j) {
            const Tap<acc_t> t = pixel_tap(th + n * 6, j, i, g, padding, b);
            if (t.nan) continue;
            const acc_t gv = static_cast<acc_t>(gplane[i * g.w + j]);
            for_each_tap(t, tap_weights(t), g.W, g.H, [&](int64_t off, acc_t wgt) { dst[off] += gv * wgt; });
          }
      }
    }
  });
}

// theta in the accumulation type of the input (float for half/bfloat16).
at::Tensor theta_acc(const at::Tensor& theta, const at::Tensor& input) {
  return theta.to(at::toOpMathType(input.scalar_type())).contiguous();
}

at::Tensor affine_sample_cpu(const at::Tensor& input, const at::Tensor& theta, at::IntArrayRef size,
                             const c10::optional<at::Tensor>& batch_index, int64_t padding, double value) {
  const char* op = "rmpe_ext::affine_sample";
  check_sample_args(op, input, theta, batch_index, padding);
  const auto [h, w] = check_size(op, size);
  const at::Tensor in = input.contiguous(), th = theta_acc(theta, input);
  const at::Tensor bidx = batch_index.has_value() ? batch_index->contiguous() : at::Tensor();
  at::Tensor out = at::empty({theta.size(0), input.size(1), h, w}, input.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "affine_sample_cpu", [&] {
    sample_forward<scalar_t>(in, th, bidx.defined() ? bidx.data_ptr<int64_t>() : nullptr, out, padding, value);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> affine_sample_backward_cpu(const at::Tensor& grad_out, const at::Tensor& input,
                                                              const at::Tensor& theta,
                                                              const c10::optional<at::Tensor>& batch_index,
                                                              int64_t padding, double value, bool input_grad,
                                                              bool theta_grad, bool /*deterministic: always*/) {
  const char* op = "rmpe_ext::_affine_sample_backward";
  check_sample_args(op, input, theta, batch_index, padding);
  const at::Tensor in = input.contiguous(), go = grad_out.contiguous().to(input.scalar_type());
  const at::Tensor th = theta_acc(theta, input);
  const at::Tensor bidx_t = batch_index.has_value() ? batch_index->contiguous() : at::Tensor();
  const int64_t* bidx = bidx_t.defined() ? bidx_t.data_ptr<int64_t>() : nullptr;
  // a gradient not asked for comes back as an empty tensor
  at::Tensor grad_input = at::empty({0}, input.options()), grad_theta = at::empty({0}, theta.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "affine_sample_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    if (input_grad) {
      at::Tensor acc = at::zeros(input.sizes(), input.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
      if (go.numel()) sample_backward_input<scalar_t>(go, th, bidx, acc, padding);
      grad_input = acc.to(input.scalar_type());
    }
    if (theta_grad) {
      at::Tensor gt = at::zeros({theta.size(0), 2, 3}, th.options());
      if (go.numel()) sample_backward_theta<scalar_t>(go, in, th, bidx, gt, padding, value);
      grad_theta = gt.to(theta.scalar_type());
    }
  });
  return {grad_input, grad_theta};
}

// ---------------------------------------------------------------- uint8 crops

// Per-crop column tables of the axis-aligned path (AlphaPose's crops: scale and
// translation, the off-diagonal terms zero or, as get_affine_transform's inverse
// gives them, ~1e-15): where a row's point of pixel (j, i) is (x_j, y_i), x of
// the column alone and y of the row alone, bit for bit as the per-pixel code
// computes it (checked per row, see axis_rows_exact), the coordinate and weight
// arithmetic is done once per column and once per row, and the taps are read
// without gathers (simd_avx2.h). CPU only: the CUDA kernel computes every
// pixel's point (cheap on a GPU, whose gathers are its ordinary loads); it
// needs no such path.
struct AxisColumns {
  int64_t crop = -1;
  bool on = false;              // this crop's map is (nearly) axis-aligned
  int64_t X0 = 0;               // OpenCV 4: the column term X0 of row 0 (cv_tap)
  std::vector<int32_t> off;     // 3 x0_j (bytes)
  std::vector<int32_t> fx;      // OpenCV 4: X_j & 31
  std::vector<float> ax0, ax1;  // bilinear: x_j - x0_j, (x0_j + 1) - x_j
  std::vector<uint8_t> block;   // per 8 columns: 1 all taps inside, | 2 a tap in the last frame column
};

// Whether row i of an exact-bilinear crop has the points (x_j, y_i) of the
// column and row tables, bit for bit. Per pixel (affine_point's order, float):
// x = (t0 j + rx) + t2 with rx = t1 i, y = (t3 j + ry) + t5 with ry = t4 i; the
// tables take t1 i and t3 j as the zeros t1 0 and t3 0. Adding r to a float a
// gives a back when |r| <= |a| 2^-26 (under half its spacing). x: exact when rx
// is zero (the same zero as t1 0), or below 2^-26 of |t0 j| (j >= 1, at least
// |t0|) and of |t2| (j = 0, where t0 j is zero). y: exact when t3 is zero, or
// when |t3 j| <= |t3| w is below 2^-26 of |ry| (ry != 0), or of |t5| (ry = 0).
inline bool axis_rows_exact(const float* t, float rx, float ry, int64_t w) {
  const double e = 0x1p-26, r = std::fabs(double(rx));
  const bool x_ok = rx == 0.f || (r <= std::fabs(double(t[0])) * e && r <= std::fabs(double(t[2])) * e);
  const double cmax = std::fabs(double(t[3])) * double(w);
  const bool y_ok = t[3] == 0.f || (ry != 0.f ? cmax <= std::fabs(double(ry)) * e : cmax <= std::fabs(double(t[5])) * e);
  return x_ok && y_ok;
}
enum : uint8_t { kBlockInside = 1, kBlockLastColumn = 2 };

// frames [B, H, W, C] uint8 -> crops [N, C, h, w] (see crop_normalize in
// affine_common.h): exact bilinear (kInterpBilinear), the same rounded to uint8
// (kInterpBilinearU8, as OpenCV >= 5 warpAffine), or OpenCV 4's fixed-point
// warpAffine (kInterpOpenCV4). Pixels whose four taps lie inside the frame take
// a fast path with the same arithmetic; the uint8 modes normalize through a
// 256-entry table per channel holding the same numbers.
template <typename out_t, int C>
void crop_rows(const uint8_t* fr, int64_t B, int64_t H, int64_t W, const double* th_all, const int64_t* bidx,
               int64_t h, int64_t w, const CropNorm& norm, bool reverse, float value, int64_t interp, out_t* o,
               int64_t lo, int64_t hi) {
  float lut[C][256];
  if (interp != kInterpBilinear)
    for (int c = 0; c < C; ++c)
      for (int v = 0; v < 256; ++v) lut[c][v] = crop_normalize_u8(norm, c, float(v));
  int rc[C];
  for (int c = 0; c < C; ++c) rc[c] = reverse ? C - 1 - c : c;
  const int32_t cval = crop_cval(value);
#ifdef RMPE_HAVE_AVX2_PATH
  // eight pixels at a time (float output, 3 channels, offsets within int32)
  const bool simd = std::is_same<out_t, float>::value && C == 3 && avx2::cpu_has_avx2() && H * W * C < (1LL << 31);
  // axis-aligned maps: float32 or float16 output, 3 channels
  const bool axis_simd = (std::is_same<out_t, float>::value || std::is_same<out_t, at::Half>::value) && C == 3 &&
                         avx2::cpu_has_axis_path() && H * W * C < (1LL << 31);
  using simd_t = std::conditional_t<std::is_same<out_t, float>::value, float, uint16_t>;
  alignas(32) int8_t masks[3][32];
  if (axis_simd)
    for (int c = 0; c < 3; ++c) avx2::channel_mask(rc[c % C], masks[c]);
  AxisColumns cols;
#else
  const bool simd = false;
#endif
  std::vector<int32_t> adelta, bdelta;  // OpenCV 4 mode: per-column terms of cv_tap, per crop
  int64_t table_crop = -1;
  bool table_ok = false;
  for (int64_t row = lo; row < hi; ++row) {
    const int64_t n = row / h, i = row % h;
    const int64_t b = crop_image(bidx, n, B);
    out_t* out = o + n * C * h * w + i * w;
    if (b < 0 || !theta_finite(th_all + n * 6)) {
      for (int c = 0; c < C; ++c)
        for (int64_t j = 0; j < w; ++j) out[c * h * w + j] = static_cast<out_t>(NAN);
      continue;
    }
    const double* M = th_all + n * 6;
    const uint8_t* img = fr + b * H * W * C;
    const float thf[6] = {float(M[0]), float(M[1]), float(M[2]), float(M[3]), float(M[4]), float(M[5])};
#ifdef RMPE_HAVE_AVX2_PATH
    if (axis_simd && cols.crop != n) {  // this crop's column tables
      cols.crop = n;
      // (nearly) axis-aligned: the tables, exact or not row by row (checked per row)
      cols.on = std::fabs(M[1]) <= 1e-6 * std::fabs(M[0]) && std::fabs(M[3]) <= 1e-6 * std::fabs(M[4]);
      if (cols.on && interp == kInterpOpenCV4) {
        // y of a row does not depend on the column when every column term of Y is 0 (cv_tap)
        for (int64_t j = 0; j < w && cols.on; ++j) cols.on = cv_round(fp::mul(fp::mul(M[3], double(j)), 1024.0)) == 0;
        cols.X0 = cv_round(fp::mul(fp::add(fp::mul(M[1], 0.0), M[2]), 1024.0)) + 16;
      }
      if (cols.on) {
        cols.off.assign(w, 0);
        cols.block.assign(w / 8, 0);
        if (interp == kInterpOpenCV4) cols.fx.assign(w, 0);
        else {
          cols.ax0.assign(w, 0.f);
          cols.ax1.assign(w, 0.f);
        }
        std::vector<uint8_t> inside(w), last(w);
        for (int64_t j = 0; j < w; ++j) {
          int64_t x0;
          if (interp == kInterpOpenCV4) {
            const CvTap t = cv_tap(M, j, 0);  // x of row 0; a row with the same X0 has the same
            x0 = t.x0;
            inside[j] = t.x0 >= 0 && t.x0 < W - 1;
            cols.fx[j] = t.fx;
          } else {
            // the per-pixel x of a row whose t1 i is the zero t1 0 (see axis_rows_exact)
            const float x = fp::add(fp::add(fp::mul(thf[0], float(j)), fp::mul(thf[1], 0.f)), thf[2]);
            inside[j] = x >= 0.f && x < float(W - 1);
            x0 = inside[j] ? static_cast<int64_t>(x) : 0;
            const float x0f = float(x0);
            cols.ax0[j] = x - x0f;
            cols.ax1[j] = (x0f + 1.f) - x;
          }
          cols.off[j] = inside[j] ? int32_t(x0 * C) : 0;
          last[j] = inside[j] && x0 == W - 2;
        }
        for (int64_t jb = 0; jb < w / 8; ++jb) {
          bool all = true, any_last = false;
          for (int64_t k = 8 * jb; k < 8 * jb + 8; ++k) {
            all = all && inside[k];
            any_last = any_last || last[k];
          }
          cols.block[jb] = uint8_t((all ? kBlockInside : 0) | (any_last ? kBlockLastColumn : 0));
        }
      }
    }
    const bool axis = axis_simd && cols.on;
#endif
    if (interp == kInterpOpenCV4) {
      const auto pixel = [&](int64_t j) {
        const CvTap t = cv_tap(M, j, i);
        if (t.x0 >= 0 && t.y0 >= 0 && t.x0 < W - 1 && t.y0 < H - 1) {
          const uint8_t* p = img + (t.y0 * W + t.x0) * C;
          const uint8_t* q = p + W * C;
          const CvWeights wt = cv_weights(t);
          for (int c = 0; c < C; ++c)
            out[c * h * w + j] =
                static_cast<out_t>(lut[c][cv_blend(wt, p[rc[c]], p[C + rc[c]], q[rc[c]], q[C + rc[c]])]);
        } else {
          for (int c = 0; c < C; ++c) {
            const uint8_t* ch = img + rc[c];
            out[c * h * w + j] =
                static_cast<out_t>(lut[c][cv_bilinear(t, [ch](int64_t off) { return ch[off * C]; }, W, H, cval)]);
          }
        }
      };
      int64_t j = 0;
#ifdef RMPE_HAVE_AVX2_PATH
      if (simd || axis) {
        bool rows_ok = false;
        int64_t X0 = 0, Y0 = 0;
        if (simd) {
          if (table_crop != n) {  // the column terms of this crop, if they fit in int32
            table_crop = n;
            adelta.resize(w);
            bdelta.resize(w);
            table_ok = true;
            for (int64_t jj = 0; jj < w; ++jj) {
              const int64_t a = cv_round(fp::mul(fp::mul(M[0], double(jj)), 1024.0));
              const int64_t d = cv_round(fp::mul(fp::mul(M[3], double(jj)), 1024.0));
              table_ok = table_ok && a > -(1LL << 30) && a < (1LL << 30) && d > -(1LL << 30) && d < (1LL << 30);
              adelta[jj] = int32_t(a);
              bdelta[jj] = int32_t(d);
            }
          }
          X0 = cv_round(fp::mul(fp::add(fp::mul(M[1], double(i)), M[2]), 1024.0)) + 16;
          Y0 = cv_round(fp::mul(fp::add(fp::mul(M[4], double(i)), M[5]), 1024.0)) + 16;
          rows_ok = table_ok && X0 > -(1LL << 30) && X0 < (1LL << 30) && Y0 > -(1LL << 30) && Y0 < (1LL << 30);
        }
        const CvTap ty = cv_tap(M, 0, i);  // y of the row: the same in every column (cols.on)
        const bool row_in = axis && ty.y0 >= 0 && ty.y0 < H - 1 &&
                            cv_round(fp::mul(fp::add(fp::mul(M[1], double(i)), M[2]), 1024.0)) + 16 == cols.X0;
        const uint8_t* r0 = img + (row_in ? ty.y0 : 0) * W * C;
        // the 8-byte loads of the last frame row read 2 bytes past it: not past the buffer's end
        const bool last_row = b == B - 1 && ty.y0 + 1 == H - 1;
        for (; j + 8 <= w; j += 8) {
          if (row_in) {
            const uint8_t f = cols.block[j / 8];
            if ((f & kBlockInside) && !(last_row && (f & kBlockLastColumn))) {
              avx2::axis_opencv4_8(r0, r0 + W * C, cols.off.data(), cols.fx.data(), ty.fy, masks, norm,
                                   reinterpret_cast<simd_t*>(out), h * w, j);
              continue;
            }
          }
          if (rows_ok && avx2::opencv4_8(img, W, H, int32_t(X0), int32_t(Y0), adelta.data(), bdelta.data(), j, rc,
                                         lut, cval, reinterpret_cast<float*>(out), h * w))
            continue;
          for (int64_t k = j; k < j + 8; ++k) pixel(k);
        }
      }
#endif
      for (; j < w; ++j) pixel(j);
      continue;
    }
    // exact bilinear (optionally rounded): affine_point's arithmetic with the
    // row term hoisted, taps inside the frame without bounds tests
    const float rx = fp::mul(thf[1], float(i)), ry = fp::mul(thf[4], float(i));
    const float xmax = float(W - 1), ymax = float(H - 1);
    const bool rounded = interp == kInterpBilinearU8;
    const auto pixel = [&](int64_t j) {
      const float jf = float(j);
      const float x = fp::add(fp::add(fp::mul(thf[0], jf), rx), thf[2]);
      const float y = fp::add(fp::add(fp::mul(thf[3], jf), ry), thf[5]);
      float v[C];
      if (x >= 0.f && y >= 0.f && x < xmax && y < ymax) {
        Tap<float> t;  // make_tap's result for a point inside (floor = truncation)
        t.x = x;
        t.y = y;
        t.x0 = static_cast<int64_t>(x);
        t.y0 = static_cast<int64_t>(y);
        const TapWeights<float> wt = tap_weights(t);
        const uint8_t* p = img + (t.y0 * W + t.x0) * C;
        const uint8_t* q = p + W * C;
        for (int c = 0; c < C; ++c)
          v[c] = blend(wt, kU8ToFloat[p[rc[c]]], kU8ToFloat[p[C + rc[c]]], kU8ToFloat[q[rc[c]]],
                       kU8ToFloat[q[C + rc[c]]]);
      } else {
        const Tap<float> t = make_tap(x, y, W, H, kPadConstant);
        const TapWeights<float> wt = tap_weights(t);
        for (int c = 0; c < C; ++c) {
          const uint8_t* ch = img + rc[c];
          v[c] = bilinear(t, wt, [ch](int64_t off) { return float(ch[off * C]); }, W, H, value);
        }
      }
      // a point that is not a number in float32 (a finite map whose products
      // overflow) samples NaN: NaN out, never a table index
      for (int c = 0; c < C; ++c)
        out[c * h * w + j] = static_cast<out_t>(
            rounded ? (v[c] == v[c] ? lut[c][int(round_u8(v[c]))] : NAN) : crop_normalize(norm, c, v[c]));
    };
    int64_t j = 0;
#ifdef RMPE_HAVE_AVX2_PATH
    if (axis) {
      // the per-pixel y of the row where t3 j is the zero t3 0 (see axis_rows_exact)
      const float y = fp::add(fp::add(fp::mul(thf[3], 0.f), ry), thf[5]);
      const bool row_in = y >= 0.f && y < ymax && axis_rows_exact(thf, rx, ry, w);
      const int64_t y0 = row_in ? static_cast<int64_t>(y) : 0;
      const float y0f = float(y0), ay0 = y - y0f, ay1 = (y0f + 1.f) - y;
      const uint8_t* r0 = img + y0 * W * C;
      const bool last_row = b == B - 1 && y0 + 1 == H - 1;  // see the OpenCV 4 branch
      for (; j + 8 <= w; j += 8) {
        if (row_in) {
          const uint8_t f = cols.block[j / 8];
          if ((f & kBlockInside) && !(last_row && (f & kBlockLastColumn))) {
            avx2::axis_bilinear8(r0, r0 + W * C, cols.off.data(), cols.ax0.data(), cols.ax1.data(), ay0, ay1, masks,
                                 rounded, norm, reinterpret_cast<simd_t*>(out), h * w, j);
            continue;
          }
        }
        if (simd && avx2::bilinear8(img, W, H, thf, rx, ry, j, rc, rounded, lut, norm, value,
                                    reinterpret_cast<float*>(out), h * w))
          continue;
        for (int64_t k = j; k < j + 8; ++k) pixel(k);
      }
    } else if (simd) {
      for (; j + 8 <= w; j += 8)
        if (!avx2::bilinear8(img, W, H, thf, rx, ry, j, rc, rounded, lut, norm, value,
                             reinterpret_cast<float*>(out), h * w))
          for (int64_t k = j; k < j + 8; ++k) pixel(k);
    }
#endif
    for (; j < w; ++j) pixel(j);
  }
}

template <typename out_t>
void crop_forward(const at::Tensor& frames, const at::Tensor& theta, const int64_t* bidx, at::Tensor& out,
                  const CropNorm& norm, bool reverse, float value, int64_t interp) {
  const int64_t N = out.size(0), C = out.size(1), h = out.size(2), w = out.size(3);
  const int64_t B = frames.size(0), H = frames.size(1), W = frames.size(2);
  const uint8_t* fr = frames.data_ptr<uint8_t>();
  const double* th = theta.data_ptr<double>();
  out_t* o = out.data_ptr<out_t>();
  at::parallel_for(0, N * h, kRowGrain, [&](int64_t lo, int64_t hi) {
    switch (C) {
      case 1: crop_rows<out_t, 1>(fr, B, H, W, th, bidx, h, w, norm, reverse, value, interp, o, lo, hi); break;
      case 2: crop_rows<out_t, 2>(fr, B, H, W, th, bidx, h, w, norm, reverse, value, interp, o, lo, hi); break;
      case 3: crop_rows<out_t, 3>(fr, B, H, W, th, bidx, h, w, norm, reverse, value, interp, o, lo, hi); break;
      default: crop_rows<out_t, 4>(fr, B, H, W, th, bidx, h, w, norm, reverse, value, interp, o, lo, hi); break;
    }
  });
}

// Writes the crops into `out` [N, C, h, w] (checked by the callers).
void crop_into_cpu(const at::Tensor& frames, const at::Tensor& theta, const c10::optional<at::Tensor>& batch_index,
                   at::ArrayRef<double> mean, at::ArrayRef<double> std, bool reverse_channels, double value,
                   int64_t interpolation, at::Tensor& out) {
  if (out.numel() == 0) return;
  const CropNorm norm = make_crop_norm(mean, std);
  const at::Tensor fr = frames.contiguous(), th = theta.to(at::kDouble).contiguous();
  const at::Tensor bidx = batch_index.has_value() ? batch_index->contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "affine_crop_cpu", [&] {
    crop_forward<scalar_t>(fr, th, bidx.defined() ? bidx.data_ptr<int64_t>() : nullptr, out, norm,
                           reverse_channels, float(value), interpolation);
  });
}

// Memory of affine_crop's outputs. A large output (2 MiB or more: 128 crops of
// 256x192 in float32 are 75 MB) comes from a small cache of the blocks that
// earlier outputs gave back, so a pipeline that takes a fresh batch per frame and
// drops the previous one touches no new page after its first frame: fresh pages
// cost a fault and the operating system's zeroing each, about as long as the
// crops themselves, and with transparent huge pages and defrag=madvise a huge
// page fault can stall in direct compaction (benchmarks/RESULTS.md, "fresh
// output"). The crop kernels write every element, so a reused block needs no
// clearing. At most kCacheBlocks blocks and kCacheBytes stay cached (the rest is
// freed); a block serves a request of up to its size and at least half of it.
// Blocks are 2 MiB-aligned and marked MADV_HUGEPAGE only when torch's own switch
// for that asks for it (THP_MEM_ALLOC_ENABLE=1); RMPE_EXT_CROP_CACHE=0 turns the
// cache off. Smaller outputs: torch's CPU allocator.
class CropOutputAllocator final : public c10::Allocator {
 public:
  static constexpr size_t kAlign = size_t(2) << 20;
  static constexpr size_t kMin = size_t(2) << 20;
  static constexpr size_t kCacheBlocks = 4;
  static constexpr size_t kCacheBytes = size_t(1) << 30;

  c10::DataPtr allocate(size_t n) override {
    if (n < kMin) return c10::GetCPUAllocator()->allocate(n);
    const size_t len = (n + kAlign - 1) / kAlign * kAlign;
    Block* b = cache().take(len);
    if (!b) {
      void* p = nullptr;
      TORCH_CHECK(posix_memalign(&p, kAlign, len) == 0, "rmpe_ext::affine_crop: out of memory for a ", len,
                  "-byte output");
#if defined(__linux__) && defined(MADV_HUGEPAGE)
      if (huge_pages()) madvise(p, len, MADV_HUGEPAGE);  // a hint: without THP it does nothing
#endif
      b = new Block{p, len};
    }
    return {b->p, b, &release, c10::Device(c10::DeviceType::CPU)};
  }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

 private:
  struct Block {
    void* p;
    size_t len;
  };
  struct Cache {
    std::mutex mu;
    std::vector<Block*> free;  // blocks given back, ready for reuse
    size_t bytes = 0;
    const bool on = !env_is("RMPE_EXT_CROP_CACHE", "0");

    Block* take(size_t len) {
      std::lock_guard<std::mutex> lock(mu);
      size_t best = free.size();
      for (size_t k = 0; k < free.size(); ++k)
        if (free[k]->len >= len && free[k]->len / 2 <= len && (best == free.size() || free[k]->len < free[best]->len))
          best = k;
      if (best == free.size()) return nullptr;
      Block* b = free[best];
      free.erase(free.begin() + static_cast<std::ptrdiff_t>(best));
      bytes -= b->len;
      return b;
    }
    void give(Block* b) {
      {
        std::lock_guard<std::mutex> lock(mu);
        if (on && free.size() < kCacheBlocks && bytes + b->len <= kCacheBytes) {
          free.push_back(b);
          bytes += b->len;
          return;
        }
      }
      std::free(b->p);
      delete b;
    }
  };
  static bool env_is(const char* name, const char* value) {
    const char* v = std::getenv(name);
    return v && std::string(v) == value;
  }
  static bool huge_pages() {
    static const bool on = env_is("THP_MEM_ALLOC_ENABLE", "1");
    return on;
  }
  // never destroyed: an output may outlive static destruction at exit
  static Cache& cache() {
    static Cache* c = new Cache;
    return *c;
  }
  static void release(void* ctx) { cache().give(static_cast<Block*>(ctx)); }
};

struct EmptyCropOutput {
  at::Tensor operator()(at::IntArrayRef sizes, const at::TensorOptions& options) const {
    static CropOutputAllocator alloc;
    return at::detail::empty_generic(sizes, &alloc, c10::DispatchKeySet(c10::DispatchKey::CPU),
                                     c10::typeMetaToScalarType(options.dtype()), c10::nullopt);
  }
};

at::Tensor affine_crop_cpu(const at::Tensor& frames, const at::Tensor& theta, at::IntArrayRef size,
                           const c10::optional<at::Tensor>& batch_index, at::ArrayRef<double> mean,
                           at::ArrayRef<double> std, bool reverse_channels, double value, int64_t interpolation,
                           at::ScalarType dtype) {
  return affine_crop_impl(&crop_into_cpu, frames, theta, size, batch_index, mean, std, reverse_channels, value,
                          interpolation, dtype, EmptyCropOutput{});
}

void affine_crop_into_cpu(const at::Tensor& frames, const at::Tensor& theta,
                          const c10::optional<at::Tensor>& batch_index, at::ArrayRef<double> mean,
                          at::ArrayRef<double> std, bool reverse_channels, double value, int64_t interpolation,
                          at::Tensor out) {
  affine_crop_into_impl(&crop_into_cpu, frames, theta, batch_index, mean, std, reverse_channels, value,
                        interpolation, out);
}

// ---------------------------------------------------------------- SDTN inverse

at::Tensor affine_inverse_cpu(const at::Tensor& theta) {
  const char* op = "rmpe_ext::affine_inverse";
  check_theta(op, theta, theta);
  const at::Tensor th = theta.contiguous();
  at::Tensor gamma = at::empty_like(th);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, th.scalar_type(), "affine_inverse_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* t = th.data_ptr<scalar_t>();
    scalar_t* g = gamma.data_ptr<scalar_t>();
    for (int64_t n = 0; n < th.size(0); ++n) {
      acc_t in[6], res[6];
      for (int k = 0; k < 6; ++k) in[k] = static_cast<acc_t>(t[n * 6 + k]);
      affine_invert(in, res);
      for (int k = 0; k < 6; ++k) g[n * 6 + k] = static_cast<scalar_t>(res[k]);
    }
  });
  return gamma;
}

at::Tensor affine_inverse_backward_cpu(const at::Tensor& grad_gamma, const at::Tensor& theta,
                                       const at::Tensor& gamma) {
  const at::Tensor th = theta.contiguous(), g = gamma.contiguous(), dg = grad_gamma.contiguous().to(theta.dtype());
  at::Tensor dth = at::empty_like(th);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, th.scalar_type(), "affine_inverse_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t *pt = th.data_ptr<scalar_t>(), *pg = g.data_ptr<scalar_t>(), *pd = dg.data_ptr<scalar_t>();
    scalar_t* out = dth.data_ptr<scalar_t>();
    for (int64_t n = 0; n < th.size(0); ++n) {
      acc_t a[6], b[6], c[6], r[6];
      for (int k = 0; k < 6; ++k) {
        a[k] = static_cast<acc_t>(pt[n * 6 + k]);
        b[k] = static_cast<acc_t>(pg[n * 6 + k]);
        c[k] = static_cast<acc_t>(pd[n * 6 + k]);
      }
      affine_invert_backward(a, b, c, r);
      for (int k = 0; k < 6; ++k) out[n * 6 + k] = static_cast<scalar_t>(r[k]);
    }
  });
  return dth;
}

// ---------------------------------------------------------------- decode

// heatmaps [N, K, h, w] -> (coords [N, K, 2] image pixels, scores [N, K]):
// argmax (+ AlphaPose's quarter-pixel step when `quarter`), then the per-crop
// affine hm_to_img [N, 2, 3] from heatmap pixels to image pixels.
std::tuple<at::Tensor, at::Tensor> heatmap_decode_cpu(const at::Tensor& heatmaps, const at::Tensor& hm_to_img,
                                                      bool quarter) {
  const char* op = "rmpe_ext::heatmap_decode";
  check_decode(op, heatmaps, hm_to_img);
  const bool boxes = hm_to_img.dim() == 2;
  std::vector<double> maps(hm_to_img.numel());  // read as float64 without an ATen op
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, hm_to_img.scalar_type(), "heatmap_decode_maps", [&] {
    const at::Tensor c = hm_to_img.contiguous();
    const scalar_t* src = c.data_ptr<scalar_t>();
    for (size_t k = 0; k < maps.size(); ++k) maps[k] = static_cast<double>(src[k]);
  });
  const at::Tensor hm = heatmaps.contiguous();
  const int64_t N = hm.size(0), K = hm.size(1), h = hm.size(2), w = hm.size(3);
  const auto out_dtype = at::toOpMathType(hm.scalar_type());
  at::Tensor coords = at::empty({N, K, 2}, hm.options().dtype(out_dtype));
  at::Tensor scores = at::empty({N, K}, hm.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, hm.scalar_type(), "heatmap_decode_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* H = hm.data_ptr<scalar_t>();
    const double* m = maps.data();
    acc_t* co = coords.data_ptr<acc_t>();
    scalar_t* sc = scores.data_ptr<scalar_t>();
    at::parallel_for(0, N * K, 16, [&](int64_t lo, int64_t hi) {
      for (int64_t nk = lo; nk < hi; ++nk) {
        const scalar_t* p = H + nk * h * w;
        int64_t best = -1;
#ifdef RMPE_HAVE_AVX2_PATH
        if (std::is_same<scalar_t, float>::value && avx2::cpu_has_avx2())
          best = avx2::argmax_f32(reinterpret_cast<const float*>(p), h * w);
#endif
        acc_t bv;
        if (best >= 0) {
          bv = static_cast<acc_t>(p[best]);
        } else {  // first maximum; a NaN is the maximum
          best = 0;
          bv = static_cast<acc_t>(p[0]);
          for (int64_t q = 1; q < h * w && bv == bv; ++q) {
            const acc_t v = static_cast<acc_t>(p[q]);
            if (v > bv || v != v) {
              bv = v;
              best = q;
            }
          }
        }
        const auto load = [p](int64_t off) { return static_cast<acc_t>(p[off]); };
        acc_t px, py;
        alphapose_refine(load, h, w, best, bv, quarter, px, py);
        double a[6], x, y;
        decode_map(m + (nk / K) * (boxes ? 4 : 6), boxes, h, w, a);
        affine_point(a, double(px), double(py), x, y);
        co[nk * 2] = static_cast<acc_t>(x);
        co[nk * 2 + 1] = static_cast<acc_t>(y);
        sc[nk] = p[best];
      }
    });
  });
  return {coords, scores};
}

}  // namespace
}  // namespace rmpe

TORCH_LIBRARY_IMPL(rmpe_ext, CPU, m) {
  m.impl("affine_sample", &rmpe::affine_sample_cpu);
  m.impl("_affine_sample_backward", &rmpe::affine_sample_backward_cpu);
  m.impl("affine_crop", &rmpe::affine_crop_cpu);
  m.impl("affine_crop_into", &rmpe::affine_crop_into_cpu);
  m.impl("affine_inverse", &rmpe::affine_inverse_cpu);
  m.impl("_affine_inverse_backward", &rmpe::affine_inverse_backward_cpu);
  m.impl("heatmap_decode", &rmpe::heatmap_decode_cpu);
}
