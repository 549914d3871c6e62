// AVX2 paths of the CPU kernels, compiled for AVX2 with a function attribute
// and used only when the CPU has it; each gives the same bits as the scalar
// code it stands in for:
// * the uint8 crop kernel (3-channel frames, float32 output): eight output
//   pixels at a time whose taps all lie inside the frame, the arithmetic of
//   affine_common.h lane by lane (see crop_rows in affine_cpu.cpp);
// * the argmax of a float32 heatmap (first maximum).
#pragma once

#include <cstdint>
#include <cstdlib>

#include "common/affine_common.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define RMPE_HAVE_AVX2_PATH 1
#include <immintrin.h>

namespace rmpe {
namespace avx2 {

// Orders the streaming stores before the results are used.
__attribute__((target("avx2"))) inline void fence() { _mm_sfence(); }

// AVX2 paths on when the CPU has AVX2, unless RMPE_EXT_NO_SIMD is set (the
// tests compare both paths bit for bit).
inline bool cpu_has_avx2() {
  static const bool has = __builtin_cpu_supports("avx2") && !std::getenv("RMPE_EXT_NO_SIMD");
  return has;
}

// The four taps of 8 pixels at byte offsets `off` (top-left of the 2x2
// neighbourhood, 3 channels a pixel), as int32 channel values. Every load
// stays inside the 2x2 neighbourhood: the right pixel is read from off + 2.
struct Taps8 {
  __m256i tl, tr, bl, br;  // 4 bytes each: (c0 c1 c2 .) of x0 and (. c0 c1 c2) of x0 + 1
};

__attribute__((target("avx2"))) inline Taps8 gather_taps(const uint8_t* img, __m256i off, int32_t row_bytes) {
  const int* base = reinterpret_cast<const int*>(img);
  const __m256i two = _mm256_set1_epi32(2), down = _mm256_set1_epi32(row_bytes);
  const __m256i offb = _mm256_add_epi32(off, down);
  return {_mm256_i32gather_epi32(base, off, 1), _mm256_i32gather_epi32(base, _mm256_add_epi32(off, two), 1),
          _mm256_i32gather_epi32(base, offb, 1), _mm256_i32gather_epi32(base, _mm256_add_epi32(offb, two), 1)};
}

// Stores 8 floats; streaming (bypassing the caches) where aligned: crops are
// written once and read by the next stage, often much later.
__attribute__((target("avx2"))) inline void store8(float* p, __m256 v) {
  if ((reinterpret_cast<uintptr_t>(p) & 31) == 0) _mm256_stream_ps(p, v);
  else _mm256_storeu_ps(p, v);
}

// byte k (0..3) of every lane
__attribute__((target("avx2"))) inline __m256i byte_of(__m256i v, int k) {
  return _mm256_and_si256(_mm256_srlv_epi32(v, _mm256_set1_epi32(8 * k)), _mm256_set1_epi32(0xff));
}

// Exact bilinear of 8 pixels j0..j0+7 of row i (affine_point's arithmetic,
// torch's weights and order). Handles the blocks whose taps all lie inside the
// frame, and those whose taps all lie outside (every tap reads `value`, with
// make_tap's clamp of far points); returns false, writing nothing, for a block
// across the frame's edge.
__attribute__((target("avx2"))) inline bool bilinear8(const uint8_t* img, int64_t W, int64_t H, const float* th,
                                                      float rx, float ry, int64_t j0, const int* rc, bool rounded,
                                                      const float (*lut)[256], const CropNorm& norm, float value,
                                                      float* out, int64_t plane) {
  const __m256 jv = _mm256_add_ps(_mm256_set1_ps(float(j0)), _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7));
  const __m256 x = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(_mm256_set1_ps(th[0]), jv), _mm256_set1_ps(rx)),
                                 _mm256_set1_ps(th[2]));
  const __m256 y = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(_mm256_set1_ps(th[3]), jv), _mm256_set1_ps(ry)),
                                 _mm256_set1_ps(th[5]));
  const __m256 zero = _mm256_setzero_ps();
  const __m256 inside =
      _mm256_and_ps(_mm256_and_ps(_mm256_cmp_ps(x, zero, _CMP_GE_OQ), _mm256_cmp_ps(y, zero, _CMP_GE_OQ)),
                    _mm256_and_ps(_mm256_cmp_ps(x, _mm256_set1_ps(float(W - 1)), _CMP_LT_OQ),
                                  _mm256_cmp_ps(y, _mm256_set1_ps(float(H - 1)), _CMP_LT_OQ)));
  if (_mm256_movemask_ps(inside) != 0xff) {
    // all taps outside: x < -1 or x >= W (floor(x) + 1 < 0 or floor(x) >= W), likewise y
    const __m256 fw = _mm256_set1_ps(float(W)), fh = _mm256_set1_ps(float(H)), m1 = _mm256_set1_ps(-1.f);
    const __m256 out_x = _mm256_or_ps(_mm256_cmp_ps(x, m1, _CMP_LT_OQ), _mm256_cmp_ps(x, fw, _CMP_GE_OQ));
    const __m256 out_y = _mm256_or_ps(_mm256_cmp_ps(y, m1, _CMP_LT_OQ), _mm256_cmp_ps(y, fh, _CMP_GE_OQ));
    if (_mm256_movemask_ps(_mm256_or_ps(out_x, out_y)) != 0xff) return false;
    // the weights of make_tap's clamped point, blended over four equal values
    const __m256 cx = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-2.f)), _mm256_set1_ps(float(W + 1)));
    const __m256 cy = _mm256_min_ps(_mm256_max_ps(y, _mm256_set1_ps(-2.f)), _mm256_set1_ps(float(H + 1)));
    const __m256 fx0 = _mm256_floor_ps(cx), fy0 = _mm256_floor_ps(cy), one = _mm256_set1_ps(1.f);
    const __m256 ax1 = _mm256_sub_ps(_mm256_add_ps(fx0, one), cx), ax0 = _mm256_sub_ps(cx, fx0);
    const __m256 ay1 = _mm256_sub_ps(_mm256_add_ps(fy0, one), cy), ay0 = _mm256_sub_ps(cy, fy0);
    const __m256 p = _mm256_set1_ps(value);
    __m256 v = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(p, _mm256_mul_ps(ax1, ay1)),
                                                         _mm256_mul_ps(p, _mm256_mul_ps(ax0, ay1))),
                                           _mm256_mul_ps(p, _mm256_mul_ps(ax1, ay0))),
                             _mm256_mul_ps(p, _mm256_mul_ps(ax0, ay0)));
    if (rounded) {
      v = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      v = _mm256_min_ps(_mm256_max_ps(v, zero), _mm256_set1_ps(255.f));
    }
    for (int c = 0; c < 3; ++c) {
      const __m256 o = rounded ? _mm256_i32gather_ps(lut[c], _mm256_cvttps_epi32(v), 4)
                               : _mm256_add_ps(_mm256_mul_ps(v, _mm256_set1_ps(norm.scale[c])),
                                               _mm256_set1_ps(norm.shift[c]));
      store8(out + c * plane + j0, o);
    }
    return true;
  }
  const __m256i x0 = _mm256_cvttps_epi32(x), y0 = _mm256_cvttps_epi32(y);
  const __m256 fx0 = _mm256_cvtepi32_ps(x0), fy0 = _mm256_cvtepi32_ps(y0), one = _mm256_set1_ps(1.f);
  const __m256 ax1 = _mm256_sub_ps(_mm256_add_ps(fx0, one), x), ax0 = _mm256_sub_ps(x, fx0);
  const __m256 ay1 = _mm256_sub_ps(_mm256_add_ps(fy0, one), y), ay0 = _mm256_sub_ps(y, fy0);
  const __m256 nw = _mm256_mul_ps(ax1, ay1), ne = _mm256_mul_ps(ax0, ay1);
  const __m256 sw = _mm256_mul_ps(ax1, ay0), se = _mm256_mul_ps(ax0, ay0);
  const __m256i off = _mm256_mullo_epi32(
      _mm256_add_epi32(_mm256_mullo_epi32(y0, _mm256_set1_epi32(int32_t(W))), x0), _mm256_set1_epi32(3));
  const Taps8 t = gather_taps(img, off, int32_t(W * 3));
  for (int c = 0; c < 3; ++c) {
    const int s = rc[c];
    const __m256 v00 = _mm256_cvtepi32_ps(byte_of(t.tl, s)), v01 = _mm256_cvtepi32_ps(byte_of(t.tr, s + 1));
    const __m256 v10 = _mm256_cvtepi32_ps(byte_of(t.bl, s)), v11 = _mm256_cvtepi32_ps(byte_of(t.br, s + 1));
    __m256 v = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(v00, nw), _mm256_mul_ps(v01, ne)),
                                           _mm256_mul_ps(v10, sw)),
                             _mm256_mul_ps(v11, se));
    if (rounded) {
      v = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      v = _mm256_min_ps(_mm256_max_ps(v, zero), _mm256_set1_ps(255.f));
      v = _mm256_i32gather_ps(lut[c], _mm256_cvttps_epi32(v), 4);
    } else {
      v = _mm256_add_ps(_mm256_mul_ps(v, _mm256_set1_ps(norm.scale[c])), _mm256_set1_ps(norm.shift[c]));
    }
    store8(out + c * plane + j0, v);
  }
  return true;
}

// OpenCV 4 fixed point for 8 pixels of a row: X = (X0 + adelta[j]) >> 5 and
// Y = (Y0 + bdelta[j]) >> 5 (cv_tap), 15-bit weights, rounded blend, then the
// normalization table. Returns false unless all taps lie inside the frame.
__attribute__((target("avx2"))) inline bool opencv4_8(const uint8_t* img, int64_t W, int64_t H, int32_t X0,
                                                      int32_t Y0, const int32_t* adelta, const int32_t* bdelta,
                                                      int64_t j0, const int* rc, const float (*lut)[256], int32_t cval,
                                                      float* out, int64_t plane) {
  const __m256i X = _mm256_srai_epi32(
      _mm256_add_epi32(_mm256_set1_epi32(X0), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(adelta + j0))), 5);
  const __m256i Y = _mm256_srai_epi32(
      _mm256_add_epi32(_mm256_set1_epi32(Y0), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bdelta + j0))), 5);
  const __m256i x0 = _mm256_srai_epi32(X, 5), y0 = _mm256_srai_epi32(Y, 5);
  const __m256i m31 = _mm256_set1_epi32(31), c32 = _mm256_set1_epi32(32);
  const __m256i fx = _mm256_and_si256(X, m31), fy = _mm256_and_si256(Y, m31);
  const __m256i neg = _mm256_set1_epi32(-1);
  const __m256i ok = _mm256_and_si256(
      _mm256_and_si256(_mm256_cmpgt_epi32(x0, neg), _mm256_cmpgt_epi32(y0, neg)),
      _mm256_and_si256(_mm256_cmpgt_epi32(_mm256_set1_epi32(int32_t(W - 1)), x0),
                       _mm256_cmpgt_epi32(_mm256_set1_epi32(int32_t(H - 1)), y0)));
  if (_mm256_movemask_epi8(ok) != -1) {
    // all taps outside (x0 + 1 < 0 or x0 >= W, likewise y): the blend of cval is cval
    const __m256i all_out = _mm256_or_si256(
        _mm256_or_si256(_mm256_cmpgt_epi32(neg, x0), _mm256_cmpgt_epi32(x0, _mm256_set1_epi32(int32_t(W - 1)))),
        _mm256_or_si256(_mm256_cmpgt_epi32(neg, y0), _mm256_cmpgt_epi32(y0, _mm256_set1_epi32(int32_t(H - 1)))));
    if (_mm256_movemask_epi8(all_out) != -1) return false;
    for (int c = 0; c < 3; ++c) store8(out + c * plane + j0, _mm256_set1_ps(lut[c][cval]));
    return true;
  }
  const __m256i gx = _mm256_sub_epi32(c32, fx), gy = _mm256_sub_epi32(c32, fy);
  const __m256i w00 = _mm256_slli_epi32(_mm256_mullo_epi32(gy, gx), 5), w01 = _mm256_slli_epi32(_mm256_mullo_epi32(gy, fx), 5);
  const __m256i w10 = _mm256_slli_epi32(_mm256_mullo_epi32(fy, gx), 5), w11 = _mm256_slli_epi32(_mm256_mullo_epi32(fy, fx), 5);
  const __m256i off = _mm256_mullo_epi32(
      _mm256_add_epi32(_mm256_mullo_epi32(y0, _mm256_set1_epi32(int32_t(W))), x0), _mm256_set1_epi32(3));
  const Taps8 t = gather_taps(img, off, int32_t(W * 3));
  const __m256i half = _mm256_set1_epi32(1 << 14);
  for (int c = 0; c < 3; ++c) {
    const int s = rc[c];
    __m256i acc = _mm256_add_epi32(_mm256_mullo_epi32(byte_of(t.tl, s), w00), _mm256_mullo_epi32(byte_of(t.tr, s + 1), w01));
    acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(byte_of(t.bl, s), w10));
    acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(byte_of(t.br, s + 1), w11));
    acc = _mm256_srai_epi32(_mm256_add_epi32(acc, half), 15);  // in 0..255: the weights sum to 32768
    store8(out + c * plane + j0, _mm256_i32gather_ps(lut[c], acc, 4));
  }
  return true;
}

// Index of the first maximum of p[0..n); -1 when p holds a NaN (or +inf and
// -inf together) and -2 when n is too small for this path: the caller then
// takes the scalar path, where the first NaN wins. Two passes: the maximum and
// a sum that turns NaN if any element is NaN (four accumulators each), then the
// first element equal to the maximum (the map is in L1 by then).
__attribute__((target("avx2"))) inline int64_t argmax_f32(const float* p, int64_t n) {
  if (n < 32) return -2;
  __m256 m[4], sum[4];
  for (int k = 0; k < 4; ++k) m[k] = sum[k] = _mm256_loadu_ps(p + 8 * k);
  int64_t q = 32;
  for (; q + 32 <= n; q += 32)
    for (int k = 0; k < 4; ++k) {
      const __m256 v = _mm256_loadu_ps(p + q + 8 * k);
      m[k] = _mm256_max_ps(m[k], v);
      sum[k] = _mm256_add_ps(sum[k], v);
    }
  const __m256 tot = _mm256_add_ps(_mm256_add_ps(sum[0], sum[1]), _mm256_add_ps(sum[2], sum[3]));
  if (_mm256_movemask_ps(_mm256_cmp_ps(tot, tot, _CMP_UNORD_Q))) return -1;
  const __m256 mm = _mm256_max_ps(_mm256_max_ps(m[0], m[1]), _mm256_max_ps(m[2], m[3]));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, mm);
  float best = lanes[0];
  for (int l = 1; l < 8; ++l) best = lanes[l] > best ? lanes[l] : best;
  for (int64_t t = q; t < n; ++t) {
    if (p[t] != p[t]) return -1;
    best = p[t] > best ? p[t] : best;
  }
  const __m256 b = _mm256_set1_ps(best);
  int64_t t = 0;
  for (; t + 8 <= n; t += 8) {
    const int hit = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(p + t), b, _CMP_EQ_OQ));
    if (hit) return t + __builtin_ctz(hit);
  }
  for (; t < n; ++t)
    if (p[t] == best) return t;
  return -2;  // unreachable: best is one of the elements
}

}  // namespace avx2
}  // namespace rmpe
#endif
