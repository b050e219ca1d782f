import json

import pytest
import timm
import torch

import bnas_zoo
from bnas_zoo.cli import main
from bnas_zoo.profile import format_profile, profile_model

# the paper's FLOPs brackets (x1e8, paper_tables.md), reached in the paper's convention
PAPER_FLOPS = {'bnas_d': 1.48, 'bnas_e': 1.63, 'bnas_f': 1.78, 'bnas_g': 1.93, 'bnas_h': 6.56}


def _conv_macs(m: torch.nn.Conv2d, out_hw):
    return out_hw[0] * out_hw[1] * m.out_channels * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]


def test_layer_figures_are_computed_independently():
    model = timm.create_model('bnas_mini')
    p = profile_model(model)
    rows = {lc.name: lc for lc in p.layers}
    # a binary 3x3 conv of cell 0 at 32x32, C = 24
    lc = rows['cells.0.ops.2.conv']
    assert lc.precision == 'binary' and lc.output_shape == (1, 24, 32, 32)
    assert lc.binary_macs == 32 * 32 * 24 * 24 * 9 and lc.float_macs == 0
    assert lc.params_1bit == 24 * 24 * 9 and lc.params_32bit == 0
    # the stem conv is full precision
    stem = rows['stem.conv']
    assert stem.precision == 'float' and stem.float_macs == 32 * 32 * 72 * 3 * 9
    # the release's last two convs: float weights on 1-bit activations, counted as FP MACs
    assert rows['cells.9.ops.1.conv'].precision == 'float w / 1-bit a' and rows['cells.9.ops.1.conv'].binary_macs == 0
    # a BatchNorm holds 4 x C values at 32 bits and no MACs
    assert rows['cells.0.ops.2.bn'].params_32bit == 4 * 24 and rows['cells.0.ops.2.bn'].float_macs == 0
    # the classifier
    assert rows['classifier'].float_macs == 384 * 10


@pytest.mark.parametrize('name', ['bnas_mini', 'bnas_d'])
def test_totals_match_the_network(name):
    model = timm.create_model(name)
    p = profile_model(model)
    shapes = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: shapes.__setitem__(n, o.shape[-2:]))
             for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    model.eval()(torch.zeros(1, *model.pretrained_cfg['input_size']))
    for h in hooks:
        h.remove()
    binary = fp = 0
    for n, m in model.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            macs = _conv_macs(m, shapes[n])
            if isinstance(m, bnas_zoo.BinaryConv2d) and m.binary_weights:
                binary += macs
            else:
                fp += macs
    fp += model.classifier.in_features * model.classifier.out_features
    assert p.true.binary_macs == binary and p.true.float_macs == fp
    assert p.true.flops == pytest.approx(fp + binary / 64)
    assert p.true.speedup == pytest.approx((fp + binary) / (fp + binary / 64))
    n_bin = sum(m.weight.numel() for m in bnas_zoo.binary_convs(model))
    n_all = sum(t.numel() for k, t in model.state_dict().items() if not k.endswith('num_batches_tracked'))
    assert p.true.params_1bit == n_bin and p.true.params == n_all
    assert p.true.memory_bytes == pytest.approx(n_bin / 8 + (n_all - n_bin) * 4)
    assert p.true.memory_saving == pytest.approx(n_all * 4 / p.true.memory_bytes)
    assert p.parameters == sum(t.numel() for t in model.parameters())
    # the paper's convention binarizes more: the shortcuts and the last two convs
    assert p.paper.binary_macs > p.true.binary_macs and p.paper.flops < p.true.flops
    assert p.paper.binary_macs + p.paper.float_macs == p.true.binary_macs + p.true.float_macs


@pytest.mark.parametrize('name', list(PAPER_FLOPS))
def test_paper_convention_reaches_the_paper_brackets(name):
    p = profile_model(timm.create_model(name))
    assert p.paper.flops / 1e8 == pytest.approx(PAPER_FLOPS[name], rel=0.05)
    assert p.true.flops > 2 * p.paper.flops  # the released networks cost more than the brackets say


def test_bnas_d_memory_saving_matches_table_14():
    p = profile_model(timm.create_model('bnas_d'))
    assert p.paper.memory_saving == pytest.approx(13.91, rel=0.02)


def test_format_and_cli(capsys):
    p = profile_model(timm.create_model('bnas_mini'))
    text = format_profile(p)
    assert 'cells.0.ops.2.conv' in text and "paper's convention" in text and 'true (this network)' in text
    assert main(['profile', 'bnas_mini', '--summary']) == 0
    out = capsys.readouterr().out
    assert 'bnas_mini' in out and 'FLOPs x1e8' in out and 'cells.0' not in out
    assert main(['profile', 'bnas_mini', '--json']) == 0
    data = json.loads(capsys.readouterr().out)
    assert data['true']['binary_macs'] == p.true.binary_macs and data['parameters'] == 1_450_168
    assert main(['profile', 'bnas_custom', '--genotype', 'bnas_imagenet', '--layers', '4', '--channels', '8',
                 '--summary']) == 0
    assert 'bnas_custom' in capsys.readouterr().out
    assert main(['profile', 'bnas_nope']) == 2
    assert "unknown model 'bnas_nope'" in capsys.readouterr().err
    assert main(['profile', 'bnas_custom', '--genotype', 'missing.json', '--layers', '4', '--channels', '8']) == 2
    assert 'missing.json: no such genotype file' in capsys.readouterr().err
