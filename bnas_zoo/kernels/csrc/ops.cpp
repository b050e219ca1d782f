// torch.library CPU implementations of the bnas_zoo deployment ops, the weight packing, and the one run-time
// dispatch point that picks the instruction-set level. The op schemas are defined in Python
// (bnas_zoo/kernels/ops.py), beside the pure-PyTorch reference implementation that the tests compare these
// kernels against (reference.py).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bconv.h"
#include "ops.h"

namespace bnas_kernels {
namespace {

struct Level {
  const char* name;
  const Kernels* (*table)();
  bool (*supported)();
};

bool always() { return true; }
#if (defined(__x86_64__) || defined(_M_X64)) && !defined(BNAS_PORTABLE_ONLY)
bool has_avx2() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt"); }
bool has_avx512() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("popcnt");
}
bool has_avx512vp() { return has_avx512() && __builtin_cpu_supports("avx512vpopcntdq"); }
#endif

// best first
const Level kLevels[] = {
#if (defined(__x86_64__) || defined(_M_X64)) && !defined(BNAS_PORTABLE_ONLY)
    {"avx512vpopcntdq", kernels_avx512vp, has_avx512vp},
    {"avx512", kernels_avx512, has_avx512},
    {"avx2", kernels_avx2, has_avx2},
#endif
    {"generic", kernels_generic, always},
};

std::string level_names() {
  std::string s;
  for (const Level& l : kLevels) s += (s.empty() ? "" : ", ") + std::string(l.name);
  return s;
}

const Kernels* best_supported() {
  for (const Level& l : kLevels)
    if (l.supported()) return l.table();
  return kernels_generic();
}

const Kernels* find_level(const std::string& name) {
  for (const Level& l : kLevels) {
    if (name == l.name) {
      TORCH_CHECK(l.supported(), "bnas_zoo kernels: this CPU does not support the '", name, "' level");
      return l.table();
    }
  }
  TORCH_CHECK(false, "bnas_zoo kernels: unknown instruction-set level '", name, "'; expected one of ", level_names());
  return nullptr;
}

// The dispatch point: BNAS_ZOO_ISA=<level> chooses a level at load time, set_cpu_isa() at run time,
// otherwise the best level this CPU supports.
const Kernels*& active() {
  static const Kernels* k = [] {
    const char* env = std::getenv("BNAS_ZOO_ISA");
    return (env && *env) ? find_level(env) : best_supported();
  }();
  return k;
}

std::vector<std::string> cpu_isa_levels() {
  std::vector<std::string> out;
  for (const Level& l : kLevels)
    if (l.supported()) out.emplace_back(l.name);
  return out;
}

std::string set_cpu_isa(const std::string& level) {
  std::string previous = active()->name;
  active() = level.empty() ? best_supported() : find_level(level);
  return previous;
}

std::string cpu_isa() { return active()->name; }

// The inner loop's binary multiply-adds per second on one core, at `level` ('' = the level in use).
double popcount_peak(const std::string& level, double seconds) {
  const Kernels* k = level.empty() ? active() : find_level(level);
  return k->peak(seconds);
}

template <typename T>
bool negative(T v) { return v < 0; }
template <typename T>
bool nonzero(T v) { return v != 0; }

template <typename T>
void pack_weights_t(const T* w, int64_t O, int64_t C, int64_t taps, int64_t Kw, uint64_t* bits, uint64_t* mask,
                    int32_t* counts, std::atomic<bool>& any_zero) {
  // w: (O, taps, C) (channels innermost); bit K = tap * C + c of output channel o
  const int64_t OBC = (O + OB_CHS - 1) / OB_CHS * OB_CHS;
  at::parallel_for(0, O, 16, [&](int64_t b, int64_t e) {
    bool zero = false;
    for (int64_t o = b; o < e; ++o) {
      const int64_t ob = o / OB_CHS, lane = o % OB_CHS;
      int32_t v_total = 0;
      for (int64_t t = 0; t < taps; ++t) {
        int32_t neg = 0, nz = 0;
        for (int64_t c = 0; c < C; ++c) {
          const T x = w[(o * taps + t) * C + c];
          const int64_t K = t * C + c, word = (ob * Kw + K / 64) * OB_CHS + lane;
          if (negative(x)) {
            bits[word] |= (uint64_t)1 << (K % 64);
            ++neg;
          }
          if (nonzero(x)) {
            mask[word] |= (uint64_t)1 << (K % 64);
            ++nz;
          } else {
            zero = true;
          }
        }
        counts[t * OBC + o] = 2 * neg - nz;
        v_total += nz;
      }
      counts[taps * OBC + o] = v_total;
    }
    if (zero) any_zero = true;
  });
}

}  // namespace

const Kernels* active_kernels() { return active(); }

std::tuple<at::Tensor, at::Tensor, at::Tensor> pack_binary_weights(const at::Tensor& w_in) {
  TORCH_CHECK(w_in.dim() == 4 && (w_in.scalar_type() == at::kFloat || w_in.scalar_type() == at::kChar),
              "pack_binary_weights: w must be a float32 or int8 (O, C, k, k) tensor");
  const int64_t O = w_in.size(0), C = w_in.size(1), taps = w_in.size(2) * w_in.size(3);
  const at::Tensor w = w_in.permute({0, 2, 3, 1}).contiguous();  // (O, kh, kw, C): channels innermost
  const int64_t OB = (O + OB_CHS - 1) / OB_CHS, Kw = (taps * C + 63) / 64;
  const auto opts = w.options().dtype(at::kLong);
  at::Tensor bits = at::zeros({OB, Kw, OB_CHS}, opts), mask = at::zeros({OB, Kw, OB_CHS}, opts);
  at::Tensor counts = at::zeros({taps + 1, OB * OB_CHS}, w.options().dtype(at::kInt));
  uint64_t* pb = reinterpret_cast<uint64_t*>(bits.data_ptr<int64_t>());
  uint64_t* pm = reinterpret_cast<uint64_t*>(mask.data_ptr<int64_t>());
  std::atomic<bool> any_zero{false};
  if (w.scalar_type() == at::kFloat)
    pack_weights_t(w.data_ptr<float>(), O, C, taps, Kw, pb, pm, counts.data_ptr<int32_t>(), any_zero);
  else
    pack_weights_t(w.data_ptr<int8_t>(), O, C, taps, Kw, pb, pm, counts.data_ptr<int32_t>(), any_zero);
  if (!any_zero) mask = at::zeros({0}, opts);
  return {bits, mask, counts};
}

void binary_conv_raw(const float* x, int64_t ldx, int64_t N, int64_t H, int64_t W, int64_t lo, int64_t hi,
                     const float* scale, const float* shift, const BinaryWeights& w, int64_t stride, int64_t padding,
                     int64_t dilation, bool relu, const float* res, int64_t ldr, float* out, int64_t ldo,
                     ConvTimings* timings, at::Tensor* planes) {
  const auto t0 = std::chrono::steady_clock::now();
  const Kernels* kern = active();
  const int64_t C = w.Cin, k = w.k, taps = k * k, Wd = (C + 63) / 64, Kw = (taps * C + 63) / 64;
  const int64_t OB = (w.Cout + OB_CHS - 1) / OB_CHS, OBC = OB * OB_CHS;
  const int64_t Hp = H + 2 * padding, Wp = W + 2 * padding;
  const int64_t OH = (Hp - dilation * (k - 1) - 1) / stride + 1, OW = (Wp - dilation * (k - 1) - 1) / stride + 1;
  TORCH_CHECK(taps <= 32, "binary_conv2d: kernels up to 5x5");

  // the bits of the channels outside [lo, hi): those of a zero input, sign(shift)
  std::vector<uint64_t> const_bits(2 * Wd, 0);
  for (int64_t c = 0; c < C; ++c) {
    if (c >= lo && c < hi) continue;
    const float y = 0.0f * scale[c] + shift[c];
    if (y < 0.0f) const_bits[c / 64] |= (uint64_t)1 << (c % 64);
    if (!(y != 0.0f && y == y)) const_bits[Wd + c / 64] |= (uint64_t)1 << (c % 64);
  }
  const int64_t npix = N * Hp * Wp;
  // sign and zero planes, then a byte of flags per pixel, written whole by the packing (borders included): not
  // initialised here
  const int64_t words = 2 * npix * Wd + (npix + 7) / 8;
  at::Tensor own;
  if (!planes) planes = &own;
  if (!planes->defined() || planes->numel() < words) *planes = at::empty({words}, at::dtype(at::kLong));
  uint64_t* const packed = reinterpret_cast<uint64_t*>(planes->data_ptr<int64_t>());
  uint8_t* const zflag = reinterpret_cast<uint8_t*>(packed + 2 * npix * Wd);
  const bool virt = lo > 0 || hi < C;
  PackArgs pa{x, ldx, scale, shift, virt ? const_bits.data() : nullptr, virt ? const_bits.data() + Wd : nullptr,
              packed, packed + npix * Wd, zflag, N, H, W, padding, Hp, Wp, C, lo, hi, Wd, npix};
  std::atomic<int64_t> zero_pixels{0};
  at::parallel_for(0, N * H, std::max<int64_t>(1, 8192 / std::max<int64_t>(1, W * (hi - lo))),
                   [&](int64_t b, int64_t e) { zero_pixels += kern->pack(pa, b, e); });
  const auto t1 = std::chrono::steady_clock::now();

  // padded taps by output row and column; tap offsets in the bordered buffer
  std::vector<uint32_t> rowoob(OH, 0), coloob(OW, 0);
  std::vector<int64_t> tapoff(taps);
  for (int64_t kh = 0; kh < k; ++kh)
    for (int64_t kw = 0; kw < k; ++kw) {
      const int64_t t = kh * k + kw;
      tapoff[t] = kh * dilation * Wp + kw * dilation;
      for (int64_t oh = 0; oh < OH; ++oh) {
        const int64_t ih = oh * stride - padding + kh * dilation;
        if (ih < 0 || ih >= H) rowoob[oh] |= (uint32_t)1 << t;
      }
      for (int64_t ow = 0; ow < OW; ++ow) {
        const int64_t iw = ow * stride - padding + kw * dilation;
        if (iw < 0 || iw >= W) coloob[ow] |= (uint32_t)1 << t;
      }
    }
  std::vector<int32_t> base(OBC);
  bool alpha_nonneg = true;
  for (int64_t o = 0; o < OBC; ++o) {
    base[o] = w.wcounts[taps * OBC + o] + w.int_bias[o];
    alpha_nonneg = alpha_nonneg && w.alpha[o] >= 0.0f;
  }
  ConvArgs ca{packed, packed + npix * Wd, zflag, zero_pixels.load() > 0, N, Hp, Wp, C, Wd, npix,
              k > 1, tapoff.data(), rowoob.data(), coloob.data(), w.wbits, w.wmask, w.wcounts,
              base.data(), w.alpha, Kw, OB, w.Cout, k, stride, dilation, OH, OW, relu, alpha_nonneg, res, ldr,
              out, ldo};
  // tasks: (image, output row, chunk of output channel blocks); rows alone when there are enough of them
  const int64_t rows = N * OH, want = 8 * (int64_t)at::get_num_threads();
  const int64_t chunks = rows >= want ? 1 : std::min<int64_t>(OB, (want + rows - 1) / rows);
  at::parallel_for(0, rows * chunks, 1, [&](int64_t b, int64_t e) { kern->conv(ca, chunks, b, e); });
  if (timings) {
    timings->pack = std::chrono::duration<double>(t1 - t0).count();
    timings->total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
}

at::Tensor binary_conv2d(const at::Tensor& x_in, const at::Tensor& scale_in, const at::Tensor& shift_in,
                         const at::Tensor& wbits, const at::Tensor& wmask, const at::Tensor& wcounts,
                         const at::Tensor& alpha_in, const at::Tensor& int_bias_in, int64_t out_channels,
                         int64_t kernel_size, int64_t stride, int64_t padding, int64_t dilation, bool relu,
                         const c10::optional<at::Tensor>& residual, ConvTimings* timings) {
  TORCH_CHECK(x_in.dim() == 4 && x_in.scalar_type() == at::kFloat, "binary_conv2d: x must be a float32 NCHW tensor");
  const at::Tensor x = x_in.contiguous(at::MemoryFormat::ChannelsLast);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), k = kernel_size;
  const int64_t OB = (out_channels + OB_CHS - 1) / OB_CHS, Kw = (k * k * C + 63) / 64;
  TORCH_CHECK(scale_in.numel() == C && shift_in.numel() == C,
              "binary_conv2d: scale/shift must have one value per channel");
  TORCH_CHECK(wbits.scalar_type() == at::kLong && wbits.numel() == OB * Kw * OB_CHS && wbits.is_contiguous(),
              "binary_conv2d: wbits does not match (out_channels, channels, kernel_size)");
  const bool has_mask = wmask.numel() > 0;
  TORCH_CHECK(!has_mask || (wmask.sizes() == wbits.sizes() && wmask.is_contiguous()), "binary_conv2d: bad wmask");
  TORCH_CHECK(wcounts.scalar_type() == at::kInt && wcounts.numel() == (k * k + 1) * OB * OB_CHS,
              "binary_conv2d: wcounts must be int32 (k * k + 1, out channels padded to 16)");
  TORCH_CHECK(alpha_in.numel() == OB * OB_CHS && int_bias_in.numel() == OB * OB_CHS &&
              int_bias_in.scalar_type() == at::kInt,
              "binary_conv2d: alpha / int_bias must be padded to a multiple of 16 channels");
  const int64_t OH = (H + 2 * padding - dilation * (k - 1) - 1) / stride + 1;
  const int64_t OW = (W + 2 * padding - dilation * (k - 1) - 1) / stride + 1;
  TORCH_CHECK(OH > 0 && OW > 0, "binary_conv2d: input too small for the kernel");

  const at::Tensor scale = scale_in.contiguous().to(at::kFloat), shift = shift_in.contiguous().to(at::kFloat);
  const at::Tensor alpha = alpha_in.contiguous().to(at::kFloat), ib = int_bias_in.contiguous();
  const at::Tensor counts = wcounts.contiguous();
  at::Tensor out = at::empty({N, out_channels, OH, OW}, x.options(), at::MemoryFormat::ChannelsLast);
  at::Tensor res;
  if (residual.has_value()) {
    res = residual->contiguous(at::MemoryFormat::ChannelsLast);
    TORCH_CHECK(res.sizes() == out.sizes() && res.scalar_type() == at::kFloat, "binary_conv2d: residual shape");
  }
  const BinaryWeights w{reinterpret_cast<const uint64_t*>(wbits.data_ptr<int64_t>()),
                        has_mask ? reinterpret_cast<const uint64_t*>(wmask.data_ptr<int64_t>()) : nullptr,
                        counts.data_ptr<int32_t>(), alpha.data_ptr<float>(), ib.data_ptr<int32_t>(), C,
                        out_channels, k};
  binary_conv_raw(x.data_ptr<float>(), C, N, H, W, 0, C, scale.data_ptr<float>(), shift.data_ptr<float>(), w, stride,
                  padding, dilation, relu, res.defined() ? res.data_ptr<float>() : nullptr, out_channels,
                  out.data_ptr<float>(), out_channels, timings);
  return out;
}

namespace {
// binary_conv2d with the seconds of its pack phase and in all (the kernels' own clock), for benchmarks.
std::vector<double> binary_conv2d_profile(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift,
                                          const at::Tensor& wbits, const at::Tensor& wmask, const at::Tensor& wcounts,
                                          const at::Tensor& alpha, const at::Tensor& int_bias, int64_t out_channels,
                                          int64_t kernel_size, int64_t stride, int64_t padding, int64_t dilation,
                                          bool relu) {
  ConvTimings t;
  binary_conv2d(x, scale, shift, wbits, wmask, wcounts, alpha, int_bias, out_channels, kernel_size, stride, padding,
                dilation, relu, c10::nullopt, &t);
  return {t.pack, t.total};
}
}  // namespace

}  // namespace bnas_kernels

TORCH_LIBRARY_IMPL(bnas_zoo, CPU, m) {
  m.impl("binary_conv2d", [](const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift,
                             const at::Tensor& wbits, const at::Tensor& wmask, const at::Tensor& wcounts,
                             const at::Tensor& alpha, const at::Tensor& int_bias, int64_t out_channels,
                             int64_t kernel_size, int64_t stride, int64_t padding, int64_t dilation, bool relu,
                             const c10::optional<at::Tensor>& residual) {
    return bnas_kernels::binary_conv2d(x, scale, shift, wbits, wmask, wcounts, alpha, int_bias, out_channels,
                                       kernel_size, stride, padding, dilation, relu, residual);
  });
}

TORCH_LIBRARY_FRAGMENT(bnas_zoo_kernels, m) {
  m.def("cpu_isa_levels() -> str[]", &bnas_kernels::cpu_isa_levels);
  m.def("cpu_isa() -> str", &bnas_kernels::cpu_isa);
  m.def("set_cpu_isa(str level) -> str", &bnas_kernels::set_cpu_isa);
  m.def("popcount_peak(str level, float seconds) -> float", &bnas_kernels::popcount_peak);
  m.def("pack_binary_weights(Tensor w) -> (Tensor, Tensor, Tensor)", &bnas_kernels::pack_binary_weights);
  m.def("binary_conv2d_profile(Tensor x, Tensor scale, Tensor shift, Tensor wbits, Tensor wmask, Tensor wcounts, "
        "Tensor alpha, Tensor int_bias, int out_channels, int kernel_size, int stride, int padding, int dilation, "
        "bool relu) -> float[]", &bnas_kernels::binary_conv2d_profile);
}
