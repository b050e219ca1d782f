"""The float simulation of a training-mode binary block on a contiguous float32 CPU tensor (the release's
computation: what runs without ``channels_last``), with its BatchNorm and sign fused into one op,
``bnas_zoo::batch_norm_sign``, that computes them bit for bit as ``nn.BatchNorm2d`` and ``torch.sign`` do.

ATen's BatchNorm on a contiguous CPU tensor sums each channel in one sequential double-precision chain, which
runs at the latency of an add whatever the memory can deliver; the C++ op (``csrc/exact_bn_sign.cpp``)
computes the same chains in the same order, several channels at a time, then the sign of ATen's folded
``x * alpha + beta`` in one pass without storing it. The signs, the statistics and the running averages are
therefore identical to the plain ops', and so is everything the network computes from them; the backward (the
straight-through mask and the BatchNorm's gradient in two fused passes) agrees with autograd's to float
rounding. A zero tail (identically zero trailing channels left out of the input, see ``bnas_zoo/cell.py``)
is taken as constants instead of being padded back.

Whether this machine's ATen computes exactly so (its BatchNorm kernel is compiled for the CPU's instruction
set, with or without fused multiply-adds) is checked once per process against ``torch.native_batch_norm``
(:func:`available`); where it does not match, the block computes with the plain ops, as before.
"""
from __future__ import annotations

import threading
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..binary import sign_ste, xnor_weight_value
from . import ops

__all__ = ['available', 'applies', 'batch_norm_sign', 'count_batch', 'float_block', 'batch_norm_sign_reference',
           'xnor_weight']


@torch.library.custom_op('bnas_zoo::batch_norm_sign', mutates_args=())
def _batch_norm_sign(x: torch.Tensor, gamma: Optional[torch.Tensor], beta: Optional[torch.Tensor],
                     running_mean: Optional[torch.Tensor], running_var: Optional[torch.Tensor], momentum: float,
                     eps: float, zero_tail: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                                           torch.Tensor]:
    ops.ensure_loaded()
    return tuple(torch.ops.bnas_zoo_kernels.batch_norm_sign(
        x, gamma, beta, running_mean, running_var, momentum, eps, zero_tail, False))


@_batch_norm_sign.register_fake
def _batch_norm_sign_fake(x, gamma, beta, running_mean, running_var, momentum, eps, zero_tail):
    n, c, h, w = x.shape
    stats = 0 if running_mean is None or running_var is None else c + zero_tail
    return (x.new_empty((n, c + zero_tail, h, w)), x.new_empty((c,)), x.new_empty((c,)), x.new_empty((stats,)),
            x.new_empty((stats,)))


def _setup(ctx, inputs, output) -> None:
    x, gamma, beta = inputs[:3]
    _, mean, invstd, new_rm, new_rv = output
    ctx.save_for_backward(x, gamma, beta, mean, invstd)
    ctx.mark_non_differentiable(mean, invstd, new_rm, new_rv)


def _backward(ctx, g_a, *_unused):
    x, gamma, beta, mean, invstd = ctx.saved_tensors
    g_x, g_gamma, g_beta = torch.ops.bnas_zoo_kernels.batch_norm_sign_backward(
        g_a, x, gamma, beta, mean, invstd, list(ctx.needs_input_grad[:3]))
    return g_x, g_gamma, g_beta, None, None, None, None, None


_batch_norm_sign.register_autograd(_backward, setup_context=_setup)


@torch.library.custom_op('bnas_zoo::xnor_weight_float32', mutates_args=())
def _xnor_weight(w: torch.Tensor) -> torch.Tensor:
    return xnor_weight_value(w)


@_xnor_weight.register_fake
def _xnor_weight_fake(w):
    return torch.empty_like(w)


def _save_output(ctx, inputs, output) -> None:
    ctx.save_for_backward(output)


def _xnor_weight_backward(ctx, g):
    (w_bin,) = ctx.saved_tensors
    return torch.ops.bnas_zoo_kernels.xnor_weight_backward(w_bin, None, g)


_xnor_weight.register_autograd(_xnor_weight_backward, setup_context=_save_output)


def xnor_weight(w: torch.Tensor) -> torch.Tensor:
    """``bnas_zoo.binary.xnor_weight`` of a float32 CPU latent weight: the same binarized value, bit for bit
    (the same ATen ops), and the release's gradient formula in one C++ pass (``xnor_weight_backward``) instead of
    a dozen tensor ops over the weight. It needs only the binarized weight: its signs are those of the centred,
    clamped latent and its magnitude is alpha (the clamp keeps the mask of the formula at 1). The gradient
    agrees with the Python formula's to float rounding (the sums run in another order)."""
    return torch.ops.bnas_zoo.xnor_weight_float32(w)


def count_batch(bn: nn.BatchNorm2d) -> float:
    """Count one training batch in ``bn.num_batches_tracked`` and return the factor of its running averages,
    as ``nn.BatchNorm2d``'s forward does: the momentum, or 1 / batches counted when the momentum is None."""
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    return factor


def batch_norm_sign(x: torch.Tensor, bn: nn.BatchNorm2d, zero_tail: int = 0) -> torch.Tensor:
    """``sign_ste(bn(F.pad(x, zero_tail more zero channels)))`` of a training-mode ``bn``, bit for bit, updating
    its running statistics (and ``num_batches_tracked``) exactly as ``nn.BatchNorm2d`` does."""
    factor = count_batch(bn)
    track = bn.track_running_stats and bn.running_mean is not None and bn.running_var is not None
    a, _, _, new_rm, new_rv = torch.ops.bnas_zoo.batch_norm_sign(
        x, bn.weight, bn.bias, bn.running_mean if track else None, bn.running_var if track else None,
        float(factor), float(bn.eps), int(zero_tail))
    if track:
        with torch.no_grad():
            bn.running_mean.copy_(new_rm)
            bn.running_var.copy_(new_rv)
    return a


def batch_norm_sign_reference(x: torch.Tensor, bn: nn.BatchNorm2d, zero_tail: int = 0) -> torch.Tensor:
    """What :func:`batch_norm_sign` computes, in plain ops (the float simulation's own)."""
    return sign_ste(bn(F.pad(x, [0, 0, 0, 0, 0, zero_tail]) if zero_tail else x))


def float_block(x: torch.Tensor, bn: nn.BatchNorm2d, conv: nn.Conv2d, zero_tail: int = 0) -> torch.Tensor:
    """A training-mode BinaryConvBlock's float simulation, ``relu(conv(sign(bn(x))))``, with the fused
    BatchNorm-sign and the XNOR weight's gradient in C++ (:func:`xnor_weight`): the same values, bit for bit,
    as the block's plain ops."""
    binarized = xnor_weight(conv.weight) if conv.binary_weights and conv.weight.dtype == torch.float32 else None
    return F.relu(conv.forward_signed(batch_norm_sign(x, bn, zero_tail), binarized), inplace=True)


_check = {'ok': None}
_check_lock = threading.Lock()


def _matches_aten() -> bool:
    """Whether the fused op reproduces this machine's ``torch.native_batch_norm`` bit for bit: outputs (the
    values themselves, not only their signs), saved statistics and running averages, on data with large
    means, a constant channel, odd sizes and a zero tail."""
    gen = torch.Generator().manual_seed(0)
    for n, c, h, w, tail, momentum in ((3, 19, 7, 5, 0, 0.1), (2, 24, 16, 16, 3, 1 / 3), (1, 9, 3, 1, 2, 0.7)):
        x = torch.randn(n, c, h, w, generator=gen) * torch.rand(1, c, 1, 1, generator=gen) * 8 + \
            torch.randn(1, c, 1, 1, generator=gen) * 4
        x[:, 1] = 0.5  # a channel without variance
        gamma, beta = torch.randn(c + tail, generator=gen), torch.randn(c + tail, generator=gen)
        rm, rv = torch.randn(c + tail, generator=gen), torch.rand(c + tail, generator=gen) + 0.5
        full = F.pad(x, [0, 0, 0, 0, 0, tail])
        rm_ref, rv_ref = rm.clone(), rv.clone()
        y_ref, mean_ref, invstd_ref = torch.native_batch_norm(full, gamma, beta, rm_ref, rv_ref, True, momentum, 1e-5)
        y, mean, invstd, rm_new, rv_new = torch.ops.bnas_zoo_kernels.batch_norm_sign(
            x, gamma, beta, rm, rv, momentum, 1e-5, tail, True)
        if not (torch.equal(y, y_ref) and torch.equal(mean, mean_ref[:c]) and torch.equal(invstd, invstd_ref[:c])
                and torch.equal(rm_new, rm_ref) and torch.equal(rv_new, rv_ref)):
            return False
    return True


def available() -> bool:
    """Whether the fused op is used here: the compiled kernels are present and reproduce this machine's
    BatchNorm bit for bit (checked once per process)."""
    if _check['ok'] is None:
        with _check_lock:
            if _check['ok'] is None:
                _check['ok'] = ops.ensure_loaded() == 'compiled' and _matches_aten()
    return bool(_check['ok'])


def applies(x: torch.Tensor, bn: nn.Module, conv: nn.Module) -> bool:
    """Whether a block's training forward takes :func:`float_block`: a contiguous float32 CPU input outside
    autocast, a plain float32 ``nn.BatchNorm2d`` in training mode, a binary conv holding latent weights, no
    tracing, export or torch.compile, and the check of :func:`available` passed."""
    if not isinstance(x, torch.Tensor):  # a torch.fx proxy
        return False
    if not (x.dim() == 4 and x.dtype == torch.float32 and x.device.type == 'cpu' and x.is_contiguous()
            and x.shape[0] * x.shape[2] * x.shape[3] > 1 and x.shape[1] > 0):  # (else BatchNorm's own error)
        return False
    if type(bn) is not nn.BatchNorm2d or not bn.training:
        return False
    if not all(t is None or (t.dtype == torch.float32 and t.device.type == 'cpu' and t.is_contiguous())
               for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var)):
        return False
    if getattr(conv, 'deployed', True) or not hasattr(conv, 'forward_signed'):
        return False
    if torch.is_autocast_enabled('cpu') or torch.jit.is_tracing() or torch.compiler.is_compiling() \
            or torch.compiler.is_exporting():
        return False
    return available()
