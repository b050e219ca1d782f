// The float simulation's BatchNorm (batch statistics) -> sign on a contiguous (NCHW) float32 tensor, fused,
// with ATen's own arithmetic: the same batch statistics, the same folded scale and shift, the same y, bit for
// bit, so the signs (and everything the network computes from them) are those of nn.BatchNorm2d followed by
// torch.sign (bnas_zoo/kernels/exact_training.py checks this on the running machine before using it, and the
// tests compare the two on many shapes).
//
// ATen's contiguous kernel (batch_norm_kernel.cpp) computes each channel's sum, then its sum of squared
// deviations, as one sequential double-precision chain per channel: about 4 cycles per element, whatever the
// memory can deliver. The same chains are computed here in the same order, eight channels interleaved, so
// that the adds overlap; then y = fma(x, alpha, beta) and its sign in one pass (y is not stored). The
// backward (the straight-through mask 1[|y| < 1] and the BatchNorm's backward) is computed in two fused
// passes per channel, with y recomputed exactly; its sums are ordered differently from ATen's, so the
// gradients agree with it to float rounding, not bit for bit.
//
// Channels listed as a zero tail (identically zero inputs left out of x, see bnas_zoo/cell.py) have mean 0 and
// variance 0, so y = beta there exactly: their signs are written as constants, and their statistics and
// gradients are computed in closed form.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <array>
#include <cmath>
#include <tuple>
#include <vector>

namespace bnas_kernels {
namespace {

// std::fma is one instruction where the CPU has FMA (x86-64-v3 and up, chosen at load time) and a correctly
// rounded library call elsewhere: either way the same value.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(BNAS_PORTABLE_ONLY)
#define BNAS_FMA_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define BNAS_FMA_CLONES
#endif

constexpr int kGroup = 8;  // channels whose sequential sums run interleaved

// sum[k] = the sequential double sum of channel c0 + k (k < G) over n, then pixels: ATen's order.
template <int G>
void channel_means(const float* x, int64_t N, int64_t C, int64_t HW, int64_t c0, float* mean) {
  double acc[G] = {};
  for (int64_t n = 0; n < N; ++n) {
    const float* p = x + (n * C + c0) * HW;
    for (int64_t i = 0; i < HW; ++i)
      for (int k = 0; k < G; ++k) acc[k] += (double)p[k * HW + i];
  }
  const double count = (double)(N * HW);
  for (int k = 0; k < G; ++k) mean[k] = (float)(acc[k] / count);
}

// The sequential double sum of (x - mean)^2, the square taken in float: ATen's variance sum.
template <int G>
void channel_var_sums(const float* x, int64_t N, int64_t C, int64_t HW, int64_t c0, const float* mean,
                      float* var_sum) {
  double acc[G] = {};
  float m[G];
  for (int k = 0; k < G; ++k) m[k] = mean[k];
  for (int64_t n = 0; n < N; ++n) {
    const float* p = x + (n * C + c0) * HW;
    for (int64_t i = 0; i < HW; ++i)
      for (int k = 0; k < G; ++k) {
        const float d = p[k * HW + i] - m[k];
        acc[k] += (double)(d * d);
      }
  }
  for (int k = 0; k < G; ++k) var_sum[k] = (float)acc[k];
}

template <int G>
void group_stats(const float* x, int64_t N, int64_t C, int64_t HW, int64_t c0, float* mean, float* var_sum) {
  channel_means<G>(x, N, C, HW, c0, mean + c0);
  channel_var_sums<G>(x, N, C, HW, c0, mean + c0, var_sum + c0);
}

void stats(const float* x, int64_t N, int64_t C, int64_t HW, int64_t c0, int64_t g, float* mean, float* var_sum) {
  switch (g) {
    case 8: return group_stats<8>(x, N, C, HW, c0, mean, var_sum);
    case 7: return group_stats<7>(x, N, C, HW, c0, mean, var_sum);
    case 6: return group_stats<6>(x, N, C, HW, c0, mean, var_sum);
    case 5: return group_stats<5>(x, N, C, HW, c0, mean, var_sum);
    case 4: return group_stats<4>(x, N, C, HW, c0, mean, var_sum);
    case 3: return group_stats<3>(x, N, C, HW, c0, mean, var_sum);
    case 2: return group_stats<2>(x, N, C, HW, c0, mean, var_sum);
    default: return group_stats<1>(x, N, C, HW, c0, mean, var_sum);
  }
}

// One plane: a = sign(y) (or y itself, for the exactness check), y = fma(x, alpha, beta).
BNAS_FMA_CLONES void sign_plane(const float* __restrict x, int64_t n, float alpha, float beta, bool values,
                                float* __restrict a) {
  if (values) {
    for (int64_t i = 0; i < n; ++i) a[i] = std::fma(x[i], alpha, beta);
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    const float y = std::fma(x[i], alpha, beta);
    a[i] = (y > 0.0f ? 1.0f : 0.0f) - (y < 0.0f ? 1.0f : 0.0f);
  }
}

// The sums of one plane for the backward: g_y = g * 1[-1 < y < 1]; s = sum g_y, q = sum g_y * (x - mean),
// each in kLanes partial sums (independent, so that they vectorize), added up at the end.
constexpr int kLanes = 16;

BNAS_FMA_CLONES void ste_sums_plane(const float* __restrict x, const float* __restrict g, int64_t n, float alpha,
                                    float beta, float mean, float* s_out, float* q_out) {
  float s[kLanes] = {}, q[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int k = 0; k < kLanes; ++k) {
      const float y = std::fma(x[i + k], alpha, beta);
      const float gy = (y > -1.0f && y < 1.0f) ? g[i + k] : 0.0f;
      s[k] += gy;
      q[k] += gy * (x[i + k] - mean);
    }
  for (int k = 0; i < n; ++i, ++k) {
    const float y = std::fma(x[i], alpha, beta);
    const float gy = (y > -1.0f && y < 1.0f) ? g[i] : 0.0f;
    s[k] += gy;
    q[k] += gy * (x[i] - mean);
  }
  float st = 0.0f, qt = 0.0f;
  for (int k = 0; k < kLanes; ++k) {
    st += s[k];
    qt += q[k];
  }
  *s_out = st;
  *q_out = qt;
}

// g_x = k0 * g_y - k1 - k2 * (x - mean) on one plane.
BNAS_FMA_CLONES void ste_grad_plane(const float* __restrict x, const float* __restrict g, int64_t n, float alpha,
                                    float beta, float mean, float k0, float k1, float k2, float* __restrict o) {
  for (int64_t i = 0; i < n; ++i) {
    const float y = std::fma(x[i], alpha, beta);
    const float gy = (y > -1.0f && y < 1.0f) ? g[i] : 0.0f;
    o[i] = k0 * gy - k1 - k2 * (x[i] - mean);
  }
}

BNAS_FMA_CLONES float plane_sum(const float* __restrict g, int64_t n) {
  float s[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int k = 0; k < kLanes; ++k) s[k] += g[i + k];
  for (int k = 0; i < n; ++i, ++k) s[k] += g[i];
  float t = 0.0f;
  for (int k = 0; k < kLanes; ++k) t += s[k];
  return t;
}

const float* optional_data(const c10::optional<at::Tensor>& t, int64_t C, const char* what) {
  if (!t.has_value() || !t->defined()) return nullptr;
  TORCH_CHECK(t->dim() == 1 && t->numel() == C && t->scalar_type() == at::kFloat && t->is_contiguous(),
              "batch_norm_sign: ", what, " must be a contiguous float32 vector of ", C, " values");
  return t->data_ptr<float>();
}

// Per channel: alpha = invstd * gamma, beta = bias - mean * alpha (one rounding: an FMA), as ATen folds them.
void fold(int64_t C, const float* mean, const float* invstd, const float* gamma, const float* bias, float* alpha,
          float* beta) {
  for (int64_t c = 0; c < C; ++c) {
    alpha[c] = invstd[c] * (gamma ? gamma[c] : 1.0f);
    beta[c] = std::fma(-mean[c], alpha[c], bias ? bias[c] : 0.0f);
  }
}

// Forward. x: (N, L, H, W) contiguous, the live channels; the output has L + zero_tail channels (the tail's
// inputs are identically zero). Returns (a, mean, invstd, running_mean', running_var'): mean and invstd of
// the live channels (what the backward needs); the running statistics updated as ATen updates them (over all
// L + zero_tail channels; empty when none were given). values=true returns y instead of its sign.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> batch_norm_sign(
    const at::Tensor& x, const c10::optional<at::Tensor>& gamma_in, const c10::optional<at::Tensor>& beta_in,
    const c10::optional<at::Tensor>& running_mean_in, const c10::optional<at::Tensor>& running_var_in,
    double momentum, double eps, int64_t zero_tail, bool values) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kFloat && x.is_contiguous() && x.device().is_cpu(),
              "batch_norm_sign: x must be a contiguous float32 (N, C, H, W) CPU tensor");
  TORCH_CHECK(zero_tail >= 0, "batch_norm_sign: zero_tail must be >= 0");
  const int64_t N = x.size(0), L = x.size(1), HW = x.size(2) * x.size(3), C = L + zero_tail, M = N * HW;
  TORCH_CHECK(M > 0 && L > 0, "batch_norm_sign: empty input");
  const float* gamma = optional_data(gamma_in, C, "weight");
  const float* bias = optional_data(beta_in, C, "bias");
  const float* rm = optional_data(running_mean_in, C, "running_mean");
  const float* rv = optional_data(running_var_in, C, "running_var");
  const float* px = x.data_ptr<float>();

  at::Tensor mean = at::empty({L}, x.options()), invstd = at::empty({L}, x.options());
  std::vector<float> var_sum(L);
  float* pm = mean.data_ptr<float>();
  const int64_t groups = (L + kGroup - 1) / kGroup;
  at::parallel_for(0, groups, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t c0 = t * kGroup;
      stats(px, N, L, HW, c0, std::min<int64_t>(kGroup, L - c0), pm, var_sum.data());
    }
  });
  float* pi = invstd.data_ptr<float>();
  for (int64_t c = 0; c < L; ++c) {
    const float var = var_sum[c] / (float)M;  // a float division, then the transform in double
    pi[c] = (var == 0.0f && eps == 0.0) ? 0.0f : (float)(1.0 / std::sqrt((double)var + eps));
  }
  std::vector<float> alpha(L), beta(L);
  fold(L, pm, pi, gamma, bias, alpha.data(), beta.data());

  at::Tensor a = at::empty({N, C, x.size(2), x.size(3)}, x.options());
  float* pa = a.data_ptr<float>();
  at::parallel_for(0, N * C, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, HW)), [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p) {
      const int64_t n = p / C, c = p % C;
      float* out = pa + p * HW;
      if (c < L) {
        sign_plane(px + (n * L + c) * HW, HW, alpha[c], beta[c], values, out);
      } else {  // a zero-tail channel: y = bias exactly
        const float y = bias ? bias[c] : 0.0f;
        const float v = values ? y : (y > 0.0f ? 1.0f : 0.0f) - (y < 0.0f ? 1.0f : 0.0f);
        std::fill(out, out + HW, v);
      }
    }
  });

  at::Tensor new_rm = at::empty({0}, x.options()), new_rv = at::empty({0}, x.options());
  if (rm != nullptr && rv != nullptr) {
    new_rm = at::empty({C}, x.options());
    new_rv = at::empty({C}, x.options());
    float* om = new_rm.data_ptr<float>();
    float* ov = new_rv.data_ptr<float>();
    const float f = (float)momentum, keep = 1.0f - f;  // (the momentum is a float first)
    for (int64_t c = 0; c < C; ++c) {
      const float m = c < L ? pm[c] : 0.0f;
      const float unbiased = c < L ? var_sum[c] / (float)(M - 1) : 0.0f;
      om[c] = f * m + keep * rm[c];
      ov[c] = std::fma(f, unbiased, keep * rv[c]);
    }
  }
  return {a, mean, invstd, new_rm, new_rv};
}

// Backward, from g_a (the gradient at the signs, (N, L + zero_tail, H, W)):
//   g_y = g_a * 1[-1 < y < 1],  g_beta = sum g_y,  g_gamma = invstd * sum g_y * (x - mean),
//   g_x = gamma * invstd * (g_y - g_beta / M - (x - mean) * invstd^2 * sum(g_y * (x - mean)) / M)
// per channel, in two passes over its planes (the sums in float per plane, added in double); the tail's
// g_beta = 1[|beta| < 1] * sum g_a and g_gamma = 0 (x - mean = 0 there). needs: x, gamma, beta.
std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_sign_backward(
    const at::Tensor& g_in, const at::Tensor& x, const c10::optional<at::Tensor>& gamma_in,
    const c10::optional<at::Tensor>& beta_in, const at::Tensor& mean, const at::Tensor& invstd,
    std::array<bool, 3> needs) {
  const int64_t N = x.size(0), L = x.size(1), HW = x.size(2) * x.size(3), M = N * HW;
  const at::Tensor g = g_in.contiguous();
  TORCH_CHECK(g.dim() == 4 && g.size(0) == N && g.size(1) >= L && g.size(2) * g.size(3) == HW,
              "batch_norm_sign_backward: gradient shape");
  const int64_t C = g.size(1);
  const float* gamma = optional_data(gamma_in, C, "weight");
  const float* bias = optional_data(beta_in, C, "bias");
  const float* pm = mean.data_ptr<float>();
  const float* pi = invstd.data_ptr<float>();
  std::vector<float> alpha(L), beta(L);
  fold(L, pm, pi, gamma, bias, alpha.data(), beta.data());
  const float* px = x.data_ptr<float>();
  const float* pg = g.data_ptr<float>();

  at::Tensor g_x = needs[0] ? at::empty_like(x) : at::Tensor();
  at::Tensor g_gamma = at::zeros({C}, x.options()), g_beta = at::empty({C}, x.options());
  float* pgx = needs[0] ? g_x.data_ptr<float>() : nullptr;
  float* pgg = g_gamma.data_ptr<float>();
  float* pgb = g_beta.data_ptr<float>();
  at::parallel_for(0, C, 1, [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c) {
      if (c >= L) {  // zero tail: y = bias, x - mean = 0
        const float y = bias ? bias[c] : 0.0f;
        double s = 0.0;
        if (y > -1.0f && y < 1.0f)
          for (int64_t n = 0; n < N; ++n) s += plane_sum(pg + (n * C + c) * HW, HW);
        pgb[c] = (float)s;
        continue;
      }
      double s = 0.0, q = 0.0;
      for (int64_t n = 0; n < N; ++n) {
        float ps, pq;
        ste_sums_plane(px + (n * L + c) * HW, pg + (n * C + c) * HW, HW, alpha[c], beta[c], pm[c], &ps, &pq);
        s += ps;
        q += pq;
      }
      const double is = pi[c];
      pgb[c] = (float)s;
      pgg[c] = (float)(q * is);
      if (pgx != nullptr) {
        const double k = (gamma ? (double)gamma[c] : 1.0) * is;
        const float k0 = (float)k, k1 = (float)(k * s / (double)M), k2 = (float)(k * q * is * is / (double)M);
        for (int64_t n = 0; n < N; ++n)
          ste_grad_plane(px + (n * L + c) * HW, pg + (n * C + c) * HW, HW, alpha[c], beta[c], pm[c], k0, k1, k2,
                         pgx + (n * L + c) * HW);
      }
    }
  });
  return {g_x, needs[1] ? g_gamma : at::Tensor(), needs[2] ? g_beta : at::Tensor()};
}

}  // namespace
}  // namespace bnas_kernels

TORCH_LIBRARY_FRAGMENT(bnas_zoo_kernels, m) {
  m.def("batch_norm_sign(Tensor x, Tensor? gamma, Tensor? beta, Tensor? running_mean, Tensor? running_var, "
        "float momentum, float eps, int zero_tail, bool values) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
        &bnas_kernels::batch_norm_sign);
  m.def("batch_norm_sign_backward(Tensor g, Tensor x, Tensor? gamma, Tensor? beta, Tensor mean, Tensor invstd, "
        "bool[3] needs) -> (Tensor, Tensor, Tensor)", &bnas_kernels::batch_norm_sign_backward);
}
