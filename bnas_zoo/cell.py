"""A BNAS cell compiled from a :class:`~bnas_zoo.compiler.CellPlan` (spec §2)."""
from __future__ import annotations

from typing import Dict, FrozenSet, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import drop_path

from .binary import BinaryConvBlock
from .compiler import CellPlan
from .operations import Zeroise, build_op

__all__ = ['Cell', 'ReductionShortcut']


class ReductionShortcut(nn.Sequential):
    """The full-precision inter-cell skip of a reduction cell: BatchNorm -> Conv2d(2x2, stride 2, bias)."""

    def __init__(self, in_chs: int, out_chs: int, groups: int = 1):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_chs)
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size=2, stride=2, bias=True, groups=groups)


class Cell(nn.Module):
    """One cell: preprocess the two inputs, compute the live nodes, concatenate, add the inter-cell skip.

    Only modules some non-zero path uses are built; identically-zero edges and nodes cost nothing. The
    skip (``skip=True``, every cell but the first) adds the previous cell's raw output, through a
    :class:`ReductionShortcut` in a reduction cell; the zero nodes' channels then carry the skip alone.

    Args:
        plan: the compiled cell.
        c_prev_prev, c_prev: channels of the cell two back / the previous cell.
        channels: C, the width of every node.
        reduction_prev: the previous cell reduced resolution, so input 0 is preprocessed by a 3x3
            stride-2 binary conv (else 1x1).
        skip: add the inter-cell skip connection.
        preprocess0_affine: whether that 3x3 stride-2 preprocessing's BatchNorm is affine (not in the
            CIFAR networks of the release).
        fp_slots: slots (``preprocess0``, ``ops.6``, ...) whose conv keeps float weights.
        shortcut_groups: group count of the reduction shortcut's conv.
    """

    def __init__(
            self,
            plan: CellPlan,
            c_prev_prev: int,
            c_prev: int,
            channels: int,
            reduction_prev: bool,
            skip: bool,
            preprocess0_affine: bool = True,
            fp_slots: FrozenSet[str] = frozenset(),
            shortcut_groups: int = 1,
    ):
        super().__init__()
        self.plan = plan
        self.reduction = plan.reduction
        self.channels = channels
        self.out_chs = len(plan.concat) * channels
        self.drop_path_prob = 0.0

        if not plan.uses_input[0]:
            self.preprocess0 = None
        elif reduction_prev:
            self.preprocess0 = BinaryConvBlock(
                c_prev_prev, channels, 3, stride=2, affine=preprocess0_affine,
                binary_weights='preprocess0' not in fp_slots)
        else:
            self.preprocess0 = BinaryConvBlock(
                c_prev_prev, channels, 1, binary_weights='preprocess0' not in fp_slots)
        self.preprocess1 = BinaryConvBlock(
            c_prev, channels, 1, binary_weights='preprocess1' not in fp_slots) if plan.uses_input[1] else None
        self.shortcut = ReductionShortcut(c_prev, self.out_chs, shortcut_groups) if skip and plan.reduction else None
        self.skip = skip
        self.ops = nn.ModuleDict({
            str(k): build_op(plan.edges[k][0], channels, plan.stride(k), f'ops.{k}' not in fp_slots)
            for k in plan.live_edges if plan.owns_module(k)
        })
        self.zeroise = Zeroise(2 if plan.reduction else 1) if plan.materialized_zeros or plan.zero_output else None

        # output: the concatenated nodes from the first to the last non-zero one (zero nodes between them
        # as zero tensors); zero nodes before and after cost only a zero padding of the channels
        live_pos = [j for j, n in enumerate(plan.concat) if n not in plan.zero_nodes]
        self._body: Tuple[int, ...] = tuple(plan.concat[live_pos[0]:live_pos[-1] + 1]) if live_pos else ()
        self._pad: Tuple[int, int] = (
            (live_pos[0] * channels, (len(plan.concat) - 1 - live_pos[-1]) * channels) if live_pos
            else (0, (len(plan.concat) - 1) * channels))

    def _edge(self, k: int, states: Dict[int, torch.Tensor], computed: Dict[int, torch.Tensor]) -> torch.Tensor:
        src = self.plan.shared.get(k, k)
        if src in computed:
            return computed[src]
        y = self.ops[str(src)](states[self.plan.edges[src][1]])
        computed[src] = y
        return y

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        plan = self.plan
        states: Dict[int, torch.Tensor] = {}
        if self.preprocess0 is not None:
            states[0] = self.preprocess0(s0)
        if self.preprocess1 is not None:
            states[1] = self.preprocess1(s1)
        computed: Dict[int, torch.Tensor] = {}
        for node in range(2, 2 + plan.steps):
            if node in plan.materialized_zeros:
                states[node] = self.zeroise(self._input_reference(states))
            elif node in plan.live_nodes:
                h: Optional[torch.Tensor] = None
                for k in plan.node_edges(node):
                    y = self._edge(k, states, computed)
                    if self.training and self.drop_path_prob > 0.0:
                        y = drop_path(y, self.drop_path_prob, True)
                    h = y if h is None else h + y
                states[node] = h

        skip: Optional[torch.Tensor] = None
        if self.skip:
            skip = self.shortcut(s1) if self.shortcut is not None else s1
        if not self._body:  # every concatenated node is zero
            if skip is not None:
                return skip
            body = self.zeroise(self._input_reference(states))
        else:
            parts = [states[n] if n not in plan.zero_nodes else torch.zeros_like(self._zero_reference(states))
                     for n in self._body]
            body = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        if self._pad[0] or self._pad[1]:
            body = F.pad(body, (0, 0, 0, 0, self._pad[0], self._pad[1]))
        return body if skip is None else body + skip

    def _zero_reference(self, states: Dict[int, torch.Tensor]) -> torch.Tensor:
        return states[self.plan.live_nodes[0]]

    @staticmethod
    def _input_reference(states: Dict[int, torch.Tensor]) -> torch.Tensor:
        """A preprocessed cell input: the shape a zero node takes (after the Zeroise stride)."""
        return states[0] if 0 in states else states[1]
