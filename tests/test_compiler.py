"""The genotype compiler: zero analysis, live modules, parameter counts, precision choices, bnas_custom."""
import json

import pytest
import timm
import torch

import bnas_zoo
from bnas_zoo.compiler import compile_cell, last_cell_fp_slots
from bnas_zoo.errors import GenotypeError, ModelConfigError
from bnas_zoo.genotype import load_genotype
from conftest import ALL_MODELS, load_layout

# Parameter counts: the release's count minus exactly the parameters of modules no non-zero path uses
# (the input-1 preprocessing, BN + 1x1 conv, of the two reduction cells of the CIFAR networks).
EXPECTED_PARAMS = {
    'bnas_mini': 1_473_784 - 23_616,
    'bnas_a': 5_578_252 - 52_704,
    'bnas_b': 10_945_744 - 165_376,
    'bnas_c': 42_360_532 - 469_152,
    'bnas_d': 28_407_560,
    'bnas_e': 31_997_890,
    'bnas_f': 39_781_442,
    'bnas_g': 37_343_287,
    'bnas_h': 160_016_936,
}


@pytest.mark.parametrize('name', ALL_MODELS)
def test_parameter_counts(name):
    layout = load_layout(name)
    model = timm.create_model(name)
    got = sum(p.numel() for p in model.parameters())
    assert got == EXPECTED_PARAMS[name]
    # derive the difference from the layout itself: the unused modules' parameters
    unused = 0
    if layout['official_config']['genotype'] == 'latest_cell_zeroise':
        layers = layout['official_config']['layers']
        for i in (layers // 3, 2 * layers // 3):
            for key, shape in layout['state_dict'].items():
                if key.startswith(f'cells.{i}.preprocess1.') and key.split('.')[-1] in ('weight', 'bias'):
                    unused += torch.Size(shape).numel()
    assert layout['param_count'] - unused == got


def test_cifar_cell_builds_only_live_modules():
    g = load_genotype('bnas_cifar')
    normal = compile_cell(g.normal, g.normal_concat, reduction=False)
    assert normal.zero_nodes == {4, 5}
    assert normal.live_edges == (1, 2) and normal.live_nodes == (2, 3)
    reduce = compile_cell(g.reduce, g.reduce_concat, reduction=True)
    assert reduce.zero_nodes == {4, 5}
    assert reduce.live_edges == (0, 2) and reduce.shared == {2: 0}  # max_pool(node 0) computed once
    assert reduce.uses_input == (True, False)  # input 1 is never read: no preprocess1

    model = timm.create_model('bnas_mini')
    for i, cell in enumerate(model.cells):
        if cell.reduction:
            assert cell.preprocess1 is None and list(cell.ops.keys()) == ['0']
        else:
            assert list(cell.ops.keys()) == ['1', '2']
    zeroise = [m for m in model.modules() if type(m).__name__ == 'Zeroise']
    assert zeroise == []  # no Zeroise ever runs in the released networks


def test_zero_nodes_cost_nothing_but_keep_their_channels():
    """Cell 0 (no skip) outputs zeros in the channels of its zero nodes; later cells carry the skip there."""
    model = timm.create_model('bnas_mini').eval()
    x = torch.randn(2, 3, 32, 32)
    s = model.stem(x)
    c0 = model.cells[0](s, s)
    C = model.cells[0].channels
    assert torch.all(c0[:, 2 * C:] == 0) and c0[:, :2 * C].abs().sum() > 0
    c1 = model.cells[1](s, c0)
    assert torch.equal(c1[:, 2 * C:], c0[:, 2 * C:])  # zero nodes: skip only


def test_imagenet_reduction_shares_the_pool_of_node_0():
    g = load_genotype('bnas_imagenet')
    plan = compile_cell(g.reduce, g.reduce_concat, reduction=True)
    assert plan.shared == {2: 0, 4: 0, 6: 0}
    assert plan.live_edges == tuple(range(8)) and not plan.zero_nodes


def test_conv_reading_a_zero_node_materializes_it():
    cell = {'normal': [['none', 0], ['none', 1], ['bin_conv_3x3', 2], ['max_pool_3x3', 1],
                       ['avg_pool_3x3', 2], ['bin_conv_3x3', 3], ['max_pool_3x3', 4], ['none', 3]],
            'normal_concat': [2, 3, 4, 5]}
    cell['reduce'], cell['reduce_concat'] = cell['normal'], cell['normal_concat']
    plan = compile_cell(cell['normal'], cell['normal_concat'], reduction=False)
    assert plan.zero_nodes == {2} and plan.materialized_zeros == {2}
    # avg_pool of the zero node 2 is zero; the conv of zero node 2 is not (BN shifts it)
    assert 4 not in plan.live_edges and 2 in plan.live_edges
    model = timm.create_model('bnas_custom', genotype=cell, layers=3, channels=4, stem='cifar', num_classes=3)
    out = model(torch.randn(2, 3, 16, 16))
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_last_cell_full_precision_slots():
    g = load_genotype('bnas_imagenet')
    assert last_cell_fp_slots(g.normal, fully_binary=False) == {'ops.6', 'ops.7'}
    assert last_cell_fp_slots(load_genotype('bnas_cifar').normal, fully_binary=False) == {'ops.1', 'ops.2'}
    assert last_cell_fp_slots(g.normal, fully_binary=True) == frozenset()


def test_fully_binary_option():
    released = timm.create_model('bnas_d')
    binary = timm.create_model('bnas_d', fully_binary=True)
    last = binary.cells[-1]
    assert last.ops['6'].conv.binary_weights and last.ops['7'].conv.binary_weights
    assert not released.cells[-1].ops['6'].conv.binary_weights
    n_bin = lambda m: sum(1 for _ in bnas_zoo.binary_convs(m))
    assert n_bin(binary) == n_bin(released) + 2


def test_bnas_custom_from_path_and_dict(tmp_path):
    g = load_genotype('bnas_imagenet')
    path = tmp_path / 'cell.json'
    g.save(path)
    a = timm.create_model('bnas_custom', genotype=str(path), layers=5, channels=8, stem='cifar', num_classes=4)
    b = timm.create_model('bnas_custom', genotype=g.to_dict(), layers=5, channels=8, stem='cifar', num_classes=4)
    assert a.pretrained_cfg['input_size'] == (3, 32, 32) and a.pretrained_cfg['first_conv'] == 'stem.conv'
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(a.eval()(x), b.eval()(x))
    c = timm.create_model('bnas_custom', genotype='bnas_cifar', layers=6, channels=8, stem='imagenet', num_classes=4)
    assert c(torch.randn(1, 3, 64, 64)).shape == (1, 4)
    assert c.pretrained_cfg['first_conv'] == 'stem0.conv1'
    # the registered variants are bnas_custom with fixed arguments
    d = timm.create_model('bnas_custom', genotype='bnas_cifar', layers=10, channels=24, stem='cifar', num_classes=10)
    assert sum(p.numel() for p in d.parameters()) == EXPECTED_PARAMS['bnas_mini']


def test_bad_network_arguments_are_clear(tmp_path):
    with pytest.raises(ModelConfigError, match="stem='resnet'"):
        timm.create_model('bnas_custom', genotype='bnas_cifar', layers=8, channels=16, stem='resnet')
    with pytest.raises(ModelConfigError, match='layers=2'):
        timm.create_model('bnas_custom', genotype='bnas_cifar', layers=2, channels=16)
    with pytest.raises(TypeError, match='bnas_custom needs layers, channels'):
        timm.create_model('bnas_custom', genotype='bnas_cifar')
    # no architecture at all (timm's generic tools create every name so): the search-sized default
    default = timm.create_model('bnas_custom')
    assert (default.genotype.name, default.layers, default.channels, default.stem_type) == ('bnas_cifar', 8, 16, 'cifar')
    assert default.pretrained_cfg['input_size'] == (3, 32, 32)
    bad = tmp_path / 'bad.json'
    bad.write_text(json.dumps({'normal': [['conv_9x9', 0]] * 8, 'normal_concat': [2],
                               'reduce': [['none', 0]] * 8, 'reduce_concat': [2]}))
    with pytest.raises(GenotypeError, match=r"bad\.json: field 'normal\[0\]\[0\]': unknown operation 'conv_9x9'"):
        timm.create_model('bnas_custom', genotype=str(bad), layers=8, channels=16)
