"""The deployment kernels' definitions in plain PyTorch: the weight bit layout, and the reference
``binary_conv2d`` that the compiled kernels are tested against (and that runs where they cannot be built).

``binary_conv2d`` computes, for a float input ``x`` (N, C, H, W)::

    a   = sign(x * scale + shift)                 # BatchNorm folded to a per-channel affine map; sign(0) = 0
    y   = conv2d(a, w, zero padding) + int_bias   # w in {-1, 0, +1}: an exact integer in float32
    out = relu(alpha * y) + residual              # relu and residual optional

The integer sum is exact (it stays far below 2**24), so the only rounding is ``alpha * y`` and the residual
addition, done in the same order by the compiled kernels: the two agree bit for bit.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

__all__ = ['OB_CHS', 'pack_weight_words', 'unpack_weight_words', 'binary_conv2d_reference', 'pad_channels']

#: output channels per weight block of the kernels' layout
OB_CHS = 16
_BIT = torch.tensor([1 << b for b in range(63)] + [-(1 << 63)], dtype=torch.int64)


def _words(bits: torch.Tensor) -> torch.Tensor:
    """bool (..., 64) -> int64 (...): bit b of the word is element b."""
    return (bits.to(torch.int64) * _BIT).sum(-1)


def pack_weight_words(sign: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ternary weights (out, in, k, k) in {-1, 0, +1} (any dtype; only the signs count) -> the kernels'
    ``(wbits, wmask, wcounts)``.

    ``wbits`` and ``wmask``: int64 (ceil(out / 16), Kw, 16): for each block of 16 output channels, the reduction
    index K = tap * in + channel (tap = kh * k + kw) packed densely into Kw = ceil(k * k * in / 64) words, one
    word per output channel; bit b of word j is K = 64 * j + b. ``wbits`` holds the sign bit (1 = negative, 0
    for a zero weight), ``wmask`` the non-zero bit; ``wmask`` is empty when no weight is zero (the common case).
    ``wcounts``: int32 (k * k + 1, ceil(out / 16) * 16): row t < k * k holds 2 * T - V of tap t (T its negative
    and V its non-zero weights: what a padded tap takes back from the XOR count), the last row V of all taps.
    """
    out_chs, in_chs, kh, kw = sign.shape
    taps = kh * kw
    ob = -(-out_chs // OB_CHS)
    kw_words = -(-(taps * in_chs) // 64)
    # (out, taps, in): the reduction index K = tap * in + c is the flattened last two dimensions
    s = torch.zeros(ob * OB_CHS, kw_words * 64, dtype=torch.bool)
    m = torch.zeros_like(s)
    per_tap = sign.permute(0, 2, 3, 1).reshape(out_chs, taps, in_chs)
    s[:out_chs, :taps * in_chs] = (per_tap < 0).reshape(out_chs, -1)
    m[:out_chs, :taps * in_chs] = (per_tap != 0).reshape(out_chs, -1)

    def layout(b: torch.Tensor) -> torch.Tensor:
        # (ob*16, Kw*64) -> (ob, Kw, 16, 64) -> words
        return _words(b.view(ob, OB_CHS, kw_words, 64).permute(0, 2, 1, 3)).contiguous()

    counts = torch.zeros(taps + 1, ob * OB_CHS, dtype=torch.int32)
    neg = (per_tap < 0).sum(2).to(torch.int32)    # (out, taps)
    nonzero = (per_tap != 0).sum(2).to(torch.int32)
    counts[:taps, :out_chs] = (2 * neg - nonzero).t()
    counts[taps, :out_chs] = nonzero.sum(1)
    has_zero = bool((sign == 0).any())
    return layout(s), (layout(m) if has_zero else torch.zeros(0, dtype=torch.int64)), counts


def unpack_weight_words(wbits: torch.Tensor, wmask: torch.Tensor, out_chs: int, in_chs: int,
                        kernel_size: int) -> torch.Tensor:
    """The inverse of :func:`pack_weight_words`: float32 ternary weights (out, in, k, k)."""
    ob, kw_words, _ = wbits.shape
    taps = kernel_size * kernel_size
    bit = _BIT.view(1, 1, 1, 64)

    def bits(words: torch.Tensor) -> torch.Tensor:  # (ob, Kw, 16) -> (ob*16, taps * in) bool
        b = (words.unsqueeze(-1) & bit) != 0
        return b.permute(0, 2, 1, 3).reshape(ob * OB_CHS, kw_words * 64)[:, :taps * in_chs]

    w = 1.0 - 2.0 * bits(wbits).float()
    if wmask.numel():
        w = w * bits(wmask).float()
    w = w[:out_chs].view(out_chs, kernel_size, kernel_size, in_chs).permute(0, 3, 1, 2)
    return w.contiguous()


def pad_channels(t: torch.Tensor, n: int, value: float = 0.0) -> torch.Tensor:
    """A 1-D per-channel tensor padded to ``n`` entries."""
    return F.pad(t, (0, n - t.numel()), value=value)


def binary_conv2d_reference(
        x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, wbits: torch.Tensor, wmask: torch.Tensor,
        wcounts: torch.Tensor, alpha: torch.Tensor, int_bias: torch.Tensor, out_channels: int, kernel_size: int,
        stride: int, padding: int, dilation: int, relu: bool, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``bnas_zoo::binary_conv2d`` in plain PyTorch (see the module docstring; ``wcounts`` is derived from the
    weights and only serves the compiled kernels)."""
    c = x.shape[1]
    a = torch.sign(x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)).nan_to_num(0.0)
    w = unpack_weight_words(wbits, wmask, out_channels, c, kernel_size)
    y = F.conv2d(a, w, None, stride, padding, dilation)
    y = y + int_bias[:out_channels].view(1, -1, 1, 1).float()
    y = alpha[:out_channels].view(1, -1, 1, 1) * y
    if relu:
        y = torch.relu(y)
    if residual is not None:
        y = y + residual
    return y.contiguous(memory_format=torch.channels_last)
