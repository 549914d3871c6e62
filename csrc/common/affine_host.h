// Host-side checks of the affine ops, shared by both backends (needs only
// ATen's core headers).
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

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

}  // namespace rmpe
