"""convert-official: both release formats, strict key mapping, loading back through timm, bad files."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file

import bnas_zoo
from bnas_zoo.cli import main
from bnas_zoo.convert import convert_official, load_release_checkpoint, release_imagenet_class_order
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
    if bnas_zoo.VARIANTS[name].stem == 'imagenet':  # our output j is the release's output of standard class j
        expected = expected[:, torch.argsort(torch.tensor(release_imagenet_class_order()))]
    for model in (a, b):
        got = model.eval()(x)
        assert ((got - expected).abs().max() / expected.abs().max()) < 1e-3


def _release_prepare_imgnet(root, synset_file):
    """What the release's prepare_imgnet.py does to an ImageNet tree: the folder of each synset in train/ and
    val/ is renamed to str(i), i the synset's line number in synset_to_label.txt."""
    index = {line.split()[0]: i for i, line in enumerate(synset_file.read_text().splitlines())}
    for split in ('train', 'val'):
        for d in (root / split).iterdir():
            if d.is_dir():
                d.rename(root / split / str(index[d.name]))


def test_imagenet_class_order_of_the_release_is_made_standard(tmp_path):
    """The release renamed the synset folders to their indices and read them with torchvision's ImageFolder,
    which sorts names as strings; converted weights must put each class's row where a synset-named ImageFolder
    (and timm's ImageNet label order) expects it."""
    from PIL import Image
    from torchvision.datasets import ImageFolder
    # 1000 synsets in sorted order, as synset_to_label.txt lists them; a few classes hold an image
    synsets = [f'n{1440764 + 9973 * i:08d}' for i in range(1000)]
    assert synsets == sorted(synsets)
    synset_file = tmp_path / 'synset_to_label.txt'
    synset_file.write_text(''.join(f'{s} class number {i}\n' for i, s in enumerate(synsets)))
    root = tmp_path / 'imagenet'
    with_images = [0, 1, 2, 9, 10, 11, 19, 99, 100, 101, 199, 500, 998, 999]
    for split in ('train', 'val'):
        for i, s in enumerate(synsets):
            (root / split / s).mkdir(parents=True)
            if i in with_images:
                Image.new('RGB', (8, 8), (i % 256, 0, 0)).save(root / split / s / f'img{i}.png')

    def targets():  # image file name -> ImageFolder's class index
        ds = ImageFolder(str(root / 'val'), allow_empty=True)
        return {Path(path).name: target for path, target in ds.samples}
    standard = targets()
    assert standard == {f'img{i}.png': i for i in with_images}  # synset-named: class j is the j-th synset
    _release_prepare_imgnet(root, synset_file)
    release = targets()
    assert release != standard and sorted(release.values()) != sorted(standard.values())

    ckpt = tmp_path / 'bnas_d.pth.tar'
    layout = load_layout('bnas_d')
    sd = synthetic_release_state_dict(layout)
    sd['module.classifier.bias'] = torch.arange(1000, dtype=torch.float32)  # release output k: bias k
    sd['module.classifier.weight'] = torch.arange(1000, dtype=torch.float32)[:, None].expand_as(
        sd['module.classifier.weight']).clone()
    torch.save({'state_dict': sd}, ckpt)
    out = convert_official(ckpt, 'bnas_d', tmp_path / 'out')
    weights = load_file(out / 'model.safetensors')
    for image, j in standard.items():
        k = release[image]  # the output the release trained for this image
        assert weights['classifier.bias'][j] == k, image
        assert torch.all(weights['classifier.weight'][j] == k), image
    assert release_imagenet_class_order()[:5] == [0, 1, 10, 100, 101]


def test_cifar_class_order_is_kept(tmp_path):
    """BNAS-A was trained on torchvision's CIFAR10, whose labels are the standard CIFAR-10 order: unchanged."""
    ckpt = tmp_path / 'bnas_a.pt'
    layout, sd = _save_release('bnas_a', ckpt, 'cifar')
    out = convert_official(ckpt, 'bnas_a', tmp_path / 'out')
    weights = load_file(out / 'model.safetensors')
    assert torch.equal(weights['classifier.weight'], sd['module.classifier.weight'])
    assert torch.equal(weights['classifier.bias'], sd['module.classifier.bias'])


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
    assert main(['convert-official', str(ckpt), '--model', 'bnas_mini', '--output', str(tmp_path / 'o')]) == 0
    out = capsys.readouterr().out
    # the printed way to load it gives the converted weights, not fresh ones
    assert f'timm.create_model("local-dir:{tmp_path / "o"}", pretrained=True)' in out
    assert 'class order' in out and 'CIFAR-10' in out
    converted = load_file(tmp_path / 'o' / 'model.safetensors')
    loaded = timm.create_model(f'local-dir:{tmp_path / "o"}', pretrained=True)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in converted.items())
    # the former spelling still works
    assert main(['convert-official', str(ckpt), '--model', 'bnas_mini', '--out', str(tmp_path / 'o2')]) == 0
    capsys.readouterr()
    assert main(['convert-official', str(ckpt), '--model', 'bnas_q', '--out', str(tmp_path / 'p')]) == 2
    assert "--model 'bnas_q': unknown model; expected one of bnas_mini" in capsys.readouterr().err
    # as a real process: exit code and message, no traceback
    proc = subprocess.run([sys.executable, '-m', 'bnas_zoo.cli', 'convert-official', str(ckpt), '--model', 'bnas_d',
                           '--output', str(tmp_path / 'q')], capture_output=True, text=True)
    assert proc.returncode == 2
    assert 'does not fit bnas_d (it looks like a checkpoint of bnas_mini)' in proc.stderr
    assert 'Traceback' not in proc.stderr
