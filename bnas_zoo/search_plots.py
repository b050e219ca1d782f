"""The pictures of an architecture search: how the architecture weights moved, and the cells they gave.

``bnas-search`` writes them in its run folder after every epoch (from its per-epoch log, ``search_log.json``),
and ``bnas-zoo draw --search FOLDER`` writes them again from a finished or interrupted search folder:

- ``alphas.png``: the softmax probability of each operation on each edge over the epochs, one small panel per
  edge (rows: the node fed, columns: the node read), normal and reduction cell side by side; below, the mean
  entropy of the probabilities and the share of learnable operations in the derived cells;
- ``cells/epoch_NNN.svg``: the cells derived after each epoch (both cells);
- ``<genotype>.svg``: the cells of each genotype JSON the search wrote into the folder.

The plot is drawn with matplotlib (a dependency) without pyplot, its PNG metadata stripped so that the same log
gives the same bytes.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from .errors import BnasError, GenotypeError
from .files import atomic_write, output_folder

__all__ = ['SEARCH_LOG', 'PLOT_NAME', 'SearchCurves', 'read_search_log', 'search_curves', 'plot_search',
           'write_search_figures', 'draw_search']

SEARCH_LOG = 'search_log.json'
PLOT_NAME = 'alphas.png'
CELLS_DIR = 'cells'
#: a search redraws :data:`PLOT_NAME` after an epoch only when this long has passed since it last drew it
#: (drawing its panels takes a few seconds), and always after the last epoch it runs
REDRAW_SECONDS = 60.0
KINDS = ('normal', 'reduce')


@dataclass(frozen=True)
class SearchCurves:
    """The probabilities of a search: ``probs[kind][t][e][o]`` of operation ``ops[o]`` on edge ``e`` after
    epoch ``epochs[t]``; ``entropy`` and ``learnable_share`` per epoch (None where not logged)."""
    epochs: List[int]
    ops: List[str]
    probs: Dict[str, List[List[List[float]]]]
    entropy: List[Optional[float]]
    learnable_share: List[Optional[float]]

    @property
    def steps(self) -> int:
        return edge_steps(len(self.probs['normal'][0]))


def edge_steps(n_edges: int) -> int:
    """The number of intermediate nodes of a supernet cell with ``n_edges`` mixed edges (2 + 3 + ... + (n+1))."""
    steps, total = 0, 0
    while total < n_edges:
        total += 2 + steps
        steps += 1
    if total != n_edges:
        raise ValueError(f'{n_edges} edges: not the edge count of a supernet cell (2, 5, 9, 14, ...)')
    return steps


def edge_nodes(steps: int) -> List[tuple]:
    """(node fed, node read) of each supernet edge, in the supernet's order."""
    return [(2 + i, j) for i in range(steps) for j in range(2 + i)]


def read_search_log(folder: Union[str, Path]) -> List[Dict[str, Any]]:
    """The rows of ``FOLDER/search_log.json`` (one per epoch)."""
    path = Path(folder) / SEARCH_LOG
    if not Path(folder).is_dir():
        raise BnasError(f'--search {folder}: no such folder; expected the output folder of bnas-search')
    if not path.is_file():
        raise BnasError(f'{path}: no such file; expected the output folder of bnas-search, which writes '
                        f'{SEARCH_LOG} after every epoch')
    try:
        rows = json.loads(path.read_text(encoding='utf-8'))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise BnasError(f'{path}: not valid JSON ({e}); expected the per-epoch rows bnas-search writes') from None
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise BnasError(f'{path}: expected a non-empty list of per-epoch rows (objects)')
    return rows


def search_curves(rows: Sequence[Dict[str, Any]], source: str = SEARCH_LOG) -> SearchCurves:
    """The checked curves of a search log's rows."""
    ops = None
    probs: Dict[str, List[Any]] = {k: [] for k in KINDS}
    for t, row in enumerate(rows):
        where = f'{source}: row {t + 1}'
        if not isinstance(row.get('epoch'), int):
            raise BnasError(f"{where}: field 'epoch' is {row.get('epoch')!r}; expected the epoch number")
        if 'probs' not in row or 'ops' not in row:
            raise BnasError(f"{where}: no field 'probs' or 'ops'; expected the architecture probabilities of each "
                            f'epoch, which bnas-search logs (a log of an older bnas-search lacks them)')
        if not (isinstance(row['ops'], list) and row['ops'] and all(isinstance(o, str) for o in row['ops'])):
            raise BnasError(f"{where}: field 'ops' is {row['ops']!r}; expected the list of candidate operations")
        if ops is not None and row['ops'] != ops:
            raise BnasError(f"{where}: field 'ops' differs from row 1's; expected one search per log")
        ops = row['ops']
        for kind in KINDS:
            p = row['probs'].get(kind) if isinstance(row['probs'], dict) else None
            ok = (isinstance(p, list) and p and all(
                isinstance(e, list) and len(e) == len(ops) and all(isinstance(v, (int, float)) and math.isfinite(v)
                                                                   for v in e) for e in p))
            if not ok:
                raise BnasError(f"{where}: field 'probs.{kind}' is not a list of edges, each {len(ops)} finite "
                                f"probabilities (one per operation)")
            try:
                edge_steps(len(p))
            except ValueError as e:
                raise BnasError(f"{where}: field 'probs.{kind}': {e}") from None
            if probs[kind] and len(p) != len(probs[kind][0]):
                raise BnasError(f"{where}: field 'probs.{kind}' has {len(p)} edges, row 1 {len(probs[kind][0])}")
            probs[kind].append(p)
    return SearchCurves([r['epoch'] for r in rows], list(ops), probs,
                        [r.get('entropy') for r in rows], [r.get('learnable_share') for r in rows])


def _input_name(j: int) -> str:
    return ('$c_{k-2}$', '$c_{k-1}$')[j] if j < 2 else str(j)


def plot_search(curves: SearchCurves):
    """The figure of :data:`PLOT_NAME`: one line per operation and edge (``gid`` ``'KIND/EDGE/OP'``, x the
    epochs), and the diversity panel (``gid`` ``'entropy'``, ``'learnable_share'``)."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    steps = curves.steps
    cols = steps + 1
    colours = [f'C{i % 10}' for i in range(len(curves.ops))]
    markers = len(curves.epochs) <= 20
    top = min(1.0, 1.08 * max(v for kind in KINDS for epoch in curves.probs[kind] for e in epoch for v in e))
    width, height = 2 * cols * 1.5 + 0.9, steps * 1.2 + 3.0
    fig = Figure(figsize=(width, height), dpi=90)
    # a grid of the two cells' panels (a narrow spacer column between them) and a bottom row
    grid = fig.add_gridspec(steps + 1, 2 * cols + 1, width_ratios=[1] * cols + [0.3] + [1] * cols,
                            height_ratios=[1] * steps + [1.6], left=0.5 / width, right=1 - 0.2 / width,
                            top=1 - 0.55 / height, bottom=0.5 / height, wspace=0.12, hspace=0.55)
    for c, kind in enumerate(KINDS):
        first = c * (cols + 1)
        name = 'normal' if kind == 'normal' else 'reduction'
        fig.text((grid[0, first].get_position(fig).x0 + grid[0, first + cols - 1].get_position(fig).x1) / 2,
                 1 - 0.2 / height, f'{name} cell: softmax($\\alpha$) of each operation on each edge',
                 ha='center', va='top', fontsize=10)
        for e, (node, j) in enumerate(edge_nodes(steps)):
            ax = fig.add_subplot(grid[node - 2, first + j])
            for o, op in enumerate(curves.ops):
                ax.plot(curves.epochs, [epoch[e][o] for epoch in curves.probs[kind]], color=colours[o], lw=1.1,
                        marker='o' if markers else None, ms=2.5, gid=f'{kind}/{e}/{op}')
            ax.set_ylim(0, top)
            ax.text(0.5, 1.03, f'{node} \u2190 {_input_name(j)}', transform=ax.transAxes, ha='center', va='bottom',
                    fontsize=8)
            # few ticks: a tick costs more to draw than the lines
            ax.xaxis.set_major_locator(MaxNLocator(3, integer=True))
            ax.yaxis.set_major_locator(MaxNLocator(2))
            ax.tick_params(labelsize=7, length=2, labelleft=j == 0, labelbottom=node - 2 == steps - 1 or j == node - 1)
            ax.grid(alpha=0.3)
    left = fig.add_subplot(grid[steps, :cols])
    if any(v is not None for v in curves.entropy):
        left.plot(curves.epochs, curves.entropy, 'o-' if markers else '-', ms=3, gid='entropy', label='entropy H(p)')
    if any(v is not None for v in curves.learnable_share):
        left.plot(curves.epochs, curves.learnable_share, 's-' if markers else '-', ms=3, gid='learnable_share',
                  label='learnable operations in the derived cells (share)')
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_xlabel('epoch', fontsize=8)
    left.set_title('diversity', fontsize=9, pad=2)
    left.tick_params(labelsize=7)
    left.grid(alpha=0.3)
    if left.lines:
        left.legend(fontsize=7)
    right = fig.add_subplot(grid[steps, cols + 1:])
    right.set_axis_off()
    right.legend([Line2D([], [], color=c, lw=2) for c in colours], curves.ops, title='operation (x: epoch)',
                 fontsize=8, title_fontsize=8, ncols=2, loc='center', frameon=False)
    return fig


def _epoch_genotype(row: Dict[str, Any], ops: List[str], source: str):
    from .genotype import validate_genotype_dict
    cells = row.get('genotype')
    if not isinstance(cells, dict):
        raise BnasError(f"{source}: row of epoch {row['epoch']}: no field 'genotype'; expected the cells derived "
                        f'after that epoch')
    steps = len(cells.get('normal') or []) // 2
    concat = list(range(2, 2 + steps))
    data = dict(name=f'search epoch {row["epoch"]}', normal=cells.get('normal'), normal_concat=concat,
                reduce=cells.get('reduce'), reduce_concat=concat)
    try:
        return validate_genotype_dict(data, f"{source} (epoch {row['epoch']})", primitives=ops)
    except GenotypeError as e:
        raise BnasError(str(e)) from None


def write_search_figures(folder: Union[str, Path], rows: Sequence[Dict[str, Any]],
                         source: Optional[str] = None, plot: bool = True) -> List[Path]:
    """Write :data:`PLOT_NAME` and ``cells/epoch_NNN.svg`` (the cells derived after each epoch) of a search's
    log rows into ``folder``; returns the paths written. ``plot=False`` leaves :data:`PLOT_NAME` as it is (a
    search redraws it at most every :data:`REDRAW_SECONDS`, see ``bnas-search``)."""
    from .draw import cell_graph, write_picture
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    source = source or str(folder / SEARCH_LOG)
    curves = search_curves(rows, source)
    written = []
    if plot:
        fig = plot_search(curves)
        written.append(atomic_write(folder / PLOT_NAME,
                                    lambda tmp: fig.savefig(tmp, format='png', metadata={'Software': None})))
    digits = max(3, len(str(max(curves.epochs))))
    for row in rows:
        geno = _epoch_genotype(row, curves.ops, source)
        skip = row.get('inter_cell_skip', True)
        graphs = [cell_graph(geno, r, inter_cell_skip=bool(skip), title=f'derived after epoch {row["epoch"]}')
                  for r in (False, True)]
        written.append(write_picture(graphs, folder / CELLS_DIR / f'epoch_{row["epoch"]:0{digits}d}.svg'))
    return written


def _genotype_files(folder: Path) -> List[Path]:
    """The genotype JSON files in a search folder (objects with normal and reduce cells)."""
    found = []
    for path in sorted(folder.glob('*.json')):
        try:
            data = json.loads(path.read_text(encoding='utf-8'))
        except (ValueError, UnicodeDecodeError, RecursionError, OSError):
            continue
        if isinstance(data, dict) and 'normal' in data and 'reduce' in data:
            found.append(path)
    return found


def draw_search(folder: Union[str, Path], output: Union[None, str, Path] = None) -> List[Path]:
    """Write the pictures of the search in ``folder`` (finished or interrupted) into ``output`` (default:
    the folder itself): the plot, the cells of every epoch, and the cells of each genotype JSON in the folder."""
    from .draw import draw_cell
    folder = Path(folder)
    rows = read_search_log(folder)
    out = output_folder(output if output is not None else folder, '--output')
    written = write_search_figures(out, rows, str(folder / SEARCH_LOG))
    skip = rows[-1].get('inter_cell_skip', True)
    for path in _genotype_files(folder):
        written.append(draw_cell(path, 'both', out / f'{path.stem}.svg', inter_cell_skip=bool(skip)))
    return written
