"""timm's own model tests (timm/tests/test_models.py), applied to every bnas_zoo variant.

Inputs are reduced for CPU (32x32 CIFAR, 64x64 ImageNet models); the tests are those of timm: forward,
backward with every parameter receiving a gradient, head reset and pooling variants, feature extraction,
forward_intermediates, FX tracing, in_chans, grad checkpointing, cfg names present in the state dict.
"""
import pytest
import timm
import torch
from timm.models import get_pretrained_cfg_value

import bnas_zoo
from conftest import CIFAR_MODELS, TIMM_MODELS, small_input_size

# the largest variants are exercised by the cheaper tests only; the full set runs on one model per stem
# plus the big ones for forward/backward
HEAVY = {'bnas_c', 'bnas_h'}


def _input(name, batch=2, in_chans=3):
    c, h, w = small_input_size(name)
    return torch.randn(batch, in_chans, h, w)


def test_all_variants_registered():
    names = timm.list_models('bnas_*')
    assert set(TIMM_MODELS) | {'bnas_custom'} == set(names)
    assert timm.list_pretrained('bnas_*') == []  # no weights are published yet: none is offered


@pytest.mark.parametrize('name', TIMM_MODELS)
def test_pretrained_cfg(name):
    cfg = timm.create_model(name).pretrained_cfg
    assert cfg.get('hf_hub_id') == bnas_zoo.registry.pretrained_hub_id(name)  # None until published, or a mirror
    if name in CIFAR_MODELS:
        assert cfg['input_size'] == (3, 32, 32) and cfg['num_classes'] == 10
        assert cfg['mean'] == pytest.approx((0.49139968, 0.48215827, 0.44653124))
        assert cfg['pool_size'] == (8, 8) and cfg['first_conv'] == 'stem.conv'
    else:
        assert cfg['input_size'] == (3, 224, 224) and cfg['num_classes'] == 1000 and cfg['crop_pct'] == 0.875
        assert cfg['mean'] == pytest.approx((0.485, 0.456, 0.406))
        assert cfg['pool_size'] == (7, 7) and cfg['first_conv'] == 'stem0.conv1'
    assert cfg['classifier'] == 'classifier'
    assert get_pretrained_cfg_value(name, 'classifier') == 'classifier'


@pytest.mark.parametrize('name', TIMM_MODELS)
def test_model_forward_backward_every_param_gets_grad(name):
    model = timm.create_model(name, num_classes=42)
    x = _input(name)
    out = model(x)
    assert out.shape == (2, 42) and not torch.isnan(out).any()
    out.mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f'parameters without gradient: {no_grad[:5]}'
    zero = [n for n, p in model.named_parameters() if p.grad.abs().sum() == 0 and not n.endswith('.bias')]
    assert not zero, f'parameters with an all-zero gradient: {zero[:5]}'


@pytest.mark.parametrize('name', [n for n in TIMM_MODELS if n not in HEAVY])
def test_model_default_cfgs(name):
    """As timm's test_model_default_cfgs: pool_size, num_features, head_hidden_size, head resets."""
    model = timm.create_model(name).eval()
    cfg = model.pretrained_cfg
    full = torch.randn(1, *cfg['input_size'])
    feats = model.forward_features(full)
    assert feats.shape[1] == model.num_features
    assert tuple(feats.shape[-2:]) == cfg['pool_size']
    pre = model.forward_head(feats, pre_logits=True)
    assert pre.shape == (1, model.head_hidden_size)
    x = _input(name, 1)
    model.reset_classifier(0)
    assert model(x).shape == (1, model.num_features)
    model.reset_classifier(0, '')
    y = model(x)
    assert y.ndim == 4 and y.shape[1] == model.num_features
    model.reset_classifier(7, 'avg')
    assert model(x).shape == (1, 7) and model.get_classifier().out_features == 7
    state = model.state_dict()
    assert cfg['classifier'] + '.weight' in state and cfg['first_conv'] + '.weight' in state


@pytest.mark.parametrize('name', ['bnas_mini', 'bnas_d', 'bnas_d_grouped'])
def test_num_classes_zero_and_global_pool_empty(name):
    x = _input(name)
    m = timm.create_model(name, num_classes=0).eval()
    assert m(x).shape == (2, m.num_features)
    m = timm.create_model(name, num_classes=0, global_pool='').eval()
    y = m(x)
    assert y.ndim == 4 and y.shape[1] == m.num_features
    assert torch.equal(y, m.forward_features(x))


@pytest.mark.parametrize('name', [n for n in TIMM_MODELS if n not in HEAVY])
def test_features_only_matches_feature_info(name):
    model = timm.create_model(name, features_only=True).eval()
    x = _input(name)
    feats = model(x)
    info = model.feature_info
    assert len(feats) >= 3 and len(feats) == len(info.channels())
    for f, c, r in zip(feats, info.channels(), info.reduction()):
        assert f.shape[1] == c
        assert f.shape[-1] == x.shape[-1] // r
    # a subset of levels prunes the network
    sub = timm.create_model(name, features_only=True, out_indices=(1, 2)).eval()
    assert [f.shape[1] for f in sub(x)] == info.channels()[1:3]


@pytest.mark.parametrize('name', ['bnas_mini', 'bnas_a', 'bnas_d', 'bnas_g'])
def test_forward_intermediates(name):
    model = timm.create_model(name).eval()
    x = _input(name)
    final, inter = model.forward_intermediates(x)
    assert torch.equal(final, model.forward_features(x))
    assert len(inter) == len(model.feature_info)
    for t, info in zip(inter, model.feature_info):
        assert t.shape[1] == info['num_chs'] and t.shape[-1] == x.shape[-1] // info['reduction']
    only = model.forward_intermediates(x, indices=2, intermediates_only=True)
    assert [t.shape for t in only] == [t.shape for t in inter[-2:]]
    assert torch.equal(only[-1], inter[-1])
    early = model.forward_intermediates(x, indices=[0, 1], stop_early=True, intermediates_only=True)
    assert torch.equal(early[1], inter[1])


@pytest.mark.parametrize('name', ['bnas_mini', 'bnas_d', 'bnas_d_grouped'])
def test_fx_trace_equals_eager_and_backward(name):
    from timm.models import create_feature_extractor, get_graph_node_names
    model = timm.create_model(name).eval()
    x = _input(name)
    gm = torch.fx.symbolic_trace(model)
    assert torch.equal(gm(x), model(x))
    gm.train()
    gm(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    # timm's FX feature extraction (its leaf-module tracer), returning the last node
    _, eval_nodes = get_graph_node_names(model)
    fx = create_feature_extractor(model, return_nodes=[eval_nodes[-1]])
    out = list(fx.eval()(x).values())[0]
    assert torch.equal(out, model(x))


def test_torch_export_matches_eager():
    model = timm.create_model('bnas_mini').eval()
    x = _input('bnas_mini')
    ep = torch.export.export(model, (x,))
    assert torch.equal(ep.module()(x), model(x))


@pytest.mark.parametrize('name', ['bnas_mini', 'bnas_d', 'bnas_d_grouped'])
def test_in_chans_one(name):
    model = timm.create_model(name, in_chans=1)
    out = model(_input(name, in_chans=1))
    assert out.shape[1] == model.num_classes
    out.sum().backward()


@pytest.mark.parametrize('name', ['bnas_mini', 'bnas_d', 'bnas_d_grouped'])
def test_grad_checkpointing_same_output(name):
    model = timm.create_model(name).eval()
    x = _input(name)
    expected = model(x)
    model.set_grad_checkpointing(True)
    got = model(x)  # grads enabled: the cells run under torch.utils.checkpoint
    assert torch.equal(got, expected)
    got.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_group_matcher_covers_all_params():
    model = timm.create_model('bnas_mini')
    from timm.models import group_parameters
    groups = group_parameters(model, model.group_matcher())
    assert sum(len(g) for g in groups.values()) == len(list(model.named_parameters()))
    assert len(groups) == 1 + len(model.cells) + 1  # stem, each cell, head


def test_drop_path_and_drop_rate_train_only():
    model = timm.create_model('bnas_mini', drop_path_rate=0.2, drop_rate=0.3)
    assert all(c.drop_path_prob == 0.2 for c in model.cells)
    x = _input('bnas_mini')
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    torch.manual_seed(1)
    a = model(x)
    torch.manual_seed(2)
    b = model(x)
    assert not torch.allclose(a, b)


def test_wrong_input_is_a_clear_error():
    model = timm.create_model('bnas_mini').eval()
    with pytest.raises(AssertionError, match='takes 3-channel images'):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(AssertionError, match='multiples of 4'):
        model(torch.randn(1, 3, 30, 30))
    with pytest.raises(AssertionError, match='4-D input'):
        model(torch.randn(3, 32, 32))


def test_unknown_model_name():
    with pytest.raises(RuntimeError, match='Unknown model'):
        timm.create_model('bnas_z')


# --- TorchScript (timm's test_model_forward_torchscript / test_model_forward_fx_torchscript) ---------------

@pytest.mark.parametrize('name', [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n
                                  for n in TIMM_MODELS if n != 'bnas_h'])  # bnas_h: bnas_g's cells, wider (17 s)
def test_torchscript_script_equals_eager(name):
    """torch.jit.script of every variant (as timm's test, under set_scriptable) gives the eager outputs."""
    with timm.set_scriptable(True):
        model = timm.create_model(name).eval()
    x = _input(name, 1)
    scripted = torch.jit.script(model)
    assert torch.equal(scripted(x), model(x))
    assert torch.equal(scripted.forward_features(x), model.forward_features(x))


def test_torchscript_saves_loads_and_trains_as_eager(tmp_path):
    """The scripted model saves and loads without Python (libtorch); in training mode (drop-path, BatchNorm
    statistics, the binary ops' custom gradients through torch.ops) it matches the eager model."""
    model = timm.create_model('bnas_mini', drop_path_rate=0.2)
    ref = timm.create_model('bnas_mini', drop_path_rate=0.2)
    ref.load_state_dict(model.state_dict())
    scripted = torch.jit.script(model)
    torch.jit.save(scripted, str(tmp_path / 'm.pt'))
    loaded = torch.jit.load(str(tmp_path / 'm.pt'))
    x = _input('bnas_mini')
    assert torch.equal(loaded.eval()(x), ref.eval()(x))
    loaded.train()
    ref.train()
    torch.manual_seed(3)
    out = loaded(x)
    torch.manual_seed(3)
    expected = ref(x)
    assert torch.equal(out, expected)  # same drop-path draws, in the same order
    out.sum().backward()
    expected.sum().backward()
    grads = dict(loaded.named_parameters())
    # (eager training fuses BatchNorm and sign, whose backward sums in another order than the scripted
    # plain ops': the gradients agree to float rounding, judged against each tensor's scale, floored at 1e-3
    # of the largest gradient since some are mathematically zero and computed as rounding noise)
    floor = 1e-3 * max(p.grad.abs().max().item() for p in ref.parameters())
    for k, p in ref.named_parameters():
        scale = max(p.grad.abs().max().item(), floor)
        assert torch.allclose(grads[k].grad, p.grad, rtol=1e-4, atol=1e-5 * scale), k


@pytest.mark.parametrize('name', ['bnas_mini', 'bnas_d_grouped'])
def test_fx_then_torchscript(name):
    """timm's fx feature extractor (its leaf modules and functions), scripted, equals eager."""
    from timm.models import get_notrace_functions, get_notrace_modules
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names
    with timm.set_scriptable(True):
        model = timm.create_model(name).eval()
    tracer_kwargs = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions(),
                         param_shapes_constant=True)
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer_kwargs)
    fx = create_feature_extractor(model, train_return_nodes=[train_nodes[-1]], eval_return_nodes=[eval_nodes[-1]],
                                  tracer_kwargs=tracer_kwargs)
    scripted = torch.jit.script(fx.eval())
    x = _input(name, 1)
    out = list(scripted(x).values())[0]
    assert torch.equal(out, model(x))


def test_torchscript_materialized_zero_nodes_and_shared_edges():
    """The cell graph's special cases scripted: a zero node a conv reads (materialized), edges sharing one
    pooling, zero nodes padded or inside the output."""
    cell = {'normal': [['none', 0], ['none', 1], ['bin_conv_3x3', 2], ['max_pool_3x3', 1],
                       ['max_pool_3x3', 1], ['bin_conv_3x3', 3], ['max_pool_3x3', 1], ['none', 3]],
            'normal_concat': [2, 3, 4, 5]}
    cell['reduce'], cell['reduce_concat'] = cell['normal'], cell['normal_concat']
    model = timm.create_model('bnas_custom', genotype=cell, layers=3, channels=4, stem='cifar', num_classes=3).eval()
    plans = [c.plan for c in model.cells]
    assert all(p.materialized_zeros == {2} for p in plans) and plans[0].shared == {4: 3, 6: 3}
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(torch.jit.script(model)(x), model(x))
