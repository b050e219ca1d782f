"""The fast training path of a binary convolution block: BatchNorm (batch statistics) -> sign -> XNOR conv
-> ReLU as one ``torch.library`` op, ``bnas_zoo::xnor_conv_block``, run on channels-last activations.

Forward: the batch statistics in one pass (``batch_stats``), the latent weight centred, clamped and packed to
sign bits (``pack_weight_signs``), then the packed XNOR-popcount convolution of the deployment kernels
(``binary_conv2d``) with the BatchNorm folded into the sign. The convolution sums are exact integers scaled
by alpha once; the float simulation (``BinaryConvBlock``'s other path, the release's computation) rounds its
float sum term by term, so the two agree to float rounding, not bit for bit.

Backward: ATen's convolution backward (float, channels-last) on the recomputed sign activations and
binarized weight, the release's XNOR weight-gradient formula, the straight-through mask 1[|y| < 1] and
ATen's BatchNorm backward: the gradients of :func:`xnor_conv_block_reference` (the float simulation, written
with the ops of ``bnas_zoo.binary``), which the tests hold this op to.

Nothing is stored for the backward but the block's input and output and a few per-channel vectors: the sign
activations, the BatchNorm output and the binarized weight are recomputed (less memory than the float
simulation, which keeps them).
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F

from . import ops
from .reference import OB_CHS, pad_channels

__all__ = ['xnor_conv_block', 'xnor_conv_block_reference', 'batch_stats_reference', 'fast_path_available']


def batch_stats_reference(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance over (N, H, W): what ``batch_stats`` computes."""
    var, mean = torch.var_mean(x.double(), dim=(0, 2, 3), unbiased=False)
    return mean.float(), var.float()


def _folded(mean, var, gamma, beta, eps) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """invstd, and the BatchNorm as y = x * scale + shift."""
    invstd = torch.rsqrt(var + eps)
    scale = invstd if gamma is None else invstd * gamma
    shift = -mean * scale if beta is None else beta - mean * scale
    return invstd, scale, shift


def _binarized(weight: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The centred, clamped latent weight (contiguous) and its alpha (one per output channel, flat)."""
    return torch.ops.bnas_zoo_kernels.xnor_project(weight)


@torch.library.custom_op('bnas_zoo::xnor_conv_block', mutates_args=())
def _xnor_conv_block(x: torch.Tensor, weight: torch.Tensor, gamma: Optional[torch.Tensor],
                     beta: Optional[torch.Tensor], eps: float, stride: int, padding: int, dilation: int,
                     zero_tail: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    live = x.shape[1]
    mean, var = torch.ops.bnas_zoo_kernels.batch_stats(x)
    _, scale, shift = _folded(mean, var, _live(gamma, live), _live(beta, live), eps)
    wp, alpha = _binarized(weight)
    wbits, wmask = torch.ops.bnas_zoo_kernels.pack_weight_signs(wp[:, :live] if zero_tail else wp)
    out_chs, k = weight.shape[0], weight.shape[2]
    blocks = -(-out_chs // OB_CHS) * OB_CHS
    int_bias = torch.zeros(blocks, dtype=torch.int32)
    if zero_tail and beta is not None:  # the constant channels: sign(beta) through the 1x1 conv, exactly
        int_bias[:out_chs] = (torch.sign(wp[:, live:]).flatten(1) @ torch.sign(beta[live:])).round().to(torch.int32)
    out = torch.ops.bnas_zoo.binary_conv2d(
        x, scale, shift, wbits, wmask, pad_channels(alpha, blocks), int_bias, out_chs, k, stride, padding, dilation,
        True, None)
    if zero_tail:  # the left-out channels' batch statistics: exactly zero
        mean, var = F.pad(mean, (0, zero_tail)), F.pad(var, (0, zero_tail))
    return out, mean, var, wp, alpha


def _live(t: Optional[torch.Tensor], live: int) -> Optional[torch.Tensor]:
    return None if t is None else t[:live]


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


def _is_channels_last(t: torch.Tensor) -> bool:
    return not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def _backward(ctx, g_out, *_unused):
    x, weight, gamma, beta, out, mean, var, wp, alpha = ctx.saved_tensors
    stride, padding, dilation = ctx.conv
    live, tail = x.shape[1], ctx.zero_tail
    g_live, b_live = _live(gamma, live), _live(beta, live)
    invstd, scale, shift = _folded(mean[:live], var[:live], g_live, b_live, ctx.eps)
    g_conv = torch.ops.aten.threshold_backward(g_out, out, 0.0)  # the ReLU
    a = torch.ops.bnas_zoo_kernels.bn_sign(x, scale, shift)  # the sign activations, recomputed
    w_bin = torch.sign(wp) * alpha.view(-1, 1, 1, 1)
    need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    need_affine = [gamma is not None and ctx.needs_input_grad[2], beta is not None and ctx.needs_input_grad[3]]
    g_a, g_wbin, _ = torch.ops.aten.convolution_backward(
        g_conv, a, w_bin[:, :live].contiguous(memory_format=torch.channels_last) if tail else w_bin, None,
        [stride] * 2, [padding] * 2, [dilation] * 2, False, [0, 0], 1, [need_x or any(need_affine), need_w, False])
    # the constant channels (zero tail, 1x1 conv): a = sign(beta) at every pixel, so their sums are per-channel
    tail_sign = torch.sign(beta[live:]) if tail and beta is not None else None
    g_sum = g_conv.sum(dim=(0, 2, 3)) if tail_sign is not None else None
    g_w = None
    if need_w:  # the release's XNOR-Net formula, in the latent weight's own memory layout
        if tail:
            g_tail = (g_sum[:, None] * tail_sign[None, :] if tail_sign is not None
                      else g_wbin.new_zeros(g_wbin.shape[0], tail)).view(g_wbin.shape[0], tail, 1, 1)
            g_wbin = torch.cat([g_wbin, g_tail.expand(-1, -1, g_wbin.shape[2], g_wbin.shape[3])], dim=1)
        g_w = torch.ops.bnas_zoo_kernels.xnor_weight_backward(wp, alpha, g_wbin)
        g_w = g_w if _is_channels_last(weight) else g_w.contiguous()
    g_x = g_gamma = g_beta = None
    if g_a is not None:  # the straight-through sign and the BatchNorm, in two fused passes
        gain = g_live if g_live is not None else torch.ones_like(scale)
        g_x, g_gamma, g_beta = torch.ops.bnas_zoo_kernels.bn_sign_backward(
            g_a, x, scale, shift, mean[:live].contiguous(), invstd, gain)
        if tail and gamma is not None:  # constant channels: xhat = 0, so no gamma gradient
            g_gamma = F.pad(g_gamma, (0, tail))
        if tail and beta is not None:  # sum over pixels of the straight-through gradient at sign(beta)
            g_a_tail = (w_bin[:, live:].flatten(1) * g_sum[:, None]).sum(0)
            g_beta = torch.cat([g_beta, g_a_tail * (beta[live:].abs() < 1.0).to(g_a_tail.dtype)])
        g_x = g_x if need_x else None
        g_gamma = g_gamma if need_affine[0] else None
        g_beta = g_beta if need_affine[1] else None
    return g_x, g_w, g_gamma, g_beta, None, None, None, None, None


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
    if bn.track_running_stats and bn.running_mean is not None and bn.running_var is not None:
        with torch.no_grad():
            factor = bn.momentum
            if bn.num_batches_tracked is not None:
                bn.num_batches_tracked.add_(1)
                if factor is None:
                    factor = 1.0 / float(bn.num_batches_tracked)
            n = x.numel() / x.shape[1]
            bn.running_mean.lerp_(mean, factor)
            bn.running_var.lerp_(var * (n / max(n - 1.0, 1.0)), factor)
    return out


def xnor_conv_block_reference(x: torch.Tensor, bn: torch.nn.BatchNorm2d, conv: torch.nn.Conv2d,
                              zero_tail: int = 0) -> torch.Tensor:
    """The same block as the float simulation computes it (the release's way): its definition."""
    from ..binary import sign_ste, xnor_weight
    a = sign_ste(bn(F.pad(x, [0, 0, 0, 0, 0, zero_tail])))
    return F.relu(F.conv2d(a, xnor_weight(conv.weight), None, conv.stride, conv.padding, conv.dilation))


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
