// CUDA kernels of the affine ops: the fused sampler (forward; backward to theta
// as a per-crop reduction inside the kernel; backward to the input with
// atomics, or deterministic by gathering), uint8 crops, the SDTN inverse and
// the batched heatmap decode. Per-element math from common/affine_common.h,
// shared with the CPU kernels.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <cstdint>
#include <tuple>
#include <vector>

#include "common/affine_common.h"
#include "common/affine_host.h"
#include "cuda/cuda_context.h"

namespace rmpe {
namespace {

constexpr unsigned kFull = 0xffffffffu;

__device__ __forceinline__ int64_t gthread() { return blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; }
__device__ __forceinline__ int64_t gstride() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

// ---------------------------------------------------------------- sampler

template <typename scalar_t>
__global__ void sample_forward_kernel(int64_t N, SampleGeom g, int64_t B, const scalar_t* __restrict__ in,
                                      const at::opmath_type<scalar_t>* __restrict__ th, const int64_t* __restrict__ bidx,
                                      int64_t padding, at::opmath_type<scalar_t> pad, scalar_t* __restrict__ out) {
  for (int64_t t = gthread(); t < N * g.h * g.w; t += gstride()) {
    const int64_t j = t % g.w, i = (t / g.w) % g.h, n = t / (g.h * g.w);
    sample_pixel(in, th + n * 6, crop_image(bidx, n, B), n, i, j, g, padding, pad, out);
  }
}

// Block n * chunks + chunk: the six sums d loss / d theta_px of crop n over its
// pixels [chunk * span, (chunk + 1) * span), reduced in the block, written to
// partial[n][chunk][6]. No atomics: the result does not depend on scheduling.
template <typename scalar_t>
__global__ void sample_backward_theta_kernel(SampleGeom g, int64_t B, const scalar_t* __restrict__ go,
                                             const scalar_t* __restrict__ in,
                                             const at::opmath_type<scalar_t>* __restrict__ th_all,
                                             const int64_t* __restrict__ bidx, int64_t padding,
                                             at::opmath_type<scalar_t> pad, int64_t span, int64_t chunks,
                                             at::opmath_type<scalar_t>* __restrict__ partial) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t n = blockIdx.x / chunks, chunk = blockIdx.x % chunks;
  const int64_t b = crop_image(bidx, n, B);
  acc_t s[6] = {0, 0, 0, 0, 0, 0};
  const int64_t lo = chunk * span, hi = lo + span < g.h * g.w ? lo + span : g.h * g.w;
  for (int64_t p = lo + threadIdx.x; p < hi; p += blockDim.x) {
    const int64_t i = p / g.w, j = p % g.w;
    acc_t gx, gy;
    sample_point_grad(in, go, th_all + n * 6, b, n, i, j, g, padding, pad, gx, gy);
    add_theta_grad(s, gx, gy, j, i);
  }
  __shared__ acc_t red[6][32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int k = 0; k < 6; ++k) {
    acc_t v = s[k];
    for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
    if (lane == 0) red[k][warp] = v;
  }
  __syncthreads();
  if (threadIdx.x < 6) {
    acc_t v = 0;
    for (int q = 0; q < warps; ++q) v += red[threadIdx.x][q];
    partial[(n * chunks + chunk) * 6 + threadIdx.x] = v;
  }
}

// d loss / d input by atomics: every output pixel scatters to its four taps.
template <typename scalar_t>
__global__ void sample_backward_input_atomic_kernel(int64_t N, SampleGeom g, int64_t B,
                                                    const scalar_t* __restrict__ go,
                                                    const at::opmath_type<scalar_t>* __restrict__ th_all,
                                                    const int64_t* __restrict__ bidx, int64_t padding,
                                                    at::opmath_type<scalar_t>* __restrict__ gi) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t t = gthread(); t < N * g.h * g.w; t += gstride()) {
    const int64_t j = t % g.w, i = (t / g.w) % g.h, n = t / (g.h * g.w);
    const int64_t b = crop_image(bidx, n, B);
    const Tap<acc_t> tp = pixel_tap(th_all + n * 6, j, i, g, padding, b);
    if (tp.nan) continue;
    const TapWeights<acc_t> wt = tap_weights(tp);
    for (int64_t c = 0; c < g.C; ++c) {
      const acc_t gv = static_cast<acc_t>(go[((n * g.C + c) * g.h + i) * g.w + j]);
      acc_t* plane = gi + (b * g.C + c) * g.H * g.W;
      for_each_tap(tp, wt, g.W, g.H, [&](int64_t off, acc_t wgt) { atomicAdd(plane + off, gv * wgt); });
    }
  }
}

template <typename T>
__device__ __forceinline__ bool finite6(const T* m) {
  bool ok = true;
  for (int k = 0; k < 6; ++k) ok = ok && fp::isfinite(m[k]);
  return ok;
}

// d loss / d input, deterministic: one thread per input element gathers, crops
// in order, from the output pixels whose source point falls within one pixel
// of it (the preimage of that square under theta, bounded through gamma). A
// crop whose gamma, or one of the square's corners mapped by it, is not finite
// (theta singular, or so close to it that the corners overflow: they would give
// no bound, or a wrong one) is scanned whole.
template <typename scalar_t>
__global__ void sample_backward_input_gather_kernel(int64_t N, SampleGeom g, int64_t B,
                                                    const scalar_t* __restrict__ go,
                                                    const at::opmath_type<scalar_t>* __restrict__ th_all,
                                                    const at::opmath_type<scalar_t>* __restrict__ gamma_all,
                                                    const int64_t* __restrict__ bidx, int64_t padding,
                                                    at::opmath_type<scalar_t>* __restrict__ gi) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t h = g.h, w = g.w, H = g.H, W = g.W;
  for (int64_t t = gthread(); t < B * g.C * H * W; t += gstride()) {
    const int64_t x = t % W, y = (t / W) % H, c = (t / (H * W)) % g.C, b = t / (g.C * H * W);
    acc_t acc = 0;
    for (int64_t n = 0; n < N; ++n) {
      if (crop_image(bidx, n, B) != b) continue;
      const acc_t* gm = gamma_all + n * 6;
      int64_t j0 = 0, j1 = w - 1, i0 = 0, i1 = h - 1;
      acc_t jl = acc_t(1) / acc_t(0), jh = -jl, il = jl, ih = -jl;
      bool bounded = finite6(gm);
      for (int k = 0; k < 4 && bounded; ++k) {
        const acc_t px = acc_t(x) + ((k & 1) ? acc_t(1) : acc_t(-1));
        const acc_t py = acc_t(y) + ((k & 2) ? acc_t(1) : acc_t(-1));
        acc_t jj, ii;
        affine_point(gm, px, py, jj, ii);
        bounded = fp::isfinite(jj) && fp::isfinite(ii);
        jl = jj < jl ? jj : jl;
        jh = jj > jh ? jj : jh;
        il = ii < il ? ii : il;
        ih = ii > ih ? ii : ih;
      }
      if (bounded) {
        // one pixel of margin for rounding; clip to the crop
        if (!(jh >= acc_t(-1) && jl <= acc_t(w) && ih >= acc_t(-1) && il <= acc_t(h))) continue;
        j0 = jl <= acc_t(1) ? 0 : static_cast<int64_t>(::floor(jl)) - 1;
        j1 = jh >= acc_t(w - 2) ? w - 1 : static_cast<int64_t>(::ceil(jh)) + 1;
        i0 = il <= acc_t(1) ? 0 : static_cast<int64_t>(::floor(il)) - 1;
        i1 = ih >= acc_t(h - 2) ? h - 1 : static_cast<int64_t>(::ceil(ih)) + 1;
      }
      const scalar_t* gplane = go + (n * g.C + c) * h * w;
      const int64_t target = y * W + x;
      for (int64_t i = i0; i <= i1; ++i) {
        for (int64_t j = j0; j <= j1; ++j) {
          const Tap<acc_t> tp = pixel_tap(th_all + n * 6, j, i, g, padding, b);
          if (tp.nan || x < tp.x0 || x > tp.x0 + 1 || y < tp.y0 || y > tp.y0 + 1) continue;
          const acc_t gv = static_cast<acc_t>(gplane[i * w + j]);
          for_each_tap(tp, tap_weights(tp), W, H, [&](int64_t off, acc_t wgt) {
            if (off == target) acc += gv * wgt;
          });
        }
      }
    }
    gi[t] = acc;
  }
}

at::Tensor affine_sample_cuda(const at::Tensor& input, const at::Tensor& theta, at::IntArrayRef size,
                              const c10::optional<at::Tensor>& batch_index, int64_t padding, double value) {
  const char* op = "rmpe_ext::affine_sample";
  check_sample_args(op, input, theta, batch_index, padding);
  const auto [h, w] = check_size(op, size);
  cuda::DeviceGuard guard(input.device());
  cudaStream_t stream = cuda::current_stream(input.device());
  const at::Tensor in = input.contiguous();
  const at::Tensor th = theta.to(at::toOpMathType(input.scalar_type())).contiguous();
  const at::Tensor bidx = batch_index.has_value() ? batch_index->contiguous() : at::Tensor();
  at::Tensor out = at::empty({theta.size(0), input.size(1), h, w}, input.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "affine_sample_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const int64_t N = out.size(0);
    const SampleGeom g{in.size(1), h, w, in.size(2), in.size(3)};
    sample_forward_kernel<scalar_t><<<cuda::blocks_for(N * h * w), cuda::kThreads, 0, stream>>>(
        N, g, in.size(0), in.data_ptr<scalar_t>(), th.data_ptr<acc_t>(),
        bidx.defined() ? bidx.data_ptr<int64_t>() : nullptr, padding,
        padding == kPadConstant ? acc_t(value) : acc_t(0), out.data_ptr<scalar_t>());
  });
  cuda::check_launch("sample_forward_kernel");
  return out;
}

at::Tensor affine_inverse_cuda(const at::Tensor& theta);

std::tuple<at::Tensor, at::Tensor> affine_sample_backward_cuda(const at::Tensor& grad_out, const at::Tensor& input,
                                                               const at::Tensor& theta,
                                                               const c10::optional<at::Tensor>& batch_index,
                                                               int64_t padding, double value, bool input_grad,
                                                               bool theta_grad, bool deterministic) {
  const char* op = "rmpe_ext::_affine_sample_backward";
  check_sample_args(op, input, theta, batch_index, padding);
  TORCH_CHECK(!(deterministic && input_grad && padding == kPadBorder), op,
              ": border padding has no deterministic CUDA gradient to the input; use zeros or constant padding, "
              "or turn off torch.use_deterministic_algorithms");
  cuda::DeviceGuard guard(input.device());
  cudaStream_t stream = cuda::current_stream(input.device());
  const at::Tensor in = input.contiguous(), go = grad_out.contiguous().to(input.scalar_type());
  const at::Tensor th = theta.to(at::toOpMathType(input.scalar_type())).contiguous();
  const at::Tensor bidx_t = batch_index.has_value() ? batch_index->contiguous() : at::Tensor();
  const int64_t* bidx = bidx_t.defined() ? bidx_t.data_ptr<int64_t>() : nullptr;
  const int64_t N = go.size(0), C = go.size(1), h = go.size(2), w = go.size(3);
  const int64_t B = in.size(0), H = in.size(2), W = in.size(3);
  at::Tensor grad_input = at::empty({0}, input.options()), grad_theta = at::empty({0}, theta.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "affine_sample_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t pad = padding == kPadConstant ? acc_t(value) : acc_t(0);
    const SampleGeom g{C, h, w, H, W};
    if (input_grad) {
      at::Tensor acc = at::zeros(in.sizes(), th.options());
      if (go.numel()) {
        if (deterministic) {
          const at::Tensor gamma = affine_inverse_cuda(th);
          sample_backward_input_gather_kernel<scalar_t><<<cuda::blocks_for(acc.numel()), cuda::kThreads, 0, stream>>>(
              N, g, B, go.data_ptr<scalar_t>(), th.data_ptr<acc_t>(), gamma.data_ptr<acc_t>(), bidx, padding,
              acc.data_ptr<acc_t>());
          cuda::check_launch("sample_backward_input_gather_kernel");
        } else {
          sample_backward_input_atomic_kernel<scalar_t><<<cuda::blocks_for(N * h * w), cuda::kThreads, 0, stream>>>(
              N, g, B, go.data_ptr<scalar_t>(), th.data_ptr<acc_t>(), bidx, padding, acc.data_ptr<acc_t>());
          cuda::check_launch("sample_backward_input_atomic_kernel");
        }
      }
      grad_input = acc.to(input.scalar_type());
    }
    if (theta_grad) {
      if (go.numel()) {
        const int64_t span = 8 * cuda::kThreads;
        const int64_t chunks = (h * w + span - 1) / span;
        at::Tensor partial = at::empty({N, chunks, 6}, th.options());
        TORCH_CHECK(N * chunks < (1LL << 31), op, ": too many crops for one launch (", N, ")");
        sample_backward_theta_kernel<scalar_t><<<static_cast<unsigned>(N * chunks), cuda::kThreads, 0, stream>>>(
            g, B, go.data_ptr<scalar_t>(), in.data_ptr<scalar_t>(), th.data_ptr<acc_t>(), bidx, padding, pad, span,
            chunks, partial.data_ptr<acc_t>());
        cuda::check_launch("sample_backward_theta_kernel");
        grad_theta = partial.sum(1).view({N, 2, 3}).to(theta.scalar_type());
      } else {
        grad_theta = at::zeros({N, 2, 3}, theta.options());
      }
    }
  });
  return {grad_input, grad_theta};
}

// ---------------------------------------------------------------- uint8 crops

template <typename out_t>
__global__ void crop_kernel(int64_t N, int64_t C, int64_t h, int64_t w, int64_t B, int64_t H, int64_t W,
                            const uint8_t* __restrict__ fr, const double* __restrict__ th_all,
                            const int64_t* __restrict__ bidx, CropNorm norm, bool reverse, float value,
                            int64_t interp, out_t* __restrict__ out) {
  const int32_t cval = crop_cval(value);
  for (int64_t t = gthread(); t < N * h * w; t += gstride()) {
    const int64_t j = t % w, i = (t / w) % h, n = t / (h * w);
    const int64_t b = crop_image(bidx, n, B);
    const double* M = th_all + n * 6;
    const uint8_t* img = fr + (b < 0 ? 0 : b) * H * W * C;
    out_t* o = out + n * C * h * w + i * w + j;
    if (b < 0 || !theta_finite(M)) {  // as the CPU kernel: a crop whose map is not finite is NaN
      for (int64_t c = 0; c < C; ++c) o[c * h * w] = static_cast<out_t>(NAN);
    } else if (interp == kInterpOpenCV4) {
      const CvTap tp = cv_tap(M, j, i);
      for (int64_t c = 0; c < C; ++c) {
        const uint8_t* ch = img + (reverse ? C - 1 - c : c);
        const int32_t v = cv_bilinear(tp, [ch, C](int64_t off) { return ch[off * C]; }, W, H, cval);
        o[c * h * w] = static_cast<out_t>(crop_normalize_u8(norm, int(c), float(v)));
      }
    } else {
      const float thf[6] = {float(M[0]), float(M[1]), float(M[2]), float(M[3]), float(M[4]), float(M[5])};
      float x, y;
      affine_point(thf, float(j), float(i), x, y);
      const Tap<float> tp = make_tap(x, y, W, H, kPadConstant);
      const TapWeights<float> wt = tap_weights(tp);
      for (int64_t c = 0; c < C; ++c) {
        const uint8_t* ch = img + (reverse ? C - 1 - c : c);
        const float v = bilinear(tp, wt, [ch, C](int64_t off) { return float(ch[off * C]); }, W, H, value);
        o[c * h * w] = static_cast<out_t>(interp == kInterpBilinearU8 ? crop_normalize_u8(norm, int(c), round_u8(v))
                                                                      : crop_normalize(norm, int(c), v));
      }
    }
  }
}

void crop_into_cuda(const at::Tensor& frames, const at::Tensor& theta, const c10::optional<at::Tensor>& batch_index,
                    at::ArrayRef<double> mean, at::ArrayRef<double> std, bool reverse_channels, double value,
                    int64_t interpolation, at::Tensor& out) {
  if (out.numel() == 0) return;
  cuda::DeviceGuard guard(frames.device());
  cudaStream_t stream = cuda::current_stream(frames.device());
  const CropNorm norm = make_crop_norm(mean, std);
  const at::Tensor fr = frames.contiguous(), th = theta.to(at::kDouble).contiguous();
  const at::Tensor bidx = batch_index.has_value() ? batch_index->contiguous() : at::Tensor();
  const int64_t N = out.size(0), C = out.size(1), h = out.size(2), w = out.size(3);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "affine_crop_cuda", [&] {
    crop_kernel<scalar_t><<<cuda::blocks_for(N * h * w), cuda::kThreads, 0, stream>>>(
        N, C, h, w, fr.size(0), fr.size(1), fr.size(2), fr.data_ptr<uint8_t>(), th.data_ptr<double>(),
        bidx.defined() ? bidx.data_ptr<int64_t>() : nullptr, norm, reverse_channels, float(value), interpolation,
        out.data_ptr<scalar_t>());
  });
  cuda::check_launch("crop_kernel");
}

at::Tensor affine_crop_cuda(const at::Tensor& frames, const at::Tensor& theta, at::IntArrayRef size,
                            const c10::optional<at::Tensor>& batch_index, at::ArrayRef<double> mean,
                            at::ArrayRef<double> std, bool reverse_channels, double value, int64_t interpolation,
                            at::ScalarType dtype) {
  return affine_crop_impl(&crop_into_cuda, frames, theta, size, batch_index, mean, std, reverse_channels, value,
                          interpolation, dtype);
}

void affine_crop_into_cuda(const at::Tensor& frames, const at::Tensor& theta,
                           const c10::optional<at::Tensor>& batch_index, at::ArrayRef<double> mean,
                           at::ArrayRef<double> std, bool reverse_channels, double value, int64_t interpolation,
                           at::Tensor out) {
  affine_crop_into_impl(&crop_into_cuda, frames, theta, batch_index, mean, std, reverse_channels, value,
                        interpolation, out);
}

// ---------------------------------------------------------------- SDTN inverse

template <typename scalar_t>
__global__ void inverse_kernel(int64_t N, const scalar_t* __restrict__ th, scalar_t* __restrict__ g) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t n = gthread(); n < N; n += gstride()) {
    acc_t a[6], r[6];
    for (int k = 0; k < 6; ++k) a[k] = static_cast<acc_t>(th[n * 6 + k]);
    affine_invert(a, r);
    for (int k = 0; k < 6; ++k) g[n * 6 + k] = static_cast<scalar_t>(r[k]);
  }
}

template <typename scalar_t>
__global__ void inverse_backward_kernel(int64_t N, const scalar_t* __restrict__ th, const scalar_t* __restrict__ g,
                                        const scalar_t* __restrict__ dg, scalar_t* __restrict__ dth) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t n = gthread(); n < N; n += gstride()) {
    acc_t a[6], b[6], c[6], r[6];
    for (int k = 0; k < 6; ++k) {
      a[k] = static_cast<acc_t>(th[n * 6 + k]);
      b[k] = static_cast<acc_t>(g[n * 6 + k]);
      c[k] = static_cast<acc_t>(dg[n * 6 + k]);
    }
    affine_invert_backward(a, b, c, r);
    for (int k = 0; k < 6; ++k) dth[n * 6 + k] = static_cast<scalar_t>(r[k]);
  }
}

at::Tensor affine_inverse_cuda(const at::Tensor& theta) {
  check_theta("rmpe_ext::affine_inverse", theta, theta);
  cuda::DeviceGuard guard(theta.device());
  cudaStream_t stream = cuda::current_stream(theta.device());
  const at::Tensor th = theta.contiguous();
  at::Tensor gamma = at::empty_like(th);
  if (th.numel() == 0) return gamma;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, th.scalar_type(), "affine_inverse_cuda", [&] {
    inverse_kernel<scalar_t><<<cuda::blocks_for(th.size(0)), cuda::kThreads, 0, stream>>>(
        th.size(0), th.data_ptr<scalar_t>(), gamma.data_ptr<scalar_t>());
  });
  cuda::check_launch("inverse_kernel");
  return gamma;
}

at::Tensor affine_inverse_backward_cuda(const at::Tensor& grad_gamma, const at::Tensor& theta,
                                        const at::Tensor& gamma) {
  cuda::DeviceGuard guard(theta.device());
  cudaStream_t stream = cuda::current_stream(theta.device());
  const at::Tensor th = theta.contiguous(), g = gamma.contiguous(), dg = grad_gamma.contiguous().to(theta.dtype());
  at::Tensor dth = at::empty_like(th);
  if (th.numel() == 0) return dth;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, th.scalar_type(), "affine_inverse_backward_cuda", [&] {
    inverse_backward_kernel<scalar_t><<<cuda::blocks_for(th.size(0)), cuda::kThreads, 0, stream>>>(
        th.size(0), th.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(), dg.data_ptr<scalar_t>(),
        dth.data_ptr<scalar_t>());
  });
  cuda::check_launch("inverse_backward_kernel");
  return dth;
}

// ---------------------------------------------------------------- decode

// One warp per heatmap: first maximum (a NaN wins, the first one), then the
// quarter-pixel step and the back-projection (double) by lane 0.
template <typename scalar_t>
__global__ void decode_kernel(int64_t NK, int64_t K, int64_t h, int64_t w, const scalar_t* __restrict__ hm,
                              const double* __restrict__ M, bool boxes, bool quarter,
                              at::opmath_type<scalar_t>* __restrict__ coords, scalar_t* __restrict__ scores) {
  using acc_t = at::opmath_type<scalar_t>;
  const int lane = threadIdx.x & 31;
  for (int64_t nk = gthread() >> 5; nk < NK; nk += gstride() >> 5) {
    const scalar_t* p = hm + nk * h * w;
    int64_t best = -1;
    acc_t bv = 0;
    bool bnan = false;
    for (int64_t q = lane; q < h * w; q += 32) {
      const acc_t v = static_cast<acc_t>(p[q]);
      const bool vnan = v != v;
      if (best < 0 || (vnan && !bnan) || (!bnan && !vnan && v > bv)) {
        best = q;
        bv = v;
        bnan = vnan;
      }
    }
    for (int o = 16; o; o >>= 1) {
      const int64_t ob = __shfl_xor_sync(kFull, best, o);
      const acc_t ov = __shfl_xor_sync(kFull, bv, o);
      const bool on = __shfl_xor_sync(kFull, bnan, o);
      bool take;
      if (ob < 0) take = false;
      else if (best < 0) take = true;
      else if (on != bnan) take = on;
      else if (on) take = ob < best;
      else take = ov > bv || (ov == bv && ob < best);
      if (take) {
        best = ob;
        bv = ov;
        bnan = on;
      }
    }
    if (lane == 0) {
      const auto load = [p](int64_t off) { return static_cast<acc_t>(p[off]); };
      acc_t px, py;
      alphapose_refine(load, h, w, best, bv, quarter, px, py);
      double a[6], x, y;
      decode_map(M + (nk / K) * (boxes ? 4 : 6), boxes, h, w, a);
      affine_point(a, double(px), double(py), x, y);  // the CPU kernel's rounding (no FMA)
      coords[nk * 2] = static_cast<acc_t>(x);
      coords[nk * 2 + 1] = static_cast<acc_t>(y);
      scores[nk] = p[best];
    }
  }
}

std::tuple<at::Tensor, at::Tensor> heatmap_decode_cuda(const at::Tensor& heatmaps, const at::Tensor& hm_to_img,
                                                       bool quarter) {
  const char* op = "rmpe_ext::heatmap_decode";
  check_decode(op, heatmaps, hm_to_img);
  const at::Tensor Md = hm_to_img.to(at::kDouble).contiguous();
  cuda::DeviceGuard guard(heatmaps.device());
  cudaStream_t stream = cuda::current_stream(heatmaps.device());
  const at::Tensor hm = heatmaps.contiguous();
  const int64_t N = hm.size(0), K = hm.size(1), h = hm.size(2), w = hm.size(3);
  at::Tensor coords = at::empty({N, K, 2}, hm.options().dtype(at::toOpMathType(hm.scalar_type())));
  at::Tensor scores = at::empty({N, K}, hm.options());
  if (N * K == 0) return {coords, scores};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, hm.scalar_type(), "heatmap_decode_cuda", [&] {
    decode_kernel<scalar_t><<<cuda::blocks_for(N * K, cuda::kThreads / 32), cuda::kThreads, 0, stream>>>(
        N * K, K, h, w, hm.data_ptr<scalar_t>(), Md.data_ptr<double>(), Md.dim() == 2, quarter,
        coords.data_ptr<at::opmath_type<scalar_t>>(), scores.data_ptr<scalar_t>());
  });
  cuda::check_launch("decode_kernel");
  return {coords, scores};
}

}  // namespace
}  // namespace rmpe

TORCH_LIBRARY_IMPL(rmpe_ext, CUDA, m) {
  m.impl("affine_sample", &rmpe::affine_sample_cuda);
  m.impl("_affine_sample_backward", &rmpe::affine_sample_backward_cuda);
  m.impl("affine_crop", &rmpe::affine_crop_cuda);
  m.impl("affine_crop_into", &rmpe::affine_crop_into_cuda);
  m.impl("affine_inverse", &rmpe::affine_inverse_cuda);
  m.impl("_affine_inverse_backward", &rmpe::affine_inverse_backward_cuda);
  m.impl("heatmap_decode", &rmpe::heatmap_decode_cuda);
}
