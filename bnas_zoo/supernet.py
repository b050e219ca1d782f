"""The BNAS search supernet: every edge a MixedOp, a softmax(alpha)-weighted sum of all candidate
operations, in the same inter-cell skip template as the final networks.

As in the release: all BatchNorms are non-affine, pooling ops are followed by a non-affine BatchNorm, only the
MixedOp convolutions are binary (the cell preprocessing and the reduction shortcuts are full precision).
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .binary import BinaryConvBlock, BinarySepConvBlock
from .network import CifarStem
from .operations import MaxPool3x3, Zeroise, edge_stride

__all__ = ['MaxPool3x3', 'MixedOp', 'SearchCell', 'Supernet', 'search_op']


def _sum(terms: Iterable[torch.Tensor]) -> torch.Tensor:
    """The terms added left to right, from the first (Python's sum starts from 0: one more full-size add, and
    the same values)."""
    it = iter(terms)
    total = next(it)
    for t in it:
        total = total + t
    return total


class FPConvBlock(nn.Sequential):
    """Full-precision preprocessing: BatchNorm (non-affine) -> conv -> ReLU."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(c_in, affine=False)
        self.conv = nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False)
        self.act = nn.ReLU()


def search_op(name: str, c: int, stride: int) -> nn.Module:
    """A candidate operation of the supernet."""
    if name == 'none':
        return Zeroise(stride)
    if name in ('max_pool_3x3', 'avg_pool_3x3'):
        pool = (MaxPool3x3(stride) if name == 'max_pool_3x3'
                else nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False))
        return nn.Sequential(pool, nn.BatchNorm2d(c, affine=False))
    k = int(name[-1])
    if name.startswith('bin_sep_conv'):
        return BinarySepConvBlock(c, c, k, stride=stride, affine=False)
    dilation = 2 if name.startswith('bin_dil_conv') else 1
    return BinaryConvBlock(c, c, k, stride=stride, dilation=dilation, affine=False)


class MixedOp(nn.Module):
    def __init__(self, ops: Sequence[str], c: int, stride: int):
        super().__init__()
        self.names = list(ops)
        self.ops = nn.ModuleList([search_op(n, c, stride) for n in ops])

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return _sum(w * op(x) for w, op in zip(weights, self.ops) if not isinstance(op, Zeroise))


class SearchCell(nn.Module):
    def __init__(self, ops: Sequence[str], steps: int, c_pp: int, c_p: int, c: int, reduction: bool,
                 reduction_prev: bool, skip: bool):
        super().__init__()
        self.reduction, self.steps, self.skip = reduction, steps, skip
        self.preprocess0 = FPConvBlock(c_pp, c, 3, 2) if reduction_prev else FPConvBlock(c_pp, c, 1, 1)
        self.preprocess1 = FPConvBlock(c_p, c, 1, 1)
        self.edges = nn.ModuleList()
        for i in range(steps):
            for j in range(2 + i):
                self.edges.append(MixedOp(ops, c, edge_stride(reduction, j)))
        self.shortcut = None
        if skip and reduction:
            self.shortcut = nn.Sequential(nn.BatchNorm2d(c_p, affine=False),
                                          nn.Conv2d(c_p, steps * c, 2, stride=2, bias=True))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for i in range(self.steps):
            states.append(_sum(self.edges[offset + j](h, weights[offset + j]) for j, h in enumerate(states)))
            offset += len(states) - 1
        out = torch.cat(states[2:], dim=1)
        if self.skip:
            out = out + (self.shortcut(s1) if self.shortcut is not None else s1)
        return out


class Supernet(nn.Module):
    """``layers`` search cells (reductions at L//3 and 2L//3) on the CIFAR stem, with architecture parameters
    ``alphas_normal`` and ``alphas_reduce`` (k edges x len(ops))."""

    def __init__(self, ops: Sequence[str], layers: int = 8, channels: int = 16, num_classes: int = 10,
                 steps: int = 4, inter_cell_skip: bool = True, in_chans: int = 3):
        super().__init__()
        self.op_names = list(ops)
        self.steps = steps
        self.stem = CifarStem(in_chans, 3 * channels)
        c_pp = c_p = 3 * channels
        c, reduction_prev = channels, False
        self.cells = nn.ModuleList()
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                c *= 2
            self.cells.append(SearchCell(ops, steps, c_pp, c_p, c, reduction, reduction_prev,
                                         skip=inter_cell_skip and i > 0))
            reduction_prev = reduction
            c_pp, c_p = c_p, steps * c
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)
        k = sum(2 + i for i in range(steps))
        self.alphas_normal = nn.Parameter(1e-3 * torch.randn(k, len(ops)))
        self.alphas_reduce = nn.Parameter(1e-3 * torch.randn(k, len(ops)))

    def arch_parameters(self) -> List[nn.Parameter]:
        return [self.alphas_normal, self.alphas_reduce]

    def weight_parameters(self) -> List[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def probabilities(self) -> Dict[str, torch.Tensor]:
        return dict(normal=F.softmax(self.alphas_normal, dim=-1), reduce=F.softmax(self.alphas_reduce, dim=-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.probabilities()
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, p['reduce'] if cell.reduction else p['normal'])
        return self.classifier(self.global_pool(s1).flatten(1))
