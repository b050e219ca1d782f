"""convert-official: both release formats, strict key mapping, loading back through timm, bad files."""
import json
import subprocess
import sys

import pytest
import timm
import torch
from safetensors.torch import load_file

import bnas_zoo
from bnas_zoo.cli import main
from bnas_zoo.convert import convert_official, load_release_checkpoint
from bnas_zoo.errors import CheckpointError
from bnas_zoo.genotype import load_genotype
from conftest import ALL_MODELS, load_layout, small_input_size
from release_net import build_release, release_eval, synthetic_release_state_dict


def _save_release(name, path, fmt, seed=0):
    layout = load_layout(name)
    sd = synthetic_release_state_dict(layout, seed)
    if fmt == 'cifar':       # BNAS-A: a bare state dict, keys prefixed 'module.'
        torch.save(sd, path)
    else:                    # BNAS-D..H: a dict with the state dict and training state
        torch.save({'epoch': 249, 'best_acc_top1': 57.6, 'state_dict': sd,
                    'optimizer': {'state': {}, 'param_groups': [{'lr': 0.0, 'momentum': 0.9, 'params': [0]}]},
                    'scheduler': {'last_epoch': 249, 'base_lrs': [0.05]}, 'amp': {'loss_scaler0': {'loss_scale': 1.0}}},
                   path)
    return layout, sd


@pytest.mark.parametrize('name, fmt', [('bnas_mini', 'cifar'), ('bnas_a', 'imagenet'), ('bnas_d', 'imagenet'),
                                       ('bnas_g', 'cifar')])
def test_convert_and_load_back_gives_release_outputs(tmp_path, name, fmt):
    ckpt = tmp_path / 'release.pth.tar'
    layout, sd = _save_release(name, ckpt, fmt)
    out = convert_official(ckpt, name, tmp_path / 'out')
    assert (out / 'model.safetensors').is_file() and (out / 'config.json').is_file()
    assert not list(out.glob('*.bin')) and not list(out.glob('*.pth'))
    cfg = json.loads((out / 'config.json').read_text())
    assert cfg['architecture'] == name and cfg['num_features'] > 0
    weights = load_file(out / 'model.safetensors')
    assert not any(k.startswith('module.') or '_ops' in k for k in weights)

    # the two loading paths of the issue
    a = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(out / 'model.safetensors')))
    b = timm.create_model(f'local-dir:{out}', pretrained=True)
    ref, binop = build_release(layout, load_genotype(bnas_zoo.VARIANTS[name].genotype).to_dict())
    ref.load_state_dict({k[len('module.'):]: v for k, v in sd.items()})
    x = torch.randn(2, *small_input_size(name))
    expected = release_eval(ref, binop, x)
    for model in (a, b):
        got = model.eval()(x)
        assert ((got - expected).abs().max() / expected.abs().max()) < 1e-3


def test_every_layout_converts(tmp_path):
    """Every key and shape of every released network maps onto ours (in memory, no files)."""
    from bnas_zoo.convert import convert_release_state_dict
    for name in ALL_MODELS:
        layout = load_layout(name)
        release = {'module.' + k: torch.zeros(s) for k, s in layout['state_dict'].items()}
        model = timm.create_model(name)
        converted, dropped = convert_release_state_dict(release, model)
        assert set(converted) == set(model.state_dict())
        assert len(converted) + len(dropped) == len(layout['state_dict'])
        assert all('.preprocess1.' in k for k in dropped)


def test_refuses_missing_unexpected_and_wrong_shapes(tmp_path):
    layout, sd = _save_release('bnas_mini', tmp_path / 'ok.pt', 'cifar')
    bad = dict(sd)
    del bad['module.cells.0.preprocess0.bn.weight']
    bad['module.cells.0.extra.weight'] = torch.zeros(3)
    bad['module.classifier.weight'] = torch.zeros(11, 384)
    torch.save(bad, tmp_path / 'bad.pt')
    with pytest.raises(CheckpointError) as e:
        convert_official(tmp_path / 'bad.pt', 'bnas_mini', tmp_path / 'out')
    msg = str(e.value)
    assert 'bad.pt: this checkpoint does not fit bnas_mini' in msg
    assert 'missing (1)' in msg and 'cells.0.preprocess0.bn.weight' in msg
    assert 'unexpected (1)' in msg and 'module.cells.0.extra.weight' in msg
    assert 'wrong shape (1)' in msg and 'module.classifier.weight: (11, 384)' in msg
    assert not (tmp_path / 'out').exists()


def test_checkpoint_of_another_model(tmp_path):
    _save_release('bnas_d', tmp_path / 'd.pth.tar', 'imagenet')
    with pytest.raises(CheckpointError, match=r'does not fit bnas_e \(it looks like a checkpoint of bnas_d\)'):
        convert_official(tmp_path / 'd.pth.tar', 'bnas_e', tmp_path / 'out')


def test_untrusted_pickles_are_not_unpickled(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ('pwned',))
    path = tmp_path / 'evil.pt'
    torch.save({'state_dict': {'a': torch.zeros(1)}, 'payload': Evil()}, path)
    with pytest.raises(CheckpointError, match='refused: the file holds objects other than tensors'):
        load_release_checkpoint(path)


def test_truncated_and_corrupted_files(tmp_path):
    _save_release('bnas_mini', tmp_path / 'ok.pt', 'cifar')
    data = (tmp_path / 'ok.pt').read_bytes()
    (tmp_path / 'trunc.pt').write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match='trunc.pt: not a readable PyTorch checkpoint'):
        load_release_checkpoint(tmp_path / 'trunc.pt')
    (tmp_path / 'junk.pt').write_bytes(b'\x00not a checkpoint' * 10)
    with pytest.raises(CheckpointError, match='junk.pt'):
        load_release_checkpoint(tmp_path / 'junk.pt')
    with pytest.raises(CheckpointError, match='no such checkpoint file'):
        load_release_checkpoint(tmp_path / 'missing.pt')
    torch.save([1, 2, 3], tmp_path / 'list.pt')
    with pytest.raises(CheckpointError, match="list.pt: expected a state dict of tensors"):
        load_release_checkpoint(tmp_path / 'list.pt')


def test_corrupted_safetensors_and_wrong_weights_through_timm(tmp_path):
    ckpt = tmp_path / 'release.pt'
    _save_release('bnas_mini', ckpt, 'cifar')
    out = convert_official(ckpt, 'bnas_mini', tmp_path / 'out')
    good = out / 'model.safetensors'
    truncated = tmp_path / 'truncated.safetensors'
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r'bnas_mini: the pretrained weights from file .*truncated\.safetensors do not load'):
        timm.create_model('bnas_mini', pretrained=True, pretrained_cfg_overlay=dict(file=str(truncated)))
    # weights of another model
    with pytest.raises(CheckpointError, match=r'bnas_a: the pretrained weights from file .*model\.safetensors do not load'):
        timm.create_model('bnas_a', pretrained=True, pretrained_cfg_overlay=dict(file=str(good)))
    # the release's raw layout given where converted weights are expected
    raw = tmp_path / 'raw.pth'
    torch.save(torch.load(ckpt, weights_only=True), raw)
    with pytest.raises(CheckpointError, match='convert them first with `bnas-zoo convert-official'):
        timm.create_model('bnas_mini', pretrained=True, pretrained_cfg_overlay=dict(file=str(raw)))


def test_pretrained_fine_tuning_paths(tmp_path):
    ckpt = tmp_path / 'release.pt'
    _save_release('bnas_mini', ckpt, 'cifar')
    out = convert_official(ckpt, 'bnas_mini', tmp_path / 'out')
    file = str(out / 'model.safetensors')
    base = timm.create_model('bnas_mini', pretrained=True, pretrained_cfg_overlay=dict(file=file))
    five = timm.create_model('bnas_mini', pretrained=True, num_classes=5, pretrained_cfg_overlay=dict(file=file))
    assert five.get_classifier().out_features == 5
    assert torch.equal(five.cells[3].shortcut.conv.weight, base.cells[3].shortcut.conv.weight)
    gray = timm.create_model('bnas_mini', pretrained=True, in_chans=1, pretrained_cfg_overlay=dict(file=file))
    assert gray.stem.bn.weight.shape == (1,) and gray.stem.conv.weight.shape[1] == 1
    assert torch.allclose(gray.stem.bn.running_mean, base.stem.bn.running_mean.mean(0, keepdim=True))
    assert gray.eval()(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_cli_convert_and_errors(tmp_path, capsys):
    ckpt = tmp_path / 'release.pth.tar'
    _save_release('bnas_mini', ckpt, 'imagenet')
    assert main(['convert-official', str(ckpt), '--model', 'bnas_mini', '--out', str(tmp_path / 'o')]) == 0
    assert 'local-dir:' in capsys.readouterr().out
    assert main(['convert-official', str(ckpt), '--model', 'bnas_q', '--out', str(tmp_path / 'p')]) == 2
    assert "--model 'bnas_q': unknown model; expected one of bnas_mini" in capsys.readouterr().err
    # as a real process: exit code and message, no traceback
    proc = subprocess.run([sys.executable, '-m', 'bnas_zoo.cli', 'convert-official', str(ckpt), '--model', 'bnas_d',
                           '--out', str(tmp_path / 'q')], capture_output=True, text=True)
    assert proc.returncode == 2
    assert 'does not fit bnas_d (it looks like a checkpoint of bnas_mini)' in proc.stderr
    assert 'Traceback' not in proc.stderr
