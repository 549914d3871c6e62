// The one place where every rmpe_ext operator schema is declared. Backends
// register implementations in cpu/*.cpp and cuda/*.cu; autograd and fake
// (meta) kernels are registered from Python (rmpe_ext/ops/).
#include <Python.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <torch/library.h>
#include <torch/version.h>

#include <string>

#include "common/pose_nms_host.h"
#include "cpu/simd_avx2.h"

extern "C" {
// An empty Python module named _C: importing it loads this shared library,
// whose static initializers register the operators with the dispatcher. No
// pybind11, so the binary uses only the limited Python API (one build serves
// every Python version).
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", "rmpe_ext operators (use torch.ops.rmpe_ext)",
                                          -1, nullptr};
  return PyModule_Create(&module_def);
}
}

namespace rmpe {
namespace {

std::string build_info() {
  std::string s = "torch=" TORCH_VERSION;
#ifdef RMPE_WITH_CUDA
  s += ";cuda=1";
#else
  s += ";cuda=0";
#endif
  return s;
}

// Which vector paths the CPU kernels take in this process: "avx2=1;axis=1" when the
// AVX2 paths and the axis-aligned crop path are compiled in, supported by the CPU
// and not turned off (RMPE_EXT_NO_SIMD, RMPE_EXT_NO_AXIS_PATH). The kernels ask
// the same functions.
std::string cpu_paths() {
#ifdef RMPE_HAVE_AVX2_PATH
  const bool avx2 = avx2::cpu_has_avx2(), axis = avx2::cpu_has_axis_path();
#else
  const bool avx2 = false, axis = false;
#endif
  return std::string("avx2=") + (avx2 ? "1" : "0") + ";axis=" + (axis ? "1" : "0");
}

}  // namespace
}  // namespace rmpe

TORCH_LIBRARY(rmpe_ext, m) {
  m.def("_build_info() -> str", &rmpe::build_info);
  m.def("_cpu_paths() -> str", &rmpe::cpu_paths);
  // The pose-NMS params list: its size, the method ids, each field's slot (see kParamSpecs).
  m.def("_nms_params_layout() -> str", &rmpe::params_layout);

  // All-pairs pose similarity: (sim [N, N], match [N, N] int32), row = reference.
  m.def(
      "pose_similarity(Tensor poses, Tensor joint_scores, Tensor boxes, int method, float[] params, "
      "Tensor? sigmas) -> (Tensor, Tensor)");

  // Greedy parametric pose NMS, batched over images, with merging and the
  // score/area tests: (keep [M] int64, poses [M, K, 2], scores [M, K], group [N] int64).
  m.def(
      "pose_nms(Tensor poses, Tensor joint_scores, Tensor boxes, Tensor? scores, Tensor? image_index, "
      "int method, float[] params, Tensor? sigmas) -> (Tensor, Tensor, Tensor, Tensor)");

  // Fused affine sampler (the STN): input [B, C, H, W], theta_px [N, 2, 3]
  // (output pixel -> input pixel), optional batch_index [N] -> [N, C, h, w].
  // padding_mode 0 zeros, 1 border, 2 constant (value).
  m.def(
      "affine_sample(Tensor input, Tensor theta, int[2] size, Tensor? batch_index, int padding_mode, float value) "
      "-> Tensor");
  // Its backward: (grad_input [B, C, H, W] or [0], grad_theta [N, 2, 3] or [0]).
  m.def(
      "_affine_sample_backward(Tensor grad_out, Tensor input, Tensor theta, Tensor? batch_index, "
      "int padding_mode, float value, bool input_grad, bool theta_grad, bool deterministic) -> (Tensor, Tensor)");
  // Inference crops: uint8 frames [B, H, W, C] -> normalized [N, C, h, w] in `dtype`.
  m.def(
      "affine_crop(Tensor frames, Tensor theta, int[2] size, Tensor? batch_index, float[] mean, float[] std, "
      "bool reverse_channels, float value, int interpolation, ScalarType dtype) -> Tensor");
  // The same into a preallocated out [N, C, h, w] (its dtype and size decide).
  m.def(
      "affine_crop_into(Tensor frames, Tensor theta, Tensor? batch_index, float[] mean, float[] std, "
      "bool reverse_channels, float value, int interpolation, Tensor(a!) out) -> ()");
  // SDTN: gamma = theta^-1 (NaN where singular) and its backward.
  m.def("affine_inverse(Tensor theta) -> Tensor");
  m.def("_affine_inverse_backward(Tensor grad_gamma, Tensor theta, Tensor gamma) -> Tensor");
  // Heatmaps [N, K, h, w] + heatmap->image maps [N, 2, 3] -> (coords [N, K, 2], scores [N, K]).
  m.def("heatmap_decode(Tensor heatmaps, Tensor hm_to_img, bool quarter) -> (Tensor, Tensor)");

  // Soft-OKS-NMS, batched over images: (keep [M] int64, rescored scores [M]).
  m.def(
      "soft_oks_nms(Tensor poses, Tensor joint_scores, Tensor boxes, Tensor scores, Tensor? image_index, "
      "float[] params, Tensor sigmas, int max_dets, bool linear) -> (Tensor, Tensor)");
}

namespace rmpe {
namespace {

// heatmap_decode has no gradient (an argmax; soft_argmax is the differentiable
// decode). Its Autograd kernel is this one rather than a Python one (as the
// other non-differentiable ops have): it runs the backend below autograd, so the
// outputs never require grad and a backward through them fails loudly, without
// the Python autograd kernel's round trip (7 us of a 10 us call on the CI machine).
std::tuple<at::Tensor, at::Tensor> heatmap_decode_autograd(const at::Tensor& heatmaps, const at::Tensor& hm_to_img,
                                                           bool quarter) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("rmpe_ext::heatmap_decode", "")
                             .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, bool)>();
  at::AutoDispatchBelowADInplaceOrView guard;
  return op.call(heatmaps, hm_to_img, quarter);
}

}  // namespace
}  // namespace rmpe

TORCH_LIBRARY_IMPL(rmpe_ext, Autograd, m) { m.impl("heatmap_decode", &rmpe::heatmap_decode_autograd); }
