"""The operations of the BNAS search space, built from their genotype names."""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .binary import BinaryConvBlock, BinarySepConvBlock, _is_exporting

__all__ = ['Zeroise', 'MaxPool3x3', 'OPS', 'PARAMETER_FREE', 'CONV_OPS', 'SEP_CONV_OPS', 'build_op', 'edge_stride',
           'register_fast_max_pool']

#: (applies(x, stride), run(x, stride)) of a faster computation of :class:`MaxPool3x3` with the same values and argmax
#: positions (consulted only outside tracing, torch.compile and export), installed by whoever provides one (``bnas_zoo.kernels.max_pool``, which ``import bnas_zoo``
#: loads): the operation knows no fast path, the fast path knows the operation
_FAST_MAX_POOL: Optional[Tuple[Callable[[torch.Tensor, int], bool], Callable[[torch.Tensor, int], torch.Tensor]]] = None


def register_fast_max_pool(applies: Optional[Callable[[torch.Tensor, int], bool]],
                           run: Optional[Callable[[torch.Tensor, int], torch.Tensor]]) -> None:
    """Install the fast computation of :class:`MaxPool3x3` (``None, None`` removes it): ``applies(x, stride)``
    decides per call, ``run(x, stride)`` pools."""
    global _FAST_MAX_POOL
    _FAST_MAX_POOL = None if applies is None else (applies, run)


class Zeroise(nn.Module):
    """The Zeroise layer (``none``): an all-zero tensor, spatially subsampled by the stride.

    Compiled networks never run it on a path: an identically-zero edge or node is dropped from the
    graph. It is used only where a zero node must exist as a tensor (a convolution reads it).
    """

    def __init__(self, stride: int = 1):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x[:, :, ::self.stride, ::self.stride])


class MaxPool3x3(nn.MaxPool2d):
    """The cells' 3x3 max pooling (padding 1): ``nn.MaxPool2d(3, stride, 1)``, the same values and the same
    argmax positions (so the same gradients), computed faster on contiguous CPU tensors than by PyTorch's
    contiguous kernel: by the compiled kernel where one is installed (:func:`register_fast_max_pool`; 6-10x at
    the cells' sizes), else through a channels-last copy (PyTorch's channels-last kernel takes the first maximum
    in window order too; tested; 1.2-2x with its backward at the search's sizes). Tracing, export and
    TorchScript see plain ``max_pool2d``."""

    def __init__(self, stride: int):
        super().__init__(3, stride=stride, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():  # (TorchScript compiles the plain pooling only)
            if not (torch.jit.is_tracing() or torch.compiler.is_compiling() or _is_exporting()):  # (these record it)
                fast = _FAST_MAX_POOL
                if fast is not None and fast[0](x, self.stride):
                    return fast[1](x, self.stride)
                if isinstance(x, torch.Tensor) and x.dim() == 4 and x.device.type == 'cpu' and x.is_contiguous():
                    return F.max_pool2d(x.contiguous(memory_format=torch.channels_last), 3, self.stride,
                                        1).contiguous()
        return F.max_pool2d(x, 3, self.stride, 1)


OpFactory = Callable[[int, int, bool], nn.Module]

#: name -> factory(channels, stride, binary_weights); ``none`` builds nothing.
OPS: Dict[str, Optional[OpFactory]] = {
    'none': None,
    'max_pool_3x3': lambda c, s, b: MaxPool3x3(s),
    'avg_pool_3x3': lambda c, s, b: nn.AvgPool2d(3, stride=s, padding=1, count_include_pad=False),
    'bin_conv_3x3': lambda c, s, b: BinaryConvBlock(c, c, 3, stride=s, binary_weights=b),
    'bin_conv_5x5': lambda c, s, b: BinaryConvBlock(c, c, 5, stride=s, binary_weights=b),
    'bin_dil_conv_3x3': lambda c, s, b: BinaryConvBlock(c, c, 3, stride=s, dilation=2, binary_weights=b),
    'bin_dil_conv_5x5': lambda c, s, b: BinaryConvBlock(c, c, 5, stride=s, dilation=2, binary_weights=b),
    # not in the BNAS search space: for the comparison with separable convolutions (paper Tables 10, 13, 15)
    'bin_sep_conv_3x3': lambda c, s, b: BinarySepConvBlock(c, c, 3, stride=s, binary_weights=b),
    'bin_sep_conv_5x5': lambda c, s, b: BinarySepConvBlock(c, c, 5, stride=s, binary_weights=b),
}

#: Operations that map an all-zero input to an all-zero output and hold no parameters.
PARAMETER_FREE = frozenset({'max_pool_3x3', 'avg_pool_3x3'})
#: Operations holding a (binary) convolution.
CONV_OPS = frozenset(n for n in OPS if n.startswith('bin_'))
#: The separable convolutions added for the search-space comparison.
SEP_CONV_OPS = ('bin_sep_conv_3x3', 'bin_sep_conv_5x5')


def edge_stride(reduction: bool, input_node: int) -> int:
    """Stride 2 when an edge of a reduction cell reads a cell input (node 0 or 1), else 1."""
    return 2 if reduction and input_node < 2 else 1


def build_op(name: str, channels: int, stride: int, binary_weights: bool = True) -> nn.Module:
    factory = OPS[name]
    if factory is None:
        raise ValueError(f'{name!r} (Zeroise) builds no module')
    return factory(channels, stride, binary_weights)
