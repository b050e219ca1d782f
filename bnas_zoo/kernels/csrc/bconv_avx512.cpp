// AVX-512 kernels (F, BW, DQ, VL). BNAS_VPOPCNT selects the VPOPCNTDQ variant: one instruction counts the
// bits of eight 64-bit words into 64-bit counters; without it, popcount by nibble lookup (vpshufb) into byte
// counters, summed per 64-bit lane (vpsadbw) every 31 words.
#ifdef BNAS_VPOPCNT
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512vpopcntdq,popcnt")
#else
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,popcnt")
#endif
#include <immintrin.h>

#include "bconv.h"

namespace bnas_kernels {
#ifdef BNAS_VPOPCNT
namespace avx512vp {
#else
namespace avx512 {
#endif

struct Simd {
  typedef __m512i V;
  typedef __m512i A;
#ifdef BNAS_VPOPCNT
  enum { LANES = 8, NP = 4, FLUSH = 1 << 30, PACK_ROW = 1 };
#else
  enum { LANES = 8, NP = 4, FLUSH = 31, PACK_ROW = 1 };
#endif
  static inline V zero() { return _mm512_setzero_si512(); }
  static inline V load(const uint64_t* p) { return _mm512_loadu_si512((const void*)p); }
  static inline V bcast(uint64_t x) { return _mm512_set1_epi64((long long)x); }
  static inline void store32(int32_t* p, V v) { _mm256_storeu_si256((__m256i*)p, _mm512_cvtepi64_epi32(v)); }
  template <bool RELU, bool RES>
  static inline void out(V cnt, const int32_t* base, const float* alpha, const float* res, float* out) {
    const __m256i c = _mm512_cvtepi64_epi32(cnt);
    __m256i t = _mm256_sub_epi32(_mm256_loadu_si256((const __m256i*)base), _mm256_add_epi32(c, c));
    if (RELU) t = _mm256_max_epi32(t, _mm256_setzero_si256());
    __m256 v = _mm256_mul_ps(_mm256_loadu_ps(alpha), _mm256_cvtepi32_ps(t));
    if (RES) v = _mm256_add_ps(v, _mm256_loadu_ps(res));
    _mm256_storeu_ps(out, v);
  }
  static inline V xor_(V a, V b) { return _mm512_xor_si512(a, b); }
  static inline V and_(V a, V b) { return _mm512_and_si512(a, b); }
  static inline int popcount64(uint64_t x) { return (int)_mm_popcnt_u64(x); }
  static inline A acc_zero() { return _mm512_setzero_si512(); }
#ifdef BNAS_VPOPCNT
  static inline A acc_add(A acc, V v) { return _mm512_add_epi64(acc, _mm512_popcnt_epi64(v)); }
  static inline V acc_flush(V total, A acc) { return _mm512_add_epi64(total, acc); }
#else
  static inline A acc_add(A acc, V v) {  // + the popcount of each byte (at most 8 per word)
    const V lut = _mm512_set4_epi32(0x04030302, 0x03020201, 0x03020201, 0x02010100);
    const V low = _mm512_set1_epi8(0x0f);
    acc = _mm512_add_epi8(acc, _mm512_shuffle_epi8(lut, _mm512_and_si512(v, low)));
    return _mm512_add_epi8(acc, _mm512_shuffle_epi8(lut, _mm512_and_si512(_mm512_srli_epi16(v, 4), low)));
  }
  static inline V acc_flush(V total, A acc) {
    return _mm512_add_epi64(total, _mm512_sad_epu8(acc, _mm512_setzero_si512()));
  }
#endif
  // The first min(n, 16) of 16 lanes (n >= 1).
  static inline __mmask16 lanes_below(int64_t n) { return (__mmask16)(n >= 16 ? 0xFFFFu : (1u << n) - 1u); }
  // Four quarters of 16 channels, each compared under its mask of the n channels (constant shifts once the
  // loop is unrolled; the quarters past n are skipped).
  static inline void pack_word(const float* x, const float* sc, const float* sh, int n, uint64_t* s, uint64_t* m) {
    const __m512 zero = _mm512_setzero_ps();
    uint64_t lt = 0, nz = 0;
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) {
      const int c = 16 * q;
      if (c >= n) break;
      const __mmask16 lm = lanes_below(n - c);
      const __m512 y = _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(lm, x + c), _mm512_maskz_loadu_ps(lm, sc + c)),
                                     _mm512_maskz_loadu_ps(lm, sh + c));
      lt |= (uint64_t)_mm512_mask_cmp_ps_mask(lm, y, zero, _CMP_LT_OQ) << c;
      nz |= (uint64_t)_mm512_mask_cmp_ps_mask(lm, y, zero, _CMP_NEQ_OQ) << c;
    }
    *s = lt;
    *m = nz;
  }
  // A row of W pixels (x: W channels-last rows ldx floats apart), 16 channels at a time across the row so that
  // their scale and shift stay in registers: the sign and zero bits of channels 16 q .. 16 q + 15 of pixel w are
  // halfword q % 4 of its word q / 4 (at s[(q / 4) * plane + w], little-endian), stored straight from the compare
  // masks; the halfwords past channel C are zero. `next`: the row to pack after this one, whose lines are
  // prefetched into L2 meanwhile (at batch sizes above 1 the input is far larger than L2, and these strided
  // accesses are not streams the hardware prefetchers follow); x itself for a thread's last row.
  static inline void pack_row(const float* x, const float* next, int64_t ldx, int64_t W, const float* sc,
                              const float* sh, int64_t C, uint64_t* s, uint64_t* z, int64_t plane) {
    const __m512 zero = _mm512_setzero_ps();
    const int64_t nq = (C + 15) / 16;
    for (int64_t q = 0; q < nq; ++q) {
      const int64_t c = 16 * q;
      const __mmask16 lm = lanes_below(C - c);
      const __m512 scq = _mm512_maskz_loadu_ps(lm, sc + c), shq = _mm512_maskz_loadu_ps(lm, sh + c);
      uint16_t* sq = (uint16_t*)(s + (q >> 2) * plane) + (q & 3);
      uint16_t* zq = (uint16_t*)(z + (q >> 2) * plane) + (q & 3);
      for (int64_t w = 0; w < W; ++w) {
        _mm_prefetch((const char*)(next + w * ldx + c), _MM_HINT_T1);
        const __m512 y = _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(lm, x + w * ldx + c), scq), shq);
        const uint16_t lt = (uint16_t)_mm512_mask_cmp_ps_mask(lm, y, zero, _CMP_LT_OQ);
        const uint16_t zb = (uint16_t)(lm & ~_mm512_mask_cmp_ps_mask(lm, y, zero, _CMP_NEQ_OQ));
        memcpy(sq + 4 * w, &lt, sizeof(uint16_t));
        memcpy(zq + 4 * w, &zb, sizeof(uint16_t));
      }
    }
    for (int64_t q = nq; q & 3; ++q) {  // the rest of the last word
      uint16_t* sq = (uint16_t*)(s + (q >> 2) * plane) + (q & 3);
      uint16_t* zq = (uint16_t*)(z + (q >> 2) * plane) + (q & 3);
      const uint16_t none = 0;
      for (int64_t w = 0; w < W; ++w) {
        memcpy(sq + 4 * w, &none, sizeof(uint16_t));
        memcpy(zq + 4 * w, &none, sizeof(uint16_t));
      }
    }
  }
};

#include "bconv_impl.h"

#ifdef BNAS_VPOPCNT
const Kernels table = {"avx512vpopcntdq", pack_rows, conv_tasks, peak_rate};
}  // namespace avx512vp
const Kernels* kernels_avx512vp() { return &avx512vp::table; }
#else
const Kernels table = {"avx512", pack_rows, conv_tasks, peak_rate};
}  // namespace avx512
const Kernels* kernels_avx512() { return &avx512::table; }
#endif

}  // namespace bnas_kernels
