"""Grouped full-precision layers and bnas_d_grouped, our reconstruction of the paper's BNAS-D-dagger: the
FLOPs budget in both accountings, the architecture arguments and their errors, and the model's life cycle
(config round trip, 1-bit file, deployment, export)."""
import json

import pytest
import timm
import torch
from timm.models import save_for_hf

import bnas_zoo
from bnas_zoo.errors import ModelConfigError
from bnas_zoo.profile import profile_model


@pytest.fixture(scope='module')
def profiles():
    return {name: profile_model(timm.create_model(name), name=name) for name in ('bnas_d', 'bnas_d_grouped')}


def test_grouped_d_fits_bnas_d_flops_in_both_accountings(profiles):
    d, g = profiles['bnas_d'], profiles['bnas_d_grouped']
    assert g.paper.flops <= 1.48e8 and g.paper.flops <= d.paper.flops
    assert g.true.flops <= 4.07e8 and g.true.flops <= d.true.flops
    assert g.paper.flops == pytest.approx(1.454e8, rel=1e-3) and g.true.flops == pytest.approx(3.486e8, rel=1e-3)


def test_grouped_d_is_grouped_and_wider():
    d, g = timm.create_model('bnas_d'), timm.create_model('bnas_d_grouped')
    assert (g.stem0.conv2.groups, g.stem1.conv.groups) == (4, 4) and g.stem0.conv1.groups == 1
    shortcuts = [c.shortcut.conv for c in g.cells if c.shortcut is not None]
    assert len(shortcuts) == 2 and all(s.groups == 4 for s in shortcuts)
    assert g.channels == 88 > d.channels and g.num_features == 4 * 4 * 88
    assert g.genotype.name == d.genotype.name and len(g.cells) == len(d.cells)
    # binary layers: the release's scheme, only wider
    assert sum(1 for _ in bnas_zoo.binary_convs(g)) == sum(1 for _ in bnas_zoo.binary_convs(d))


@pytest.mark.parametrize('kwargs,match', [
    (dict(stem='cifar', stem_groups=2), 'stem_groups=2: the CIFAR stem has a single convolution'),
    (dict(stem='imagenet', channels=20, stem_groups=4), r'stem_groups=4: must divide .* channels/2 = 10'),
    (dict(stem='imagenet', channels=20, shortcut_groups=3), 'shortcut_groups=3: must divide the shortcut widths'),
    (dict(stem='imagenet', stem_groups=0), r'stem_groups=0: expected an integer >= 1'),
    (dict(stem='imagenet', shortcut_groups=True), r'shortcut_groups=True: expected an integer >= 1'),
    (dict(stem='cifar', channels=10, shortcut_groups=16), 'shortcut_groups=16: must divide the shortcut widths; 40'),
])
def test_bad_group_counts_are_clear_errors(kwargs, match):
    args = dict(genotype='bnas_imagenet', layers=6, channels=16) | kwargs
    with pytest.raises(ModelConfigError, match=match):
        timm.create_model('bnas_custom', **args)


def test_group_arguments_round_trip_through_a_model_folder(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model('bnas_custom', genotype='bnas_imagenet', layers=6, channels=16, stem='imagenet',
                              stem_groups=2, shortcut_groups=4, num_classes=5).eval()
    args = model.architecture_args()
    assert (args['stem_groups'], args['shortcut_groups']) == (2, 4)
    assert 'stem_groups' not in timm.create_model('bnas_d').architecture_args()  # released networks unchanged
    save_for_hf(model, str(tmp_path), model_args=args, safe_serialization=True)
    assert json.loads((tmp_path / 'config.json').read_text())['model_args']['shortcut_groups'] == 4
    again = timm.create_model(f'local-dir:{tmp_path}', pretrained=True).eval()
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(again(x), model(x))


def test_grouped_d_1bit_deploy_and_export(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model('bnas_d_grouped').eval()
    with torch.no_grad():
        for m in model.modules():  # non-trivial BatchNorm statistics
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    path = tmp_path / 'model-1bit.safetensors'
    bnas_zoo.save_1bit(model, path, config=dict(architecture='bnas_d_grouped', num_classes=1000, model_args={}))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        assert torch.equal(bnas_zoo.load_1bit(path).eval()(x), ref)
        fast = bnas_zoo.load_1bit(path, deploy=True)
        out = fast(x)
    assert (out - ref).abs().max() <= 1e-4 * ref.abs().max() and torch.equal(out.argmax(1), ref.argmax(1))
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        assert torch.allclose(exported.module()(x), ref, atol=1e-5)
