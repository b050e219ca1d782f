"""The EMA weights that `bnas-train --model-ema` keeps are validated and published by the documented commands:
`bnas-validate --model local-dir:RUN --use-ema` and `bnas-zoo publish RUN --use-ema`."""
import json

import pytest
import timm
import torch
from safetensors.torch import load_file

from bnas_zoo.cli import main as zoo_main
from bnas_zoo.train.train import main as train_main
from bnas_zoo.train.validate import main as validate_main

TINY = ['--model', 'bnas_custom', '--model-arg', 'genotype=bnas_cifar', '--model-arg', 'layers=3',
        '--model-arg', 'channels=8', '--model-arg', 'stem=cifar', '--no-progress', '--dataset', 'embedded',
        '--epochs', '1', '--train-subset', '32', '--batch-size', '16']


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('ema')
    assert train_main(TINY + ['--model-ema', '0.5', '--output', str(tmp / 'ema')]) == 0
    assert train_main(TINY + ['--output', str(tmp / 'plain')]) == 0
    return tmp / 'ema', tmp / 'plain'


def _ema_file(run):
    """The EMA weights of the run's newest checkpoint unit."""
    return sorted((run / 'checkpoints').glob('epoch-*/checkpoint_ema.safetensors'))[-1]


def _validate(capsys, *argv):
    code = validate_main(list(argv) + ['--dataset', 'embedded', '--json'])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if code == 0 else captured.err)


def test_validate_the_ema_weights_of_a_run(runs, capsys):
    ema_run, plain_run = runs
    history = json.loads((ema_run / 'summary.json').read_text())
    code, result = _validate(capsys, '--model', f'local-dir:{ema_run}', '--use-ema')
    assert code == 0
    assert result['top1'] == pytest.approx(history[-1]['eval_ema_top1'], abs=100 / 360 + 1e-6)  # one image
    # the same weights given as a file
    code, same = _validate(capsys, '--model', f'local-dir:{ema_run}', '--checkpoint',
                           str(_ema_file(ema_run)))
    assert code == 0 and same['top1'] == result['top1'] and same['loss'] == result['loss']
    # --use-ema is never silently ignored
    code, err = _validate(capsys, '--model', f'local-dir:{plain_run}', '--use-ema')
    assert code == 2 and 'no EMA weights' in err and '--model-ema' in err
    code, err = _validate(capsys, '--model', 'bnas_mini', '--use-ema')
    assert code == 2 and '--use-ema' in err
    code, err = _validate(capsys, '--model', f'local-dir:{ema_run}', '--use-ema', '--checkpoint',
                          str(ema_run / 'model.safetensors'))
    assert code == 2 and 'without --use-ema' in err


def test_publish_the_ema_weights_of_a_run(runs, tmp_path, capsys):
    ema_run, plain_run = runs
    out = tmp_path / 'pub'
    assert zoo_main(['publish', str(ema_run), '--repo-id', 'me/tiny-ema', '--dry-run', '--output', str(out),
                     '--use-ema']) == 0
    capsys.readouterr()
    published = load_file(out / 'model.safetensors')
    ema = load_file(_ema_file(ema_run))
    assert published.keys() == ema.keys() and all(torch.equal(published[k], ema[k]) for k in ema)
    best = load_file(ema_run / 'model.safetensors')
    assert not all(torch.equal(best[k], ema[k]) for k in ema)  # not the run's best weights
    history = json.loads((ema_run / 'summary.json').read_text())
    card = (out / 'README.md').read_text()
    assert f"{history[-1]['eval_ema_top1']:.2f}" in card and f'measured (EMA weights, epoch {len(history)})' in card
    assert f'the EMA of the weights at epoch {len(history)}' in card and '(kept, not published)' not in card
    x = torch.randn(2, 3, 32, 32)
    loaded = timm.create_model(f'local-dir:{out}', pretrained=True).eval()
    assert loaded(x).shape == (2, 10)
    # a run without EMA weights: a clear refusal, nothing written
    assert zoo_main(['publish', str(plain_run), '--repo-id', 'me/x', '--dry-run', '--output', str(tmp_path / 'p2'),
                     '--use-ema']) == 2
    assert 'no EMA weights' in capsys.readouterr().err
