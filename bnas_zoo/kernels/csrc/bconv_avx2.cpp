// AVX2 kernels: 4 x 64-bit lanes, popcount by nibble lookup (vpshufb) into byte counters, summed per 64-bit
// lane (vpsadbw) every 31 words.
#pragma GCC target("avx2,popcnt")
#include <immintrin.h>

#include "bconv.h"

namespace bnas_kernels {
namespace avx2 {

struct Simd {
  typedef __m256i V;
  typedef __m256i A;
  enum { LANES = 4, NP = 2, FLUSH = 31, PACK_ROW = 0 };
  static inline V zero() { return _mm256_setzero_si256(); }
  static inline V load(const uint64_t* p) { return _mm256_loadu_si256((const __m256i*)p); }
  static inline V bcast(uint64_t x) { return _mm256_set1_epi64x((long long)x); }
  static inline void store32(int32_t* p, V v) {  // the low halves of the four 64-bit lanes
    const __m256i lo = _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6));
    _mm_storeu_si128((__m128i*)p, _mm256_castsi256_si128(lo));
  }
  template <bool RELU, bool RES>
  static inline void out(V cnt, const int32_t* base, const float* alpha, const float* res, float* out) {
    const __m128i c = _mm256_castsi256_si128(
        _mm256_permutevar8x32_epi32(cnt, _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6)));
    __m128i t = _mm_sub_epi32(_mm_loadu_si128((const __m128i*)base), _mm_add_epi32(c, c));
    if (RELU) t = _mm_max_epi32(t, _mm_setzero_si128());
    __m128 v = _mm_mul_ps(_mm_loadu_ps(alpha), _mm_cvtepi32_ps(t));
    if (RES) v = _mm_add_ps(v, _mm_loadu_ps(res));
    _mm_storeu_ps(out, v);
  }
  static inline V xor_(V a, V b) { return _mm256_xor_si256(a, b); }
  static inline V and_(V a, V b) { return _mm256_and_si256(a, b); }
  static inline int popcount64(uint64_t x) { return (int)_mm_popcnt_u64(x); }
  static inline A acc_zero() { return _mm256_setzero_si256(); }
  static inline A acc_add(A acc, V v) {  // + the popcount of each byte (at most 8 per word)
    const V lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                   0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const V low = _mm256_set1_epi8(0x0f);
    acc = _mm256_add_epi8(acc, _mm256_shuffle_epi8(lut, _mm256_and_si256(v, low)));
    return _mm256_add_epi8(acc, _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(v, 4), low)));
  }
  static inline V acc_flush(V total, A acc) {
    return _mm256_add_epi64(total, _mm256_sad_epu8(acc, _mm256_setzero_si256()));
  }
  static inline void pack_word(const float* x, const float* sc, const float* sh, int n, uint64_t* s, uint64_t* m) {
    uint64_t sb = 0, mb = 0;
    int i = 0;
    const __m256 zero = _mm256_setzero_ps();
    for (; i + 8 <= n; i += 8) {
      const __m256 y = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(sc + i)),
                                     _mm256_loadu_ps(sh + i));
      sb |= (uint64_t)_mm256_movemask_ps(_mm256_cmp_ps(y, zero, _CMP_LT_OQ)) << i;
      mb |= (uint64_t)_mm256_movemask_ps(_mm256_cmp_ps(y, zero, _CMP_NEQ_OQ)) << i;
    }
    pack_bits_scalar(x, sc, sh, i, n, &sb, &mb);
    *s = sb;
    *m = mb;
  }
};

#include "bconv_impl.h"

const Kernels table = {"avx2", pack_rows, conv_tasks, peak_rate};

}  // namespace avx2

const Kernels* kernels_avx2() { return &avx2::table; }

}  // namespace bnas_kernels
