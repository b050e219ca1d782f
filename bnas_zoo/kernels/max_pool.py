"""The cells' 3x3 max pooling (``bnas_zoo.operations.MaxPool3x3``) on contiguous float32 CPU tensors as one
``torch.library`` op, ``bnas_zoo::max_pool3x3``: the compiled kernel (``csrc/max_pool.cpp``) computes the same
values and the same argmax positions as PyTorch's ``max_pool2d_with_indices`` (the first maximum in window
order, NaN taken), and the backward is PyTorch's own ``max_pool2d_with_indices_backward`` on those positions,
so the gradients are PyTorch's bit for bit. PyTorch's contiguous CPU kernel scans each window element by
element; this one applies each window element to a whole plane's outputs in one vectorized loop (6-10x faster
at the cells' sizes).
"""
from __future__ import annotations

from typing import Tuple

import torch

from ..operations import register_fast_max_pool
from . import ops

__all__ = ['applies', 'max_pool3x3']


@torch.library.custom_op('bnas_zoo::max_pool3x3', mutates_args=())
def _max_pool3x3(x: torch.Tensor, stride: int) -> Tuple[torch.Tensor, torch.Tensor]:
    ops.ensure_loaded()
    return tuple(torch.ops.bnas_zoo_kernels.max_pool3x3(x, stride))


@_max_pool3x3.register_fake
def _max_pool3x3_fake(x, stride):
    n, c, h, w = x.shape
    shape = (n, c, (h - 1) // stride + 1, (w - 1) // stride + 1)
    return x.new_empty(shape), x.new_empty(shape, dtype=torch.long)


def _setup(ctx, inputs, output) -> None:
    x, stride = inputs
    ctx.stride = stride
    ctx.save_for_backward(x, output[1])
    ctx.mark_non_differentiable(output[1])


def _backward(ctx, g_out, _g_indices):
    x, indices = ctx.saved_tensors
    s = ctx.stride
    return torch.ops.aten.max_pool2d_with_indices_backward(
        g_out, x, [3, 3], [s, s], [1, 1], [1, 1], False, indices), None


_max_pool3x3.register_autograd(_backward, setup_context=_setup)


def max_pool3x3(x: torch.Tensor, stride: int) -> torch.Tensor:
    """``F.max_pool2d(x, 3, stride, 1)`` of a contiguous float32 CPU tensor, values and gradients bit for bit."""
    return torch.ops.bnas_zoo.max_pool3x3(x, stride)[0]


def applies(x: torch.Tensor, stride: int) -> bool:
    """Whether :func:`max_pool3x3` computes the pooling: a contiguous 4-d float32 CPU tensor with planes, stride
    1 or 2, and the compiled kernels already loaded (training loads them; a pooling alone does not start their
    build). ``MaxPool3x3`` asks only outside tracing, torch.compile and export (they record plain ``max_pool2d``)."""
    if not isinstance(x, torch.Tensor) or stride not in (1, 2):  # (x: a torch.fx proxy)
        return False
    if not (x.dim() == 4 and x.dtype == torch.float32 and x.device.type == 'cpu' and x.is_contiguous()
            and x.shape[2] > 0 and x.shape[3] > 0 and x.shape[2] * x.shape[3] < 2 ** 31):
        return False
    return ops.loaded()


register_fast_max_pool(applies, max_pool3x3)
