// The fast training path (bnas_zoo/kernels/training.py): a BatchNorm -> sign -> XNOR conv -> ReLU block's
// forward (on the packed kernels of ops.cpp) and backward, and its helpers: one-pass batch statistics of a
// channels-last activation, the latent weight's projection and bit packing, the XNOR weight gradient, and the
// straight-through sign with the BatchNorm backward in two fused passes. Memory-bound loops that ATen has no
// single op for (var_mean over a channels-last tensor is several times slower than one pass; ATen packs no
// bits). The plain-PyTorch definitions the tests compare them against: training.py
// (xnor_conv_block_reference, batch_stats_reference), binary.py.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "ops.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <tuple>
#include <vector>

namespace bnas_kernels {
namespace {

// The inner loops over rows of C channels (channels-last: one row = one pixel), written so that the compiler
// vectorizes them over the channels (BNAS_CLONES, ops.h). y = x * scale + shift is a multiply then an add
// (-ffp-contract=off), as in the packing kernels, so every pass sees the same y.

// Sums of d and d * d, d = x - k (k: one value of each channel, so that the variance suffers no
// cancellation when the mean is large against the spread: the shifted-data algorithm).
BNAS_CLONES void stats_rows(const float* __restrict x, int64_t rows, int64_t C, const float* __restrict k,
                            float* __restrict s, float* __restrict q) {
  for (int64_t r = 0; r < rows; ++r, x += C)
    for (int64_t c = 0; c < C; ++c) {
      const float d = x[c] - k[c];
      s[c] += d;
      q[c] += d * d;
    }
}

BNAS_CLONES void sign_rows(const float* __restrict x, int64_t rows, int64_t C, const float* __restrict sc,
                           const float* __restrict sh, float* __restrict a) {
  for (int64_t r = 0; r < rows; ++r, x += C, a += C)
    for (int64_t c = 0; c < C; ++c) {
      const float y = x[c] * sc[c] + sh[c];
      a[c] = (y > 0.0f ? 1.0f : 0.0f) - (y < 0.0f ? 1.0f : 0.0f);
    }
}

BNAS_CLONES void ste_sums_rows(const float* __restrict x, const float* __restrict g, int64_t rows, int64_t C,
                               const float* __restrict sc, const float* __restrict sh, const float* __restrict m,
                               float* __restrict s, float* __restrict q) {
  for (int64_t r = 0; r < rows; ++r, x += C, g += C)
    for (int64_t c = 0; c < C; ++c) {
      const float y = x[c] * sc[c] + sh[c];
      const float gy = (y > -1.0f && y < 1.0f) ? g[c] : 0.0f;
      s[c] += gy;
      q[c] += gy * (x[c] - m[c]);
    }
}

BNAS_CLONES void ste_grad_rows(const float* __restrict x, const float* __restrict g, int64_t rows, int64_t C,
                               const float* __restrict sc, const float* __restrict sh, const float* __restrict m,
                               const float* __restrict k0, const float* __restrict k1, const float* __restrict k2,
                               float* __restrict o) {
  for (int64_t r = 0; r < rows; ++r, x += C, g += C, o += C)
    for (int64_t c = 0; c < C; ++c) {
      const float y = x[c] * sc[c] + sh[c];
      const float gy = (y > -1.0f && y < 1.0f) ? g[c] : 0.0f;
      o[c] = k0[c] * gy - k1[c] - k2[c] * (x[c] - m[c]);
    }
}

// Per-channel sums over all rows: float partial sums over blocks of kBlock rows, added in double, blocks
// summed in a fixed order (the result does not depend on the thread count).
constexpr int64_t kBlock = 128;

template <typename F>
void channel_sums(int64_t rows, int64_t C, F&& block_fn, std::vector<double>& s_out, std::vector<double>& q_out) {
  const int64_t blocks = (rows + kBlock - 1) / kBlock;
  std::vector<float> part(2 * blocks * C, 0.0f);
  at::parallel_for(0, blocks, 8, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t r0 = t * kBlock, n = std::min(rows, r0 + kBlock) - r0;
      block_fn(r0, n, part.data() + 2 * t * C, part.data() + (2 * t + 1) * C);
    }
  });
  s_out.assign(C, 0.0);
  q_out.assign(C, 0.0);
  for (int64_t t = 0; t < blocks; ++t)
    for (int64_t c = 0; c < C; ++c) {
      s_out[c] += part[2 * t * C + c];
      q_out[c] += part[(2 * t + 1) * C + c];
    }
}

// Per-channel mean and biased variance of a float (N, C, H, W) tensor over N, H and W, in one pass over the
// channels-last data (channel_sums of the values shifted by the first pixel's: deterministic, whatever the
// thread count).
std::tuple<at::Tensor, at::Tensor> batch_stats(const at::Tensor& x_in) {
  TORCH_CHECK(x_in.dim() == 4 && x_in.scalar_type() == at::kFloat, "batch_stats: x must be a float32 NCHW tensor");
  const at::Tensor x = x_in.contiguous(at::MemoryFormat::ChannelsLast);
  const int64_t C = x.size(1), rows = x.numel() / std::max<int64_t>(1, C);
  TORCH_CHECK(rows > 0, "batch_stats: empty input");
  const float* px = x.data_ptr<float>();
  const std::vector<float> shift(px, px + C);  // the first pixel's values
  std::vector<double> s, q;
  channel_sums(rows, C, [&](int64_t r0, int64_t n, float* ps, float* pq) {
    stats_rows(px + r0 * C, n, C, shift.data(), ps, pq);
  }, s, q);
  at::Tensor mean = at::empty({C}, x.options()), var = at::empty({C}, x.options());
  float* pm = mean.data_ptr<float>();
  float* pv = var.data_ptr<float>();
  for (int64_t c = 0; c < C; ++c) {
    const double d = s[c] / (double)rows;
    const double v = q[c] / (double)rows - d * d;
    pm[c] = (float)((double)shift[c] + d);
    pv[c] = (float)(v > 0.0 ? v : 0.0);
  }
  return {mean, var};
}

// The straight-through sign of a folded BatchNorm, a = sign(x * scale + shift), on a channels-last tensor.
// Per-channel vectors as the loops read them: C contiguous floats.
at::Tensor channel_vector(const at::Tensor& t, int64_t C, const char* what) {
  TORCH_CHECK(t.numel() == C, what, ": expected one value per channel (", C, "), got ", t.numel());
  return t.contiguous().to(at::kFloat);
}

at::Tensor bn_sign(const at::Tensor& x_in, const at::Tensor& scale_in, const at::Tensor& shift_in) {
  const at::Tensor x = x_in.contiguous(at::MemoryFormat::ChannelsLast);
  const int64_t C = x.size(1), rows = x.numel() / C;
  const at::Tensor scale = channel_vector(scale_in, C, "bn_sign"), shift = channel_vector(shift_in, C, "bn_sign");
  at::Tensor a = at::empty_like(x, at::MemoryFormat::ChannelsLast);
  const float* px = x.data_ptr<float>();
  const float* sc = scale.data_ptr<float>();
  const float* sh = shift.data_ptr<float>();
  float* pa = a.data_ptr<float>();
  at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / C),
                   [&](int64_t b, int64_t e) { sign_rows(px + b * C, e - b, C, sc, sh, pa + b * C); });
  return a;
}

// Backward of sign(BatchNorm(x)) with batch statistics, given g_a (the gradient at the sign's output):
//   g_y = g_a * 1[|y| < 1]  (y = x * scale + shift),  xhat = (x - mean) * invstd,  M = N * H * W
//   g_beta = sum g_y,  g_gamma = sum g_y * xhat,
//   g_x = gamma * invstd * (g_y - g_beta / M - xhat * g_gamma / M)       (gamma = 1 without affine)
// Two passes over the channels-last tensors (the sums by channel_sums). Returns (g_x, g_gamma, g_beta).
std::tuple<at::Tensor, at::Tensor, at::Tensor> bn_sign_backward(
    const at::Tensor& g_in, const at::Tensor& x_in, const at::Tensor& scale_in, const at::Tensor& shift_in,
    const at::Tensor& mean_in, const at::Tensor& invstd_in, const at::Tensor& gain_in) {
  const at::Tensor x = x_in.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor g = g_in.contiguous(at::MemoryFormat::ChannelsLast);
  TORCH_CHECK(g.sizes() == x.sizes() && g.scalar_type() == at::kFloat, "bn_sign_backward: gradient shape");
  const int64_t C = x.size(1), rows = x.numel() / C;
  const char* what = "bn_sign_backward";
  const at::Tensor scale = channel_vector(scale_in, C, what), shift = channel_vector(shift_in, C, what);
  const at::Tensor mean = channel_vector(mean_in, C, what), invstd = channel_vector(invstd_in, C, what);
  const at::Tensor gain = channel_vector(gain_in, C, what);
  const float* px = x.data_ptr<float>();
  const float* pg = g.data_ptr<float>();
  const float* sc = scale.data_ptr<float>();
  const float* sh = shift.data_ptr<float>();
  const float* pm = mean.data_ptr<float>();
  std::vector<double> sums, sums_x;
  channel_sums(rows, C, [&](int64_t r0, int64_t n, float* ps, float* pq) {
    ste_sums_rows(px + r0 * C, pg + r0 * C, n, C, sc, sh, pm, ps, pq);
  }, sums, sums_x);
  at::Tensor g_beta = at::empty({C}, x.options()), g_gamma = at::empty({C}, x.options());
  std::vector<float> k0(C), k1(C), k2(C);
  const float* pi = invstd.data_ptr<float>();
  const float* pgain = gain.data_ptr<float>();
  for (int64_t c = 0; c < C; ++c) {
    const double s = sums[c], q = sums_x[c], is = pi[c];
    g_beta.data_ptr<float>()[c] = (float)s;
    g_gamma.data_ptr<float>()[c] = (float)(q * is);
    // g_x = k0 * g_y - k1 - k2 * (x - mean)
    const double k = (double)pgain[c] * is;
    k0[c] = (float)k;
    k1[c] = (float)(k * s / (double)rows);
    k2[c] = (float)(k * q * is * is / (double)rows);
  }
  at::Tensor g_x = at::empty_like(x, at::MemoryFormat::ChannelsLast);
  float* po = g_x.data_ptr<float>();
  at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / C), [&](int64_t b, int64_t e) {
    ste_grad_rows(px + b * C, pg + b * C, e - b, C, sc, sh, pm, k0.data(), k1.data(), k2.data(), po + b * C);
  });
  return {g_x, g_gamma, g_beta};
}


// The XNOR weight of the release from a latent weight W (O, C, k, k): Wp = clamp(W - mean_over_C(W), -1, 1),
// alpha = mean |Wp| per output channel; returns (Wp, alpha), Wp channels-last (each tap's C channels
// contiguous, so that the mean over C is a contiguous reduction).
BNAS_CLONES void project_rows(const float* __restrict w, int64_t taps, int64_t C, float* __restrict out,
                              float* __restrict abs_sum) {
  float total = 0.0f;
  for (int64_t t = 0; t < taps; ++t, w += C, out += C) {
    float s = 0.0f;
    for (int64_t c = 0; c < C; ++c) s += w[c];
    const float mean = s / (float)C;
    float a = 0.0f;
    for (int64_t c = 0; c < C; ++c) {
      float v = w[c] - mean;
      v = v < -1.0f ? -1.0f : (v > 1.0f ? 1.0f : v);
      out[c] = v;
      a += v < 0.0f ? -v : v;
    }
    total += a;
  }
  *abs_sum = total;
}

std::tuple<at::Tensor, at::Tensor> xnor_project(const at::Tensor& w_in) {
  TORCH_CHECK(w_in.dim() == 4 && w_in.scalar_type() == at::kFloat, "xnor_project: w must be float32 (O, C, k, k)");
  const at::Tensor w = w_in.contiguous(at::MemoryFormat::ChannelsLast);
  const int64_t O = w.size(0), C = w.size(1), taps = w.size(2) * w.size(3), n = C * taps;
  at::Tensor wp = at::empty_like(w, at::MemoryFormat::ChannelsLast);
  at::Tensor alpha = at::empty({O}, w.options());
  const float* pw = w.data_ptr<float>();
  float* po = wp.data_ptr<float>();
  float* pa = alpha.data_ptr<float>();
  at::parallel_for(0, O, std::max<int64_t>(1, 16384 / n), [&](int64_t b, int64_t e) {
    for (int64_t o = b; o < e; ++o) {
      float abs_sum;
      project_rows(pw + o * n, taps, C, po + o * n, &abs_sum);
      pa[o] = abs_sum / (float)n;
    }
  });
  return {wp, alpha};
}

BNAS_CLONES float sign_dot(const float* __restrict w, const float* __restrict g, int64_t n) {
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i) s += ((w[i] > 0.0f ? 1.0f : 0.0f) - (w[i] < 0.0f ? 1.0f : 0.0f)) * g[i];
  return s;
}

BNAS_CLONES void xnor_grad_row(const float* __restrict w, const float* __restrict g, int64_t n, float alpha,
                               float mean_sg, float factor, float* __restrict d) {
  for (int64_t i = 0; i < n; ++i) {
    const float sign = (w[i] > 0.0f ? 1.0f : 0.0f) - (w[i] < 0.0f ? 1.0f : 0.0f);
    const float inside = (w[i] >= -1.0f && w[i] <= 1.0f) ? 1.0f : 0.0f;
    d[i] = (alpha * inside * g[i] + sign * mean_sg) * factor;
  }
}

// The release's XNOR-Net gradient of the latent weight, from Wp and alpha (xnor_project) and g, the gradient
// with respect to the binarized weight sign(Wp) * alpha (n = C * k * k):
//   (alpha * 1[|Wp| <= 1] * g + sign(Wp) * sum(sign(Wp) * g) / n) * n * (1 - 1 / C)
// Without alpha, wp holds the binarized weight sign(Wp) * alpha itself (|Wp| <= 1 after the clamp, so alpha <= 1
// and the mask is 1): alpha is then each output channel's largest |wp|. Elementwise within each output
// channel, whose values are consecutive in both layouts: computed and returned in g's layout (channels-last
// or contiguous).
at::Tensor xnor_weight_backward(const at::Tensor& wp_in, const c10::optional<at::Tensor>& alpha_in,
                                const at::Tensor& g_in) {
  TORCH_CHECK(g_in.dim() == 4 && g_in.sizes() == wp_in.sizes() && g_in.scalar_type() == at::kFloat &&
              wp_in.scalar_type() == at::kFloat, "xnor_weight_backward: wp and g must be float32 of one shape");
  const auto layout = g_in.is_contiguous() || !g_in.is_contiguous(at::MemoryFormat::ChannelsLast)
                          ? at::MemoryFormat::Contiguous : at::MemoryFormat::ChannelsLast;
  const at::Tensor wp = wp_in.contiguous(layout);
  const at::Tensor g = g_in.contiguous(layout);
  const int64_t O = wp.size(0), C = wp.size(1), n = wp.numel() / std::max<int64_t>(1, O);
  TORCH_CHECK(!alpha_in.has_value() || alpha_in->numel() == O, "xnor_weight_backward: one alpha per output channel");
  const at::Tensor alpha = alpha_in.has_value() ? alpha_in->contiguous() : at::Tensor();
  at::Tensor out = at::empty_like(wp, layout);
  const float* pw = wp.data_ptr<float>();
  const float* pg = g.data_ptr<float>();
  const float* pa = alpha_in.has_value() ? alpha.data_ptr<float>() : nullptr;
  float* po = out.data_ptr<float>();
  const float factor = (float)n * (1.0f - 1.0f / (float)C);
  at::parallel_for(0, O, std::max<int64_t>(1, 16384 / n), [&](int64_t b, int64_t e) {
    for (int64_t o = b; o < e; ++o) {
      const float* row = pw + o * n;
      float a = 0.0f;
      if (pa) {
        a = pa[o];
      } else {
        for (int64_t i = 0; i < n; ++i) a = std::max(a, std::abs(row[i]));
      }
      const float mean_sg = sign_dot(row, pg + o * n, n) / (float)n;
      xnor_grad_row(row, pg + o * n, n, a, mean_sg, factor, po + o * n);
    }
  });
  return out;
}


// The whole training block (bnas_zoo::xnor_conv_block; its definition and the autograd wiring are in
// training.py): BatchNorm with batch statistics -> sign -> XNOR conv -> ReLU on a channels-last x whose last
// zero_tail channels are left out (identically zero; taken as the constants sign(beta) through a 1x1 conv, or
// sign(0) = 0 without affine). Returns (out, mean, var, Wp, alpha); mean and var cover the left-out channels.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> xnor_block_forward(
    const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& gamma,
    const c10::optional<at::Tensor>& beta, double eps, int64_t stride, int64_t padding, int64_t dilation,
    int64_t zero_tail) {
  const int64_t live = x.size(1), O = weight.size(0), k = weight.size(2), blocks = (O + 15) / 16 * 16;
  auto [mean, var] = batch_stats(x);
  const at::Tensor invstd = at::rsqrt(var + eps);
  const at::Tensor scale = gamma.has_value() ? invstd * gamma->slice(0, 0, live) : invstd;
  const at::Tensor shift = beta.has_value() ? beta->slice(0, 0, live) - mean * scale : -mean * scale;
  auto [wp, alpha] = xnor_project(weight);
  auto [wbits, wmask, wcounts] = pack_binary_weights(zero_tail ? wp.slice(1, 0, live) : wp);
  at::Tensor int_bias = at::zeros({blocks}, x.options().dtype(at::kInt));
  if (zero_tail && beta.has_value())  // the constant channels through the 1x1 conv: an exact integer
    int_bias.slice(0, 0, O).copy_(
        at::matmul(at::sign(wp.slice(1, live)).flatten(1), at::sign(beta->slice(0, live))).round());
  const at::Tensor out = binary_conv2d(x, scale, shift, wbits, wmask, wcounts, at::constant_pad_nd(alpha, {0, blocks - O}),
                                       int_bias, O, k, stride, padding, dilation, true, c10::nullopt);
  if (zero_tail) {  // the left-out channels' batch statistics: exactly zero
    mean = at::constant_pad_nd(mean, {0, zero_tail});
    var = at::constant_pad_nd(var, {0, zero_tail});
  }
  return {out, mean, var, wp, alpha};
}

// Its backward: the ReLU mask, the sign activations recomputed, ATen's convolution backward (float,
// channels-last), the XNOR weight gradient, the straight-through sign and the BatchNorm in two fused passes;
// the left-out channels' parts in closed form (1x1: per-channel sums). needs: x, weight, gamma, beta.
// Gradients not needed are returned undefined (None).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> xnor_block_backward(
    const at::Tensor& g_out, const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& gamma,
    const c10::optional<at::Tensor>& beta, const at::Tensor& out, const at::Tensor& mean_all,
    const at::Tensor& var_all, const at::Tensor& wp, const at::Tensor& alpha, double eps, int64_t stride,
    int64_t padding, int64_t dilation, int64_t zero_tail, std::array<bool, 4> needs) {
  const int64_t live = x.size(1), O = weight.size(0), tail = zero_tail;
  const at::Tensor mean = mean_all.slice(0, 0, live).contiguous(), var = var_all.slice(0, 0, live);
  const at::Tensor invstd = at::rsqrt(var + eps);
  const c10::optional<at::Tensor> g_live = gamma.has_value() ? c10::optional<at::Tensor>(gamma->slice(0, 0, live))
                                                             : c10::nullopt;
  const at::Tensor scale = g_live.has_value() ? invstd * *g_live : invstd;
  const at::Tensor shift = beta.has_value() ? beta->slice(0, 0, live) - mean * scale : -mean * scale;
  const bool need_affine = (gamma.has_value() && needs[2]) || (beta.has_value() && needs[3]);
  const at::Tensor g_conv = at::threshold_backward(g_out, out, 0);  // the ReLU
  const at::Tensor a = bn_sign(x, scale, shift);
  const at::Tensor w_bin = at::sign(wp) * alpha.view({-1, 1, 1, 1});
  const at::Tensor w_live = tail ? w_bin.slice(1, 0, live).contiguous(at::MemoryFormat::ChannelsLast) : w_bin;
  auto [g_a, g_wbin, g_bias] = at::convolution_backward(
      g_conv, a, w_live, c10::nullopt, {stride, stride}, {padding, padding}, {dilation, dilation}, false, {0, 0}, 1,
      {needs[0] || need_affine, needs[1], false});
  // the constant channels of a zero tail: a = sign(beta) at every pixel (1x1 conv), 0 without affine
  const bool const_tail = tail && beta.has_value();
  const at::Tensor tail_sign = const_tail ? at::sign(beta->slice(0, live)) : at::Tensor();
  const at::Tensor g_sum = const_tail ? g_conv.sum({0, 2, 3}) : at::Tensor();
  at::Tensor g_w;
  if (needs[1]) {
    if (tail) {
      at::Tensor g_tail = const_tail ? at::outer(g_sum, tail_sign) : at::zeros({O, tail}, g_wbin.options());
      g_tail = g_tail.view({O, tail, 1, 1}).expand({O, tail, g_wbin.size(2), g_wbin.size(3)});
      g_wbin = at::cat({g_wbin, g_tail}, 1);
    }
    g_w = xnor_weight_backward(wp, alpha, g_wbin);  // channels-last
    if (!(weight.is_contiguous(at::MemoryFormat::ChannelsLast) && !weight.is_contiguous())) g_w = g_w.contiguous();
  }
  at::Tensor g_x, g_gamma, g_beta;
  if (g_a.defined()) {
    const at::Tensor gain = g_live.has_value() ? *g_live : at::ones_like(scale);
    std::tie(g_x, g_gamma, g_beta) = bn_sign_backward(g_a, x, scale, shift, mean, invstd, gain);
    if (tail && gamma.has_value()) g_gamma = at::constant_pad_nd(g_gamma, {0, tail});  // xhat = 0 there
    if (const_tail) {  // sum over pixels of the straight-through gradient at sign(beta)
      const at::Tensor g_a_tail = at::matmul(g_sum, w_bin.slice(1, live).flatten(1));
      g_beta = at::cat({g_beta, g_a_tail * (beta->slice(0, live).abs() < 1.0).to(g_a_tail.scalar_type())});
    }
    if (!needs[0]) g_x = at::Tensor();
    if (!(gamma.has_value() && needs[2])) g_gamma = at::Tensor();
    if (!(beta.has_value() && needs[3])) g_beta = at::Tensor();
  }
  return {g_x, g_w, g_gamma, g_beta};
}

}  // namespace
}  // namespace bnas_kernels

TORCH_LIBRARY_FRAGMENT(bnas_zoo_kernels, m) {
  m.def("batch_stats(Tensor x) -> (Tensor, Tensor)", &bnas_kernels::batch_stats);
  m.def("xnor_project(Tensor w) -> (Tensor, Tensor)", &bnas_kernels::xnor_project);
  m.def("xnor_weight_backward(Tensor wp, Tensor? alpha, Tensor g) -> Tensor", &bnas_kernels::xnor_weight_backward);
  m.def("xnor_block_forward(Tensor x, Tensor weight, Tensor? gamma, Tensor? beta, float eps, int stride, "
        "int padding, int dilation, int zero_tail) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
        &bnas_kernels::xnor_block_forward);
  m.def("xnor_block_backward(Tensor g_out, Tensor x, Tensor weight, Tensor? gamma, Tensor? beta, Tensor out, "
        "Tensor mean, Tensor var, Tensor wp, Tensor alpha, float eps, int stride, int padding, int dilation, "
        "int zero_tail, bool[4] needs) -> (Tensor, Tensor, Tensor, Tensor)", &bnas_kernels::xnor_block_backward);
  m.def("bn_sign(Tensor x, Tensor scale, Tensor shift) -> Tensor", &bnas_kernels::bn_sign);
  m.def("bn_sign_backward(Tensor g, Tensor x, Tensor scale, Tensor shift, Tensor mean, Tensor invstd, Tensor gain) "
        "-> (Tensor, Tensor, Tensor)", &bnas_kernels::bn_sign_backward);
}
