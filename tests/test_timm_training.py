"""Training and evaluating the bnas models with timm's own tools, or a plain PyTorch loop: the latent weights
get the release's projection and no weight decay without a bnas_zoo optimizer hook; timm's scripts run through
``bnas-zoo timm``; a checkpoint of timm's train.py loads with weights_only=True."""
import argparse
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import timm
import torch
from timm.optim import create_optimizer_v2

import bnas_zoo
from bnas_zoo.binary import attach_latent_projection, binary_convs, center_clamp
from bnas_zoo.convert import release_key_to_ours
from bnas_zoo.errors import CheckpointError
from bnas_zoo.registry import read_weights
from bnas_zoo.train.validate import main as validate_main
from test_release_equivalence import _pair, _worst_relative

ROOT = Path(__file__).resolve().parent.parent


def _batch(n=4):
    return torch.randn(n, 3, 32, 32), torch.randint(0, 10, (n,))


def test_plain_loop_trains_as_the_release():
    """A plain loop (torch.optim.SGD with momentum, loss.backward(), opt.step(), no bnas_zoo hook) follows the
    release's training steps: the latents are projected once per update, before the update."""
    layout, ref, binop, ours, _ = _pair('bnas_mini', seed=2)
    ref.train()
    ours.train()
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9)
    opt_ours = torch.optim.SGD(ours.parameters(), lr=0.05, momentum=0.9)
    criterion = torch.nn.CrossEntropyLoss()
    ours_keys = set(ours.state_dict())
    from release_net import release_train_step
    for step in range(3):
        ours.load_state_dict({release_key_to_ours(k): v for k, v in ref.state_dict().items()
                              if release_key_to_ours(k) in ours_keys})
        x, y = _batch(8)
        loss_ref = release_train_step(ref, binop, opt_ref, criterion, x, y)
        opt_ours.zero_grad()
        loss = criterion(ours(x), y)
        loss.backward()
        opt_ours.step()
        assert torch.equal(loss, loss_ref)
        ref_state = {release_key_to_ours(k): v for k, v in ref.state_dict().items()}
        state = {k: v for k, v in ours.state_dict().items() if v.is_floating_point()}
        worst, key = _worst_relative(state, ref_state)
        assert worst < 1e-4, f'step {step}: {key} differs by {worst:.2e} (relative) after the update'


def test_projection_once_per_update_with_gradient_accumulation_and_copies():
    model = timm.create_model('bnas_mini').train()
    w = next(binary_convs(model)).weight
    w0 = w.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):  # two accumulated backward passes, one update: projected once, not twice
        x, y = _batch()
        torch.nn.functional.cross_entropy(model(x), y).backward()
    assert torch.equal(w.detach(), center_clamp(w0))
    grad = w.grad.clone()
    opt.step()
    assert torch.allclose(w.detach(), center_clamp(w0) - 0.1 * grad, rtol=0, atol=1e-7)
    # no projection outside training: eval forward, or a forward without backward
    after = w.detach().clone()
    with torch.no_grad():
        model(x)
    assert torch.equal(w.detach(), after)
    # a deep copy (its parameters have no hooks) gets them back at its first training forward
    import copy
    clone = copy.deepcopy(model)
    cw = next(binary_convs(clone)).weight
    before = cw.detach().clone()
    clone(x).sum().backward()
    assert torch.equal(cw.detach(), center_clamp(before))
    assert torch.equal(w.detach(), after)  # the original is left alone


def test_attach_latent_projection_projects_at_the_step_only():
    """bnas-train's optimizer hook: the projection happens at the step (as before), not after backward."""
    model = timm.create_model('bnas_mini').train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    attach_latent_projection(opt, model)
    w = next(binary_convs(model)).weight
    w0 = w.detach().clone()
    x, y = _batch()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    assert torch.equal(w.detach(), w0)
    grad = w.grad.clone()
    opt.step()
    assert torch.allclose(w.detach(), center_clamp(w0) - 0.1 * grad, rtol=0, atol=1e-7)


def test_timm_optimizer_factory_no_weight_decay_on_latents():
    model = timm.create_model('bnas_mini')
    latents = {id(m.weight) for m in binary_convs(model)}
    assert model.no_weight_decay() == bnas_zoo.binary_param_names(model) and len(latents) == len(model.no_weight_decay())
    opt = create_optimizer_v2(model, 'sgd', lr=0.1, momentum=0.9, weight_decay=1e-4)
    decayed = {id(p) for g in opt.param_groups if g['weight_decay'] > 0 for p in g['params']}
    assert not decayed & latents
    assert id(model.stem.conv.weight) in decayed and id(model.classifier.weight) in decayed
    assert id(model.stem.bn.weight) not in decayed and id(model.classifier.bias) not in decayed
    assert id(model.cells[1].shortcut.conv.weight if model.cells[1].shortcut is not None
              else model.classifier.weight) in decayed
    model.train()
    x, y = _batch()
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # no warning for timm's factory
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def test_weight_decay_on_latents_warns_once_per_optimizer():
    model = timm.create_model('bnas_mini').train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=1e-4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        for _ in range(2):
            x, y = _batch()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    msgs = [str(w.message) for w in caught if 'latent binary weights' in str(w.message)]
    assert len(msgs) == 1 and 'no_weight_decay' in msgs[0]


# --- timm's checkpoints --------------------------------------------------------------------------------

def _timm_train_checkpoint(path, model, ema=None):
    """What timm's train.py (CheckpointSaver) writes: model_best.pth.tar."""
    state = dict(epoch=3, arch='bnas_mini', state_dict=model.state_dict(),
                 optimizer=torch.optim.SGD(model.parameters(), lr=0.1).state_dict(),
                 args=argparse.Namespace(model='bnas_mini', lr=0.1), version=2, metric=12.5)
    if ema is not None:
        state['state_dict_ema'] = ema.state_dict()
    torch.save(state, path)


def test_timm_train_checkpoint_loads_with_weights_only(tmp_path, capsys):
    model = timm.create_model('bnas_mini')
    ema = timm.create_model('bnas_mini')
    path = tmp_path / 'model_best.pth.tar'
    _timm_train_checkpoint(path, model, ema)
    got = read_weights(str(path))
    assert got.keys() == model.state_dict().keys()
    assert all(torch.equal(got[k], v) for k, v in model.state_dict().items())
    got_ema = read_weights(str(path), use_ema=True)
    assert all(torch.equal(got_ema[k], v) for k, v in ema.state_dict().items())
    # timm's loaders: load_checkpoint (timm's validate.py --checkpoint) and a pretrained file (EMA first, timm's rule)
    from timm.models import load_checkpoint
    fresh = timm.create_model('bnas_mini')
    load_checkpoint(fresh, str(path), use_ema=False)  # as timm validate.py without --use-ema
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in model.state_dict().items())
    loaded = timm.create_model('bnas_mini', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in ema.state_dict().items())
    # bnas-validate --checkpoint: the checkpoint's weights are evaluated
    assert validate_main(['--model', 'bnas_mini', '--checkpoint', str(path), '--data', 'embedded', '--json',
                          '--batch-size', '256']) == 0
    assert '"top1"' in capsys.readouterr().out


class _NotWeights:
    """A pickled object that torch.load(weights_only=True) refuses."""


def test_bad_torch_checkpoints_are_clear_errors(tmp_path, capsys):
    model = timm.create_model('bnas_mini')
    unsafe = tmp_path / 'unsafe.pth.tar'
    torch.save(dict(state_dict=model.state_dict(), extra=_NotWeights()), unsafe)  # a pickled non-weights object
    with pytest.raises(CheckpointError, match=r'unsafe.pth.tar: a torch checkpoint that torch.load\(weights_only=True\) refuses'):
        read_weights(str(unsafe))
    listed = tmp_path / 'list.pt'
    torch.save([1, 2], listed)
    with pytest.raises(CheckpointError, match='holds a list; expected a state dict'):
        read_weights(str(listed))
    no_ema = tmp_path / 'no_ema.pth.tar'
    _timm_train_checkpoint(no_ema, model)
    with pytest.raises(CheckpointError, match='no EMA weights'):
        read_weights(str(no_ema), use_ema=True)
    garbage = tmp_path / 'g.bin'
    garbage.write_bytes(b'\x01' * 64)
    with pytest.raises(CheckpointError, match='neither a safetensors file nor a torch checkpoint'):
        read_weights(str(garbage))
    assert validate_main(['--model', 'bnas_mini', '--checkpoint', str(unsafe), '--data', 'embedded']) == 2
    assert 'weights_only=True' in capsys.readouterr().err


# --- bnas-zoo timm SCRIPT ------------------------------------------------------------------------------

def _run_module(args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(ROOT.parent) + os.pathsep + os.environ.get('PYTHONPATH', ''))
    return subprocess.run([sys.executable, '-m', 'bnas_zoo.timm_script', *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_timm_script_runner_registers_models_and_passes_argv(tmp_path):
    script = tmp_path / 'fake_timm_script.py'
    script.write_text(
        'import sys, timm\n'
        'assert __name__ == "__main__"\n'
        'm = timm.create_model(sys.argv[1])\n'
        'print("ok", sys.argv[1:], type(m).__name__)\n'
        'sys.exit(int(sys.argv[2]))\n')
    r = _run_module([str(script), 'bnas_mini', '3'], tmp_path)  # a fresh interpreter: nothing imported before
    assert r.returncode == 3, r.stderr  # the script's exit status
    assert "ok ['bnas_mini', '3'] BNASNet" in r.stdout
    from bnas_zoo.cli import main as zoo_main
    assert zoo_main(['timm', str(tmp_path / 'missing.py')]) == 2


def _timm_validate_script():
    for root in (os.environ.get('TIMM_REPO'), '/work/timm_ref'):
        if root and (Path(root) / 'validate.py').is_file():
            return Path(root) / 'validate.py'
    return None


def test_timm_validate_py_and_bnas_validate_on_a_timm_checkpoint(tmp_path, capsys):
    """A 2-class checkpoint written as timm's train.py writes it, on a tiny ImageFolder: bnas-validate takes its
    class count; timm's own validate.py, through `python -m bnas_zoo.timm_script`, gives the same accuracy
    (when timm's repository is found: TIMM_REPO)."""
    import csv
    import json
    from PIL import Image
    for c in range(2):
        d = tmp_path / 'data' / 'validation' / f'class{c}'
        d.mkdir(parents=True)
        for i in range(3):
            Image.new('RGB', (32, 32), (120 * c, 40 * i, 90)).save(d / f'{i}.png')
    model = timm.create_model('bnas_mini', num_classes=2)
    ckpt = tmp_path / 'model_best.pth.tar'
    _timm_train_checkpoint(ckpt, model)
    assert validate_main(['--model', 'bnas_mini', '--checkpoint', str(ckpt), '--data-dir', str(tmp_path / 'data'),
                          '--json']) == 0
    ours = json.loads(capsys.readouterr().out)
    assert ours['images'] == 6
    script = _timm_validate_script()
    if script is None:
        pytest.skip("timm's validate.py not found (set TIMM_REPO to a checkout of timm's repository)")
    r = _run_module([str(script), '--data-dir', str(tmp_path / 'data'), '--model', 'bnas_mini', '--num-classes', '2',
                     '--checkpoint', str(ckpt), '-b', '4', '-j', '0', '--device', 'cpu',
                     '--results-file', str(tmp_path / 'res.csv')], tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    row = next(csv.DictReader((tmp_path / 'res.csv').open()))
    assert row['model'] == 'bnas_mini'
    assert float(row['top1']) == pytest.approx(ours['top1'], abs=1e-3)
