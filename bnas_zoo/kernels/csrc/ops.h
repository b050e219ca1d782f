// The compiled ops that other translation units call directly (ops.cpp defines them).
#pragma once
#include <ATen/ATen.h>

#include <tuple>

#include "bconv.h"

// A loop written for the compiler to vectorize: target_clones compiles it for AVX-512, AVX2 and baseline
// x86-64 and picks the CPU's best at load time (GCC's ifunc dispatch).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(BNAS_PORTABLE_ONLY)
#define BNAS_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define BNAS_CLONES
#endif

namespace bnas_kernels {

// The kernels of the instruction-set level in use (the one dispatch point: ops.cpp).
const Kernels* active_kernels();

// A binary convolution's packed weights (pack_binary_weights) as raw pointers, for the kernels.
struct BinaryWeights {
  const uint64_t* wbits;   // (OB, Kw, 16)
  const uint64_t* wmask;   // same, or nullptr when no weight is zero
  const int32_t* wcounts;  // (k * k + 1, OB * 16): 2 T - V of each tap, then V
  const float* alpha;      // (OB * 16,)
  const int32_t* int_bias; // (OB * 16,)
  int64_t Cin, Cout, k;
};

// Seconds spent in the phases of one binary_conv_raw call (for benchmarks).
struct ConvTimings {
  double pack = 0.0, total = 0.0;
};

// One binary convolution from raw channels-last float rows (see bconv.h for the layouts): the input has
// C = w.Cin channels, of which [lo, hi) are read from x (row stride ldx) and the others are zero; the output
// rows have stride ldo, the residual rows (or nullptr) stride ldr. `planes`: where the packed input goes, an
// int64 tensor the caller keeps from one call to the next and that grows as a call needs (nullptr: memory of
// this call's own).
void binary_conv_raw(const float* x, int64_t ldx, int64_t N, int64_t H, int64_t W, int64_t lo, int64_t hi,
                     const float* scale, const float* shift, const BinaryWeights& w, int64_t stride, int64_t padding,
                     int64_t dilation, bool relu, const float* res, int64_t ldr, float* out, int64_t ldo,
                     ConvTimings* timings = nullptr, at::Tensor* planes = nullptr);

// Sign bits, non-zero bits and per-tap counts of a float or int8 weight (O, C, k, k) in the kernels' layout;
// the mask is returned empty when no weight is zero.
std::tuple<at::Tensor, at::Tensor, at::Tensor> pack_binary_weights(const at::Tensor& w);

// bnas_zoo::binary_conv2d (schema and semantics: bnas_zoo/kernels/ops.py and reference.py).
at::Tensor binary_conv2d(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift,
                         const at::Tensor& wbits, const at::Tensor& wmask, const at::Tensor& wcounts,
                         const at::Tensor& alpha, const at::Tensor& int_bias, int64_t out_channels,
                         int64_t kernel_size, int64_t stride, int64_t padding, int64_t dilation, bool relu,
                         const c10::optional<at::Tensor>& residual, ConvTimings* timings = nullptr);

}  // namespace bnas_kernels
