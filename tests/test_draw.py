"""Cell pictures, search plots and the card's pictures: the drawn structure (the SVG parsed) against the
genotype and the compiler's analysis, for the bundled cells and fuzzed genotypes; PNG sizes; bad input;
byte-identical output; the README's committed pictures; a search folder's pictures; the publish folder."""
import json
import random
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import timm
import torch
from PIL import Image

import bnas_zoo
from bnas_zoo import draw_cell
from bnas_zoo.cli import main
from bnas_zoo.compiler import compile_cell, last_cell_fp_slots
from bnas_zoo.derive import derive_genotype
from bnas_zoo.errors import BnasError, GenotypeError
from bnas_zoo.genotype import OPERATIONS, PRIMITIVES, load_genotype
from bnas_zoo.search_plots import draw_search, edge_nodes, plot_search, search_curves, write_search_figures

ROOT = Path(__file__).resolve().parent.parent
NS = '{http://www.w3.org/2000/svg}'
DAGGER = ' \u2021'


def _cells(svg: str) -> dict:
    """What an SVG shows, per cell: nodes (key -> state), op edges (index -> (op, from, to, state, label)),
    concat edges (node -> state), the skip's label, and the label and node rectangles."""
    root = ET.fromstring(svg)
    cells = {}
    for cell in root.iter(NS + 'g'):
        if cell.get('class') != 'cell':
            continue
        drawn = dict(nodes={}, ops={}, concat={}, skip=None, boxes=[])
        for g in cell.findall(NS + 'g'):
            cls = g.get('class').split()
            text = g.find(NS + 'text')
            label = ''.join(text.itertext()) if text is not None else None
            rect = g.find(NS + 'rect')
            if rect is not None and cls[0] in ('node', 'edge'):
                drawn['boxes'].append((f"{cls[0]} {g.get('data-node') or g.get('data-edge') or cls[1]}",
                                       *(float(rect.get(a)) for a in ('x', 'y', 'width', 'height'))))
            if cls[0] == 'node':
                drawn['nodes'][g.get('data-node')] = cls[1]
            elif cls[:2] == ['edge', 'op']:
                drawn['ops'][int(g.get('data-edge'))] = (g.get('data-op'), int(g.get('data-from')),
                                                          int(g.get('data-to')), cls[2], label)
            elif cls[:2] == ['edge', 'concat']:
                drawn['concat'][int(g.get('data-from'))] = cls[2]
            elif cls[:2] == ['edge', 'skip']:
                drawn['skip'] = label
        cells[cell.get('data-cell')] = drawn
    return cells


def _expected(genotype, reduction: bool, skip: bool = True, fp=frozenset()) -> dict:
    """What the picture must show: every genotype edge once, in the compiler's verdict."""
    edges, concat = genotype.cell(reduction)
    plan = compile_cell(edges, concat, reduction, skip=skip)
    ops = {}
    for k, (op, inp) in enumerate(edges):
        state = 'zero' if k in plan.zero_edges else 'live' if k in plan.live_edges else 'unused'
        ops[k] = (op, inp, 2 + k // 2, state, op + (DAGGER if f'ops.{k}' in fp else ''))
    nodes = {'0': 'input', '1': 'input', 'out': 'output'}
    for n in range(2, 2 + plan.steps):
        nodes[str(n)] = 'zero' if n in plan.zero_nodes else 'live' if n in plan.live_nodes else 'unused'
    return dict(nodes=nodes, ops=ops, concat={c: 'zero' if c in plan.zero_nodes else 'live' for c in concat})


def _overlaps(boxes) -> list:
    """Pairs of label / node rectangles that overlap (they never should)."""
    bad = []
    for i, (a, ax, ay, aw, ah) in enumerate(boxes):
        for b, bx, by, bw, bh in boxes[i + 1:]:
            if ax < bx + bw - 0.5 and bx < ax + aw - 0.5 and ay < by + bh - 0.5 and by < ay + ah - 0.5:
                bad.append((a, b))
    return bad


def _check(svg: str, genotype, skip: bool = True, fp=None) -> dict:
    cells = _cells(svg)
    for kind, drawn in cells.items():
        expected = _expected(genotype, kind == 'reduce', skip, (fp or {}).get(kind, frozenset()))
        assert drawn['ops'] == expected['ops'], kind
        assert drawn['nodes'] == expected['nodes'], kind
        assert drawn['concat'] == expected['concat'], kind
        assert (drawn['skip'] is not None) == skip
        # independent of the compiler: Zeroise is always drawn zero, a node of two zero edges is zero
        for k, (op, _, node, state, _) in drawn['ops'].items():
            assert op != 'none' or state == 'zero'
            if k % 2 and drawn['ops'][k - 1][3] == state == 'zero':
                assert drawn['nodes'][str(node)] == 'zero'
        assert _overlaps(drawn['boxes']) == [], kind
    return cells


def test_bundled_cells_show_their_edges_and_zeros():
    cifar = _check(draw_cell('bnas_cifar', 'both'), load_genotype('bnas_cifar'))
    # the CIFAR cell by hand: two live binary convs; Zeroise makes nodes 4 and 5 zero
    normal = cifar['normal']
    assert {k: e[3] for k, e in normal['ops'].items()} == {0: 'zero', 1: 'live', 2: 'live', 3: 'zero', 4: 'zero',
                                                           5: 'zero', 6: 'zero', 7: 'zero'}
    assert normal['ops'][1][:3] == ('bin_dil_conv_3x3', 0, 2) and normal['ops'][2][:3] == ('bin_conv_3x3', 1, 3)
    assert [n for n, s in normal['nodes'].items() if s == 'zero'] == ['4', '5']
    assert normal['concat'] == {2: 'live', 3: 'live', 4: 'zero', 5: 'zero'}
    assert normal['skip'] == 'skip' and cifar['reduce']['skip'] == '2x2 conv (float)'
    assert {k: e[3] for k, e in cifar['reduce']['ops'].items()} == {0: 'live', 1: 'zero', 2: 'live', 3: 'zero',
                                                                    4: 'zero', 5: 'zero', 6: 'zero', 7: 'zero'}
    imagenet = _check(draw_cell('bnas_imagenet', 'both'), load_genotype('bnas_imagenet'))
    assert all(e[3] == 'live' for cell in imagenet.values() for e in cell['ops'].values())  # no Zeroise selected
    assert list(_cells(draw_cell('bnas_cifar', 'reduce'))) == ['reduce']


def _random_genotype(rng: random.Random, steps: int) -> dict:
    zero_bias = rng.random() < 0.3  # some genotypes with much Zeroise: zero and unused nodes
    data = {}
    for kind in ('normal', 'reduce'):
        data[kind] = [['none' if zero_bias and rng.random() < 0.5 else rng.choice(OPERATIONS),
                       rng.randrange(2 + k // 2)] for k in range(2 * steps)]
    width = rng.randint(1, steps)
    for kind in ('normal', 'reduce'):
        data[f'{kind}_concat'] = sorted(rng.sample(range(2, 2 + steps), width))
    return data


def test_fuzzed_genotypes_every_operation_and_node_count():
    rng = random.Random(20)
    seen_ops, seen_states = set(), set()
    for i, steps in enumerate([1, 2, 3, 4, 5, 6, 8, 11, 16, 24, 32] * 3):
        data = _random_genotype(rng, steps)
        genotype = load_genotype(data)
        skip = i % 4 != 3
        cells = _check(draw_cell(data, 'both', inter_cell_skip=skip), genotype, skip=skip)
        for cell in cells.values():
            seen_ops |= {e[0] for e in cell['ops'].values()}
            seen_states |= set(cell['nodes'].values()) | {e[3] for e in cell['ops'].values()}
    assert seen_ops == set(OPERATIONS)  # the bin_sep_conv_* comparison ops too
    assert seen_states >= {'live', 'zero', 'unused'}


def test_models_show_their_skip_and_float_convolutions(tmp_path, capsys):
    # bnas_d: the last of its 12 cells is a normal cell, whose two last convolutions are float in the release
    assert main(['draw', 'bnas_d', '--output', str(tmp_path / 'd.svg')]) == 0
    assert 'wrote' in capsys.readouterr().out
    geno = load_genotype('bnas_imagenet')
    fp = {'normal': last_cell_fp_slots(geno.normal, False), 'reduce': frozenset()}
    cells = _check((tmp_path / 'd.svg').read_text(), geno, fp=fp)
    assert sum(e[4].endswith(DAGGER) for e in cells['normal']['ops'].values()) == 2
    # bnas_custom with 3 cells: the last cell is a reduction cell
    assert main(['draw', 'bnas_custom', '--genotype', 'bnas_imagenet', '--cells', '3', '--channels', '8',
                 '--output', str(tmp_path / 'c.svg')]) == 0
    _check((tmp_path / 'c.svg').read_text(), geno,
           fp={'normal': frozenset(), 'reduce': last_cell_fp_slots(geno.reduce, False)})
    # a model object: no skip and a fully binary last cell are drawn as such
    model = timm.create_model('bnas_custom', genotype='bnas_cifar', layers=4, channels=8, inter_cell_skip=False,
                              fully_binary=True)
    svg = draw_cell(model, 'both')
    _check(svg, load_genotype('bnas_cifar'), skip=False)
    assert "the last cell's convolutions are binary too" in svg and 'bnas_custom (bnas_cifar): normal cell' in svg


def test_local_dir_and_hf_hub_models(tmp_path, monkeypatch):
    from huggingface_hub import constants
    from test_hub import _lay_out_cache
    from timm.models import save_for_hf
    model = timm.create_model('bnas_custom', genotype='bnas_cifar', layers=5, channels=8, num_classes=3)
    save_for_hf(model, str(tmp_path / 'folder'), model_args=model.architecture_args(), safe_serialization=True)
    fp = {'normal': last_cell_fp_slots(load_genotype('bnas_cifar').normal, False), 'reduce': frozenset()}
    local = draw_cell(f'local-dir:{tmp_path / "folder"}', 'both')
    _check(local, load_genotype('bnas_cifar'), fp=fp)
    _lay_out_cache(tmp_path / 'cache', 'me/cell', tmp_path / 'folder')
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(tmp_path / 'cache'))  # offline: only the on-disk cache
    assert main(['draw', 'hf-hub:me/cell', '--output', str(tmp_path / 'hub.svg')]) == 0
    hub = (tmp_path / 'hub.svg').read_text()
    assert _cells(hub) == _cells(local)
    assert main(['draw', 'hf-hub:me/missing', '--output', str(tmp_path / 'x.svg')]) != 0


def test_png_has_the_requested_size(tmp_path):
    svg_w, svg_h = (int(v) for v in ET.fromstring(draw_cell('bnas_cifar', 'normal')).get('viewBox').split()[2:])
    draw_cell('bnas_cifar', 'normal', tmp_path / 'default.png')
    assert Image.open(tmp_path / 'default.png').size == (2 * svg_w, 2 * svg_h)
    draw_cell('bnas_cifar', 'normal', tmp_path / 'w.png', width=640)
    assert Image.open(tmp_path / 'w.png').size == (640, round(svg_h * 640 / svg_w))
    assert main(['draw', 'bnas_imagenet', '--cell', 'reduce', '--output', str(tmp_path / 'wh.png'), '--width', '500',
                 '--height', '500']) == 0
    with Image.open(tmp_path / 'wh.png') as im:
        assert im.size == (500, 500) and im.format == 'PNG'
    fig = draw_cell('bnas_cifar', 'both', format='png', width=300)  # no output: the matplotlib figure
    assert fig.get_size_inches()[0] * fig.dpi == pytest.approx(300)
    svg = ET.fromstring(draw_cell('bnas_cifar', 'normal', width=400))
    assert svg.get('width') == '400' and svg.get('viewBox') == f'0 0 {svg_w} {svg_h}'


def test_bad_input_gets_the_genotype_readers_error(tmp_path, capsys):
    bad = tmp_path / 'bad.json'
    data = json.loads((ROOT / 'genotypes' / 'bnas_cifar.json').read_text())
    data['normal'][3][0] = 'conv_7x7'
    bad.write_text(json.dumps(data))
    with pytest.raises(GenotypeError) as reader:
        load_genotype(bad)
    with pytest.raises(GenotypeError) as drawn:
        draw_cell(bad, 'normal')
    assert str(drawn.value) == str(reader.value) and "field 'normal[3][0]'" in str(reader.value)
    assert main(['draw', str(bad), '--output', str(tmp_path / 'x.svg')]) == 2
    err = capsys.readouterr().err
    assert str(reader.value) in err and 'Traceback' not in err and not (tmp_path / 'x.svg').exists()
    for argv, message in ((['nope'], 'no such genotype file'),
                          (['bnas_cifar', '--output', str(tmp_path / 'x.jpg')], 'expected a .svg or .png file'),
                          (['bnas_cifar'], '--output FILE.svg or FILE.png is required'),
                          ([], 'expected a GENOTYPE or MODEL'),
                          (['bnas_cifar', '--output', str(tmp_path / 'x.png'), '--width', '0'], 'width=0'),
                          (['bnas_custom', '--output', str(tmp_path / 'x.svg')], 'bnas_custom needs'),
                          (['bnas_cifar', '--search', str(tmp_path)], 'got both')):
        assert main(['draw', *argv] + (['--output', str(tmp_path / 'y.svg')] if argv == ['nope'] else [])) == 2
        assert message in capsys.readouterr().err, argv
    with pytest.raises(BnasError, match="cell='middle'"):
        draw_cell('bnas_cifar', 'middle')


def test_same_input_same_bytes(tmp_path):
    data = _random_genotype(random.Random(3), 6)
    assert draw_cell(data, 'both') == draw_cell(dict(data), 'both')
    for name in ('a', 'b'):
        draw_cell(data, 'both', tmp_path / f'{name}.png', width=700)
        draw_cell(data, 'both', tmp_path / f'{name}.svg')
    assert (tmp_path / 'a.png').read_bytes() == (tmp_path / 'b.png').read_bytes()
    assert (tmp_path / 'a.svg').read_bytes() == (tmp_path / 'b.svg').read_bytes()


def test_committed_readme_pictures_are_the_commands_output(tmp_path):
    committed = sorted((ROOT / 'docs' / 'cells').glob('*.svg'))
    assert [p.name for p in committed] == ['bnas_cifar_normal.svg', 'bnas_cifar_reduce.svg',
                                           'bnas_imagenet_normal.svg', 'bnas_imagenet_reduce.svg']
    readme = (ROOT / 'README.md').read_text()
    for path in committed:
        genotype, cell = path.stem.rsplit('_', 1)
        assert f'bnas-zoo draw {genotype} --cell {cell} --output docs/cells/{path.name}' in readme
        assert f'](docs/cells/{path.name})' in readme
        assert main(['draw', genotype, '--cell', cell, '--output', str(tmp_path / path.name)]) == 0
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), (
            f'{path} differs from what `bnas-zoo draw` writes now: regenerate it with the command in the README')


# ---- search pictures ----

def _search_rows(epochs: int, ops=tuple(PRIMITIVES), seed: int = 0) -> list:
    """Log rows as bnas-search writes them: probabilities that move away from uniform, the derived cells."""
    g = torch.Generator().manual_seed(seed)
    target = {k: 3 * torch.randn(14, len(ops), generator=g) for k in ('normal', 'reduce')}
    rows = []
    for epoch in range(1, epochs + 1):
        probs = {k: torch.softmax(v * epoch / epochs, -1) for k, v in target.items()}
        geno = derive_genotype(probs, ops, 4)
        rows.append(dict(epoch=epoch, entropy=1.0 / epoch, learnable_share=0.5,
                         genotype=dict(normal=geno['normal'], reduce=geno['reduce']),
                         probs={k: v.tolist() for k, v in probs.items()}, ops=list(ops), inter_cell_skip=True))
    return rows


def test_search_plot_has_a_curve_per_operation_and_edge():
    ops = list(PRIMITIVES) + ['bin_sep_conv_3x3']
    rows = _search_rows(5, ops)
    curves = search_curves(rows)
    assert curves.epochs == [1, 2, 3, 4, 5] and curves.ops == ops and curves.steps == 4
    fig = plot_search(curves)
    lines = {line.get_gid(): line for ax in fig.axes for line in ax.get_lines()}
    for kind in ('normal', 'reduce'):
        mine = sorted(gid for gid in lines if gid.startswith(f'{kind}/'))
        assert mine == sorted(f'{kind}/{e}/{op}' for e in range(14) for op in ops)
        for e in range(14):
            for o, op in enumerate(ops):
                line = lines[f'{kind}/{e}/{op}']
                assert list(line.get_xdata()) == [1, 2, 3, 4, 5]
                assert list(line.get_ydata()) == [r['probs'][kind][e][o] for r in rows]
    assert list(lines['entropy'].get_ydata()) == [1.0 / t for t in range(1, 6)]
    # a panel per edge, titled by the node fed and the node read
    titles = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert len(titles) == 2 * 14 and titles[:3] == ['2 \u2190 $c_{k-2}$', '2 \u2190 $c_{k-1}$', '3 \u2190 $c_{k-2}$']
    assert edge_nodes(4)[-1] == (5, 4)


def test_search_folder_pictures_and_regeneration(tmp_path, capsys):
    rows = _search_rows(3)
    folder = tmp_path / 'search'
    write_search_figures(folder, rows)
    (folder / 'search_log.json').write_text(json.dumps(rows))
    geno = derive_genotype({k: torch.tensor(v) for k, v in rows[-1]['probs'].items()}, PRIMITIVES, 4, 3.0,
                           name='cell.gamma3')
    (folder / 'cell.gamma3.json').write_text(json.dumps(geno))
    assert Image.open(folder / 'alphas.png').format == 'PNG'
    for row in rows:
        cells = _cells((folder / 'cells' / f'epoch_{row["epoch"]:03d}.svg').read_text())
        for kind in ('normal', 'reduce'):
            assert [[e[0], e[1]] for e in cells[kind]['ops'].values()] == row['genotype'][kind]
    before = {p.name: p.read_bytes() for p in folder.rglob('*.*')}
    assert main(['draw', '--search', str(folder), '--output', str(tmp_path / 'again')]) == 0
    assert 'wrote 5 pictures' in capsys.readouterr().out
    again = tmp_path / 'again'
    assert (again / 'alphas.png').read_bytes() == before['alphas.png']
    assert (again / 'cells' / 'epoch_002.svg').read_bytes() == before['epoch_002.svg']
    _check((again / 'cell.gamma3.svg').read_text(), load_genotype(geno))
    # an interrupted search's folder (no genotype yet) and logs without the probabilities
    (folder / 'cell.gamma3.json').unlink()
    assert [p.name for p in draw_search(folder)] == ['alphas.png', 'epoch_001.svg', 'epoch_002.svg', 'epoch_003.svg']
    (folder / 'search_log.json').write_text(json.dumps([{k: v for k, v in r.items() if k != 'probs'} for r in rows]))
    assert main(['draw', '--search', str(folder)]) == 2
    assert "row 1: no field 'probs'" in capsys.readouterr().err
    assert main(['draw', '--search', str(tmp_path / 'nothing')]) == 2
    assert 'no such folder' in capsys.readouterr().err


@pytest.mark.slow
def test_bnas_search_writes_its_pictures(tmp_path, monkeypatch, search_plot_draws):
    """A real (tiny) search writes the plot, each epoch's cells and the final genotypes' cells; `bnas-zoo draw
    --search` on its folder writes the same bytes again. Epochs that take REDRAW_SECONDS or longer (here all
    of them) redraw the plot after each epoch (test_search: shorter ones draw it only after the last)."""
    import bnas_zoo.search_plots as search_plots
    from bnas_zoo.train.search import main as search_main
    drawn = search_plot_draws
    monkeypatch.setattr(search_plots, 'REDRAW_SECONDS', 0.0)
    run = tmp_path / 'search'
    assert search_main(['--dataset', 'embedded', '--cells', '3', '--channels', '4', '--batch-size', '8',
                        '--train-subset', '32', '--epochs', '2', '--no-progress', '--output', str(run)]) == 0
    assert drawn == [[1], [1, 2]]
    out = run / 'genotype.json'
    rows = json.loads((run / 'search_log.json').read_text())
    assert [len(r['probs']['normal']) for r in rows] == [14, 14] and rows[0]['ops'] == list(PRIMITIVES)
    written = {p.relative_to(run).as_posix(): p.read_bytes() for p in run.rglob('*') if p.suffix in ('.png', '.svg')}
    assert sorted(written) == ['alphas.png', 'cells/epoch_001.svg', 'cells/epoch_002.svg', 'genotype.gamma3.svg',
                               'genotype.svg']
    _check(written['genotype.svg'].decode(), load_genotype(out))
    assert main(['draw', '--search', str(run), '--output', str(tmp_path / 'again')]) == 0
    for name in ('alphas.png', 'cells/epoch_001.svg', 'cells/epoch_002.svg'):
        assert (tmp_path / 'again' / name).read_bytes() == written[name], name


# ---- the model card's pictures ----

def test_publish_folder_has_the_cell_pictures_and_the_card_shows_them(tmp_path):
    from timm.models import save_for_hf

    from bnas_zoo.hub import PUBLISHED_FILES, build_publish_folder
    model = timm.create_model('bnas_custom', genotype='bnas_imagenet', layers=4, channels=8, num_classes=5)
    save_for_hf(model, str(tmp_path / 'src'), model_args=model.architecture_args(), safe_serialization=True)
    out = build_publish_folder(tmp_path / 'src', tmp_path / 'pub', 'me/tiny')
    assert sorted(p.name for p in out.iterdir()) == sorted(PUBLISHED_FILES)
    card = (out / 'README.md').read_text()
    for kind, alt in (('normal', 'normal cell'), ('reduce', 'reduction cell')):
        assert f'![{alt}](cell_{kind}.png)' in card  # a relative link: the Hub shows the file of the repository
        with Image.open(out / f'cell_{kind}.png') as im:
            assert im.format == 'PNG' and im.size[0] > 400
        draw_cell(model, kind, tmp_path / f'{kind}.png')  # the picture of this network
        assert (tmp_path / f'{kind}.png').read_bytes() == (out / f'cell_{kind}.png').read_bytes()
    # publishing the same folder again writes the same bytes (so nothing is uploaded twice)
    again = build_publish_folder(tmp_path / 'src', tmp_path / 'pub2', 'me/tiny')
    assert (again / 'cell_normal.png').read_bytes() == (out / 'cell_normal.png').read_bytes()
    assert bnas_zoo.draw_cell is draw_cell
