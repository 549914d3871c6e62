// Host-side checks of the affine ops, shared by both backends (needs only
// ATen's core headers).
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cmath>

#include "common/affine_common.h"
#include "common/pose_nms_host.h"  // shape_str

namespace rmpe {

inline void check_theta(const char* op, const at::Tensor& theta, const at::Tensor& like) {
  TORCH_CHECK(theta.dim() == 3 && theta.size(1) == 2 && theta.size(2) == 3, op,
              ": theta must have shape [N, 2, 3], got ", theta.dim(), "-D tensor of shape ", shape_str(theta));
  TORCH_CHECK(at::isFloatingType(theta.scalar_type()), op, ": theta must be floating point, got ",
              theta.scalar_type());
  TORCH_CHECK(theta.device() == like.device(), op, ": theta is on ", theta.device(), " but the input is on ",
              like.device());
}

inline void check_batch_index(const char* op, const c10::optional<at::Tensor>& batch_index, int64_t N, int64_t B,
                              const at::Tensor& like) {
  if (!batch_index.has_value()) {
    TORCH_CHECK(N == B, op, ": without batch_index, theta needs one matrix per input image (", B,
                "), got N = ", N, "; pass batch_index [N] to take several crops from one image");
    return;
  }
  const auto& b = *batch_index;
  TORCH_CHECK(b.dim() == 1 && b.size(0) == N, op, ": batch_index must have shape [N] = [", N, "], got ",
              shape_str(b));
  TORCH_CHECK(b.scalar_type() == at::kLong, op, ": batch_index must be int64, got ", b.scalar_type());
  TORCH_CHECK(b.device() == like.device(), op, ": batch_index is on ", b.device(), " but the input is on ",
              like.device());
}

inline std::pair<int64_t, int64_t> check_size(const char* op, at::IntArrayRef size) {
  TORCH_CHECK(size.size() == 2 && size[0] > 0 && size[1] > 0, op, ": size must be (h, w) with h, w > 0, got ",
              size);
  return {size[0], size[1]};
}

inline void check_padding(const char* op, int64_t padding) {
  TORCH_CHECK(padding == kPadZeros || padding == kPadBorder || padding == kPadConstant, op,
              ": padding_mode must be 0 (zeros), 1 (border) or 2 (constant), got ", padding);
}

inline void check_sample_args(const char* op, const at::Tensor& input, const at::Tensor& theta,
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

inline void check_crop_args(const char* op, const at::Tensor& frames, const at::Tensor& theta,
                            const c10::optional<at::Tensor>& batch_index, at::ArrayRef<double> mean,
                            at::ArrayRef<double> std, double value, at::ScalarType dtype, int64_t interpolation) {
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
  TORCH_CHECK(interpolation >= kInterpBilinear && interpolation <= kInterpOpenCV4, op,
              ": interpolation must be 0 (bilinear), 1 (bilinear rounded to uint8) or 2 (OpenCV 4), got ",
              interpolation);
  // the OpenCV modes blend uint8 values: their border value must be one (a NaN
  // padding value is meaningful only for the float mode: it marks the outside)
  TORCH_CHECK(interpolation == kInterpBilinear || std::isfinite(value), op,
              ": value must be a finite uint8 border value for interpolation ",
              interpolation == kInterpOpenCV4 ? "opencv4" : "bilinear-u8", ", got ", value);
}

inline CropNorm make_crop_norm(at::ArrayRef<double> mean, at::ArrayRef<double> std) {
  CropNorm n{};
  for (size_t c = 0; c < mean.size() && c < 4; ++c) {
    n.mean[c] = float(mean[c]);
    n.std[c] = float(std[c]);
    n.scale[c] = float(1.0 / (255.0 * std[c]));
    n.shift[c] = float(-mean[c] / std[c]);
  }
  return n;
}

// The `out` of affine_crop_into: [N, C, h, w] contiguous, float32/16/bfloat16,
// on the frames' device.
inline void check_crop_out(const char* op, const at::Tensor& frames, const at::Tensor& theta, const at::Tensor& out) {
  TORCH_CHECK(out.dim() == 4 && frames.dim() == 4 && out.size(0) == theta.size(0) && out.size(1) == frames.size(3),
              op, ": out must have shape [N, C, h, w] with N = ", theta.size(0), " crops and C = ",
              frames.dim() == 4 ? frames.size(3) : -1, " channels, got ", shape_str(out));
  TORCH_CHECK(out.size(2) > 0 && out.size(3) > 0, op, ": out must have h, w > 0, got ", shape_str(out));
  TORCH_CHECK(out.is_contiguous(), op, ": out must be contiguous");
  TORCH_CHECK(out.device() == frames.device(), op, ": out is on ", out.device(), " but frames is on ",
              frames.device());
}

// The output of affine_crop: at::empty unless the backend allocates otherwise.
struct EmptyLike {
  at::Tensor operator()(at::IntArrayRef sizes, const at::TensorOptions& options) const {
    return at::empty(sizes, options);
  }
};

// affine_crop and affine_crop_into of a backend, given its
// crop_into(frames, theta, batch_index, mean, std, reverse, value, interpolation, out)
// and the allocation of affine_crop's output, empty(sizes, options).
template <typename CropInto, typename Empty = EmptyLike>
at::Tensor affine_crop_impl(CropInto crop_into, const at::Tensor& frames, const at::Tensor& theta,
                            at::IntArrayRef size, const c10::optional<at::Tensor>& batch_index,
                            at::ArrayRef<double> mean, at::ArrayRef<double> std, bool reverse_channels, double value,
                            int64_t interpolation, at::ScalarType dtype, Empty empty = Empty{}) {
  const char* op = "rmpe_ext::affine_crop";
  check_crop_args(op, frames, theta, batch_index, mean, std, value, dtype, interpolation);
  const auto hw = check_size(op, size);
  at::Tensor out = empty({theta.size(0), frames.size(3), hw.first, hw.second}, frames.options().dtype(dtype));
  crop_into(frames, theta, batch_index, mean, std, reverse_channels, value, interpolation, out);
  return out;
}

template <typename CropInto>
void affine_crop_into_impl(CropInto crop_into, const at::Tensor& frames, const at::Tensor& theta,
                           const c10::optional<at::Tensor>& batch_index, at::ArrayRef<double> mean,
                           at::ArrayRef<double> std, bool reverse_channels, double value, int64_t interpolation,
                           at::Tensor out) {
  const char* op = "rmpe_ext::affine_crop_into";
  check_crop_out(op, frames, theta, out);
  const auto dt = out.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kHalf || dt == at::kBFloat16, op,
              ": out must be float32, float16 or bfloat16, got ", dt);
  check_crop_args(op, frames, theta, batch_index, mean, std, value, dt, interpolation);
  crop_into(frames, theta, batch_index, mean, std, reverse_channels, value, interpolation, out);
}

// Checks of heatmap_decode's arguments. `hm_to_img`: maps [N, 2, 3], or crop
// boxes [N, 4] (see decode_map in affine_common.h); the kernels read it as float64.
inline void check_decode(const char* op, const at::Tensor& heatmaps, const at::Tensor& hm_to_img) {
  TORCH_CHECK(heatmaps.dim() == 4, op, ": heatmaps must have shape [N, K, h, w], got ", heatmaps.dim(),
              "-D tensor of shape ", shape_str(heatmaps));
  TORCH_CHECK(at::isFloatingType(heatmaps.scalar_type()), op, ": heatmaps must be floating point, got ",
              heatmaps.scalar_type());
  TORCH_CHECK(heatmaps.size(2) > 0 && heatmaps.size(3) > 0, op, ": heatmaps must not be empty, got shape ",
              shape_str(heatmaps));
  const bool boxes = hm_to_img.dim() == 2 && hm_to_img.size(1) == 4;
  TORCH_CHECK(boxes || (hm_to_img.dim() == 3 && hm_to_img.size(1) == 2 && hm_to_img.size(2) == 3), op,
              ": hm_to_img must be maps [N, 2, 3] or crop boxes [N, 4], got shape ", shape_str(hm_to_img));
  TORCH_CHECK(at::isFloatingType(hm_to_img.scalar_type()), op, ": hm_to_img must be floating point, got ",
              hm_to_img.scalar_type());
  TORCH_CHECK(hm_to_img.device() == heatmaps.device(), op, ": hm_to_img is on ", hm_to_img.device(),
              " but heatmaps is on ", heatmaps.device());
  TORCH_CHECK(hm_to_img.size(0) == heatmaps.size(0), op, ": hm_to_img must have one map or box per heatmap set (",
              heatmaps.size(0), "), got ", hm_to_img.size(0));
}
}  // namespace rmpe
