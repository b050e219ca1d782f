// Packed binary (XNOR-popcount) convolution: the data layouts and the per-ISA kernel table.
//
// This header is plain C++ (no torch, no STL) so that the per-ISA translation units that include it can be
// compiled for their instruction set without pulling inline library code into them.
//
// Semantics (those of the float-simulated network, not the textbook +-1 ones):
//   a = sign(x * scale + shift)  in {-1, 0, +1}  (BatchNorm folded to a per-channel affine map; sign(0) = 0)
//   y = alpha * (sum over taps and channels of a * w  +  int_bias),  w in {-1, 0, +1},  zero padding on a
//   out = [relu](y) [+ residual]
//
// Bit encoding. An activation is two bit-planes per pixel: a sign bit (1 = negative) and a non-zero bit
// (0 for an exact zero and for padding). A weight is a sign bit and, only when the layer has zero weights,
// a non-zero bit. With w = +-1:  sum a*w = popcount(m) - 2 * popcount((s_a ^ s_w) & m).
#pragma once
#include <stdint.h>

namespace bnas_kernels {

// Fused BatchNorm -> sign -> bit-pack of a channels-last float tensor into a zero-padded packed buffer.
struct PackArgs {
  const float* x;        // (N, H, W, C) channels-last
  const float* scale;    // (C,)
  const float* shift;    // (C,)
  uint64_t* out;         // (N, Hp, Wp, 2, Wd): Wd sign words then Wd non-zero words per pixel; borders zero
  int32_t* count;        // (N, Hp, Wp): number of non-zero activations of each packed pixel
  int64_t N, H, W, C, pad, Wd, Hp, Wp;
};

// Binary convolution on the packed buffer; output channels in blocks of 16 (one task = one output row of
// one 16-channel block of one image).
struct ConvArgs {
  const uint64_t* x;      // packed input, as PackArgs::out
  const int32_t* count;   // PackArgs::count
  const uint64_t* wbits;  // (OB, k*k, Wd, 16) weight sign words
  const uint64_t* wmask;  // same layout, weight non-zero words; nullptr when no weight is zero
  const float* alpha;     // (OB * 16,) per-output-channel scale (padded)
  const int32_t* ibias;   // (OB * 16,) integer bias from folded constant input channels (padded)
  const float* residual;  // (N, OH, OW, Cout) channels-last, or nullptr
  float* out;             // (N, OH, OW, Cout) channels-last
  int64_t N, Hp, Wp, Wd, OH, OW, Cout, OB, k, stride, dil;
  bool relu;
};

// One instruction-set level: the three row kernels. Rows are [begin, end) of:
//   pack: N * H input rows;  conv: N * OB * OH output tasks.
struct Kernels {
  const char* name;
  void (*pack)(const PackArgs&, int64_t begin, int64_t end);
  void (*conv)(const ConvArgs&, int64_t begin, int64_t end);
};

// Sign and non-zero bits of channels [i, n) of one pixel (y = x * scale + shift; NaN counts as zero), ORed
// into *s / *m: the portable kernels' packing, and the tail of the vector ones. static: each instruction-set
// file compiles its own copy.
static inline void pack_bits_scalar(const float* x, const float* sc, const float* sh, int i, int n, uint64_t* s,
                                    uint64_t* m) {
  for (; i < n; ++i) {
    const float y = x[i] * sc[i] + sh[i];
    *s |= (uint64_t)(y < 0.0f) << i;
    *m |= (uint64_t)(y != 0.0f && y == y) << i;
  }
}

const Kernels* kernels_generic();
const Kernels* kernels_avx2();
const Kernels* kernels_avx512();
const Kernels* kernels_avx512vp();

}  // namespace bnas_kernels
