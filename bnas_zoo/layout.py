"""A small layered (Sugiyama-style) layout of a directed acyclic graph with labelled edges, left to right.

Written here because the library that does this well, Graphviz's ``dot``, is a system binary that a fresh
machine does not have, and none of the project's dependencies lays out graphs with edge labels. The method is
the classic one, kept small and deterministic (no randomness, a fixed number of sweeps, ties broken by the
order given):

1. Every node has a rank given by the caller (its column); rank ``r`` is drawn in column ``2 r``. The odd
   columns between the ranks hold the edge labels: an edge's label sits in the column just before its target.
2. An edge spanning several columns gets a *slot* in each column it crosses (its label's slot, or a thin slot
   its line passes through), so that lines pass between nodes and labels, never through them.
3. The slots of each column are ordered to reduce edge crossings (barycentre sweeps, the ordering with the
   fewest crossings kept).
4. Vertical positions: each slot moves towards the mean position of its neighbours, keeping the order and the
   minimum separation (an isotonic regression, pool-adjacent-violators), sweep after sweep until it settles
   (at most a fixed number of sweeps).

Labels therefore never overlap each other, nodes or other lines; lines may only cross between columns.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Hashable, List, Optional, Sequence, Tuple

__all__ = ['LayoutNode', 'LayoutEdge', 'Box', 'Route', 'Layout', 'layered_layout']

#: vertical gap between two slots of a column, horizontal gap between two columns, width of a column that
#: only lines cross, height of a line's slot
SLOT_GAP = 8.0
COLUMN_GAP = 22.0
LINE_COLUMN = 10.0
LINE_SLOT = 2.0
SWEEPS = 8
PLACEMENT_SWEEPS = 60


@dataclass(frozen=True)
class LayoutNode:
    key: Hashable
    rank: int
    width: float
    height: float


@dataclass(frozen=True)
class LayoutEdge:
    key: Hashable
    source: Hashable
    target: Hashable
    label_width: float = 0.0   # 0: no label
    label_height: float = 0.0


@dataclass(frozen=True)
class Box:
    """A node's or label's rectangle: centre (x, y), width and height."""
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class Route:
    """An edge's way: ``points`` from the source node's right side to the target node's left side; the line
    is straight inside a column (pairs of points with the same y) and an S-curve between columns. ``label``
    is the label's box on the line, or None."""
    points: Tuple[Tuple[float, float], ...]
    label: Optional[Box]


@dataclass(frozen=True)
class Layout:
    nodes: Dict[Hashable, Box]
    edges: Dict[Hashable, Route]
    width: float
    height: float


class _Slot:
    __slots__ = ('column', 'height', 'width', 'node', 'edge', 'label', 'up', 'down', 'y', 'order')

    def __init__(self, column: int, height: float, width: float, node=None, edge=None, label=False):
        self.column, self.height, self.width = column, height, width
        self.node, self.edge, self.label = node, edge, label
        self.up: List['_Slot'] = []    # neighbours in the previous column
        self.down: List['_Slot'] = []  # neighbours in the next column
        self.y = 0.0
        self.order = 0


def _crossings(columns: List[List[_Slot]]) -> int:
    total = 0
    for col in columns[:-1]:
        segments = [(s.order, t.order) for s in col for t in s.down]
        total += sum(1 for i, (a, b) in enumerate(segments) for c, d in segments[i + 1:] if (a - c) * (b - d) < 0)
    return total


def _barycentre(slot: _Slot, neighbours: List[_Slot]) -> float:
    return sum(n.order for n in neighbours) / len(neighbours) if neighbours else slot.order


def _order(columns: List[List[_Slot]]) -> None:
    """Barycentre sweeps, down then up the columns; the first ordering with the fewest crossings is kept
    (column 0 keeps the order given)."""
    def renumber(col):
        for i, s in enumerate(col):
            s.order = i

    for col in columns:
        renumber(col)
    best, best_orders = _crossings(columns), [list(c) for c in columns]
    for sweep in range(SWEEPS):
        forward = sweep % 2 == 0
        indices = range(1, len(columns)) if forward else range(len(columns) - 2, 0, -1)
        for c in indices:
            col = columns[c]
            col.sort(key=lambda s: _barycentre(s, s.up if forward else s.down))  # stable: ties keep the order
            renumber(col)
        crossings = _crossings(columns)
        if crossings < best:
            best, best_orders = crossings, [list(c) for c in columns]
    for c, col in enumerate(best_orders):
        columns[c][:] = col
        renumber(columns[c])


def _fit_in_order(desired: List[float], separation: List[float]) -> List[float]:
    """The positions closest (least squares) to ``desired`` with ``y[i+1] - y[i] >= separation[i]``:
    pool-adjacent-violators on the positions less their cumulative separations."""
    offsets = [0.0]
    for s in separation:
        offsets.append(offsets[-1] + s)
    blocks: List[List[float]] = []  # [mean, count]
    for d, o in zip(desired, offsets):
        blocks.append([d - o, 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, n2 = blocks.pop()
            m1, n1 = blocks.pop()
            blocks.append([(m1 * n1 + m2 * n2) / (n1 + n2), n1 + n2])
    values: List[float] = []
    for mean, count in blocks:
        values.extend([mean] * int(count))
    return [v + o for v, o in zip(values, offsets)]


def _place(columns: List[List[_Slot]]) -> None:
    def separations(col):
        return [(a.height + b.height) / 2 + SLOT_GAP for a, b in zip(col, col[1:])]

    for col in columns:  # stacked, centred on 0
        ys = _fit_in_order([0.0] * len(col), separations(col))
        mid = (ys[0] + ys[-1]) / 2 if ys else 0.0
        for s, y in zip(col, ys):
            s.y = y - mid
    for sweep in range(PLACEMENT_SWEEPS):
        indices = range(len(columns)) if sweep % 2 == 0 else range(len(columns) - 1, -1, -1)
        moved = 0.0
        for c in indices:
            col = columns[c]
            desired = [sum(n.y for n in s.up + s.down) / len(s.up + s.down) if s.up or s.down else s.y for s in col]
            for s, y in zip(col, _fit_in_order(desired, separations(col))):
                moved = max(moved, abs(y - s.y))
                s.y = y
        if moved < 0.01:  # settled (a fraction of a pixel)
            break


def _spread(count: int, height: float) -> List[float]:
    """Offsets of ``count`` ports along a side of ``height``."""
    if count <= 1:
        return [0.0] * count
    step = min(8.0, 0.7 * height / (count - 1))
    return [(i - (count - 1) / 2) * step for i in range(count)]


def layered_layout(nodes: Sequence[LayoutNode], edges: Sequence[LayoutEdge], margin: float = 0.0) -> Layout:
    """Lay out ``nodes`` (in the order given within a rank) and ``edges`` (each from a lower to a higher rank)."""
    by_key = {n.key: n for n in nodes}
    n_columns = 2 * max(n.rank for n in nodes) + 1
    columns: List[List[_Slot]] = [[] for _ in range(n_columns)]
    node_slot: Dict[Hashable, _Slot] = {}
    for n in nodes:
        slot = _Slot(2 * n.rank, n.height, n.width, node=n.key)
        columns[2 * n.rank].append(slot)
        node_slot[n.key] = slot
    chains: Dict[Hashable, List[_Slot]] = {}
    for e in edges:
        first, last = 2 * by_key[e.source].rank, 2 * by_key[e.target].rank
        if last <= first:
            raise ValueError(f'edge {e.key!r}: its target must have a higher rank than its source')
        chain = [node_slot[e.source]]
        for c in range(first + 1, last):
            labelled = c == last - 1 and e.label_width > 0
            slot = (_Slot(c, e.label_height, e.label_width, edge=e.key, label=True) if labelled
                    else _Slot(c, LINE_SLOT, 0.0, edge=e.key))
            columns[c].append(slot)
            chain.append(slot)
        chain.append(node_slot[e.target])
        for a, b in zip(chain, chain[1:]):
            a.down.append(b)
            b.up.append(a)
        chains[e.key] = chain

    _order(columns)
    _place(columns)

    widths = [max([s.width for s in col] + [LINE_COLUMN if c % 2 else 0.0]) for c, col in enumerate(columns)]
    lefts, x = [], margin
    for w in widths:
        lefts.append(x)
        x += w + COLUMN_GAP
    width = x - COLUMN_GAP + margin
    top = min(s.y - s.height / 2 for col in columns for s in col)
    bottom = max(s.y + s.height / 2 for col in columns for s in col)
    shift = margin - top

    def centre(slot: _Slot) -> Tuple[float, float]:
        return lefts[slot.column] + widths[slot.column] / 2, slot.y + shift

    boxes = {}
    for key, slot in node_slot.items():
        cx, cy = centre(slot)
        boxes[key] = Box(cx, cy, slot.width, slot.height)
    # ports: the edges leaving (entering) a node spread along its right (left) side, in the order of the
    # slots they come from or go to, so that they do not cross at the node
    out_port: Dict[Hashable, float] = {}
    in_port: Dict[Hashable, float] = {}
    for key, slot in node_slot.items():
        leaving = sorted((k for k, ch in chains.items() if ch[0] is slot), key=lambda k: chains[k][1].y)
        entering = sorted((k for k, ch in chains.items() if ch[-1] is slot), key=lambda k: chains[k][-2].y)
        for k, off in zip(leaving, _spread(len(leaving), slot.height)):
            out_port[k] = off
        for k, off in zip(entering, _spread(len(entering), slot.height)):
            in_port[k] = off
    routes = {}
    for key, chain in chains.items():
        src, dst = boxes[chain[0].node], boxes[chain[-1].node]
        points = [(src.x + src.width / 2, src.y + out_port[key])]
        label = None
        for slot in chain[1:-1]:
            cx, cy = centre(slot)
            left, right = lefts[slot.column], lefts[slot.column] + widths[slot.column]
            points += [(left, cy), (right, cy)]
            if slot.label:
                label = Box(cx, cy, slot.width, slot.height)
        points.append((dst.x - dst.width / 2, dst.y + in_port[key]))
        routes[key] = Route(tuple(points), label)
    return Layout(boxes, routes, width, bottom - top + 2 * margin)
