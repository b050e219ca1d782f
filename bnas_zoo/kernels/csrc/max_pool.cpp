// The cells' 3x3 max pooling (padding 1, stride 1 or 2) of a contiguous (NCHW) float32 tensor, with the same
// values and the same argmax positions as ATen's max_pool2d_with_indices, whose contiguous CPU kernel scans
// each window element by element (several times slower at the cells' sizes than these loops).
//
// ATen's rule, kept exactly: a window is scanned row by row, left to right, skipping what lies outside the
// plane; an element replaces the maximum when it is greater, or when it is NaN; the maximum starts at -inf with
// the window's first element inside the plane as its position. Here each plane is copied into a buffer with a
// border of -inf (which never replaces a maximum: the same as skipping it), and the nine window elements are
// applied in ATen's order, each to all the plane's outputs in one loop that the compiler vectorizes: output
// (oy, ox) is kept at q = oy * Wp + ox (Wp = W + 2, the padded row), so that its element (kh, kw) sits at
// S * q + kh * Wp + kw in the buffer, a linear function of q. What is recorded is the window element (kh * 3 +
// kw, or none), turned into ATen's index (ih * W + iw within the plane) when the outputs are written out. The
// backward is ATen's own max_pool2d_with_indices_backward on these positions.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <tuple>
#include <vector>

#include "ops.h"

namespace bnas_kernels {
namespace {

// The plane's outputs at pitch Wp, from its padded copy pad ((H + 2) x Wp, -inf around, slack after):
// best[q] and tap[q] (the window element that gave it, -1 for none: the first inside the plane).
template <int S>
inline void pool_plane(const float* __restrict pad, int64_t Wp, int64_t Q, float* __restrict best,
                       int32_t* __restrict tap) {
  for (int64_t q = 0; q < Q; ++q) {
    best[q] = -std::numeric_limits<float>::infinity();
    tap[q] = -1;
  }
  for (int32_t kh = 0; kh < 3; ++kh) {
    for (int32_t kw = 0; kw < 3; ++kw) {
      const float* src = pad + kh * Wp + kw;
      const int32_t t = kh * 3 + kw;
      for (int64_t q = 0; q < Q; ++q) {
        const float v = src[S * q];
        const bool take = v > best[q] || v != v;  // greater, or NaN
        best[q] = take ? v : best[q];
        tap[q] = take ? t : tap[q];
      }
    }
  }
}

BNAS_CLONES void pool_planes(const float* __restrict x, int64_t H, int64_t W, int64_t stride, int64_t OH,
                             int64_t OW, int64_t p0, int64_t p1, float* __restrict out, int64_t* __restrict indices) {
  const int64_t Wp = W + 2, Q = OH * Wp;
  std::vector<float> pad((H + 4) * Wp + 8, -std::numeric_limits<float>::infinity());
  std::vector<float> best(Q);
  std::vector<int32_t> tap(Q);
  for (int64_t p = p0; p < p1; ++p) {
    const float* plane = x + p * H * W;
    for (int64_t ih = 0; ih < H; ++ih) std::memcpy(&pad[(ih + 1) * Wp + 1], plane + ih * W, W * sizeof(float));
    if (stride == 1)
      pool_plane<1>(pad.data(), Wp, Q, best.data(), tap.data());
    else
      pool_plane<2>(pad.data(), Wp, Q, best.data(), tap.data());
    float* o = out + p * OH * OW;
    int64_t* ind = indices + p * OH * OW;
    for (int64_t oy = 0; oy < OH; ++oy) {
      const int64_t ih0 = oy * stride - 1;
      for (int64_t ox = 0; ox < OW; ++ox) {
        const int64_t q = oy * Wp + ox, iw0 = ox * stride - 1;
        const int32_t t = tap[q];
        const int64_t ih = t < 0 ? std::max<int64_t>(ih0, 0) : ih0 + t / 3;
        const int64_t iw = t < 0 ? std::max<int64_t>(iw0, 0) : iw0 + t % 3;
        o[oy * OW + ox] = best[q];
        ind[oy * OW + ox] = ih * W + iw;
      }
    }
  }
}

std::tuple<at::Tensor, at::Tensor> max_pool3x3(const at::Tensor& x_in, int64_t stride) {
  TORCH_CHECK(x_in.dim() == 4 && x_in.scalar_type() == at::kFloat, "max_pool3x3: x must be float32 (N, C, H, W)");
  TORCH_CHECK(stride == 1 || stride == 2, "max_pool3x3: stride 1 or 2");
  const at::Tensor x = x_in.contiguous();
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(H > 0 && W > 0 && H * W < (int64_t(1) << 31), "max_pool3x3: plane size");
  const int64_t OH = (H - 1) / stride + 1, OW = (W - 1) / stride + 1, planes = N * C;
  at::Tensor out = at::empty({N, C, OH, OW}, x.options());
  at::Tensor indices = at::empty({N, C, OH, OW}, x.options().dtype(at::kLong));
  const float* px = x.data_ptr<float>();
  float* po = out.data_ptr<float>();
  int64_t* pi = indices.data_ptr<int64_t>();
  at::parallel_for(0, planes, std::max<int64_t>(1, 16384 / (OH * (W + 2) * 9)), [&](int64_t b, int64_t e) {
    pool_planes(px, H, W, stride, OH, OW, b, e, po, pi);
  });
  return {out, indices};
}

}  // namespace
}  // namespace bnas_kernels

TORCH_LIBRARY_FRAGMENT(bnas_zoo_kernels, m) {
  m.def("max_pool3x3(Tensor x, int stride) -> (Tensor, Tensor)", &bnas_kernels::max_pool3x3);
}
