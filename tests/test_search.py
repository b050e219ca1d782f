"""BNAS search: the diversity regularizer, Eq. 5 derivation with gamma, the supernet, a short search -> build -> train."""
import json
import math

import pytest
import timm
import torch

import bnas_zoo
from bnas_zoo.derive import derive_cell, derive_genotype, diversity_regularizer, learnable_share, mean_entropy
from bnas_zoo.genotype import PRIMITIVES, load_genotype
from bnas_zoo.supernet import MaxPool3x3, Supernet
from bnas_zoo.train.search import main as search_main

OPS = list(PRIMITIVES)


def test_entropy_and_its_gradient():
    alphas = {k: torch.randn(14, 7, requires_grad=True) for k in ('normal', 'reduce')}
    probs = {k: torch.softmax(v, dim=-1) for k, v in alphas.items()}
    rows = torch.cat([probs['normal'], probs['reduce']])
    expected = -(rows * rows.log()).sum(1).mean()
    assert torch.allclose(mean_entropy(probs), expected)
    # uniform rows: maximal entropy log(7), zero gradient
    uniform = {k: torch.full((14, 7), 1 / 7) for k in ('normal', 'reduce')}
    assert mean_entropy(uniform).item() == pytest.approx(math.log(7))
    # the gradient of -H w.r.t. alpha (analytic): dH/dalpha_i = -p_i (log p_i + H_row), averaged over 28 rows
    reg = diversity_regularizer(probs, epoch=0, lam=1.0, tau=7.7)
    reg.backward()
    p = probs['normal'].detach()
    h_row = -(p * p.log()).sum(1, keepdim=True)
    analytic = (p * (p.log() + h_row)) / 28  # d(-H)/dalpha
    assert torch.allclose(alphas['normal'].grad, analytic, atol=1e-6)
    # the reduction rows count too (the release re-read the normal loop's last row instead)
    assert alphas['reduce'].grad.abs().sum() > 0


def test_regularizer_annealing():
    probs = {k: torch.softmax(torch.randn(14, 7), -1) for k in ('normal', 'reduce')}
    h = mean_entropy(probs).item()
    assert diversity_regularizer(probs, 0, 1.0, 7.7).item() == pytest.approx(-h)
    assert diversity_regularizer(probs, 7.7, 1.0, 7.7).item() == pytest.approx(-h / math.e)
    assert diversity_regularizer(probs, 50, 2.0, 7.7).item() == pytest.approx(-2 * h * math.exp(-50 / 7.7))
    assert diversity_regularizer(probs, 3, 0.0, 7.7).item() == 0.0


def _probs_with_winning_zeroise():
    """Node 2's edge from input 1 has Zeroise 0.40 vs bin_conv_3x3 0.30: Zeroise wins at gamma = 1 only."""
    p = torch.full((14, 7), 0.05)
    p[:, OPS.index('bin_conv_3x3')] = 0.70
    p[1] = torch.tensor([0.40, 0.05, 0.05, 0.05, 0.05, 0.30, 0.10])
    p[0, OPS.index('bin_conv_3x3')] = 0.35
    return p / p.sum(1, keepdim=True)


def test_gamma_derivation_zeroise_wins_only_at_gamma_1():
    p = _probs_with_winning_zeroise()
    g1 = derive_cell(p, OPS, 4, gamma=1.0)
    g3 = derive_cell(p, OPS, 4, gamma=3.0)
    assert ('none', 1) in g1[:2]            # kept in the final cell (unlike DARTS)
    assert ('bin_conv_3x3', 1) in g3[:2]    # 0.40 / 3 < 0.30: the conv wins
    darts = derive_cell(p, OPS, 4, keep_zeroise=False)
    assert all(op != 'none' for op, _ in darts)
    assert derive_cell(p, OPS, 4)[2:] == g3[2:]
    with pytest.raises(ValueError):
        derive_cell(p, OPS, 4, gamma=0)


def _one_edge_probs(zeroise: float, conv: float) -> torch.Tensor:
    """Every edge a clear bin_conv_3x3 (0.7) except node 2's edge from input 0: Zeroise vs bin_conv_5x5."""
    p = torch.full((14, 7), 0.05)
    p[:, OPS.index('bin_conv_3x3')] = 0.70
    p[0] = 0.0
    p[0, OPS.index('none')] = zeroise
    p[0, OPS.index('bin_conv_5x5')] = conv
    return p


@pytest.mark.parametrize('zeroise, conv, gamma, expected', [
    (0.40, 0.10, 3.0, 'none'),           # 0.40 / 3 = 0.133 > 0.10 (gamma squared would give 0.044: the conv)
    (0.40, 0.14, 3.0, 'bin_conv_5x5'),   # 0.133 < 0.14
    (0.40, 0.19, 2.0, 'none'),           # 0.20 > 0.19 (gamma squared: 0.10 < 0.19)
    (0.40, 0.21, 2.0, 'bin_conv_5x5'),   # 0.20 < 0.21
    (0.40, 0.30, 1.0, 'none'),           # gamma 1 keeps Zeroise as found
    (0.40, 0.41, 1.0, 'bin_conv_5x5'),
    (0.10, 0.30, 0.25, 'none'),          # gamma < 1 favours Zeroise: 0.40 > 0.30 (gamma squared: 1.6)
    (0.10, 0.45, 0.25, 'bin_conv_5x5'),  # 0.40 < 0.45 (gamma squared: 1.6 > 0.45, Zeroise)
])
def test_gamma_rule_on_both_sides_of_the_boundary(zeroise, conv, gamma, expected):
    """Eq. 5: Zeroise competes with p(none) / gamma, not p(none) / gamma ** 2 or p(none) * gamma."""
    cell = derive_cell(_one_edge_probs(zeroise, conv), OPS, 4, gamma=gamma)
    assert cell[0] == (expected, 0)
    assert cell[2:] == derive_cell(_one_edge_probs(zeroise, conv), OPS, 4, gamma=1.0)[2:]  # other nodes untouched


def test_gamma_also_ranks_the_edges():
    """The divided Zeroise probability is the edge's strength when the two strongest inputs of a node are chosen."""
    p = torch.full((14, 7), 0.05)
    p[:, OPS.index('bin_conv_3x3')] = 0.70
    p[2:5] = 0.01                                         # node 3: inputs 0, 1, 2
    p[2, OPS.index('none')], p[2, OPS.index('bin_conv_5x5')] = 0.40, 0.10
    p[3, OPS.index('bin_conv_5x5')] = 0.30
    p[4, OPS.index('avg_pool_3x3')] = 0.20
    assert derive_cell(p, OPS, 4, gamma=1.0)[2:4] == [('none', 0), ('bin_conv_5x5', 1)]
    # gamma 3: input 0 keeps Zeroise (0.133 > 0.10) but ranks below inputs 1 (0.30) and 2 (0.20)
    assert derive_cell(p, OPS, 4, gamma=3.0)[2:4] == [('bin_conv_5x5', 1), ('avg_pool_3x3', 2)]
    # DARTS rule: Zeroise never selected, input 0 ranked by its best other op (0.10): inputs 1 and 2 again
    assert derive_cell(p, OPS, 4, keep_zeroise=False)[2:4] == [('bin_conv_5x5', 1), ('avg_pool_3x3', 2)]
    p[2, OPS.index('bin_conv_5x5')] = 0.25                # now its best other op beats input 2's 0.20
    assert derive_cell(p, OPS, 4, keep_zeroise=False)[2:4] == [('bin_conv_5x5', 0), ('bin_conv_5x5', 1)]


def test_gamma_equals_dividing_the_zeroise_column():
    """derive(p, gamma=g) == derive(p', gamma=1), p' = p with the Zeroise column divided by g (random p and g)."""
    gen = torch.Generator().manual_seed(13)
    z = OPS.index('none')
    differs = 0
    for _ in range(40):
        logits = 1.5 * torch.randn(14, 7, generator=gen)
        logits[:, z] += 1.0                               # Zeroise often competitive, as in real searches
        p = torch.softmax(logits, dim=-1)
        g = float(torch.empty(1).uniform_(0.3, 6.0, generator=gen))
        scaled = p.clone()
        scaled[:, z] /= g
        assert derive_cell(p, OPS, 4, gamma=g) == derive_cell(scaled, OPS, 4, gamma=1.0), g
        geno = derive_genotype({'normal': p, 'reduce': p.flip(0)}, OPS, 4, gamma=g)  # the genotype: both cells
        assert [tuple(e) for e in geno['normal']] == derive_cell(scaled, OPS, 4, gamma=1.0)
        assert [tuple(e) for e in geno['reduce']] == derive_cell(scaled.flip(0), OPS, 4, gamma=1.0)
        differs += derive_cell(p, OPS, 4, gamma=g) != derive_cell(p, OPS, 4, gamma=1.0)
    assert differs >= 10  # the inputs do exercise gamma (a rule ignoring it would not pass)


def test_learnable_share_counts_both_cells():
    geno = dict(normal=[['none', 0], ['bin_conv_3x3', 1], ['max_pool_3x3', 0], ['bin_dil_conv_5x5', 2]],
                reduce=[['bin_conv_5x5', 0], ['bin_conv_3x3', 1], ['avg_pool_3x3', 0], ['bin_conv_3x3', 2]])
    assert learnable_share(geno, [o for o in OPS if o.startswith('bin_')]) == pytest.approx(5 / 8)
    assert learnable_share(dict(normal=geno['normal'], reduce=geno['normal']), ['bin_conv_3x3']) == pytest.approx(1 / 4)


def test_search_halves_are_disjoint_and_fixed_by_seed():
    from bnas_zoo.train.search import _halves
    ds = list(range(40))
    a, b = _halves(ds, 5, seed=0)
    assert sorted(a.indices + b.indices) == ds and len(a) == len(b) == 20
    assert _halves(ds, 5, seed=0)[0].indices == a.indices
    assert _halves(ds, 5, seed=1)[0].indices != a.indices


def test_derived_genotypes_are_valid_and_build():
    torch.manual_seed(0)
    probs = {k: torch.softmax(torch.randn(14, 7), -1) for k in ('normal', 'reduce')}
    for gamma in (1.0, 3.0):
        geno = derive_genotype(probs, OPS, 4, gamma, provenance=dict(seed=0))
        g = load_genotype(geno)
        assert g.provenance['gamma'] == gamma
        model = timm.create_model('bnas_custom', genotype=geno, layers=3, channels=4, num_classes=10)
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    assert 0 <= learnable_share(geno, [o for o in OPS if o.startswith('bin_')]) <= 1


@pytest.mark.parametrize('stride', [1, 2])
def test_search_max_pool_is_torchs(stride):
    """The search's max pooling (through a channels-last copy on the CPU) gives nn.MaxPool2d's values and, on
    inputs full of ties (ReLU zeros, a few levels), its gradients: the same argmax positions."""
    g = torch.Generator().manual_seed(stride)
    for shape in [(4, 16, 32, 32), (3, 7, 9, 5), (2, 3, 1, 2)]:
        x = torch.relu(torch.randn(shape, generator=g) * 2).round()
        a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = MaxPool3x3(stride)(a), torch.nn.MaxPool2d(3, stride, 1)(b)
        assert ya.is_contiguous() and torch.equal(ya, yb)
        r = torch.randn(ya.shape, generator=g)
        (ya * r).sum().backward()
        (yb * r).sum().backward()
        assert torch.equal(a.grad, b.grad)


def test_supernet_forward_backward_and_ablation():
    torch.manual_seed(0)
    net = Supernet(OPS, layers=3, channels=4, num_classes=10)
    out = net(torch.randn(2, 3, 16, 16))
    out.sum().backward()
    assert net.alphas_normal.grad is not None and net.alphas_reduce.grad.abs().sum() > 0
    assert net.alphas_normal.shape == (14, 7)
    no_skip = Supernet([o for o in OPS if 'dil' not in o], layers=3, channels=4, inter_cell_skip=False)
    assert no_skip.alphas_normal.shape == (14, 5) and all(not c.skip for c in no_skip.cells)


def test_bad_search_input(tmp_path, capsys):
    base = ['--dataset', 'embedded', '--epochs', '1', '--cells', '3', '--channels', '4', '--no-progress']
    for extra, message in (
            (['--gamma', '0'], '--gamma 0'),
            (['--lam', '-1'], '--lam -1'),
            (['--tau', '0'], '--tau 0'),
            (['--ops', 'none', 'conv_9x9'], 'unknown operation(s) conv_9x9'),
            (['--batch-size', '1000'], 'too few to halve')):
        assert search_main(base + extra + ['--output', str(tmp_path / 'c')]) == 2
        assert message in capsys.readouterr().err
    existing = tmp_path / 'exists'
    existing.mkdir()
    (existing / 'genotype.json').write_text('{}')
    assert search_main(base + ['--output', str(existing)]) == 2
    assert '--overwrite' in capsys.readouterr().err


@pytest.mark.slow
def test_short_search_then_build_then_train(tmp_path, capsys):
    run = tmp_path / 'cell'
    out = run / 'genotype.json'
    small = ['--dataset', 'embedded', '--cells', '3', '--channels', '4', '--batch-size', '16', '--train-subset', '64',
             '--output', str(run), '--no-progress']
    assert search_main(small + ['--epochs', '2']) == 0
    g1 = load_genotype(out)
    g3 = load_genotype(run / 'genotype.gamma3.json')
    assert g1.name == 'cell' and g1.provenance['gamma'] == 1.0 and g3.provenance['gamma'] == 3.0
    assert g1.provenance['lam'] == 1.0 and g1.provenance['tau'] == 7.7 and len(g1.provenance['final_alphas']['normal']) == 14
    log = json.loads((run / 'search_log.json').read_text())
    assert [r['epoch'] for r in log] == [1, 2] and all(0 <= r['learnable_share'] <= 1 for r in log)
    assert (run / 'alphas.png').read_bytes()[:4] == b'\x89PNG'
    # a finished search is not stretched to more epochs: its schedule was fitted to 2
    assert search_main(small + ['--epochs', '3', '--resume']) == 2
    assert 'started for 2 epochs; this command asks for 3' in capsys.readouterr().err
    # the genotype trains through bnas-train
    from bnas_zoo.train.train import main as train_main
    assert train_main(['--model', 'bnas_custom', '--model-arg', f'genotype={out}', '--model-arg', 'layers=3',
                       '--model-arg', 'channels=8', '--data', 'embedded', '--epochs', '1', '--train-subset', '64',
                       '--output', str(tmp_path / 'run'), '--no-progress']) == 0
    assert timm.create_model(f'local-dir:{tmp_path / "run"}', pretrained=True).genotype.normal == load_genotype(out).normal


def _same(a, b, where='') -> None:
    """Exact equality of nested checkpoint contents (dicts, lists, tuples, tensors, arrays, numbers)."""
    assert type(a) is type(b), where
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _same(a[k], b[k], f'{where}.{k}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f'{where}[{i}]')
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif hasattr(a, 'shape'):  # numpy
        assert (a == b).all(), where
    else:
        assert a == b, where


def _without_seconds(rows):
    return [{k: v for k, v in r.items() if k != 'seconds'} for r in rows]


@pytest.mark.slow
def test_search_resume_is_exact(tmp_path, capsys, search_plot_draws):
    """A 3-epoch search stopped after 2 (--stop-after) and resumed ends exactly as a straight 3-epoch search.
    Its epochs are shorter than REDRAW_SECONDS: each command draws alphas.png once, after its last epoch."""
    from safetensors.torch import load_file
    from bnas_zoo.train.checkpoint import unit_dir
    drawn = search_plot_draws
    small = ['--dataset', 'embedded', '--cells', '3', '--channels', '4', '--batch-size', '8', '--train-subset', '32',
             '--epochs', '3', '--no-progress']
    straight, interrupted = tmp_path / 'straight' / 'cell', tmp_path / 'interrupted' / 'cell'
    assert search_main(small + ['--output', str(straight)]) == 0
    assert drawn == [[1, 2, 3]]
    assert search_main(small + ['--output', str(interrupted), '--stop-after', '2']) == 0
    assert 'stopped after epoch 2 of 3' in capsys.readouterr().out
    assert drawn == [[1, 2, 3], [1, 2]] and (interrupted / 'alphas.png').is_file()
    assert not (interrupted / 'genotype.json').exists()  # an unfinished search writes no genotype
    assert [r['epoch'] for r in json.loads((interrupted / 'search_log.json').read_text())] == [1, 2]
    assert search_main(small + ['--output', str(interrupted), '--resume']) == 0
    assert drawn == [[1, 2, 3], [1, 2], [1, 2, 3]]
    assert (interrupted / 'alphas.png').read_bytes() == (straight / 'alphas.png').read_bytes()
    a, b = (load_file(unit_dir(d, 2) / 'supernet.safetensors') for d in (straight, interrupted))
    assert {'alphas_normal', 'alphas_reduce'} <= a.keys() and a.keys() == b.keys()  # weights and architecture
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    sa, sb = (torch.load(unit_dir(d, 2) / 'search_state.pt', weights_only=True) for d in (straight, interrupted))
    assert sa['epoch'] == sb['epoch'] == 2
    for key in ('w_opt', 'a_opt', 'sched', 'scaler', 'rng', 'config'):  # both optimizers, the schedule, the RNG
        _same(sa[key], sb[key], key)
    _same(_without_seconds(sa['history']), _without_seconds(sb['history']), 'history')
    la, lb = (json.loads((d / 'search_log.json').read_text()) for d in (straight, interrupted))
    assert _without_seconds(la) == _without_seconds(lb) and [r['epoch'] for r in lb] == [1, 2, 3]
    assert [r['regularizer_weight'] for r in lb] == pytest.approx([math.exp(-t / 7.7) for t in range(3)])
    for name in ('genotype.json', 'genotype.gamma3.json'):  # the genotypes, their provenance and final alphas
        assert json.loads((straight / name).read_text()) == json.loads((interrupted / name).read_text()), name
    # each file is Eq. 5 applied to the final architecture weights with its own gamma
    g3 = json.loads((interrupted / 'genotype.gamma3.json').read_text())
    final = {k: torch.tensor(v) for k, v in g3['provenance']['final_alphas'].items()}
    for name, gamma in (('genotype.json', 1.0), ('genotype.gamma3.json', 3.0)):
        geno = json.loads((interrupted / name).read_text())
        expected = derive_genotype(final, OPS, 4, gamma)
        assert (geno['normal'], geno['reduce'], geno['provenance']['gamma']) == (
            expected['normal'], expected['reduce'], gamma), name
    assert search_main(small + ['--output', str(tmp_path / 'x'), '--stop-after', '0']) == 2
    assert '--stop-after 0' in capsys.readouterr().err


def test_separable_convolution_comparison_space(tmp_path):
    from bnas_zoo.operations import SEP_CONV_OPS
    ops = OPS + list(SEP_CONV_OPS)
    net = Supernet(ops, layers=3, channels=4, num_classes=10)
    net(torch.randn(2, 3, 16, 16)).sum().backward()
    assert net.alphas_normal.shape == (14, 9)
    p = torch.full((14, 9), 0.01)
    p[:, ops.index('bin_sep_conv_3x3')] = 0.9
    geno = derive_genotype({'normal': p, 'reduce': p}, ops, 4)
    model = timm.create_model('bnas_custom', genotype=geno, layers=3, channels=8, num_classes=10)
    out = model(torch.randn(2, 3, 32, 32))
    out.sum().backward()
    assert all(q.grad is not None for q in model.parameters())
    sep = model.cells[0].ops['0']
    assert isinstance(sep, bnas_zoo.binary.BinarySepConvBlock) and sep.conv.binary_weights
    # the release's last-two-convs quirk applies to the last cell's pointwise convs
    assert not model.cells[-1].ops['7'].conv.binary_weights


def test_lean_search_step_is_bit_for_bit_the_former_one(monkeypatch):
    """search_step computes only the gradients each update uses (and sums the candidate operations from the
    first): after three steps, the supernet, the architecture parameters and both optimizers' states are
    bit for bit those of the former step (every gradient computed, Python's sum), which the benchmark
    benchmarks/search_step.py times against it."""
    import bnas_zoo.supernet as supernet
    from bnas_zoo.binary import attach_latent_projection
    from bnas_zoo.train.search import search_step
    states = {}
    for lean in (False, True):
        monkeypatch.setattr(supernet, '_sum', supernet._sum if lean else sum)
        torch.manual_seed(0)
        model = Supernet(PRIMITIVES, 4, 4, 10)
        w_opt = torch.optim.SGD(model.weight_parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
        attach_latent_projection(w_opt, model)
        a_opt = torch.optim.Adam(model.arch_parameters(), lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
        scaler = torch.amp.GradScaler('cpu', enabled=False)
        g = torch.Generator().manual_seed(1)
        for step in range(3):
            batches = [(torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g))
                       for _ in range(2)]
            search_step(model, torch.nn.CrossEntropyLoss(), a_opt, w_opt, scaler, batches[0], batches[1], step,
                        1.0, 7.7, lean=lean)
        states[lean] = list(model.state_dict().values()) + [
            t for o in (w_opt, a_opt) for s in o.state.values() for t in s.values() if torch.is_tensor(t)]
        assert not torch.equal(model.alphas_normal, torch.zeros_like(model.alphas_normal))
    assert len(states[True]) == len(states[False])
    assert all(torch.equal(a, b) for a, b in zip(states[True], states[False]))
