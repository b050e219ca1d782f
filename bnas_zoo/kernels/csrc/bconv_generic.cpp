// Portable kernels: plain C++ on 64-bit words, for any x86-64 (or other) CPU.
#include "bconv.h"

namespace bnas_kernels {
namespace generic {

struct Simd {
  typedef uint64_t V;
  enum { LANES = 1, PIX = 1 };
  static inline V zero() { return 0; }
  static inline V load(const uint64_t* p) { return *p; }
  static inline V bcast(uint64_t x) { return x; }
  static inline void store(int64_t* p, V v) { *p = (int64_t)v; }
  static inline V xor_and(V s, V w, V m) { return (s ^ w) & m; }
  static inline V and_(V a, V b) { return a & b; }
  static inline int popcount64(uint64_t x) { return __builtin_popcountll(x); }
  static inline V popcnt_add(V acc, V x) { return acc + (V)popcount64(x); }
  static inline void pack_word(const float* x, const float* sc, const float* sh, int n, uint64_t* s, uint64_t* m) {
    *s = 0;
    *m = 0;
    pack_bits_scalar(x, sc, sh, 0, n, s, m);
  }
};

#include "bconv_impl.h"

const Kernels table = {"generic", pack_rows, conv_rows};

}  // namespace generic

const Kernels* kernels_generic() { return &generic::table; }

}  // namespace bnas_kernels
