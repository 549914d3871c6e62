// AVX2 paths of the CPU kernels, compiled for AVX2 with a function attribute
// and used only when the CPU has it; each gives the same bits as the scalar
// code it stands in for:
// * the uint8 crop kernel (3-channel frames, float32 output): eight output
//   pixels at a time whose taps all lie inside the frame, the arithmetic of
//   affine_common.h lane by lane (see crop_rows in affine_cpu.cpp);
// * the same for axis-aligned maps (AlphaPose's crops: scale and translation),
//   from per-crop column tables and 8-byte loads with byte shuffles instead of
//   gathers (gathers are slow on some CPUs, AMD Zen 3 among them), float32 or
//   float16 output;
// * the argmax of a float32 heatmap (first maximum).
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "common/affine_common.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define RMPE_HAVE_AVX2_PATH 1
#include <immintrin.h>

namespace rmpe {
namespace avx2 {

// AVX2 paths on when the CPU has AVX2, unless RMPE_EXT_NO_SIMD is set (the
// tests compare both paths bit for bit).
inline bool cpu_has_avx2() {
  static const bool has = __builtin_cpu_supports("avx2") && !std::getenv("RMPE_EXT_NO_SIMD");
  return has;
}

// The axis-aligned crop path (AVX2 + F16C), unless RMPE_EXT_NO_AXIS_PATH is set
// (the tests compare it with the general AVX2 path bit for bit).
inline bool cpu_has_axis_path() {
  static const bool has =
      cpu_has_avx2() && __builtin_cpu_supports("f16c") && !std::getenv("RMPE_EXT_NO_AXIS_PATH");
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

// Stores 8 floats. Plain stores: streaming stores (which bypass the caches)
// made the crop kernels 2-3x slower on the project's CI machine (AMD EPYC, KVM;
// eight pixels write 32 bytes to each of three planes, never a whole line at once).
__attribute__((target("avx2"))) inline void store8(float* p, __m256 v) { _mm256_storeu_ps(p, v); }

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
    // all taps outside: x < -1 or x >= W (floor(x) + 1 < 0 or floor(x) >= W), likewise y;
    // and every point finite (make_tap: a non-finite point samples NaN, left to the scalar code)
    const __m256 fw = _mm256_set1_ps(float(W)), fh = _mm256_set1_ps(float(H)), m1 = _mm256_set1_ps(-1.f);
    const __m256 out_x = _mm256_or_ps(_mm256_cmp_ps(x, m1, _CMP_LT_OQ), _mm256_cmp_ps(x, fw, _CMP_GE_OQ));
    const __m256 out_y = _mm256_or_ps(_mm256_cmp_ps(y, m1, _CMP_LT_OQ), _mm256_cmp_ps(y, fh, _CMP_GE_OQ));
    const __m256 big = _mm256_set1_ps(3.4028234663852886e38f);
    const __m256 ax = _mm256_andnot_ps(_mm256_set1_ps(-0.f), x), ay = _mm256_andnot_ps(_mm256_set1_ps(-0.f), y);
    const __m256 finite = _mm256_and_ps(_mm256_cmp_ps(ax, big, _CMP_LE_OQ), _mm256_cmp_ps(ay, big, _CMP_LE_OQ));
    if (_mm256_movemask_ps(_mm256_and_ps(_mm256_or_ps(out_x, out_y), finite)) != 0xff) return false;
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

// ---- axis-aligned maps: the point of crop pixel (j, i) is (x_j, y_i). The
// caller's per-crop column tables hold off[j] = 3 x0_j (byte offset of the
// top-left tap in a frame row) and the column weights; a row gives its two frame
// rows r0, r1 and its weights. Only for blocks of 8 columns whose taps all lie
// inside the frame; each 8-byte load reads 2 bytes past the right tap (the
// caller keeps them inside the frame buffer).

// The taps of 8 columns in one frame row: qword k = the 6 bytes of pixels x0_k
// and x0_k + 1 (and 2 more); a = columns 0 1 | 4 5, b = columns 2 3 | 6 7.
struct Row8 {
  __m256i a, b;
};
__attribute__((target("avx2"))) inline Row8 load_row8(const uint8_t* r, const int32_t* off) {
  uint64_t q[8];
  for (int k = 0; k < 8; ++k) std::memcpy(&q[k], r + off[k], 8);
  return {_mm256_set_epi64x(int64_t(q[5]), int64_t(q[4]), int64_t(q[1]), int64_t(q[0])),
          _mm256_set_epi64x(int64_t(q[7]), int64_t(q[6]), int64_t(q[3]), int64_t(q[2]))};
}

// The byte shuffle (32 bytes) that takes frame channel s of both taps of a
// Row8 to int32 lanes: per 128-bit lane (two columns k, k'), [left k, left k',
// right k, right k'].
inline void channel_mask(int s, int8_t* m) {
  for (int lane = 0; lane < 2; ++lane)
    for (int d = 0; d < 4; ++d) {
      int8_t* b = m + 16 * lane + 4 * d;
      b[0] = int8_t((d & 1) * 8 + (d >> 1) * 3 + s);  // qword d & 1, tap d >> 1 (left, right)
      b[1] = b[2] = b[3] = int8_t(-128);                // zero
    }
}

// Channel values of the left (x0) and right (x0 + 1) taps of 8 columns, in column order.
__attribute__((target("avx2"))) inline void row_taps(const Row8& r, __m256i mask, __m256i& left, __m256i& right) {
  const __m256i a = _mm256_shuffle_epi8(r.a, mask), b = _mm256_shuffle_epi8(r.b, mask);
  left = _mm256_unpacklo_epi64(a, b);  // [l0 l1 l2 l3 | l4 l5 l6 l7]
  right = _mm256_unpackhi_epi64(a, b);
}

// crop_normalize_u8 of 8 uint8-valued samples (the scalar path's table, computed).
__attribute__((target("avx2"))) inline __m256 normalize_u8(__m256 v, const CropNorm& norm, int c) {
  return _mm256_div_ps(_mm256_sub_ps(_mm256_div_ps(v, _mm256_set1_ps(255.f)), _mm256_set1_ps(norm.mean[c])),
                       _mm256_set1_ps(norm.std[c]));
}

// Stores 8 results as float32 or float16 (round to nearest even, as c10::Half
// converts a finite float).
__attribute__((target("avx2,f16c"))) inline void store8_out(float* p, __m256 v) { store8(p, v); }
__attribute__((target("avx2,f16c"))) inline void store8_out(uint16_t* p, __m256 v) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

// Exact bilinear (optionally rounded to uint8) of columns j0..j0+7 of a row:
// ax0[j] = x_j - x0_j, ax1[j] = (x0_j + 1) - x_j, ay0 = y_i - y0_i, ay1 =
// (y0_i + 1) - y_i; the weights and the blend of tap_weights and blend
// (same products, same order), then crop_normalize or the uint8 table's numbers.
template <typename out_t>
__attribute__((target("avx2,f16c"))) inline void axis_bilinear8(const uint8_t* r0, const uint8_t* r1,
                                                                 const int32_t* off, const float* ax0,
                                                                 const float* ax1, float ay0, float ay1,
                                                                 const int8_t (*masks)[32], bool rounded,
                                                                 const CropNorm& norm, out_t* out, int64_t plane,
                                                                 int64_t j0) {
  const __m256 a0 = _mm256_loadu_ps(ax0 + j0), a1 = _mm256_loadu_ps(ax1 + j0);
  const __m256 b0 = _mm256_set1_ps(ay0), b1 = _mm256_set1_ps(ay1);
  const __m256 nw = _mm256_mul_ps(a1, b1), ne = _mm256_mul_ps(a0, b1);
  const __m256 sw = _mm256_mul_ps(a1, b0), se = _mm256_mul_ps(a0, b0);
  const Row8 top = load_row8(r0, off + j0), bot = load_row8(r1, off + j0);
  for (int c = 0; c < 3; ++c) {
    __m256i tl, tr, bl, br;
    const __m256i mask = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(masks[c]));
    row_taps(top, mask, tl, tr);
    row_taps(bot, mask, bl, br);
    __m256 v = _mm256_add_ps(
        _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(tl), nw), _mm256_mul_ps(_mm256_cvtepi32_ps(tr), ne)),
                      _mm256_mul_ps(_mm256_cvtepi32_ps(bl), sw)),
        _mm256_mul_ps(_mm256_cvtepi32_ps(br), se));
    if (rounded) {
      v = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      v = normalize_u8(_mm256_min_ps(_mm256_max_ps(v, _mm256_setzero_ps()), _mm256_set1_ps(255.f)), norm, c);
    } else {
      v = _mm256_add_ps(_mm256_mul_ps(v, _mm256_set1_ps(norm.scale[c])), _mm256_set1_ps(norm.shift[c]));
    }
    store8_out(out + c * plane + j0, v);
  }
}

// OpenCV 4 fixed point of columns j0..j0+7 of a row: fx[j] = X_j & 31 of the
// columns, fy = Y_i & 31 of the row (cv_tap), cv_weights and cv_blend, then the
// uint8 table's numbers.
template <typename out_t>
__attribute__((target("avx2,f16c"))) inline void axis_opencv4_8(const uint8_t* r0, const uint8_t* r1,
                                                                const int32_t* off, const int32_t* fx, int32_t fy,
                                                                const int8_t (*masks)[32], const CropNorm& norm,
                                                                out_t* out, int64_t plane, int64_t j0) {
  const __m256i f = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(fx + j0));
  const __m256i g = _mm256_sub_epi32(_mm256_set1_epi32(32), f);
  const __m256i gy = _mm256_set1_epi32((32 - fy) * 32), fy32 = _mm256_set1_epi32(fy * 32);
  const __m256i w00 = _mm256_mullo_epi32(gy, g), w01 = _mm256_mullo_epi32(gy, f);
  const __m256i w10 = _mm256_mullo_epi32(fy32, g), w11 = _mm256_mullo_epi32(fy32, f);
  const Row8 top = load_row8(r0, off + j0), bot = load_row8(r1, off + j0);
  const __m256i half = _mm256_set1_epi32(1 << 14);
  for (int c = 0; c < 3; ++c) {
    __m256i tl, tr, bl, br;
    const __m256i mask = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(masks[c]));
    row_taps(top, mask, tl, tr);
    row_taps(bot, mask, bl, br);
    __m256i acc = _mm256_add_epi32(_mm256_mullo_epi32(tl, w00), _mm256_mullo_epi32(tr, w01));
    acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(bl, w10));
    acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(br, w11));
    acc = _mm256_srai_epi32(_mm256_add_epi32(acc, half), 15);  // in 0..255: the weights sum to 32768
    store8_out(out + c * plane + j0, normalize_u8(_mm256_cvtepi32_ps(acc), norm, c));
  }
}

// Index of the first maximum of p[0..n); -1 when p holds a NaN and -2 when n is
// too small for this path: the caller then takes the scalar path, where the
// first NaN wins. One pass over 32-float chunks: the chunk's maximum (three
// vmaxps) against the running maximum G, and only when it is larger (a few
// times a map) G and its chunk are updated; NaN is tracked on the side. Then
// the first element equal to G in its first chunk (32 floats, in L1).
__attribute__((target("avx2"))) inline float hmax8(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}
// the maximum of p[q..q+32) lane by lane; nan |= lanes where one of them is NaN
__attribute__((target("avx2"))) inline __m256 chunk_max(const float* p, int64_t q, __m256& nan) {
  const __m256 a = _mm256_loadu_ps(p + q), b = _mm256_loadu_ps(p + q + 8);
  const __m256 c = _mm256_loadu_ps(p + q + 16), d = _mm256_loadu_ps(p + q + 24);
  nan = _mm256_or_ps(nan, _mm256_or_ps(_mm256_cmp_ps(a, b, _CMP_UNORD_Q), _mm256_cmp_ps(c, d, _CMP_UNORD_Q)));
  return _mm256_max_ps(_mm256_max_ps(a, b), _mm256_max_ps(c, d));
}
__attribute__((target("avx2"))) inline int64_t argmax_f32(const float* p, int64_t n) {
  if (n < 32) return -2;
  __m256 nan = _mm256_setzero_ps();
  float best = hmax8(chunk_max(p, 0, nan));
  __m256 G = _mm256_set1_ps(best);
  int64_t best_chunk = 0, q = 32;
  for (; q + 32 <= n; q += 32) {
    const __m256 m = chunk_max(p, q, nan);
    if (_mm256_movemask_ps(_mm256_cmp_ps(m, G, _CMP_GT_OQ))) {  // a new maximum: the first chunk holding it
      best = hmax8(m);
      G = _mm256_set1_ps(best);
      best_chunk = q;
    }
  }
  if (_mm256_movemask_ps(nan)) return -1;
  int64_t tail = -1;
  for (int64_t t = q; t < n; ++t) {
    if (p[t] != p[t]) return -1;
    if (p[t] > best) {
      best = p[t];
      tail = t;
    }
  }
  if (tail >= 0) return tail;
  for (int64_t t = best_chunk; t < best_chunk + 32; ++t)
    if (p[t] == best) return t;
  return -2;  // unreachable: best is one of the chunk's elements
}

}  // namespace avx2
}  // namespace rmpe
#endif
