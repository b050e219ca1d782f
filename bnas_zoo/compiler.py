"""The genotype compiler's graph analysis: which edges and nodes of a cell are identically zero, which
are live, which computations are shared, and which of the release's modules are never used.

The result, a :class:`CellPlan`, is all that :class:`~bnas_zoo.cell.Cell` needs to build exactly the
modules some non-zero path uses and to compute nothing else.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, FrozenSet, List, Sequence, Tuple

from .operations import CONV_OPS, PARAMETER_FREE, edge_stride

__all__ = ['CellPlan', 'compile_cell', 'release_conv_slots', 'last_cell_fp_slots']

Edge = Tuple[str, int]


@dataclass(frozen=True)
class CellPlan:
    """What a cell computes.

    Attributes:
        edges, concat, reduction: the genotype's cell.
        zero_nodes: intermediate nodes that are identically zero (Zeroise everywhere upstream).
        zero_edges: edges that are identically zero (Zeroise, or a parameter-free op of a zero node).
        live_edges: edges that are computed, in order (non-zero and feeding a node the output needs).
        shared: live edge -> earlier live edge computing the very same tensor (same parameter-free op,
            input and stride); it is computed once.
        materialized_zeros: zero nodes a live convolution reads, so they must exist as tensors.
        live_nodes: intermediate nodes computed, in order.
        uses_input: whether preprocessed node 0 / node 1 is read by a live edge.
        zero_output: no node is live and there is no skip: the cell outputs zeros (a degenerate cell).
    """
    edges: Tuple[Edge, ...]
    concat: Tuple[int, ...]
    reduction: bool
    zero_nodes: FrozenSet[int]
    zero_edges: FrozenSet[int]
    live_edges: Tuple[int, ...]
    shared: Dict[int, int]
    materialized_zeros: FrozenSet[int]
    live_nodes: Tuple[int, ...]
    uses_input: Tuple[bool, bool]
    zero_output: bool

    @property
    def steps(self) -> int:
        return len(self.edges) // 2

    def node_edges(self, node: int) -> List[int]:
        return [k for k in self.live_edges if 2 + k // 2 == node]

    def stride(self, edge: int) -> int:
        return edge_stride(self.reduction, self.edges[edge][1])

    def owns_module(self, edge: int) -> bool:
        """Whether the cell builds a module for this edge (live, an op with a module, not shared)."""
        return edge in self.live_edges and edge not in self.shared


def compile_cell(edges: Sequence[Edge], concat: Sequence[int], reduction: bool, skip: bool = True) -> CellPlan:
    edges = tuple((str(op), int(i)) for op, i in edges)
    concat = tuple(int(c) for c in concat)
    steps = len(edges) // 2

    # forward: an edge is zero if it is Zeroise, or a parameter-free op (pool) of a zero node
    zero_nodes = set()
    zero_edges = set()
    for k, (op, inp) in enumerate(edges):
        if op == 'none' or (op in PARAMETER_FREE and inp in zero_nodes):
            zero_edges.add(k)
        if k % 2 == 1 and {k - 1, k} <= zero_edges:
            zero_nodes.add(2 + k // 2)

    # backward: from the non-zero concatenated nodes, mark the edges and nodes they need
    needed = {c for c in concat if c not in zero_nodes}
    live = set()
    materialized = set()
    for node in range(1 + steps, 1, -1):
        if node not in needed:
            continue
        for k in (2 * (node - 2), 2 * (node - 2) + 1):
            if k in zero_edges:
                continue
            live.add(k)
            inp = edges[k][1]
            if inp in zero_nodes:
                materialized.add(inp)  # only a conv reads a zero node without being zero itself
            elif inp >= 2:
                needed.add(inp)
    live_edges = tuple(sorted(live))

    shared: Dict[int, int] = {}
    first: Dict[Tuple[str, int, int], int] = {}
    for k in live_edges:
        op, inp = edges[k]
        if op in PARAMETER_FREE:
            key = (op, inp, edge_stride(reduction, inp))
            if key in first:
                shared[k] = first[key]
            else:
                first[key] = k

    reads = {edges[k][1] for k in live_edges}
    uses_input = (0 in reads, 1 in reads)
    zero_output = not needed and not skip
    if (materialized or zero_output) and not any(uses_input):
        uses_input = (False, True)  # a zero tensor takes its shape from a preprocessed input
    return CellPlan(
        edges=edges,
        concat=concat,
        reduction=reduction,
        zero_nodes=frozenset(zero_nodes),
        zero_edges=frozenset(zero_edges),
        live_edges=live_edges,
        shared=shared,
        materialized_zeros=frozenset(materialized),
        live_nodes=tuple(sorted(needed)),
        uses_input=uses_input,
        zero_output=zero_output,
    )


def release_conv_slots(edges: Sequence[Edge]) -> List[str]:
    """The binary convolutions of a cell as the release registers them (our names, release order).

    The release builds every edge and both preprocessings whether used or not. Its weight binarizer
    skips the last two of these in the network's last cell, whatever they are.
    """
    slots = ['preprocess0', 'preprocess1']
    slots += [f'ops.{k}' for k, (op, _) in enumerate(edges) if op in CONV_OPS]
    return slots


def last_cell_fp_slots(edges: Sequence[Edge], fully_binary: bool) -> FrozenSet[str]:
    """Slots of the last cell kept full precision by the release (none when ``fully_binary``)."""
    if fully_binary:
        return frozenset()
    return frozenset(release_conv_slots(edges)[-2:])
