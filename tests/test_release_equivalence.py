"""bnas_zoo against an independent re-implementation of the authors' released networks and training step
(benchmarks/release_net.py): same eval outputs for a release checkpoint, same training trajectory."""
import pytest
import timm
import torch

import bnas_zoo
from bnas_zoo.binary import attach_latent_projection
from bnas_zoo.convert import convert_release_state_dict, release_key_to_ours
from bnas_zoo.genotype import load_genotype
from conftest import ALL_MODELS, load_layout, small_input_size
from release_net import build_release, release_eval, release_train_step, synthetic_release_state_dict


def _pair(name, seed=0):
    layout = load_layout(name)
    genotype = load_genotype(bnas_zoo.VARIANTS[name].genotype).to_dict()
    ref, binop = build_release(layout, genotype)
    release_sd = synthetic_release_state_dict(layout, seed)
    ref.load_state_dict({k[len('module.'):]: v for k, v in release_sd.items()}, strict=True)
    ours = timm.create_model(name)
    converted, dropped = convert_release_state_dict(release_sd, ours)
    ours.load_state_dict(converted, strict=True)
    return layout, ref, binop, ours, dropped


@pytest.mark.parametrize('name', ALL_MODELS)
def test_eval_outputs_match_the_release(name):
    layout, ref, binop, ours, dropped = _pair(name)
    # only the input-1 preprocessing of the CIFAR reduction cells is never used
    assert {k.split('.preprocess1')[0] for k in dropped} == (
        {f'module.cells.{i}' for i in (layout['official_config']['layers'] // 3, 2 * layout['official_config']['layers'] // 3)}
        if name in ('bnas_mini', 'bnas_a', 'bnas_b', 'bnas_c') else set())
    x = torch.randn(2, *small_input_size(name))
    expected = release_eval(ref, binop, x)
    got = ours.eval()(x)
    rel = (got - expected).abs().max() / expected.abs().max()
    assert rel < 1e-3, f'{name}: relative error {rel:.2e}'


def test_binary_and_full_precision_convs_are_the_releases():
    for name in ALL_MODELS:
        layout = load_layout(name)
        model = timm.create_model(name)
        binary = {n for n, m in model.named_modules() if isinstance(m, bnas_zoo.BinaryConv2d) and m.binary_weights}
        expected = set()
        for conv in layout['binarized_convs']:
            ours = release_key_to_ours(conv + '.weight')[:-len('.weight')]
            if ours in dict(model.named_modules()):
                expected.add(ours)
        assert binary == expected, name
        for conv in layout['full_precision_convs']:
            m = model.get_submodule(release_key_to_ours(conv + '.weight')[:-len('.weight')])
            assert isinstance(m, torch.nn.Conv2d) and not getattr(m, 'binary_weights', False), (name, conv)


def _worst_relative(ours: dict, ref: dict) -> tuple:
    """Largest difference of a tensor relative to its scale; the scale is floored at 1e-3 of the largest
    value in the whole dict, since some gradients are mathematically zero and computed as float noise
    (e.g. the bias of a reduction shortcut, whose every consumer is a train-mode BatchNorm)."""
    floor = 1e-3 * max(r.abs().max().item() for r in ref.values())
    worst = (0.0, '')
    for k, v in ours.items():
        r = ref[k]
        worst = max(worst, (((v - r).abs().max() / max(r.abs().max().item(), floor)).item(), k))
    return worst


@pytest.mark.parametrize('name', ['bnas_mini', 'bnas_d'])
def test_training_steps_match_the_release(name):
    """Training steps from the same state on the same batch: same loss, the release's gradients (the XNOR
    formula on binary weights), same updated latent weights and BatchNorm statistics.

    Binary networks amplify float rounding (one activation whose sign flips changes everything after it),
    so before each step our model is set to the release model's state; the optimizers (SGD with momentum
    and weight decay) keep their own state across the steps.
    """
    layout, ref, binop, ours, _ = _pair(name, seed=1)
    ref.train()
    ours.train()
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9, weight_decay=3e-5)
    opt_ours = torch.optim.SGD(ours.parameters(), lr=0.05, momentum=0.9, weight_decay=3e-5)
    attach_latent_projection(opt_ours, ours)
    criterion = torch.nn.CrossEntropyLoss()
    size = (3, 32, 32) if name == 'bnas_mini' else (3, 64, 64)
    ours_keys = set(ours.state_dict())
    for step in range(3):
        ours.load_state_dict({release_key_to_ours(k): v for k, v in ref.state_dict().items()
                              if release_key_to_ours(k) in ours_keys})
        x = torch.randn(8, *size)
        y = torch.randint(0, layout['official_config']['num_classes'], (8,))
        loss_ref = release_train_step(ref, binop, opt_ref, criterion, x, y)
        opt_ours.zero_grad()
        loss_ours = criterion(ours(x), y)
        loss_ours.backward()
        ref_grads = {release_key_to_ours(k): p.grad for k, p in ref.named_parameters()}
        grads = {k: p.grad for k, p in ours.named_parameters()}
        opt_ours.step()

        assert torch.equal(loss_ours, loss_ref), (step, loss_ours.item(), loss_ref.item())
        worst, key = _worst_relative(grads, ref_grads)
        assert worst < 1e-4, f'step {step}: gradient of {key} differs by {worst:.2e} (relative)'
        ref_state = {release_key_to_ours(k): v for k, v in ref.state_dict().items()}
        state = {k: v for k, v in ours.state_dict().items() if v.is_floating_point()}
        worst, key = _worst_relative(state, ref_state)
        assert worst < 1e-4, f'step {step}: {key} differs by {worst:.2e} (relative) after the update'
