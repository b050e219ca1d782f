// torch.library CPU implementations of the bnas_zoo deployment ops, and the one run-time dispatch point
// that picks the instruction-set level. The op schemas are defined in Python (bnas_zoo/kernels/ops.py),
// beside the pure-PyTorch reference implementation that the tests compare these kernels against.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdlib>
#include <cstring>
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

bool has_avx2() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt"); }
bool has_avx512() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("popcnt");
}
bool has_avx512vp() { return has_avx512() && __builtin_cpu_supports("avx512vpopcntdq"); }
bool always() { return true; }

// best first
const Level kLevels[] = {
    {"avx512vpopcntdq", kernels_avx512vp, has_avx512vp},
    {"avx512", kernels_avx512, has_avx512},
    {"avx2", kernels_avx2, has_avx2},
    {"generic", kernels_generic, always},
};

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
  TORCH_CHECK(false, "bnas_zoo kernels: unknown instruction-set level '", name,
              "'; expected one of avx512vpopcntdq, avx512, avx2, generic");
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

}  // namespace

at::Tensor binary_conv2d(const at::Tensor& x_in, const at::Tensor& scale, const at::Tensor& shift,
                         const at::Tensor& wbits, const at::Tensor& wmask, const at::Tensor& alpha,
                         const at::Tensor& int_bias, int64_t out_channels, int64_t kernel_size, int64_t stride,
                         int64_t padding, int64_t dilation, bool relu, const c10::optional<at::Tensor>& residual) {
  TORCH_CHECK(x_in.dim() == 4 && x_in.scalar_type() == at::kFloat, "binary_conv2d: x must be a float32 NCHW tensor");
  const at::Tensor x = x_in.contiguous(at::MemoryFormat::ChannelsLast);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t k = kernel_size, Wd = (C + 63) / 64, OB = (out_channels + 15) / 16;
  TORCH_CHECK(scale.numel() == C && shift.numel() == C, "binary_conv2d: scale/shift must have one value per channel");
  TORCH_CHECK(wbits.scalar_type() == at::kLong && wbits.numel() == OB * k * k * Wd * 16 && wbits.is_contiguous(),
              "binary_conv2d: wbits does not match (out_channels, channels, kernel_size)");
  const bool has_mask = wmask.numel() > 0;
  TORCH_CHECK(!has_mask || (wmask.sizes() == wbits.sizes() && wmask.is_contiguous()), "binary_conv2d: bad wmask");
  TORCH_CHECK(alpha.numel() == OB * 16 && int_bias.numel() == OB * 16 && int_bias.scalar_type() == at::kInt,
              "binary_conv2d: alpha / int_bias must be padded to a multiple of 16 channels");
  const int64_t Hp = H + 2 * padding, Wp = W + 2 * padding;
  const int64_t OH = (Hp - dilation * (k - 1) - 1) / stride + 1, OW = (Wp - dilation * (k - 1) - 1) / stride + 1;
  TORCH_CHECK(OH > 0 && OW > 0, "binary_conv2d: input too small for the kernel");

  const at::Tensor sc = scale.contiguous().to(at::kFloat), sh = shift.contiguous().to(at::kFloat);
  at::Tensor packed = at::zeros({N, Hp, Wp, 2 * Wd}, x.options().dtype(at::kLong));
  at::Tensor count = at::zeros({N, Hp, Wp}, x.options().dtype(at::kInt));
  at::Tensor out = at::empty({N, out_channels, OH, OW}, x.options(), at::MemoryFormat::ChannelsLast);
  at::Tensor res;
  if (residual.has_value()) {
    res = residual->contiguous(at::MemoryFormat::ChannelsLast);
    TORCH_CHECK(res.sizes() == out.sizes() && res.scalar_type() == at::kFloat, "binary_conv2d: residual shape");
  }
  const Kernels* kern = active();

  PackArgs pa{x.data_ptr<float>(), sc.data_ptr<float>(), sh.data_ptr<float>(),
              reinterpret_cast<uint64_t*>(packed.data_ptr<int64_t>()), count.data_ptr<int32_t>(),
              N, H, W, C, padding, Wd, Hp, Wp};
  const int64_t pack_grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, W * C));
  at::parallel_for(0, N * H, pack_grain, [&](int64_t b, int64_t e) { kern->pack(pa, b, e); });

  const at::Tensor alpha_f = alpha.contiguous().to(at::kFloat), ib = int_bias.contiguous();
  ConvArgs ca{reinterpret_cast<const uint64_t*>(packed.data_ptr<int64_t>()), count.data_ptr<int32_t>(),
              reinterpret_cast<const uint64_t*>(wbits.data_ptr<int64_t>()),
              has_mask ? reinterpret_cast<const uint64_t*>(wmask.data_ptr<int64_t>()) : nullptr,
              alpha_f.data_ptr<float>(), ib.data_ptr<int32_t>(),
              res.defined() ? res.data_ptr<float>() : nullptr, out.data_ptr<float>(),
              N, Hp, Wp, Wd, OH, OW, out_channels, OB, k, stride, dilation, relu};
  at::parallel_for(0, N * OB * OH, 1, [&](int64_t b, int64_t e) { kern->conv(ca, b, e); });
  return out;
}

}  // namespace bnas_kernels

TORCH_LIBRARY_IMPL(bnas_zoo, CPU, m) {
  m.impl("binary_conv2d", &bnas_kernels::binary_conv2d);
}

TORCH_LIBRARY_FRAGMENT(bnas_zoo_kernels, m) {
  m.def("cpu_isa_levels() -> str[]", &bnas_kernels::cpu_isa_levels);
  m.def("cpu_isa() -> str", &bnas_kernels::cpu_isa);
  m.def("set_cpu_isa(str level) -> str", &bnas_kernels::set_cpu_isa);
}
