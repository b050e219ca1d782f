// Portable kernels: plain C++ on 64-bit words, for any CPU (the only kernels built off x86-64).
#include "bconv.h"

namespace bnas_kernels {
namespace generic {

struct Simd {
  typedef uint64_t V;
  typedef uint64_t A;
  enum { LANES = 1, NP = 1, FLUSH = 1 << 30, PACK_ROW = 0 };
  static inline V zero() { return 0; }
  static inline V load(const uint64_t* p) { return *p; }
  static inline V bcast(uint64_t x) { return x; }
  static inline void store32(int32_t* p, V v) { *p = (int32_t)v; }
  template <bool RELU, bool RES>
  static inline void out(V cnt, const int32_t* base, const float* alpha, const float* res, float* out) {
    int32_t t = *base - 2 * (int32_t)cnt;
    if (RELU) t = t > 0 ? t : 0;
    float v = *alpha * (float)t;
    if (RES) v += *res;
    *out = v;
  }
  static inline V xor_(V a, V b) { return a ^ b; }
  static inline V and_(V a, V b) { return a & b; }
  static inline int popcount64(uint64_t x) { return __builtin_popcountll(x); }
  static inline A acc_zero() { return 0; }
  static inline A acc_add(A acc, V v) { return acc + (A)popcount64(v); }
  static inline V acc_flush(V total, A acc) { return total + acc; }
  static inline void pack_word(const float* x, const float* sc, const float* sh, int n, uint64_t* s, uint64_t* m) {
    *s = 0;
    *m = 0;
    pack_bits_scalar(x, sc, sh, 0, n, s, m);
  }
};

#include "bconv_impl.h"

const Kernels table = {"generic", pack_rows, conv_tasks, peak_rate};

}  // namespace generic

const Kernels* kernels_generic() { return &generic::table; }

}  // namespace bnas_kernels
