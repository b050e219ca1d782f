// The compiled ops that other translation units call directly (ops.cpp defines them).
#pragma once
#include <ATen/ATen.h>

namespace bnas_kernels {

// bnas_zoo::binary_conv2d (schema and semantics: bnas_zoo/kernels/ops.py and reference.py).
at::Tensor binary_conv2d(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift,
                         const at::Tensor& wbits, const at::Tensor& wmask, const at::Tensor& alpha,
                         const at::Tensor& int_bias, int64_t out_channels, int64_t kernel_size, int64_t stride,
                         int64_t padding, int64_t dilation, bool relu, const c10::optional<at::Tensor>& residual);

}  // namespace bnas_kernels
