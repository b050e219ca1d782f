"""A BNAS cell compiled from a :class:`~bnas_zoo.compiler.CellPlan`.

The forward pass reads only static ints, lists of ints and the ``ops`` ModuleDict (iterated in order), so
TorchScript scripts it as eager PyTorch runs it: the plan is unrolled into those tables at construction.
"""
from typing import Dict, FrozenSet, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import drop_path

from .binary import BinaryConvBlock
from .compiler import CellPlan
from .operations import Zeroise, build_op

__all__ = ['Cell', 'ReductionShortcut', 'restore_tail']


def restore_tail(x: torch.Tensor, tail: int) -> torch.Tensor:
    """``x`` with its ``tail`` left-out zero channels put back."""
    return F.pad(x, [0, 0, 0, 0, 0, tail]) if tail else x


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
    __jit_ignored_attributes__ = ['plan']  # Python-side description; forward reads the static tables
    # the static tables' types, for TorchScript (which cannot infer the type of an empty list)
    _edge_input: List[int]
    _shared_edges: List[int]
    _shared_src: List[int]
    _materialized: List[int]
    _body_nodes: List[int]
    _body_zero: List[bool]

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
        self._body = tuple(plan.concat[live_pos[0]:live_pos[-1] + 1]) if live_pos else ()
        self._pad = (
            (live_pos[0] * channels, (len(plan.concat) - 1 - live_pos[-1]) * channels) if live_pos
            else (0, (len(plan.concat) - 1) * channels))

        # the compiled plan as static tables (what forward reads; TorchScript needs no CellPlan)
        self._edge_input = [inp for _, inp in plan.edges]
        self._shared_edges = sorted(plan.shared)
        self._shared_src = [plan.shared[k] for k in self._shared_edges]
        self._materialized = sorted(plan.materialized_zeros)
        self._body_nodes = list(self._body)
        self._body_zero = [n in plan.zero_nodes for n in self._body]
        self._zero_ref: int = plan.live_nodes[0] if plan.live_nodes else -1
        self._pad_lo: int = self._pad[0]
        self._pad_hi: int = self._pad[1]
        # zero tails (see set_zero_tails): trailing channels of s0 / s1 / the output that are identically zero
        # and not stored
        self._tail0: int = 0
        self._tail1: int = 0
        self.out_tail: int = 0

    def set_zero_tails(self, tail0: int, tail1: int, leave_out: bool = True) -> int:
        """Take inputs whose last ``tail0`` / ``tail1`` channels are identically zero and left out (the
        network knows them from the genotype); returns the zero tail this cell's output leaves out.

        A cell whose last concatenated nodes are zero (the CIFAR cell: nodes 4 and 5) outputs their channels
        as zeros plus the skip; where the skip is zero there too (the skipped cell's own zero tail, or no
        skip), those channels are zero for every input, so they are neither stored nor computed on: the
        BatchNorm-sign-conv blocks reading them take them as constants (``BinaryConvBlock.zero_tail``), the
        skip adds only the stored channels. The values are those of the full tensors, bit for bit.
        ``leave_out=False`` stores every channel of the output.
        """
        self._tail0, self._tail1 = tail0, tail1
        if self.preprocess0 is not None:
            self.preprocess0.zero_tail = tail0
        if self.preprocess1 is not None:
            self.preprocess1.zero_tail = tail1
        _, _, out = self.stored_ranges((0, self.out_chs - tail1))
        self.out_tail = self.out_chs - out[1] if leave_out else 0
        return self.out_tail

    def stored_ranges(self, r1: Tuple[int, int]) -> Tuple[Tuple[int, int], Tuple[int, int], Tuple[int, int]]:
        """The channels ``[lo, hi)`` of the body (the concatenated nodes), of the skip and of the output that
        can be non-zero when those of input 1 are ``r1``: every other channel is zero for every input. The
        zero tails here and the deployed cells' stored channels (``bnas_zoo.deploy``) are read from it."""
        total = self.out_chs
        body = (self._pad_lo, total - self._pad_hi) if self._body_nodes else (0, 0)
        skip = (0, total) if self.shortcut is not None else (r1 if self.skip else (0, 0))
        if not self._body_nodes:
            out = skip if self.skip else (0, total)
        elif self.skip:
            out = (min(body[0], skip[0]), max(body[1], skip[1]))
        else:
            out = body
        return body, skip, out

    def _use(self, k: int, y: torch.Tensor, states: Dict[int, torch.Tensor]) -> None:
        """Add edge ``k``'s output (after drop-path when training) to its node."""
        if self.training and self.drop_path_prob > 0.0:
            y = drop_path(y, self.drop_path_prob, True)
        node = 2 + k // 2
        if node in states:
            states[node] = states[node] + y
        else:
            states[node] = y

    def _use_shared(self, j: int, before: int, states: Dict[int, torch.Tensor],
                    computed: Dict[int, torch.Tensor]) -> int:
        """Use the shared edges ``j, j+1, ...`` (in edge order) numbered below ``before``; the next ``j``."""
        while j < len(self._shared_edges) and self._shared_edges[j] < before:
            self._use(self._shared_edges[j], computed[self._shared_src[j]], states)
            j += 1
        return j

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states: Dict[int, torch.Tensor] = {}
        if self.preprocess0 is not None:
            states[0] = self.preprocess0(s0)
        if self.preprocess1 is not None:
            states[1] = self.preprocess1(s1)
        if self.zeroise is not None:
            for node in self._materialized:  # zero nodes a live convolution reads
                states[node] = self.zeroise(self._input_reference(states))
        # the live edges in order (a node's edges are summed before any later edge reads it); a shared edge
        # reuses the output of the earlier edge computing the same tensor
        computed: Dict[int, torch.Tensor] = {}
        j = 0
        for key, op in self.ops.items():
            k = int(key)
            j = self._use_shared(j, k, states, computed)
            y = op(states[self._edge_input[k]])
            computed[k] = y
            self._use(k, y, states)
        self._use_shared(j, len(self._edge_input), states, computed)

        skip: Optional[torch.Tensor] = None
        if self.skip:
            if self.shortcut is not None:
                skip = self.shortcut(restore_tail(s1, self._tail1))
            elif self._tail1 > self.out_tail:
                skip = restore_tail(s1, self._tail1 - self.out_tail)
            else:
                skip = s1
        if len(self._body_nodes) == 0:  # every concatenated node is zero
            if skip is not None:
                return skip
            if self.zeroise is not None:
                body = self.zeroise(self._input_reference(states))
            else:
                raise RuntimeError('a cell without output nodes and skip must hold a Zeroise')
        else:
            parts: List[torch.Tensor] = []
            for i, n in enumerate(self._body_nodes):
                if self._body_zero[i]:
                    parts.append(torch.zeros_like(states[self._zero_ref]))
                else:
                    parts.append(states[n])
            body = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        if self._pad_lo or self._pad_hi > self.out_tail:
            body = F.pad(body, [0, 0, 0, 0, self._pad_lo, self._pad_hi - self.out_tail])
        return body if skip is None else body + skip

    def _input_reference(self, states: Dict[int, torch.Tensor]) -> torch.Tensor:
        """A preprocessed cell input: the shape a zero node takes (after the Zeroise stride)."""
        return states[0] if 0 in states else states[1]
