"""The fast training path of a binary convolution block: BatchNorm (batch statistics) -> sign -> XNOR conv
-> ReLU as one ``torch.library`` op, ``bnas_zoo::xnor_conv_block``, run on channels-last activations.

Forward (C++, ``csrc/train_ops.cpp``): the batch statistics in one pass, the latent weight centred, clamped
and packed to sign bits, then the packed XNOR-popcount convolution of the deployment kernels
(``binary_conv2d``) with the BatchNorm folded into the sign. Its convolution sums are exact integers scaled by
alpha once; the float simulation (``BinaryConvBlock``'s other path, the release's computation) rounds its
float sum term by term, so the two agree to float rounding, not bit for bit (where a sum is exactly 0, the
float one is +-rounding noise, which also decides the ReLU's gradient there).

Backward (C++): ATen's convolution backward (float, channels-last) on the recomputed sign activations and
binarized weight, the release's XNOR weight-gradient formula, and the straight-through mask 1[|y| < 1] with
the BatchNorm backward in two fused passes. The tests hold the op to the float simulation with exact sums,
written in plain PyTorch ops.

Nothing is stored for the backward but the block's input and output, the projected weight and a few
per-channel vectors: the sign activations, the BatchNorm output and the binarized weight are recomputed
(less memory than the float simulation, which keeps them).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from ..binary import center_clamp, register_fast_training_path, sign_ste, xnor_alpha, xnor_weight
from . import exact_training, ops

__all__ = ['xnor_conv_block', 'xnor_conv_block_reference', 'batch_stats_reference', 'fast_path_available']


def batch_stats_reference(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance over (N, H, W): what ``batch_stats`` computes."""
    var, mean = torch.var_mean(x.double(), dim=(0, 2, 3), unbiased=False)
    return mean.float(), var.float()


@torch.library.custom_op('bnas_zoo::xnor_conv_block', mutates_args=())
def _xnor_conv_block(x: torch.Tensor, weight: torch.Tensor, gamma: Optional[torch.Tensor],
                     beta: Optional[torch.Tensor], eps: float, stride: int, padding: int, dilation: int,
                     zero_tail: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    ops.ensure_loaded()
    return tuple(torch.ops.bnas_zoo_kernels.xnor_block_forward(
        x, weight, gamma, beta, eps, stride, padding, dilation, zero_tail))


@_xnor_conv_block.register_fake
def _xnor_conv_block_fake(x, weight, gamma, beta, eps, stride, padding, dilation, zero_tail):
    n, c, h, w = x.shape
    k = weight.shape[2]
    oh = (h + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    ow = (w + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    out = x.new_empty((n, weight.shape[0], oh, ow)).contiguous(memory_format=torch.channels_last)
    wp = torch.empty_like(weight, memory_format=torch.channels_last)
    c = c + zero_tail
    return out, x.new_empty((c,)), x.new_empty((c,)), wp, weight.new_empty((weight.shape[0],))


def _setup(ctx, inputs, output) -> None:
    x, weight, gamma, beta, eps, stride, padding, dilation, zero_tail = inputs
    out, mean, var, wp, alpha = output
    ctx.save_for_backward(x, weight, gamma, beta, out, mean, var, wp, alpha)
    ctx.conv = (stride, padding, dilation)
    ctx.eps = eps
    ctx.zero_tail = zero_tail
    ctx.mark_non_differentiable(mean, var, wp, alpha)


def _backward(ctx, g_out, *_unused):
    x, weight, gamma, beta, out, mean, var, wp, alpha = ctx.saved_tensors
    grads = torch.ops.bnas_zoo_kernels.xnor_block_backward(
        g_out, x, weight, gamma, beta, out, mean, var, wp, alpha, ctx.eps, *ctx.conv, ctx.zero_tail,
        list(ctx.needs_input_grad[:4]))
    return (*grads, None, None, None, None, None)


_xnor_conv_block.register_autograd(_backward, setup_context=_setup)


def fast_path_available() -> bool:
    """Whether the compiled kernels are there (the fast path never runs the slow reference)."""
    return ops.ensure_loaded() == 'compiled'


def xnor_conv_block(x: torch.Tensor, bn: torch.nn.BatchNorm2d, conv: torch.nn.Conv2d, zero_tail: int = 0) -> torch.Tensor:
    """``relu(conv(sign(bn(x))))`` of a training-mode binary block on the fast kernels, updating ``bn``'s
    running statistics as ``nn.BatchNorm2d`` does (momentum, or a cumulative average when it is None).

    ``zero_tail``: ``x`` leaves out its last channels, which are identically zero. They are taken as constants
    where the sums over them are per-channel (a 1x1 conv, or sign(0) = 0 without affine BatchNorm), else put
    back first."""
    if zero_tail and conv.kernel_size[0] != 1 and bn.bias is not None:
        x, zero_tail = F.pad(x, [0, 0, 0, 0, 0, zero_tail]), 0
    out, mean, var, _, _ = torch.ops.bnas_zoo.xnor_conv_block(
        x, conv.weight, bn.weight, bn.bias, bn.eps, conv.stride[0], conv.padding[0], conv.dilation[0], zero_tail)
    factor = exact_training.count_batch(bn)
    if bn.track_running_stats and bn.running_mean is not None and bn.running_var is not None:
        with torch.no_grad():
            n = x.numel() / x.shape[1]
            bn.running_mean.lerp_(mean, factor)
            bn.running_var.lerp_(var * (n / max(n - 1.0, 1.0)), factor)
    return out


def xnor_conv_block_reference(x: torch.Tensor, bn: torch.nn.BatchNorm2d, conv: torch.nn.Conv2d,
                              zero_tail: int = 0) -> torch.Tensor:
    """What :func:`xnor_conv_block` computes, in plain PyTorch ops (the tests hold the op to it): the float
    simulation (BatchNorm, straight-through sign, XNOR weight with the release's gradient, ReLU) with the
    convolution's sum exact: conv of the signs with sign(W) (integer sums), times alpha."""
    a = sign_ste(bn(F.pad(x, [0, 0, 0, 0, 0, zero_tail])))
    geometry = (conv.stride, conv.padding, conv.dilation)
    wp = center_clamp(conv.weight.detach())
    exact = F.conv2d(a, torch.sign(wp), None, *geometry) * xnor_alpha(wp).view(1, -1, 1, 1)
    y = F.conv2d(a, xnor_weight(conv.weight), None, *geometry)  # the gradient
    return F.relu(y + (exact - y).detach())


def applies(x: torch.Tensor, bn: torch.nn.BatchNorm2d, conv: torch.nn.Conv2d) -> bool:
    """Whether a training forward of this block takes the fast path: a float32 CPU input in channels-last
    layout (``model.to(memory_format=torch.channels_last)`` and channels-last images), binary weights, the
    compiled kernels present, and neither tracing (torch.fx, torch.jit), exporting nor torch.compile."""
    if not isinstance(x, torch.Tensor):  # a torch.fx proxy: traced graphs record the float simulation
        return False
    if not (x.dim() == 4 and x.dtype == torch.float32 and x.device.type == 'cpu' and not x.is_contiguous()
            and x.is_contiguous(memory_format=torch.channels_last)):
        return False
    if not (getattr(conv, 'binary_weights', False) and not getattr(conv, 'deployed', False) and conv.groups == 1
            and conv.bias is None and conv.weight.dtype == torch.float32
            and conv.kernel_size[0] == conv.kernel_size[1] and conv.stride[0] == conv.stride[1]
            and conv.padding[0] == conv.padding[1] and conv.dilation[0] == conv.dilation[1]):
        return False
    if torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return False
    return fast_path_available()


def _fast_block(x: torch.Tensor, bn: torch.nn.BatchNorm2d, conv: torch.nn.Conv2d, zero_tail: int = 0) -> torch.Tensor:
    if x.is_contiguous():  # the float simulation with the fused BatchNorm-sign (exact_training.applies)
        return exact_training.float_block(x, bn, conv, zero_tail)
    return xnor_conv_block(x, bn, conv, zero_tail)


def _fast_applies(x: torch.Tensor, bn: torch.nn.BatchNorm2d, conv: torch.nn.Conv2d) -> bool:
    return applies(x, bn, conv) or exact_training.applies(x, bn, conv)


# channels-last blocks run the packed XNOR kernels (this module); contiguous ones the float simulation with
# its BatchNorm and sign fused (exact_training: the same values as the plain ops)
register_fast_training_path(_fast_applies, _fast_block)
