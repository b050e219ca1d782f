// AVX-512 kernels (F, BW, DQ, VL). BNAS_VPOPCNT selects the VPOPCNTDQ variant: one instruction counts the
// bits of eight 64-bit words; without it, popcount by nibble lookup (vpshufb) and vpsadbw.
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
  enum { LANES = 8, PIX = 4 };
  static inline V zero() { return _mm512_setzero_si512(); }
  static inline V load(const uint64_t* p) { return _mm512_loadu_si512((const void*)p); }
  static inline V bcast(uint64_t x) { return _mm512_set1_epi64((long long)x); }
  static inline void store(int64_t* p, V v) { _mm512_storeu_si512((void*)p, v); }
  // (s ^ w) & m in one instruction: truth table of (A ^ B) & C is (0xF0 ^ 0xCC) & 0xAA = 0x28
  static inline V xor_and(V s, V w, V m) { return _mm512_ternarylogic_epi64(s, w, m, 0x28); }
  static inline V and_(V a, V b) { return _mm512_and_si512(a, b); }
  static inline int popcount64(uint64_t x) { return (int)_mm_popcnt_u64(x); }
#ifdef BNAS_VPOPCNT
  static inline V popcnt_add(V acc, V v) { return _mm512_add_epi64(acc, _mm512_popcnt_epi64(v)); }
#else
  static inline V popcnt_add(V acc, V v) {
    const V lut = _mm512_set4_epi32(0x04030302, 0x03020201, 0x03020201, 0x02010100);
    const V low = _mm512_set1_epi8(0x0f);
    const V lo = _mm512_and_si512(v, low);
    const V hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
    const V c = _mm512_add_epi8(_mm512_shuffle_epi8(lut, lo), _mm512_shuffle_epi8(lut, hi));
    return _mm512_add_epi64(acc, _mm512_sad_epu8(c, _mm512_setzero_si512()));
  }
#endif
  // the epilogue of 16 output channels in vector registers: int64 sums -> float, * alpha, relu, + residual
  static inline void finish(const V* acc, const V* cnt, bool wmask, int32_t pcm, const int32_t* ibias,
                            const float* alpha, const float* res, float* out, int nc, bool relu) {
    const __mmask16 m = (__mmask16)(nc >= 16 ? 0xFFFFu : ((1u << nc) - 1u));
    const V base = _mm512_set1_epi64(pcm);
    const V t0 = _mm512_add_epi64(_mm512_sub_epi64(wmask ? cnt[0] : base, _mm512_slli_epi64(acc[0], 1)),
                                  _mm512_cvtepi32_epi64(_mm256_loadu_si256((const __m256i*)ibias)));
    const V t1 = _mm512_add_epi64(_mm512_sub_epi64(wmask ? cnt[1] : base, _mm512_slli_epi64(acc[1], 1)),
                                  _mm512_cvtepi32_epi64(_mm256_loadu_si256((const __m256i*)(ibias + 8))));
    const __m512 total = _mm512_insertf32x8(_mm512_castps256_ps512(_mm512_cvtepi64_ps(t0)), _mm512_cvtepi64_ps(t1), 1);
    __m512 v = _mm512_mul_ps(_mm512_loadu_ps(alpha), total);
    if (relu) v = _mm512_max_ps(v, _mm512_setzero_ps());
    if (res) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, res));
    _mm512_mask_storeu_ps(out, m, v);
  }
  static inline void pack_word(const float* x, const float* sc, const float* sh, int n, uint64_t* s, uint64_t* m) {
    uint64_t sb = 0, mb = 0;
    const __m512 zero = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 16) {
      const int len = n - i < 16 ? n - i : 16;
      const __mmask16 lm = (__mmask16)(len == 16 ? 0xFFFFu : ((1u << len) - 1u));
      const __m512 y = _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(lm, x + i), _mm512_maskz_loadu_ps(lm, sc + i)),
                                     _mm512_maskz_loadu_ps(lm, sh + i));
      sb |= (uint64_t)_mm512_mask_cmp_ps_mask(lm, y, zero, _CMP_LT_OQ) << i;
      mb |= (uint64_t)_mm512_mask_cmp_ps_mask(lm, y, zero, _CMP_NEQ_OQ) << i;
    }
    *s = sb;
    *m = mb;
  }
};

#define BNAS_SIMD_FINISH
#include "bconv_impl.h"
#undef BNAS_SIMD_FINISH

#ifdef BNAS_VPOPCNT
const Kernels table = {"avx512vpopcntdq", pack_rows, conv_rows};
}  // namespace avx512vp
const Kernels* kernels_avx512vp() { return &avx512vp::table; }
#else
const Kernels table = {"avx512", pack_rows, conv_rows};
}  // namespace avx512
const Kernels* kernels_avx512() { return &avx512::table; }
#endif

}  // namespace bnas_kernels
