// CPU kernels of the affine ops: the fused affine sampler (forward, backward to
// the input and to theta), the uint8 HWC crop-and-normalize fast path, the
// SDTN inverse and its gradient, and the batched heatmap decode. Per-element
// math from common/affine_common.h, shared with the CUDA kernels.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "common/affine_common.h"
#include "common/affine_host.h"

namespace rmpe {
namespace {

constexpr int64_t kRowGrain = 8;  // output rows per parallel task

// ---------------------------------------------------------------- sampler

template <typename scalar_t>
void sample_forward(const at::Tensor& input, const at::Tensor& theta, const int64_t* bidx, at::Tensor& out,
                    int64_t padding, double value) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t N = out.size(0), C = out.size(1), h = out.size(2), w = out.size(3);
  const int64_t B = input.size(0), H = input.size(2), W = input.size(3);
  const scalar_t* in = input.data_ptr<scalar_t>();
  const acc_t* th_all = theta.data_ptr<acc_t>();
  scalar_t* o = out.data_ptr<scalar_t>();
  const acc_t pad = padding == kPadConstant ? acc_t(value) : acc_t(0);
  at::parallel_for(0, N * h, kRowGrain, [&](int64_t lo, int64_t hi) {
    for (int64_t row = lo; row < hi; ++row) {
      const int64_t n = row / h, i = row % h;
      const int64_t b = crop_image(bidx, n, B);
      const acc_t* th = th_all + n * 6;
      for (int64_t j = 0; j < w; ++j) {
        acc_t x, y;
        affine_point(th, acc_t(j), acc_t(i), x, y);
        Tap<acc_t> t = make_tap(x, y, W, H, padding);
        if (b < 0) t.nan = true;
        const TapWeights<acc_t> wt = tap_weights(t);
        for (int64_t c = 0; c < C; ++c) {
          const scalar_t* plane = in + ((b < 0 ? 0 : b) * C + c) * H * W;
          const auto load = [plane](int64_t off) { return static_cast<acc_t>(plane[off]); };
          o[((n * C + c) * h + i) * w + j] = static_cast<scalar_t>(bilinear(t, wt, load, W, H, pad));
        }
      }
    }
  });
}

// d loss / d theta_px of every crop, summed in double over its pixels.
template <typename scalar_t>
void sample_backward_theta(const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& theta,
                           const int64_t* bidx, at::Tensor& grad_theta, int64_t padding, double value) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t N = grad_out.size(0), C = grad_out.size(1), h = grad_out.size(2), w = grad_out.size(3);
  const int64_t B = input.size(0), H = input.size(2), W = input.size(3);
  const scalar_t* in = input.data_ptr<scalar_t>();
  const scalar_t* go = grad_out.data_ptr<scalar_t>();
  const acc_t* th_all = theta.data_ptr<acc_t>();
  acc_t* gt = grad_theta.data_ptr<acc_t>();
  const acc_t pad = padding == kPadConstant ? acc_t(value) : acc_t(0);
  at::parallel_for(0, N, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t n = lo; n < hi; ++n) {
      const int64_t b = crop_image(bidx, n, B);
      const acc_t* th = th_all + n * 6;
      double s[6] = {0, 0, 0, 0, 0, 0};
      for (int64_t i = 0; i < h; ++i) {
        for (int64_t j = 0; j < w; ++j) {
          acc_t x, y;
          affine_point(th, acc_t(j), acc_t(i), x, y);
          const Tap<acc_t> t = make_tap(x, y, W, H, padding);
          acc_t gx = 0, gy = 0;
          if (t.nan || b < 0) {
            gx = gy = acc_t(0) / acc_t(0);
          } else {
            for (int64_t c = 0; c < C; ++c) {
              const scalar_t* plane = in + (b * C + c) * H * W;
              const auto load = [plane](int64_t off) { return static_cast<acc_t>(plane[off]); };
              bilinear_point_grad(t, load, W, H, pad, static_cast<acc_t>(go[((n * C + c) * h + i) * w + j]), gx,
                                  gy);
            }
            gx *= t.gx;
            gy *= t.gy;
          }
          s[0] += double(gx) * j;
          s[1] += double(gx) * i;
          s[2] += double(gx);
          s[3] += double(gy) * j;
          s[4] += double(gy) * i;
          s[5] += double(gy);
        }
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
  const int64_t N = grad_out.size(0), C = grad_out.size(1), h = grad_out.size(2), w = grad_out.size(3);
  const int64_t B = grad_in_acc.size(0), H = grad_in_acc.size(2), W = grad_in_acc.size(3);
  const scalar_t* go = grad_out.data_ptr<scalar_t>();
  const acc_t* th_all = theta.data_ptr<acc_t>();
  acc_t* gi = grad_in_acc.data_ptr<acc_t>();
  at::parallel_for(0, B * C, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t plane = lo; plane < hi; ++plane) {
      const int64_t b = plane / C, c = plane % C;
      acc_t* g = gi + plane * H * W;
      for (int64_t n = 0; n < N; ++n) {
        if (crop_image(bidx, n, B) != b) continue;
        const acc_t* th = th_all + n * 6;
        const scalar_t* gplane = go + (n * C + c) * h * w;
        for (int64_t i = 0; i < h; ++i) {
          for (int64_t j = 0; j < w; ++j) {
            acc_t x, y;
            affine_point(th, acc_t(j), acc_t(i), x, y);
            const Tap<acc_t> t = make_tap(x, y, W, H, padding);
            if (t.nan) continue;
            const TapWeights<acc_t> wt = tap_weights(t);
            const acc_t gv = static_cast<acc_t>(gplane[i * w + j]);
            if (in_image(t.x0, t.y0, W, H)) g[t.y0 * W + t.x0] += gv * wt.nw;
            if (in_image(t.x0 + 1, t.y0, W, H)) g[t.y0 * W + t.x0 + 1] += gv * wt.ne;
            if (in_image(t.x0, t.y0 + 1, W, H)) g[(t.y0 + 1) * W + t.x0] += gv * wt.sw;
            if (in_image(t.x0 + 1, t.y0 + 1, W, H)) g[(t.y0 + 1) * W + t.x0 + 1] += gv * wt.se;
          }
        }
      }
    }
  });
}

void check_sample_args(const char* op, const at::Tensor& input, const at::Tensor& theta,
                       const c10::optional<at::Tensor>& batch_index, int64_t padding) {
  TORCH_CHECK(input.dim() == 4, op, ": input must have shape [B, C, H, W], got ", input.dim(),
              "-D tensor of shape ", shape_str(input));
  TORCH_CHECK(at::isFloatingType(input.scalar_type()), op, ": input must be floating point, got ",
              input.scalar_type());
  TORCH_CHECK(input.size(2) > 0 && input.size(3) > 0, op, ": input images must not be empty, got shape ",
              shape_str(input));
  check_theta(op, theta, input);
  check_batch_index(op, batch_index, theta.size(0), input.size(0), input);
  check_padding(op, padding);
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

// frames [B, H, W, C] uint8 -> crops [N, C, h, w]: out = (v / 255 - mean[c]) / std[c]
// with v the sample of source channel (reverse ? C - 1 - c : c): exact bilinear
// (kInterpBilinear), the same rounded to uint8 (kInterpBilinearU8, as OpenCV >= 5
// warpAffine), or OpenCV 4's fixed-point warpAffine (kInterpOpenCV4).
template <typename out_t>
void crop_forward(const at::Tensor& frames, const at::Tensor& theta, const int64_t* bidx, at::Tensor& out,
                  const std::vector<float>& mean, const std::vector<float>& std, bool reverse, float value,
                  int64_t interp) {
  const int64_t N = out.size(0), C = out.size(1), h = out.size(2), w = out.size(3);
  const int64_t B = frames.size(0), H = frames.size(1), W = frames.size(2);
  const uint8_t* fr = frames.data_ptr<uint8_t>();
  const double* th_all = theta.data_ptr<double>();
  out_t* o = out.data_ptr<out_t>();
  const int32_t cval = static_cast<int32_t>(std::nearbyint(std::min(255.f, std::max(0.f, value))));
  at::parallel_for(0, N * h, kRowGrain, [&](int64_t lo, int64_t hi) {
    for (int64_t row = lo; row < hi; ++row) {
      const int64_t n = row / h, i = row % h;
      const int64_t b = crop_image(bidx, n, B);
      const double* M = th_all + n * 6;
      const float thf[6] = {float(M[0]), float(M[1]), float(M[2]), float(M[3]), float(M[4]), float(M[5])};
      const uint8_t* img = fr + (b < 0 ? 0 : b) * H * W * C;
      for (int64_t j = 0; j < w; ++j) {
        const auto store = [&](int64_t c, float v) {
          o[((n * C + c) * h + i) * w + j] = static_cast<out_t>((v / 255.f - mean[c]) / std[c]);
        };
        if (b < 0) {
          for (int64_t c = 0; c < C; ++c) store(c, NAN);
        } else if (interp == kInterpOpenCV4) {
          const CvTap t = cv_tap(M, j, i);
          for (int64_t c = 0; c < C; ++c) {
            const uint8_t* ch = img + (reverse ? C - 1 - c : c);
            store(c, float(cv_bilinear(t, [ch, C](int64_t off) { return ch[off * C]; }, W, H, cval)));
          }
        } else {
          float x, y;
          affine_point(thf, float(j), float(i), x, y);
          const Tap<float> t = make_tap(x, y, W, H, kPadConstant);
          const TapWeights<float> wt = tap_weights(t);
          for (int64_t c = 0; c < C; ++c) {
            const uint8_t* ch = img + (reverse ? C - 1 - c : c);
            const float v = bilinear(t, wt, [ch, C](int64_t off) { return float(ch[off * C]); }, W, H, value);
            store(c, interp == kInterpBilinearU8 ? round_u8(v) : v);
          }
        }
      }
    }
  });
}

void check_crop_args(const char* op, const at::Tensor& frames, const at::Tensor& theta,
                     const c10::optional<at::Tensor>& batch_index, at::ArrayRef<double> mean,
                     at::ArrayRef<double> std, at::ScalarType dtype) {
  TORCH_CHECK(frames.dim() == 4, op, ": frames must have shape [B, H, W, C] (uint8, as OpenCV reads them), got ",
              frames.dim(), "-D tensor of shape ", shape_str(frames));
  TORCH_CHECK(frames.scalar_type() == at::kByte, op, ": frames must be uint8, got ", frames.scalar_type());
  const int64_t C = frames.size(3);
  TORCH_CHECK(C >= 1 && C <= 4, op, ": frames must have 1 to 4 channels, got ", C);
  TORCH_CHECK(frames.size(1) > 0 && frames.size(2) > 0, op, ": frames must not be empty, got shape ",
              shape_str(frames));
  check_theta(op, theta, frames);
  check_batch_index(op, batch_index, theta.size(0), frames.size(0), frames);
  TORCH_CHECK(static_cast<int64_t>(mean.size()) == C && static_cast<int64_t>(std.size()) == C, op,
              ": mean and std must have one value per channel (", C, "), got ", mean.size(), " and ", std.size());
  for (double s : std) TORCH_CHECK(s > 0 && std::isfinite(s), op, ": std must be positive and finite, got ", s);
  for (double m : mean) TORCH_CHECK(std::isfinite(m), op, ": mean must be finite, got ", m);
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16, op,
              ": dtype must be float32, float16 or bfloat16, got ", dtype);
}

at::Tensor affine_crop_cpu(const at::Tensor& frames, const at::Tensor& theta, at::IntArrayRef size,
                           const c10::optional<at::Tensor>& batch_index, at::ArrayRef<double> mean,
                           at::ArrayRef<double> std, bool reverse_channels, double value, int64_t interpolation,
                           at::ScalarType dtype) {
  const char* op = "rmpe_ext::affine_crop";
  check_crop_args(op, frames, theta, batch_index, mean, std, dtype);
  TORCH_CHECK(interpolation >= kInterpBilinear && interpolation <= kInterpOpenCV4, op,
              ": interpolation must be 0 (bilinear), 1 (bilinear rounded to uint8) or 2 (OpenCV 4), got ",
              interpolation);
  const auto [h, w] = check_size(op, size);
  const int64_t C = frames.size(3);
  const std::vector<float> meanf(mean.begin(), mean.end()), stdf(std.begin(), std.end());
  const at::Tensor fr = frames.contiguous(), th = theta.to(at::kDouble).contiguous();
  const at::Tensor bidx = batch_index.has_value() ? batch_index->contiguous() : at::Tensor();
  at::Tensor out = at::empty({theta.size(0), C, h, w}, frames.options().dtype(dtype));
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "affine_crop_cpu", [&] {
    crop_forward<scalar_t>(fr, th, bidx.defined() ? bidx.data_ptr<int64_t>() : nullptr, out, meanf, stdf,
                           reverse_channels, float(value), interpolation);
  });
  return out;
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
    for (int64_t n = 0; n < th.size(0); ++n) {
      acc_t a[6], b[6], c[6], r[6];
      for (int k = 0; k < 6; ++k) {
        a[k] = static_cast<acc_t>(th.data_ptr<scalar_t>()[n * 6 + k]);
        b[k] = static_cast<acc_t>(g.data_ptr<scalar_t>()[n * 6 + k]);
        c[k] = static_cast<acc_t>(dg.data_ptr<scalar_t>()[n * 6 + k]);
      }
      affine_invert_backward(a, b, c, r);
      for (int k = 0; k < 6; ++k) dth.data_ptr<scalar_t>()[n * 6 + k] = static_cast<scalar_t>(r[k]);
    }
  });
  return dth;
}

// ---------------------------------------------------------------- decode

// heatmaps [N, K, h, w] -> (coords [N, K, 2] image pixels, scores [N, K]):
// argmax (+ AlphaPose's quarter-pixel step when `quarter`), then the per-crop
// affine hm_to_img [N, 2, 3] from heatmap pixels to image pixels.
at::Tensor check_decode(const char* op, const at::Tensor& heatmaps, const at::Tensor& hm_to_img) {
  TORCH_CHECK(heatmaps.dim() == 4, op, ": heatmaps must have shape [N, K, h, w], got ", heatmaps.dim(),
              "-D tensor of shape ", shape_str(heatmaps));
  TORCH_CHECK(at::isFloatingType(heatmaps.scalar_type()), op, ": heatmaps must be floating point, got ",
              heatmaps.scalar_type());
  TORCH_CHECK(heatmaps.size(2) > 0 && heatmaps.size(3) > 0, op, ": heatmaps must not be empty, got shape ",
              shape_str(heatmaps));
  check_theta(op, hm_to_img, heatmaps);
  TORCH_CHECK(hm_to_img.size(0) == heatmaps.size(0), op, ": hm_to_img must have one [2, 3] map per heatmap set (",
              heatmaps.size(0), "), got ", hm_to_img.size(0));
  return hm_to_img.to(at::kDouble).contiguous();
}

std::tuple<at::Tensor, at::Tensor> heatmap_decode_cpu(const at::Tensor& heatmaps, const at::Tensor& hm_to_img,
                                                      bool quarter) {
  const char* op = "rmpe_ext::heatmap_decode";
  const at::Tensor M = check_decode(op, heatmaps, hm_to_img);
  const at::Tensor hm = heatmaps.contiguous();
  const int64_t N = hm.size(0), K = hm.size(1), h = hm.size(2), w = hm.size(3);
  const auto out_dtype = at::toOpMathType(hm.scalar_type());
  at::Tensor coords = at::empty({N, K, 2}, hm.options().dtype(out_dtype));
  at::Tensor scores = at::empty({N, K}, hm.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, hm.scalar_type(), "heatmap_decode_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* H = hm.data_ptr<scalar_t>();
    const double* m = M.data_ptr<double>();
    acc_t* co = coords.data_ptr<acc_t>();
    scalar_t* sc = scores.data_ptr<scalar_t>();
    at::parallel_for(0, N * K, 16, [&](int64_t lo, int64_t hi) {
      for (int64_t nk = lo; nk < hi; ++nk) {
        const scalar_t* p = H + nk * h * w;
        int64_t best = 0;
        acc_t bv = static_cast<acc_t>(p[0]);
        for (int64_t q = 1; q < h * w && bv == bv; ++q) {  // first maximum; a NaN is the maximum
          const acc_t v = static_cast<acc_t>(p[q]);
          if (v > bv || v != v) {
            bv = v;
            best = q;
          }
        }
        const auto load = [p](int64_t off) { return static_cast<acc_t>(p[off]); };
        acc_t px, py;
        alphapose_refine(load, h, w, best, bv, quarter, px, py);
        const double* a = m + (nk / K) * 6;
        co[nk * 2] = static_cast<acc_t>(a[0] * px + a[1] * py + a[2]);
        co[nk * 2 + 1] = static_cast<acc_t>(a[3] * px + a[4] * py + a[5]);
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
  m.impl("affine_inverse", &rmpe::affine_inverse_cpu);
  m.impl("_affine_inverse_backward", &rmpe::affine_inverse_backward_cpu);
  m.impl("heatmap_decode", &rmpe::heatmap_decode_cpu);
}
