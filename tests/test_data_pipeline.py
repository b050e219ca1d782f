"""Training on data as users have it: image folders of real files (PNG, JPEG, grayscale, colour, 28x28 and
64x64, written here), CIFAR-10 as torchvision stores it, class-balanced subsets, schedules fitted to the run,
the short-run recipe, and loaders whose results do not depend on the number of workers."""
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import bnas_zoo  # noqa: F401
from bnas_zoo.train.data import DataError, build_datasets, class_names, train_subset
from bnas_zoo.train.loader import make_loader, set_epoch
from bnas_zoo.train.recipes import RecipeError, load_recipe
from bnas_zoo.train.train import default_recipe
from bnas_zoo.train.train import main as train_main
from bnas_zoo.train.validate import main as validate_main

TINY = ['--model', 'bnas_custom', '--model-arg', 'genotype=bnas_cifar', '--model-arg', 'layers=3',
        '--model-arg', 'channels=8']
CFG = dict(input_size=(3, 32, 32), mean=(0.5,) * 3, std=(0.5,) * 3, crop_pct=1.0)


def pattern(c: int, size: int, rng: np.random.RandomState) -> np.ndarray:
    """A learnable image of class ``c``: stripes of a class-dependent frequency (what a horizontal flip keeps),
    horizontal or vertical at random, with a random phase and noise."""
    y, x = np.mgrid[0:size, 0:size] / size
    along = x if rng.rand() < 0.5 else y
    wave = np.sin(2 * np.pi * (2, 4, 7)[c % 3] * along + rng.uniform(0, 2 * np.pi))
    return np.clip(127 + 100 * wave + rng.normal(0, 20, wave.shape), 0, 255).astype(np.uint8)


def write_folder(root: Path, classes=3, per_class=(8, 4), splits=('train', 'val'), seed=0) -> Path:
    """An image folder tree of real files of mixed format, mode and size: per class and split, PNG grayscale
    28x28, JPEG colour 64x64, PNG colour 64x64 and JPEG grayscale 28x28 in turn."""
    rng = np.random.RandomState(seed)
    kinds = [('png', 'L', 28), ('jpg', 'RGB', 64), ('png', 'RGB', 64), ('jpg', 'L', 28)]
    for split, count in zip(splits, per_class):
        for c in range(classes):
            d = root / split / f'class_{c}'
            d.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                ext, mode, size = kinds[i % len(kinds)]
                gray = pattern(c, size, rng)
                img = Image.fromarray(gray, 'L')
                if mode == 'RGB':
                    img = Image.merge('RGB', (img, Image.fromarray(255 - gray, 'L'), img))
                img.save(d / f'{i}.{ext}', **({'quality': 92} if ext == 'jpg' else {}))
    return root


def test_images_of_any_format_mode_and_size_become_model_inputs(tmp_path):
    root = write_folder(tmp_path / 'mixed')
    for recipe in ('short', 'imagenet-minreg'):  # the CIFAR-style and timm's pipelines
        train_ds, eval_ds, classes = build_datasets(load_recipe(recipe), CFG, str(root), 'folder')
        assert classes == 3 and len(train_ds) == 24 and len(eval_ds) == 12
        for ds in (train_ds, eval_ds):
            for i in range(4):  # one of each kind
                x, y = ds[i]
                assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 0
    with Image.open(root / 'train' / 'class_0' / '0.png') as im:  # really a grayscale PNG on disk
        assert (im.format, im.mode, im.size) == ('PNG', 'L', (28, 28))
    with Image.open(root / 'train' / 'class_0' / '1.jpg') as im:
        assert (im.format, im.mode, im.size) == ('JPEG', 'RGB', (64, 64))


def test_train_and_test_tree_is_accepted_and_refusals_name_the_split_that_exists(tmp_path, capsys):
    root = write_folder(tmp_path / 'tt', splits=('train', 'test'))
    _, eval_ds, _ = build_datasets(load_recipe('short'), CFG, str(root), 'folder')
    assert Path(eval_ds.reader.root).name == 'test' and len(eval_ds) == 12
    other = write_folder(tmp_path / 'holdout', splits=('train', 'holdout'))
    with pytest.raises(DataError, match=r"no 'validation' split .*the folder holds holdout/: pass --val-split holdout"):
        build_datasets(load_recipe('short'), CFG, str(other), 'folder')
    only = write_folder(tmp_path / 'only', splits=('images',), per_class=(4,))
    with pytest.raises(DataError, match=r"the folder holds images/: pass --val-split images"):
        build_datasets(load_recipe('short'), CFG, str(only), 'folder')
    assert train_main(TINY + ['--data-dir', str(only), '--output', str(tmp_path / 'o'), '--no-progress']) == 2
    assert '--val-split images' in capsys.readouterr().err


def test_train_subset_is_seeded_and_balanced_over_the_classes(tmp_path):
    root = write_folder(tmp_path / 'f', classes=3, per_class=(10, 2))
    train_ds, _, _ = build_datasets(load_recipe('short'), CFG, str(root), 'folder')
    labels = [t for _, t in train_ds.reader.samples]
    a, b, c = (train_subset(train_ds, 7, seed) for seed in (0, 0, 1))
    assert a.indices == b.indices and a.indices != c.indices
    counts = np.bincount([labels[i] for i in a.indices], minlength=3)
    assert sorted(counts.tolist()) == [2, 2, 3]  # not the first 7 images in folder order (one class)
    assert len(set(a.indices)) == 7
    assert train_subset(train_ds, 100, 0) is train_ds


def test_each_image_is_augmented_the_same_whatever_the_workers(tmp_path):
    root = write_folder(tmp_path / 'f', per_class=(4, 2))
    train_ds, _, _ = build_datasets(load_recipe('short', {'hflip': 0.5}), CFG, str(root), 'folder')
    device = torch.device('cpu')

    def batches(workers, epoch):
        loader = make_loader(train_ds, 4, seed=3, shuffle=True, drop_last=True, workers=workers, device=device)
        return [x for x, _ in set_epoch(loader, epoch)]
    torch.manual_seed(123)
    before = torch.rand(3)
    for workers in (0, 1):  # loading leaves the training's generator alone (its drop-path, dropout draws)
        torch.manual_seed(123)
        batches(workers, 1)
        assert torch.equal(torch.rand(3), before)
    inline, in_worker = batches(0, 1), batches(1, 1)
    assert all(torch.equal(a, b) for a, b in zip(inline, in_worker)) and len(inline) == 3
    assert not all(torch.equal(a, b) for a, b in zip(inline, batches(0, 2)))  # another epoch, other crops


def test_the_schedule_keeps_its_shape_when_epochs_change():
    notices = []
    r = load_recipe('cifar10', {'epochs': '2'}, notices)
    assert r['warmup_epochs'] == 0.6 and r['epochs'] == 2
    assert notices == ['--epochs 2 (the cifar10 recipe has 600): warmup-epochs 180 -> 0.6, the same share of the run']
    assert load_recipe('imagenet-standard', {'epochs': '10'})['sched_cycle_epochs'] == 2
    assert load_recipe('cifar10', {'epochs': '2', 'warmup_epochs': '0.25'})['warmup_epochs'] == 0.25  # as given
    with pytest.raises(RecipeError, match=r'the warm-up \(3 epochs\) covers the whole run \(2 epochs\)'):
        load_recipe('cifar10', {'epochs': '2', 'warmup_epochs': '3'})
    # per-update stepping: 0.6 of an epoch of 10 updates is a 6-update warm-up, then timm's cosine decay (over
    # the whole run: the warm-up is part of it) to the final rate
    from bnas_zoo.train.engine import make_scheduler
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=r['lr'])
    sched = make_scheduler(opt, r, updates_per_epoch=10)
    rates = [opt.param_groups[0]['lr']]
    for t in range(1, 21):
        sched.step_update(t)
        rates.append(opt.param_groups[0]['lr'])
    assert rates[0] == pytest.approx(4e-4) and rates[20] == pytest.approx(4e-4) and max(rates) > 0.04
    assert all(a < b for a, b in zip(rates[:5], rates[1:6])) and all(a > b for a, b in zip(rates[5:20], rates[6:21]))


def test_short_runs_and_fine_tuning_default_to_the_short_recipe(tmp_path):
    mini = timm.create_model('bnas_mini')
    assert default_recipe(mini, 'folder', epochs=2) == 'short'
    assert default_recipe(mini, 'folder', epochs=None) == 'cifar10'
    assert default_recipe(mini, 'folder', epochs=100, pretrained=True) == 'short'
    assert default_recipe(mini, 'embedded', epochs=2) == 'embedded'


def test_few_updates_get_a_notice_with_the_epochs_that_give_enough(capsys):
    """The README's measured folder: 3,000 images at batch 64 are 46 updates an epoch; 2 epochs (92 updates)
    learned little, 10 (460) learned well."""
    from bnas_zoo.train.train import FEW_UPDATES, _few_updates_notice
    recipe = load_recipe('short')
    _few_updates_notice(dict(recipe, epochs=2), 3000)
    assert capsys.readouterr().err.strip() == (
        'bnas-train: notice: this run makes 92 updates (2 epoch(s) of 46 batches of 64); from scratch that learns '
        'little: --epochs 10 gives 460 (README: "Why short")')
    for epochs, images in ((10, 3000), (2, 6000), (1, 64 * FEW_UPDATES), (3, 63)):  # enough; or no step at all
        _few_updates_notice(dict(recipe, epochs=epochs), images)
        assert capsys.readouterr().err == '', (epochs, images)


@pytest.mark.slow
def test_a_short_run_on_a_real_format_folder_learns(tmp_path, capsys):
    """`bnas-train --model M --data-dir DIR --epochs 2` (and a batch that gives this tiny folder 10 steps an
    epoch): the short recipe, no NaN, well above chance on held-out images of mixed formats, modes and sizes."""
    root = write_folder(tmp_path / 'data', per_class=(40, 12))
    out = tmp_path / 'run'
    assert train_main(TINY + ['--data-dir', str(root), '--epochs', '2', '-b', '12', '--output', str(out),
                              '--no-progress']) == 0
    err = capsys.readouterr().err
    assert 'recipe short (fewer than 30 epochs' in err
    # 120 images at batch 12 for 2 epochs: 20 updates, and the --epochs that gives about 450
    assert 'this run makes 20 updates (2 epoch(s) of 10 batches of 12); from scratch that learns little: ' \
           '--epochs 45 gives 450' in err
    history = json.loads((out / 'summary.json').read_text())
    assert all(np.isfinite([h['train_loss'], h['eval_loss']]).all() for h in history)
    assert max(h['eval_top1'] for h in history) >= 70.0  # 3 classes: chance is 33 %
    assert json.loads((out / 'config.json').read_text())['bnas_run']['recipe_name'] == 'short'


def write_cifar10(root: Path, per_batch=4, test=10, seed=0) -> Path:
    """A tiny CIFAR-10 in torchvision's on-disk format: cifar-10-batches-py/ with data_batch_1..5 and
    test_batch (pickled dicts of 'batch_label', 'labels', 'data' as uint8 N x 3072 rows of RGB planes,
    'filenames') and batches.meta ('label_names'), as the official archive holds them."""
    rng = np.random.RandomState(seed)
    folder = root / 'cifar-10-batches-py'
    folder.mkdir(parents=True)
    names = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']

    def batch(label, n, offset):
        labels = [(offset + i) % 10 for i in range(n)]
        data = np.stack([np.stack([pattern(t % 3, 32, rng)] * 3).reshape(-1) for t in labels]).astype(np.uint8)
        return {'batch_label': label, 'labels': labels, 'data': data,
                'filenames': [f'img_{offset + i}.png' for i in range(n)]}
    for k in range(1, 6):
        with open(folder / f'data_batch_{k}', 'wb') as f:
            pickle.dump(batch(f'training batch {k} of 5', per_batch, 10 * k), f, protocol=2)
    with open(folder / 'test_batch', 'wb') as f:
        pickle.dump(batch('testing batch 1 of 1', test, 0), f, protocol=2)
    with open(folder / 'batches.meta', 'wb') as f:
        pickle.dump({'label_names': names, 'num_cases_per_batch': per_batch, 'num_vis': 3072}, f, protocol=2)
    return root


def test_cifar10_as_torchvision_stores_it(tmp_path, monkeypatch, capsys):
    import torchvision.datasets.cifar as tv_cifar
    # torchvision checks each file's md5 against the official archive's: the one thing a tiny copy cannot pass
    monkeypatch.setattr(tv_cifar, 'check_integrity', lambda path, md5=None: os.path.isfile(path))
    root = write_cifar10(tmp_path / 'cifar')
    train_ds, eval_ds, classes = build_datasets(load_recipe('short'), CFG, str(root), 'torch/cifar10')
    assert (len(train_ds), len(eval_ds), classes) == (20, 10, 10)
    assert class_names(eval_ds)[:2] == ['airplane', 'automobile'] and train_ds[0][0].shape == (3, 32, 32)
    out = tmp_path / 'run'
    assert train_main(TINY + ['--dataset', 'torch/cifar10', '--data-dir', str(root), '--epochs', '1', '-b', '10',
                              '--output', str(out), '--no-progress']) == 0
    run = json.loads((out / 'config.json').read_text())['bnas_run']
    assert (run['dataset'], run['train_images'], run['eval_images'], run['num_classes']) == ('cifar10', 20, 10, 10)
    capsys.readouterr()
    assert validate_main(['--model', f'local-dir:{out}', '--dataset', 'torch/cifar10', '--data-dir', str(root),
                          '--json']) == 0
    assert json.loads(capsys.readouterr().out)['images'] == 10
    # where the files are missing, the message says what torchvision expects
    assert train_main(TINY + ['--dataset', 'torch/cifar10', '--data-dir', str(tmp_path), '--output',
                              str(tmp_path / 'o2'), '--no-progress']) == 2
    assert 'cifar-10-batches-py' in capsys.readouterr().err
    assert train_main(TINY + ['--dataset', 'oxford-iiit-pet', '--data-dir', str(root), '--output',
                              str(tmp_path / 'o3'), '--no-progress']) == 2
    assert 'unknown data source' in capsys.readouterr().err
