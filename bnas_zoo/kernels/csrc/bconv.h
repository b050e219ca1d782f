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
// Bit encoding and arithmetic. The reduction index of output pixel p is K = tap * C + c (tap = kh * k + kw),
// packed densely into Kw = ceil(k * k * C / 64) words (an im2col of bits: channel counts that are not
// multiples of 64 waste no bits between taps). An activation is its sign bit s (1 = negative; 0 for an exact
// zero and for padding); a weight is its sign bit t (0 for a zero weight) and, only when the layer has zero
// weights, a non-zero bit v. With z the activations that are zero (padding included):
//
//   sum a * w = V - 2 * popcount((s ^ t) & v)  +  sum over z of (2 t - v)
//
// where V = popcount(v) (k * k * C without zero weights). The first part is the inner loop (XOR and popcount,
// no per-activation mask); the correction is zero for pixels whose receptive field holds no zero, comes from a
// per-tap table (2 T - V of each tap, T = negative weights) for the padding of border pixels, and is computed
// from the zero bits only for the rare pixels that see an exact zero activation.
#pragma once
#include <stdint.h>
#include <stdlib.h>  // malloc, free: the C library only (see bconv_impl.h)
#include <string.h>  // memcpy, memset
#include <time.h>    // clock_gettime

namespace bnas_kernels {

constexpr int OB_CHS = 16;  // output channels per weight block

// Fused BatchNorm -> sign -> bit-pack of a channels-last float tensor into zero-bordered packed planes: for
// each pixel of the (N, Hp, Wp) = (N, H + 2 pad, W + 2 pad) grid, Wd = ceil(C / 64) sign words and Wd zero words
// (bit c % 64 of word c / 64 is channel c), and a flag whether any channel is zero; the border (pad pixels
// around each image) zero. The words are stored word-major: word j of every pixel is plane j, npix = N * Hp * Wp
// words long (so that the words of neighbouring pixels, which the im2col reads together, are contiguous).
// Channels [lo, hi) are read from x (x's channel 0 is channel lo); the others are identically zero inputs, whose
// bits (constant: the sign of the shift) are given in const_s / const_z.
struct PackArgs {
  const float* x;          // (N * H * W, ldx) channels-last rows
  int64_t ldx;             // floats between consecutive pixels of x
  const float* scale;      // (C,)
  const float* shift;      // (C,)
  const uint64_t* const_s; // (Wd,) sign bits of the channels outside [lo, hi), or nullptr
  const uint64_t* const_z; // (Wd,) zero bits of the channels outside [lo, hi), or nullptr
  uint64_t* s;             // (Wd, N, Hp, Wp) out
  uint64_t* z;             // (Wd, N, Hp, Wp) out
  uint8_t* zflag;          // (N, Hp, Wp) out
  int64_t N, H, W, pad, Hp, Wp, C, lo, hi, Wd, npix;
};

// Binary convolution on the packed input; a task is one output row of one image, for a chunk of the output
// channel blocks.
struct ConvArgs {
  const uint64_t* s;       // PackArgs::s
  const uint64_t* z;       // PackArgs::z
  const uint8_t* zflag;    // PackArgs::zflag
  bool any_zero;           // whether any flag is set (else the zero correction is skipped altogether)
  int64_t N, Hp, Wp, C, Wd;
  int64_t plane;           // words per plane of s and z (N * Hp * Wp)
  bool dense;              // read the taps through an im2col of bits (k > 1); a 1x1 conv reads in place
  const int64_t* tapoff;   // (k * k,) pixel offset of each tap from the output pixel's top-left tap
  const uint32_t* rowoob;  // (OH,) the taps that fall into the padding rows, as a bit mask
  const uint32_t* coloob;  // (OW,) the taps that fall into the padding columns
  const uint64_t* wbits;   // (OB, Kw, 16) weight sign words (0 for zero weights)
  const uint64_t* wmask;   // same layout: non-zero weight bits; nullptr when no weight is zero
  const int32_t* tapcorr;  // (k * k, OB * 16): 2 T - V of each tap and output channel
  const int32_t* base;     // (OB * 16,): V + int_bias
  const float* alpha;      // (OB * 16,)
  int64_t Kw, OB, Cout, k, stride, dil, OH, OW;
  bool relu;
  bool alpha_nonneg;       // every alpha >= 0 (XNOR scales are): the ReLU can act on the integer sums
  const float* res;        // (N * OH * OW, ldr) channels-last rows, or nullptr
  int64_t ldr;
  float* out;              // (N * OH * OW, ldo) channels-last rows
  int64_t ldo;
};

// One instruction-set level: packing rows [begin, end) of the N * H input rows (returns the number of pixels
// holding a zero); convolution tasks [begin, end) of N * OH * chunks, a task being (image, output row, chunk
// of output channel blocks) with the blocks split into `chunks` equal parts; and the peak of the inner loop
// (binary multiply-adds per second of one core).
struct Kernels {
  const char* name;
  int64_t (*pack)(const PackArgs&, int64_t begin, int64_t end);
  void (*conv)(const ConvArgs&, int64_t chunks, int64_t begin, int64_t end);
  double (*peak)(double seconds);
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
#if (defined(__x86_64__) || defined(_M_X64)) && !defined(BNAS_PORTABLE_ONLY)
const Kernels* kernels_avx2();
const Kernels* kernels_avx512();
const Kernels* kernels_avx512vp();
#endif

}  // namespace bnas_kernels
