"""Training: recipes, a short real run, exact resume, DDP on gloo, the run folder, bad input."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file

import bnas_zoo
from bnas_zoo.train.checkpoint import unit_dir
from bnas_zoo.train.data import EMBEDDED_MEAN, EMBEDDED_STD, build_datasets
from bnas_zoo.train.engine import TrainSetup, param_groups, run_training
from bnas_zoo.train.recipes import RecipeError, list_recipes, load_recipe
from bnas_zoo.train.train import main as train_main
from bnas_zoo.train.validate import main as validate_main

VENV_BIN = Path(sys.executable).parent


def test_bundled_recipes():
    assert set(list_recipes()) >= {'embedded', 'cifar10', 'imagenet-standard', 'imagenet-minreg',
                                   'imagenet-minreg-longer'}
    minreg = load_recipe('imagenet-minreg')
    assert (minreg['opt'], minreg['weight_decay'], minreg['color_jitter'], minreg['label_smoothing']) == ('adam', 0.0, 0.0, 0.0)
    assert minreg['epochs'] == 250 and minreg['sched'] == 'cosine' and minreg['sched_cycle_epochs'] is None
    assert load_recipe('imagenet-minreg-longer')['epochs'] == 500
    std = load_recipe('imagenet-standard')
    assert (std['opt'], std['momentum'], std['weight_decay'], std['sched_cycle_epochs'], std['min_lr']) == ('sgd', 0.9, 3e-5, 50, 0.0)
    assert (std['color_jitter'], std['label_smoothing'], std['grad_clip'], std['epochs']) == (0.4, 0.1, 5.0, 250)
    cifar = load_recipe('cifar10')
    assert (cifar['lr'], cifar['min_lr'], cifar['weight_decay'], cifar['epochs'], cifar['batch_size'], cifar['drop_path']) == (
        0.05, 4e-4, 3e-6, 600, 256, 0.2)
    assert all(not load_recipe(r)['binary_weight_decay'] for r in list_recipes())


def test_recipe_overrides_and_errors(tmp_path):
    r = load_recipe('cifar10', {'lr': '0.1', 'epochs': '3', 'grad_clip': 'null', 'opt': 'adamw'})
    assert r['lr'] == 0.1 and r['epochs'] == 3 and r['grad_clip'] is None and r['opt'] == 'adamw'
    with pytest.raises(RecipeError, match="unknown recipe 'fast'"):
        load_recipe('fast')
    with pytest.raises(RecipeError, match='override colour: unknown recipe key'):
        load_recipe('cifar10', {'colour': '1'})
    with pytest.raises(RecipeError, match="recipe key 'epochs' is 'many'"):
        load_recipe('cifar10', {'epochs': 'many'})
    bad = tmp_path / 'r.yaml'
    bad.write_text((Path(bnas_zoo.train.recipes.recipe_dir()) / 'cifar10.yaml').read_text() + 'mixup: 0.2\n')
    with pytest.raises(RecipeError, match=r'r\.yaml: unknown recipe key\(s\) mixup'):
        load_recipe(str(bad))


def test_no_weight_decay_on_binary_latents_bn_and_bias():
    model = timm.create_model('bnas_mini')
    no_decay, decay = param_groups(model, 1e-4, binary_weight_decay=False)
    decay_ids = {id(p) for p in decay['params']}
    for m in bnas_zoo.binary_convs(model):
        assert id(m.weight) not in decay_ids
    assert id(model.stem.conv.weight) in decay_ids and id(model.classifier.weight) in decay_ids
    assert id(model.classifier.bias) not in decay_ids and id(model.stem.bn.weight) not in decay_ids
    _, decay = param_groups(model, 1e-4, binary_weight_decay=True)
    assert id(model.cells[0].ops['1'].conv.weight) in {id(p) for p in decay['params']}


def _tiny_setup(tmp_path, epochs=3, resume=None, n_train=256, stop_after=None, ema_decay=None):
    recipe = load_recipe('embedded', {'epochs': epochs, 'batch_size': 32, 'lr': 0.003})
    cfg = dict(input_size=(3, 32, 32), mean=EMBEDDED_MEAN, std=EMBEDDED_STD)
    train_ds, eval_ds, classes = build_datasets(recipe, cfg, None, 'embedded')
    train_ds = torch.utils.data.Subset(train_ds, range(n_train))
    eval_ds = torch.utils.data.Subset(eval_ds, range(120))
    torch.manual_seed(0)
    model = timm.create_model('bnas_custom', genotype='bnas_cifar', layers=3, channels=12, stem='cifar', num_classes=classes)
    return TrainSetup(model=model, train_ds=train_ds, eval_ds=eval_ds, recipe=recipe, output=tmp_path,
                      model_name='bnas_custom', seed=0, resume=resume, progress=False, stop_after=stop_after,
                      ema_decay=ema_decay,
                      export_args=model.architecture_args())


def test_short_training_run_learns(tmp_path):
    best = run_training(_tiny_setup(tmp_path, epochs=4, n_train=640))
    history = json.loads((tmp_path / 'summary.json').read_text())
    assert [h['epoch'] for h in history] == [1, 2, 3, 4]
    assert history[-1]['train_loss'] < history[0]['train_loss']
    assert best['top1'] > 30.0  # 10 classes: chance is 10 %
    # the run folder loads through timm and keeps the latent weights centred and clamped before each update
    model = timm.create_model(f'local-dir:{tmp_path}', pretrained=True)
    assert model.genotype.name == 'bnas_cifar'
    assert (tmp_path / 'curves.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert (tmp_path / 'summary.csv').read_text().startswith('epoch,lr,train_loss,train_top1,eval_loss')


def test_resume_is_exact(tmp_path):
    straight, interrupted = tmp_path / 'straight', tmp_path / 'interrupted'
    run_training(_tiny_setup(straight, epochs=3, n_train=128, ema_decay=0.9))
    run_training(_tiny_setup(interrupted, epochs=3, n_train=128, stop_after=2, ema_decay=0.9))
    assert len(json.loads((interrupted / 'summary.json').read_text())) == 2
    # continue the interrupted run to the same number of epochs, from its checkpoint alone
    setup = _tiny_setup(interrupted, epochs=3, n_train=128, resume=interrupted, ema_decay=0.9)
    with torch.no_grad():  # the model object is fresh: make sure nothing comes from it but the checkpoint
        for p in setup.model.parameters():
            p.add_(1.0)
    run_training(setup)
    for name in ('checkpoint.safetensors', 'checkpoint_ema.safetensors'):  # the weights and their EMA
        a = load_file(unit_dir(straight, 2) / name)
        b = load_file(unit_dir(interrupted, 2) / name)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    ha = json.loads((straight / 'summary.json').read_text())
    hb = json.loads((interrupted / 'summary.json').read_text())
    assert [h['eval_top1'] for h in ha] == [h['eval_top1'] for h in hb]
    assert [h['eval_ema_top1'] for h in ha] == [h['eval_ema_top1'] for h in hb]


def test_cli_train_validate_publish(tmp_path, capsys):
    out = tmp_path / 'run'
    assert train_main(['--model', 'bnas_mini', '--data', 'embedded', '--output', str(out), '--epochs', '1',
                       '--train-subset', '64', '--no-progress']) == 0
    assert 'best: epoch 1' in capsys.readouterr().out
    for name in ('model.safetensors', 'config.json', 'checkpoints/epoch-0001/checkpoint.safetensors',
                 'checkpoints/epoch-0001/checkpoint_state.pt', 'checkpoints/epoch-0001/checkpoint.json',
                 'summary.csv', 'summary.json', 'curves.png', 'recipe.yaml'):
        assert (out / name).is_file(), name
    assert validate_main(['--model', f'local-dir:{out}', '--data', 'embedded', '--json']) == 0
    result = json.loads(capsys.readouterr().out)
    assert result['images'] == 360 and 0 <= result['top1'] <= 100
    from bnas_zoo.cli import main as zoo_main
    assert zoo_main(['publish', str(out), '--repo-id', 'me/mini-digits', '--dry-run', '--out', str(tmp_path / 'pub')]) == 0
    card = (tmp_path / 'pub' / 'README.md').read_text()
    assert '| recipe | `embedded` |' in card and '- sklearn-digits' in card
    command = f'bnas-train --model bnas_mini --data embedded --output {out} --epochs 1 --train-subset 64 --no-progress'
    assert f'```bash\n{command}\n```' in card
    assert json.loads((out / 'config.json').read_text())['bnas_run']['command'] == command
    # an existing run is not overwritten by accident
    assert train_main(['--model', 'bnas_mini', '--data', 'embedded', '--output', str(out), '--epochs', '1']) == 2
    assert 'already holds a run' in capsys.readouterr().err


def _image_folder(root: Path, classes=3, per_class=4, splits=('train', 'val')):
    from PIL import Image
    for split in splits:
        for c in range(classes):
            d = root / split / f'class{c}'
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.new('RGB', (40, 40), (40 * c, 10 * i, 100)).save(d / f'{i}.png')
    return root


def test_fine_tune_on_an_image_folder_head_first(tmp_path, capsys):
    from timm.models import save_for_hf
    pre = timm.create_model('bnas_mini')
    save_for_hf(pre, str(tmp_path / 'pre'), model_args=pre.architecture_args(), safe_serialization=True)
    data = _image_folder(tmp_path / 'data')
    out = tmp_path / 'ft'
    argv = ['--model', f'local-dir:{tmp_path / "pre"}', '--data-dir', str(data), '--num-classes', '3',
            '--recipe', 'cifar10', '--epochs', '2', '--head-epochs', '1', '--batch-size', '4',
            '--output', str(out), '--no-progress']
    assert train_main(argv + ['--stop-after', '1']) == 0
    body = {k: v for k, v in pre.state_dict().items() if not k.startswith('classifier.')}
    after_head = load_file(unit_dir(out, 0) / 'checkpoint.safetensors')
    assert all(torch.equal(after_head[k], v) for k, v in body.items())  # the head-only epoch froze the body
    assert after_head['classifier.weight'].shape == (3, 384)
    assert train_main(argv + ['--resume']) == 0
    history = json.loads((out / 'summary.json').read_text())
    assert [h['head_only'] for h in history] == [True, False]
    tuned = load_file(unit_dir(out, 1) / 'checkpoint.safetensors')
    assert not torch.equal(tuned['cells.0.ops.1.conv.weight'], body['cells.0.ops.1.conv.weight'])


def test_bad_input_is_refused_before_training(tmp_path, capsys):
    def run(*argv):
        code = train_main(list(argv) + ['--no-progress'])
        return code, capsys.readouterr().err
    code, err = run('--model', 'bnas_mini', '--data-dir', str(tmp_path / 'missing'), '--output', str(tmp_path / 'o1'))
    assert code == 2 and 'no such folder' in err
    empty = tmp_path / 'empty'
    (empty / 'train' / 'a').mkdir(parents=True)
    (empty / 'val' / 'a').mkdir(parents=True)
    code, err = run('--model', 'bnas_mini', '--data-dir', str(empty), '--output', str(tmp_path / 'o2'))
    assert code == 2 and str(empty) in err
    data = _image_folder(tmp_path / 'data')
    code, err = run('--model', 'bnas_mini', '--data-dir', str(data), '--num-classes', '5', '--output', str(tmp_path / 'o3'))
    assert code == 2 and 'the dataset has 3 classes' in err
    code, err = run('--model', 'bnas_mini', '--data', 'embedded', '--recipe', 'nope', '--output', str(tmp_path / 'o4'))
    assert code == 2 and "unknown recipe 'nope'" in err
    code, err = run('--model', 'bnas_mini', '--data', 'embedded', '--output', '/proc/forbidden/run')
    assert code == 2 and 'not writable' in err
    code, err = run('--model', 'bnas_zz', '--data', 'embedded', '--output', str(tmp_path / 'o5'))
    assert code == 2 and "unknown model 'bnas_zz'" in err
    # a resume file of another model
    out = tmp_path / 'other'
    assert train_main(['--model', 'bnas_mini', '--data', 'embedded', '--output', str(out), '--epochs', '1',
                       '--train-subset', '32', '--no-progress']) == 0
    capsys.readouterr()
    code, err = run('--model', 'bnas_a', '--data', 'embedded', '--output', str(out), '--resume', '--epochs', '2')
    assert code == 2 and "a checkpoint of 'bnas_mini', not of 'bnas_a'" in err


@pytest.mark.slow
def test_ddp_on_gloo_with_two_processes(tmp_path):
    out = tmp_path / 'ddp'
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run(
        [str(VENV_BIN / 'torchrun'), '--standalone', '--nproc_per_node', '2', '-m', 'bnas_zoo.train',
         '--model', 'bnas_mini', '--data', 'embedded', '--output', str(out), '--epochs', '1', '--device', 'cpu',
         '--train-subset', '128', '--batch-size', '32', '--no-progress'],
        capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count('best: epoch 1') == 1  # rank 0 reports
    history = json.loads((out / 'summary.json').read_text())
    assert len(history) == 1 and 0 <= history[0]['eval_top1'] <= 100
    assert timm.create_model(f'local-dir:{out}', pretrained=True).num_classes == 10


def _save_pretrained(folder: Path, name='bnas_mini', **kwargs):
    from timm.models import save_for_hf
    pre = timm.create_model(name, **kwargs)
    save_for_hf(pre, str(folder), model_args=pre.architecture_args(), safe_serialization=True)
    return pre


def test_fine_tune_smaller_than_the_batch_trains_and_reports_honestly(tmp_path, capsys):
    """A training set smaller than the batch: the batch is lowered with a notice (never an epoch of no step);
    fine-tuning a local-dir: model takes the short recipe; summary.csv's lr is the epoch's own rate;
    curves.png names the run, has integer epochs and marks the head-only phase; the weights are world-readable;
    bnas-validate reads the fine-tuned head's class count from the checkpoint."""
    import stat
    from PIL import Image
    from bnas_zoo.train.engine import _curves_figure
    _save_pretrained(tmp_path / 'pre')
    data = _image_folder(tmp_path / 'data')  # 3 classes x 4 images: 12 training images, batch 256 by default
    out = tmp_path / 'ft'
    old = os.umask(0o022)
    try:
        assert train_main(['--model', f'local-dir:{tmp_path / "pre"}', '--num-classes', '3', '--data-dir', str(data),
                           '--head-epochs', '1', '--epochs', '2', '--warmup-epochs', '0', '--lr', '0.01',
                           '--output', str(out), '--no-progress']) == 0
    finally:
        os.umask(old)
    err = capsys.readouterr().err
    assert 'fewer than the batch size 64' in err and 'using --batch-size 12' in err
    assert 'recipe short (fine-tuning trained weights' in err
    history = json.loads((out / 'summary.json').read_text())
    assert all(h['train_loss'] > 0 and h['images_per_s'] > 0 for h in history)
    run = json.loads((out / 'config.json').read_text())['bnas_run']
    assert run['recipe_name'] == 'short' and run['recipe']['batch_size'] == 12
    # lr: the rate of each epoch's first step (cosine over 2 epochs: the full rate first, then lower)
    assert history[0]['lr'] == 0.01 and history[1]['lr'] < 0.01
    csv = (out / 'summary.csv').read_text().splitlines()
    assert csv[0].split(',')[1] == 'lr' and float(csv[1].split(',')[1]) == 0.01
    title = Image.open(out / 'curves.png').text['Title']
    assert title == f'local-dir:{tmp_path / "pre"} (bnas_mini) on data, recipe short'
    fig = _curves_figure(history, title)
    for ax in fig.axes:
        assert all(float(t).is_integer() for t in ax.get_xticks())
        assert 'head only' in ax.get_legend_handles_labels()[1]
        shaded = [p for p in ax.patches if p.get_label() == 'head only']
        assert len(shaded) == 1 and shaded[0].get_x() == 0.5 and shaded[0].get_width() == 1.0  # epoch 1 only
    for name in ('model.safetensors', 'config.json', 'checkpoints/epoch-0002/checkpoint.safetensors', 'summary.csv',
                 'curves.png'):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name
    # bnas-validate: the checkpoint's head has 3 classes
    ckpt = str(out / 'model.safetensors')
    assert validate_main(['--model', 'bnas_mini', '--checkpoint', ckpt, '--data-dir', str(data), '--json']) == 0
    assert json.loads(capsys.readouterr().out)['images'] == 12
    assert validate_main(['--model', 'bnas_mini', '--checkpoint', ckpt, '--num-classes', '3', '--data-dir',
                          str(data), '--json']) == 0
    capsys.readouterr()
    assert validate_main(['--model', 'bnas_mini', '--checkpoint', ckpt, '--num-classes', '5', '--data-dir', str(data)]) == 2
    assert 'its classifier has 3 outputs, not --num-classes 5' in capsys.readouterr().err
    assert validate_main(['--model', 'bnas_mini', '--data-dir', str(data)]) == 2
    assert 'has 10 outputs but the dataset has 3 classes' in capsys.readouterr().err


def test_zero_step_epochs_never_run(tmp_path, capsys):
    with pytest.raises(bnas_zoo.BnasError, match='fewer than the batch size 32: an epoch would train nothing'):
        run_training(_tiny_setup(tmp_path / 'api', epochs=1, n_train=20))
    assert not (tmp_path / 'api' / 'model.safetensors').exists()
    from bnas_zoo.train.train import _fit_batch
    recipe = load_recipe('embedded', {'batch_size': 5000})
    assert _fit_batch(recipe, 1437, 1)['batch_size'] == 1437
    assert 'using --batch-size 1437' in capsys.readouterr().err
    assert _fit_batch(recipe, 1437, 2)['batch_size'] == 1436
    capsys.readouterr()
    assert _fit_batch(dict(recipe, batch_size=32), 1437, 1)['batch_size'] == 32
    assert 'notice' not in capsys.readouterr().err
    out = tmp_path / 'one'  # the command line: one training image, a batch of one
    assert train_main(['--model', 'bnas_custom', '--model-arg', 'genotype=bnas_cifar', '--model-arg', 'layers=3',
                       '--model-arg', 'channels=8', '--data', 'embedded', '--train-subset', '1', '--epochs', '1',
                       '--output', str(out), '--no-progress']) == 0
    assert 'using --batch-size 1 ' in capsys.readouterr().err
    row, = json.loads((out / 'summary.json').read_text())
    assert row['train_loss'] > 0 and row['images_per_s'] > 0


def test_default_recipe_follows_the_architecture(tmp_path):
    from bnas_zoo.registry import create_checked
    from bnas_zoo.train.train import default_recipe
    _save_pretrained(tmp_path / 'cifar')
    _save_pretrained(tmp_path / 'imnet', 'bnas_custom', genotype='bnas_cifar', layers=3, channels=12, stem='imagenet')
    cases = {'bnas_mini': 'cifar10', 'bnas_a': 'cifar10', 'bnas_d': 'imagenet-minreg',
             f'local-dir:{tmp_path / "cifar"}': 'cifar10', f'local-dir:{tmp_path / "imnet"}': 'imagenet-minreg'}
    for name, expected in cases.items():
        assert default_recipe(create_checked(name, pretrained=False), 'folder') == expected, name
    assert default_recipe(create_checked('bnas_d', pretrained=False), 'embedded') == 'embedded'


def test_same_command_and_seed_give_the_same_run(tmp_path):
    def run(out, seed='3'):
        torch.rand(7)  # whatever the process did before must not matter
        assert train_main(['--model', 'bnas_custom', '--model-arg', 'genotype=bnas_cifar', '--model-arg', 'layers=3',
                           '--model-arg', 'channels=8', '--data', 'embedded', '--train-subset', '48', '--batch-size',
                           '16', '--epochs', '2', '--seed', seed, '--output', str(out), '--no-progress']) == 0
        history = json.loads((out / 'summary.json').read_text())
        return [{k: v for k, v in h.items() if k != 'images_per_s'} for h in history], load_file(out / 'model.safetensors')
    (ha, wa), (hb, wb), (_, wc) = run(tmp_path / "a"), run(tmp_path / "b"), run(tmp_path / "c", seed="4")
    assert ha == hb and wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)  # another seed, another run


def test_data_folder_problems_are_refused(tmp_path, capsys):
    from bnas_zoo.train.data import DataError

    def build(root, **kw):
        recipe = load_recipe('imagenet-minreg')
        cfg = dict(input_size=(3, 32, 32), mean=EMBEDDED_MEAN, std=EMBEDDED_STD, crop_pct=1.0)
        return build_datasets(recipe, cfg, str(root), 'folder', **kw)
    no_val = _image_folder(tmp_path / 'noval', splits=('train',))
    with pytest.raises(DataError, match=r"no 'validation' split \(looked for validation, .*val.*--val-split train"):
        build(no_val)
    code = train_main(['--model', 'bnas_mini', '--data-dir', str(no_val), '--output', str(tmp_path / 'o'),
                       '--no-progress'])
    assert code == 2 and "no 'validation' split" in capsys.readouterr().err
    train_ds, eval_ds, classes = build(no_val, val_split='train')  # knowingly: a warning
    assert classes == 3 and len(eval_ds) == 12 and 'evaluating on the training images' in capsys.readouterr().err
    other = _image_folder(tmp_path / 'other', splits=('train',))
    _image_folder(tmp_path / 'otherval', classes=2)
    (tmp_path / 'otherval' / 'val' / 'class1').rename(tmp_path / 'otherval' / 'val' / 'cats')
    (tmp_path / 'otherval' / 'val').rename(other / 'val')
    with pytest.raises(DataError, match=r'class folders differ \(only in train/: class1, class2; only in val/: cats\)'):
        build(other)
    one = _image_folder(tmp_path / 'one', classes=1)
    with pytest.raises(DataError, match='need at least 2 classes'):
        build(one)
    assert build(_image_folder(tmp_path / 'ok'))[2] == 3
