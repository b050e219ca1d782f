"""Cell diagrams: the normal and reduction cells of a genotype or a network, as SVG or PNG.

    bnas_zoo.draw_cell('bnas_cifar', 'both', 'cells.svg')       # a bundled genotype, a JSON path, a dict
    bnas_zoo.draw_cell('bnas_d', 'reduce', 'reduce.png', width=800)   # a registered model, local-dir:, hf-hub:
    svg_text = bnas_zoo.draw_cell(model, 'normal')               # a model object; no output: the SVG text

A cell is drawn left to right: the two cell inputs c_{k-2} and c_{k-1}, the intermediate nodes numbered as in
the genotype JSON (2, 3, ...), the output c_k that concatenates the ``*_concat`` nodes; one labelled edge per
operation. What the compiler (:mod:`bnas_zoo.compiler`) finds identically zero, Zeroise (``none``) edges and
the nodes and edges they make zero, is drawn dashed and grey, and what no output needs dotted: the network
computes neither. The inter-cell skip is drawn where the network has it (through the float 2x2 convolution in a
reduction cell), and the float-precision convolutions of a network's last cell are marked.

Why SVG written directly: the output must be the same bytes for the same input and need no system binary.
Graphviz's ``dot`` is not installed on a fresh machine; matplotlib's SVG embeds dates and random ids unless
configured, and measures text with the installed fonts. Here one layout (:mod:`bnas_zoo.layout`, text widths
from a monospace font's fixed advance) is turned into a list of shapes, which is written as SVG text (fixed
number formatting: the same bytes on every machine) or drawn with matplotlib (already a dependency) for PNG,
with its metadata stripped so that the PNG bytes are stable too.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union
from xml.sax.saxutils import escape, quoteattr

from .compiler import compile_cell, last_cell_fp_slots
from .errors import BnasError
from .files import atomic_write
from .genotype import Genotype, load_genotype
from .layout import Layout, LayoutEdge, LayoutNode, layered_layout
from .operations import CONV_OPS, PARAMETER_FREE

__all__ = ['draw_cell', 'cell_graph', 'CellGraph', 'GraphNode', 'GraphEdge', 'NetworkInfo', 'is_model_name',
           'CELLS', 'FORMATS']

CELLS = ('normal', 'reduce', 'both')
FORMATS = ('svg', 'png')
#: PNG pixels per layout unit when no width or height is asked for
PNG_SCALE = 2.0
MAX_PIXELS = 20000

# --- looks: sizes in layout units (SVG pixels) ---------------------------------------------------------------
MONO = 'DejaVu Sans Mono, Menlo, Consolas, monospace'
SANS = 'DejaVu Sans, Helvetica, Arial, sans-serif'
MONO_ADVANCE = 0.602       # DejaVu Sans Mono's advance width, in ems
SANS_ADVANCE = 0.62        # an upper bound of DejaVu Sans's mean advance, in ems
LABEL_SIZE = 11.0
NODE_SIZE = 12.0
TITLE_SIZE = 13.0
NOTE_SIZE = 10.5
LABEL_PAD = 4.0
SUB_SCALE = 0.75           # subscripts: size and downward shift, in ems
SUB_SHIFT = 0.25
NODE_H = 28.0
PORT_STEP = 8.6           # node height per edge beyond the first on a side (the edges spread along it)
MARGIN = 14.0
CELL_GAP = 26.0

INK = '#222222'
GREY = '#9a9a9a'
COLOURS = {'conv': '#1f5fa8', 'pool': '#2e7d32', 'float': '#c0561b', 'concat': '#777777', 'skip': '#7b3f99'}
FILLS = {'input': '#d5ebd5', 'live': '#d4e3f7', 'output': '#f3e8b8', 'zero': '#ffffff', 'unused': '#f0f0f0'}
DASH = {'zero': (5.0, 3.0), 'unused': (1.5, 2.5)}


# --- the cell as a graph ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NetworkInfo:
    """What a network adds to its cells: the inter-cell skip, the last cell's float convolutions."""
    name: str
    layers: int
    inter_cell_skip: bool
    fully_binary: bool
    reduction_cells: Tuple[int, ...]

    @classmethod
    def of(cls, model: Any) -> 'NetworkInfo':
        cfg = getattr(model, 'pretrained_cfg', None) or {}
        return cls(cfg.get('architecture') or type(model).__name__, model.layers, model.inter_cell_skip,
                   model.fully_binary, tuple(model.reduction_cells))

    @property
    def last_is_reduction(self) -> bool:
        return self.layers - 1 in self.reduction_cells


@dataclass(frozen=True)
class GraphNode:
    """``key``: 0 and 1 (the cell inputs), 2.. (intermediate nodes, the genotype's numbers), 'out'.
    ``state``: 'input', 'live', 'zero' (identically zero), 'unused' (no output needs it), 'output'."""
    key: Union[int, str]
    text: str           # subscripts written c_{k-2}
    state: str
    float_marked: bool = False


@dataclass(frozen=True)
class GraphEdge:
    """``kind``: 'op' (genotype edge ``index``, operation ``op``), 'concat' (a node into the output), 'skip'.
    ``state``: 'live', 'zero' (identically zero: the compiler drops it), 'unused' (no output needs it)."""
    kind: str
    source: Union[int, str]
    target: Union[int, str]
    label: str
    state: str
    op: Optional[str] = None
    index: Optional[int] = None
    float_marked: bool = False

    @property
    def key(self) -> Tuple[Any, ...]:
        return (self.kind, self.index if self.kind == 'op' else self.source)


@dataclass(frozen=True)
class CellGraph:
    title: str
    reduction: bool
    nodes: Tuple[GraphNode, ...]
    edges: Tuple[GraphEdge, ...]
    notes: Tuple[str, ...] = field(default=())


def _node_name(node: int) -> str:
    return ('c_{k-2}', 'c_{k-1}')[node] if node < 2 else str(node)


def cell_graph(genotype: Genotype, reduction: bool, network: Optional[NetworkInfo] = None,
               inter_cell_skip: Optional[bool] = None, title: Optional[str] = None) -> CellGraph:
    """The drawn graph of one cell: nodes and edges with the compiler's verdict on each (zero, unused, live).

    ``network``: the network the cell belongs to (its skip and its last cell's float convolutions), or None
    for a genotype alone, drawn in the template every bnas_zoo network uses (the inter-cell skip included
    unless ``inter_cell_skip=False``)."""
    edges, concat = genotype.cell(reduction)
    skip = inter_cell_skip if inter_cell_skip is not None else (network.inter_cell_skip if network else True)
    plan = compile_cell(edges, concat, reduction, skip=skip)
    last_kind = network is not None and network.last_is_reduction == reduction
    fp = last_cell_fp_slots(edges, network.fully_binary) if last_kind else frozenset()

    nodes = [GraphNode(i, _node_name(i), 'input', f'preprocess{i}' in fp) for i in (0, 1)]
    for n in range(2, 2 + plan.steps):
        state = 'zero' if n in plan.zero_nodes else 'live' if n in plan.live_nodes else 'unused'
        nodes.append(GraphNode(n, str(n), state))
    nodes.append(GraphNode('out', 'c_{k}', 'output'))

    graph_edges = []
    for k, (op, inp) in enumerate(edges):
        state = 'zero' if k in plan.zero_edges else 'live' if k in plan.live_edges else 'unused'
        graph_edges.append(GraphEdge('op', inp, 2 + k // 2, op, state, op=op, index=k,
                                     float_marked=f'ops.{k}' in fp))
    for c in concat:
        state = 'zero' if c in plan.zero_nodes else 'live' if c in plan.live_nodes else 'unused'
        graph_edges.append(GraphEdge('concat', c, 'out', '', state))
    if skip:
        graph_edges.append(GraphEdge('skip', 1, 'out', '2x2 conv (float)' if reduction else 'skip', 'live'))

    notes = []
    states = {e.state for e in graph_edges} | {n.state for n in nodes}
    if 'zero' in states:
        notes.append("dashed grey: identically zero (Zeroise 'none', or reads only zeros); the network drops it")
    if 'unused' in states:
        notes.append('dotted: no output needs it; the network drops it')
    if reduction:
        notes.append('reduction cell: the edges from c_{k-2} and c_{k-1} have stride 2')
    if skip and reduction:
        notes.append('skip: the inter-cell skip adds c_{k-1} through a float 2x2 stride-2 convolution'
                     + ('' if network else " (in bnas_zoo's networks)"))
    elif skip:
        where = 'in every cell but the first' if network else "in bnas_zoo's networks, every cell but the first"
        notes.append(f'skip: the inter-cell skip adds c_{{k-1}} to the output ({where})')
    if fp:
        notes.append(f"\u2021 float weights in the network's last cell (cell {network.layers} of {network.layers}), "
                     f"as in the authors' release (fully_binary=True binarizes them)")
    elif last_kind and network.fully_binary and any(op in CONV_OPS for op, _ in edges):
        notes.append("fully binary: the last cell's convolutions are binary too")
    kind = 'reduction' if reduction else 'normal'
    name = title or (f'{network.name} ({genotype.name})' if network else genotype.name)
    return CellGraph(f'{name}: {kind} cell', reduction, tuple(nodes), tuple(graph_edges), tuple(notes))


# --- shapes: one description drawn as SVG or with matplotlib ----------------------------------------------------
@dataclass(frozen=True)
class _Shape:
    kind: str                                   # 'path', 'rect', 'text', 'polygon'
    points: Tuple[Tuple[float, ...], ...] = ()  # path: ('M'|'L'|'C', x, y[, ...]); polygon: (x, y)
    box: Tuple[float, float, float, float] = (0, 0, 0, 0)   # rect: x, y, w, h; text: x, baseline y
    text: str = ''
    markup: bool = False                        # text: c_{k-1} is a subscript
    size: float = 0.0
    font: str = SANS
    bold: bool = False
    anchor: str = 'middle'
    fill: str = 'none'
    stroke: str = 'none'
    width: float = 0.0
    dash: Optional[Tuple[float, float]] = None
    radius: float = 0.0


@dataclass
class _Group:
    attrs: Dict[str, str]
    shapes: List[Any]


def _runs(text: str) -> List[Tuple[str, bool]]:
    """``'a c_{k-1} b'`` -> ``[('a c', False), ('k-1', True), (' b', False)]``."""
    parts = re.split(r'_\{([^{}]*)\}', text)
    return [(p, i % 2 == 1) for i, p in enumerate(parts) if p]


def _text_width(text: str, size: float, mono: bool, markup: bool = False) -> float:
    runs = _runs(text) if markup else [(text, False)]
    chars = sum(len(t) * (SUB_SCALE if sub else 1.0) for t, sub in runs)
    return chars * size * (MONO_ADVANCE if mono else SANS_ADVANCE)


def _label_text(edge: GraphEdge) -> str:
    return edge.label + (' \u2021' if edge.float_marked else '')


def _node_width(node: GraphNode) -> float:
    return max(34.0, _text_width(node.text, NODE_SIZE, False, markup=True) + 18)


def _edge_colour(edge: GraphEdge) -> str:
    if edge.state != 'live':
        return GREY
    if edge.float_marked:
        return COLOURS['float']
    if edge.kind != 'op':
        return COLOURS[edge.kind]
    return COLOURS['pool'] if edge.op in PARAMETER_FREE else COLOURS['conv'] if edge.op in CONV_OPS else INK


def _ranks(graph: CellGraph) -> Dict[Any, int]:
    ranks: Dict[Any, int] = {0: 0, 1: 0}
    for e in graph.edges:  # op edges come in node order, each from an earlier node
        if e.kind == 'op':
            ranks[e.target] = max(ranks.get(e.target, 0), ranks[e.source] + 1)
    ranks['out'] = 1 + max(ranks.values())
    return ranks


def _path(points: Sequence[Tuple[float, float]]) -> Tuple[Tuple[Any, ...], ...]:
    """The route's points as path commands: S-curves between columns, straight lines inside a column."""
    cmds: List[Tuple[Any, ...]] = [('M',) + tuple(points[0])]
    for i, (a, b) in enumerate(zip(points, points[1:])):
        if i % 2:
            cmds.append(('L',) + tuple(b))
        else:
            mid = (a[0] + b[0]) / 2
            cmds.append(('C', mid, a[1], mid, b[1], b[0], b[1]))
    return tuple(cmds)


def _cell_shapes(graph: CellGraph) -> Tuple[List[_Group], float, float]:
    """The shapes of one cell (title, edges, nodes, notes) in its own coordinates, and its width and height."""
    ranks = _ranks(graph)
    ports = {n.key: max(sum(e.target == n.key for e in graph.edges), sum(e.source == n.key for e in graph.edges))
             for n in graph.nodes}
    lnodes = [LayoutNode(n.key, ranks[n.key], _node_width(n), max(NODE_H, PORT_STEP * (ports[n.key] - 1)))
              for n in graph.nodes]
    ledges = [LayoutEdge(e.key, e.source, e.target,
                         _text_width(_label_text(e), LABEL_SIZE, True) + 2 * LABEL_PAD if e.label else 0.0,
                         LABEL_SIZE + 4 if e.label else 0.0) for e in graph.edges]
    layout: Layout = layered_layout(lnodes, ledges)
    top = MARGIN + TITLE_SIZE + 12
    dx = MARGIN
    groups = [_Group({'class': 'title'}, [_Shape('text', box=(MARGIN, MARGIN + TITLE_SIZE), text=graph.title,
                                                 size=TITLE_SIZE, bold=True, anchor='start', fill=INK)])]

    def at(x: float, y: float) -> Tuple[float, float]:
        return x + dx, y + top

    for e in graph.edges:
        route = layout.edges[e.key]
        colour = _edge_colour(e)
        dash = DASH.get(e.state) if e.kind != 'skip' else None
        points = [at(*p) for p in route.points]
        end_x, end_y = points[-1]
        points[-1] = (end_x - 5, end_y)  # the line stops inside the arrowhead
        shapes: List[_Shape] = [
            _Shape('path', _path(points), stroke=colour, width=1.0 if e.kind == 'concat' else 1.4, dash=dash),
            _Shape('polygon', ((end_x, end_y), (end_x - 7, end_y - 3.5), (end_x - 7, end_y + 3.5)), fill=colour)]
        if route.label is not None:
            lb = route.label
            x, y = at(lb.x, lb.y)
            shapes.append(_Shape('rect', box=(x - lb.width / 2, y - lb.height / 2, lb.width, lb.height),
                                 fill='#ffffff', radius=3.0))
            shapes.append(_Shape('text', box=(x, y + 0.35 * LABEL_SIZE), text=_label_text(e), size=LABEL_SIZE,
                                 font=MONO, fill=colour if e.state == 'live' else GREY))
        attrs = {'class': f'edge {e.kind} {e.state}', 'data-from': str(e.source), 'data-to': str(e.target)}
        if e.kind == 'op':
            attrs.update({'data-edge': str(e.index), 'data-op': e.op})
        groups.append(_Group(attrs, shapes))

    for n in graph.nodes:
        box = layout.nodes[n.key]
        x, y = at(box.x, box.y)
        muted = n.state in ('zero', 'unused')
        shapes = [_Shape('rect', box=(x - box.width / 2, y - box.height / 2, box.width, box.height),
                         fill=FILLS[n.state], stroke=GREY if muted else INK, width=1.2, dash=DASH.get(n.state),
                         radius=6.0),
                  _Shape('text', box=(x, y + 0.35 * NODE_SIZE), text=n.text, markup=True,
                         size=NODE_SIZE, fill=GREY if muted else INK)]
        if n.float_marked:
            shapes.append(_Shape('text', box=(x + box.width / 2 - 1, y - box.height / 2 + 9), text='\u2021',
                                 size=NOTE_SIZE, anchor='end', fill=COLOURS['float']))
        groups.append(_Group({'class': f'node {n.state}', 'data-node': str(n.key)}, shapes))

    y = top + layout.height + 8
    width = layout.width + 2 * MARGIN
    notes = []
    for note in graph.notes:
        y += NOTE_SIZE + 5
        notes.append(_Shape('text', box=(MARGIN, y), text=note, markup=True, size=NOTE_SIZE, anchor='start',
                            fill='#555555'))
        width = max(width, _text_width(note, NOTE_SIZE, False, markup=True) + 2 * MARGIN)
    if notes:
        groups.append(_Group({'class': 'notes'}, notes))
    width = max(width, _text_width(graph.title, TITLE_SIZE, False) + 2 * MARGIN)
    return groups, width, y + MARGIN


def _scene(graphs: Sequence[CellGraph]) -> Tuple[List[Tuple[CellGraph, float, List[_Group]]], float, float]:
    """Each cell's groups with its vertical offset, and the whole picture's width and height."""
    cells, y, width = [], 0.0, 0.0
    for g in graphs:
        groups, w, h = _cell_shapes(g)
        cells.append((g, y, groups))
        width = max(width, w)
        y += h + CELL_GAP
    return cells, math.ceil(width), math.ceil(y - CELL_GAP)


# --- SVG -------------------------------------------------------------------------------------------------------
def _num(v: float) -> str:
    s = f'{v:.1f}'
    s = s[:-2] if s.endswith('.0') else s
    return '0' if s == '-0' else s


def _svg_shape(s: _Shape) -> str:
    paint = f' fill="{s.fill}"' + (f' stroke="{s.stroke}" stroke-width="{_num(s.width)}"' if s.stroke != 'none' else '')
    if s.dash:
        paint += f' stroke-dasharray="{_num(s.dash[0])} {_num(s.dash[1])}"'
    if s.kind == 'path':
        d = ' '.join(c[0] + ' '.join(_num(v) for v in c[1:]) for c in s.points)
        return f'<path d="{d}"{paint}/>'
    if s.kind == 'polygon':
        return f'<polygon points="{" ".join(f"{_num(x)},{_num(y)}" for x, y in s.points)}"{paint}/>'
    x, y, w, h = s.box if s.kind == 'rect' else s.box + (0, 0)
    if s.kind == 'rect':
        r = f' rx="{_num(s.radius)}"' if s.radius else ''
        return f'<rect x="{_num(x)}" y="{_num(y)}" width="{_num(w)}" height="{_num(h)}"{r}{paint}/>'
    font = (f' font-family={quoteattr(s.font)}' if s.font != SANS else '') + f' font-size="{_num(s.size)}"' + (
        ' font-weight="bold"' if s.bold else '')
    return (f'<text x="{_num(x)}" y="{_num(y)}" text-anchor="{s.anchor}"{font} fill="{s.fill}">'
            f'{_svg_text(s)}</text>')


def _svg_text(s: _Shape) -> str:
    """The text's characters, subscripts as shifted, smaller tspans (and the text after them shifted back)."""
    out, shift = [], _num(SUB_SHIFT * s.size)
    shifted = False
    for chunk, sub in _runs(s.text) if s.markup else [(s.text, False)]:
        if sub:
            out.append(f'<tspan dy="{shift}" font-size="{_num(SUB_SCALE * s.size)}">{escape(chunk)}</tspan>')
        elif shifted:
            out.append(f'<tspan dy="-{shift}">{escape(chunk)}</tspan>')
        else:
            out.append(escape(chunk))
        shifted = sub
    return ''.join(out)


def _mathtext(s: _Shape) -> str:
    """The text for matplotlib: ``$`` escaped, subscripts as mathtext (``$c_{k-1}$``)."""
    out = ''
    for chunk, sub in _runs(s.text) if s.markup else [(s.text, False)]:
        if sub and out:
            out = out[:-1] + f'${out[-1]}_{{{chunk}}}$'
        else:
            out += chunk.replace('$', r'\$')
    return out


def _svg(graphs: Sequence[CellGraph], width: Optional[int] = None, height: Optional[int] = None) -> str:
    cells, w, h = _scene(graphs)
    out_w, out_h = _fit(w, h, width, height, 1.0)
    lines = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{out_w}" height="{out_h}" viewBox="0 0 {w} {h}" '
             f'font-family={quoteattr(SANS)}>',
             f'<title>{escape("; ".join(g.title for g in graphs))}</title>',
             f'<rect width="{w}" height="{h}" fill="#ffffff"/>']
    for graph, y, groups in cells:
        kind = 'reduce' if graph.reduction else 'normal'
        lines.append(f'<g class="cell" data-cell="{kind}" transform="translate(0 {_num(y)})">')
        for group in groups:
            attrs = ''.join(f' {k}={quoteattr(v)}' for k, v in group.attrs.items())
            lines.append(f'<g{attrs}>' + ''.join(_svg_shape(s) for s in group.shapes) + '</g>')
        lines.append('</g>')
    lines.append('</svg>')
    return '\n'.join(lines) + '\n'


# --- PNG (matplotlib) ------------------------------------------------------------------------------------------
def _fit(w: float, h: float, width: Optional[int], height: Optional[int], default_scale: float) -> Tuple[int, int]:
    """The output size in pixels: the requested one, or the picture's size times ``default_scale``; with only
    one of width and height, the other keeps the picture's proportions."""
    if width is None and height is None:
        return round(w * default_scale), round(h * default_scale)
    if height is None:
        return width, max(1, round(h * width / w))
    if width is None:
        return max(1, round(w * height / h)), height
    return width, height


def _figure(graphs: Sequence[CellGraph], width: Optional[int] = None, height: Optional[int] = None):
    """The picture as a matplotlib Figure of exactly the requested pixel size at 100 dpi (fitted, centred)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyBboxPatch, PathPatch, Polygon
    from matplotlib.path import Path as MplPath

    cells, w, h = _scene(graphs)
    out_w, out_h = _fit(w, h, width, height, PNG_SCALE)
    scale = min(out_w / w, out_h / h)
    pt = scale * 72 / 100  # layout units -> points at 100 dpi
    fig = Figure(figsize=(out_w / 100, out_h / 100), dpi=100, facecolor='white')
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    pad_x, pad_y = (out_w / scale - w) / 2, (out_h / scale - h) / 2
    ax.set_xlim(-pad_x, w + pad_x)
    ax.set_ylim(h + pad_y, -pad_y)
    codes = {'M': [MplPath.MOVETO], 'L': [MplPath.LINETO], 'C': [MplPath.CURVE4] * 3}
    for graph, y0, groups in cells:
        for group in groups:
            for s in group.shapes:
                style = dict(facecolor=s.fill, edgecolor=s.stroke, linewidth=s.width * pt,
                             linestyle=(0, tuple(d / s.width for d in s.dash)) if s.dash else 'solid')
                if s.kind == 'path':
                    verts, kinds = [], []
                    for c in s.points:
                        xs = c[1:]
                        verts += [(xs[i], xs[i + 1] + y0) for i in range(0, len(xs), 2)]
                        kinds += codes[c[0]]
                    ax.add_patch(PathPatch(MplPath(verts, kinds), **style))
                elif s.kind == 'polygon':
                    ax.add_patch(Polygon([(x, y + y0) for x, y in s.points], closed=True, facecolor=s.fill,
                                         edgecolor='none'))
                elif s.kind == 'rect':
                    x, y, bw, bh = s.box
                    ax.add_patch(FancyBboxPatch((x, y + y0), bw, bh, boxstyle=f'round,pad=0,rounding_size={s.radius}',
                                                **style))
                else:
                    x, y = s.box
                    text = _mathtext(s)
                    family = 'DejaVu Sans Mono' if s.font == MONO else 'DejaVu Sans'
                    ax.text(x, y + y0, text, fontsize=s.size * pt, color=s.fill, family=family,
                            fontweight='bold' if s.bold else 'normal', va='baseline',
                            ha={'middle': 'center', 'start': 'left', 'end': 'right'}[s.anchor])
    return fig


# --- what to draw ----------------------------------------------------------------------------------------------
def is_model_name(name: Any) -> bool:
    """Whether ``name`` names a model (registered, ``bnas_custom``, ``local-dir:``, ``hf-hub:``) rather than
    a genotype (a bundled name or a JSON path)."""
    from .registry import VARIANTS
    if not isinstance(name, str) or name.endswith('.json') or Path(name).is_file():
        return False
    return name.startswith(('local-dir:', 'hf-hub:')) or name.split('.')[0] in (*VARIANTS, 'bnas_custom')


def build_model_structure(name: str, **kwargs):
    """The model ``name`` with its structure only (on the meta device: no memory, no weights loaded)."""
    import torch

    from .registry import create_checked
    with torch.device('meta'):
        return create_checked(name, **kwargs)


def _source(src: Any) -> Tuple[Genotype, Optional[NetworkInfo]]:
    from .network import BNASNet
    if isinstance(src, BNASNet):
        return src.genotype, NetworkInfo.of(src)
    if is_model_name(src):
        model = build_model_structure(src)
        return model.genotype, NetworkInfo.of(model)
    if hasattr(src, 'parameters') and not isinstance(src, (str, Path, dict)):
        raise BnasError(f'{type(src).__name__}: not a bnas_zoo network; expected a BNASNet, a model name, a genotype '
                        f'name, a genotype JSON path or a genotype dict')
    return load_genotype(src), None




def cell_graphs(src: Any, cell: str = 'both', inter_cell_skip: Optional[bool] = None,
                title: Optional[str] = None) -> List[CellGraph]:
    """The graphs of the cells ``cell`` ('normal', 'reduce' or 'both') of a genotype or a network."""
    if cell not in CELLS:
        raise BnasError(f"cell={cell!r}: expected one of {', '.join(CELLS)}")
    genotype, network = _source(src)
    kinds = (False, True) if cell == 'both' else (cell == 'reduce',)
    return [cell_graph(genotype, r, network, inter_cell_skip, title) for r in kinds]


def _check_size(name: str, value: Optional[int]) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_PIXELS):
        raise BnasError(f'{name}={value!r}: expected a number of pixels from 1 to {MAX_PIXELS}')


def draw_cell(genotype_or_model: Any, cell: str = 'both', output: Union[None, str, Path] = None, *,
              format: Optional[str] = None, width: Optional[int] = None, height: Optional[int] = None,
              inter_cell_skip: Optional[bool] = None, title: Optional[str] = None):
    """Draw the cell(s) of a genotype or a network.

    Args:
        genotype_or_model: a bundled genotype name (``'bnas_cifar'``), a genotype JSON path, a dict or
            :class:`~bnas_zoo.genotype.Genotype`; or a network: a registered name (``'bnas_d'``),
            ``'local-dir:PATH'``, ``'hf-hub:ORG/NAME'`` or a model object. A network adds what it has
            around its cells: the inter-cell skip and the float convolutions of its last cell.
        cell: ``'normal'``, ``'reduce'`` or ``'both'`` (one above the other).
        output: the file to write, ``.svg`` or ``.png``; None returns the picture instead.
        format: ``'svg'`` or ``'png'``; by default the output's suffix, or ``'svg'`` without output.
        width, height: the size in pixels (PNG; for SVG its display size). With one, the other keeps the
            picture's proportions; with both, the picture is fitted and centred. Default: the drawing's own
            size (SVG), twice that (PNG).
        inter_cell_skip: draw the inter-cell skip (default: the network's; True for a genotype alone).
        title: replaces the genotype's or model's name in the title.

    Returns:
        The path written; without ``output`` the SVG text (``format='svg'``) or a matplotlib Figure
        (``format='png'``). Bad genotypes raise :class:`~bnas_zoo.errors.GenotypeError`.
    """
    fmt = format or (Path(output).suffix.lower().lstrip('.') if output is not None else 'svg')
    if fmt not in FORMATS:
        raise BnasError(f"{output if output is not None else 'format'}: expected a .svg or .png file "
                        f"(format {fmt!r} is not one of {', '.join(FORMATS)})")
    _check_size('width', width)
    _check_size('height', height)
    graphs = cell_graphs(genotype_or_model, cell, inter_cell_skip, title)
    if output is None:
        return _svg(graphs, width, height) if fmt == 'svg' else _figure(graphs, width, height)
    return write_picture(graphs, output, fmt, width, height)


def write_picture(graphs: Sequence[CellGraph], output: Union[str, Path], fmt: Optional[str] = None,
                  width: Optional[int] = None, height: Optional[int] = None) -> Path:
    """Write cell graphs to ``output`` (atomically; its folder is created) as SVG or PNG."""
    output = Path(output)
    fmt = fmt or output.suffix.lower().lstrip('.')
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        if fmt == 'svg':
            text = _svg(graphs, width, height)
            atomic_write(output, lambda tmp: tmp.write_text(text, encoding='utf-8'))
        else:
            fig = _figure(graphs, width, height)
            atomic_write(output, lambda tmp: fig.savefig(tmp, format='png', dpi=100, metadata={'Software': None}))
    except OSError as e:
        raise BnasError(f'{output}: cannot write it ({e.strerror or e})') from None
    return output
