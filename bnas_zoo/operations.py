"""The operations of the BNAS search space, built from their genotype names."""
from __future__ import annotations

from typing import Callable, Dict, Optional

import torch
import torch.nn as nn

from .binary import BinaryConvBlock, BinarySepConvBlock

__all__ = ['Zeroise', 'OPS', 'PARAMETER_FREE', 'CONV_OPS', 'SEP_CONV_OPS', 'build_op', 'edge_stride']


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


OpFactory = Callable[[int, int, bool], nn.Module]

#: name -> factory(channels, stride, binary_weights); ``none`` builds nothing.
OPS: Dict[str, Optional[OpFactory]] = {
    'none': None,
    'max_pool_3x3': lambda c, s, b: nn.MaxPool2d(3, stride=s, padding=1),
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
