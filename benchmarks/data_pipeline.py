"""Does the data pipeline keep up? bnas-train's training loop on an image folder of PNG files against the same
loop on tensors already in memory and against ``benchmarks/train_step.py``'s synthetic step, in one process.

The folder is written first (``digits_folder.py``: 28x28 grayscale PNGs of 10 classes, what a user has on
disk). Each measurement is ``bnas_zoo.train.engine.run_training`` for 2 epochs with the recipe's optimizer
and bnas-train's defaults (channels-last on the CPU, data-loading workers sized to the machine); its second
epoch's images/s is taken (the first pays the start-up of the workers). The three measurements are
interleaved, --repeats times, and their medians compared:

- folder: the image folder through timm's dataset, the recipe's transforms and bnas-train's loader, with
  bnas-train's default number of data-loading workers and with each other --workers value;
- tensors: the same loop on a TensorDataset of ready 3x32x32 tensors (no decoding, no augmentation);
- step: train_step.py's synthetic training step (one fixed batch, SGD, no data loading at all).

Target: folder within 15 % of step (ratio >= 0.85) for bnas_mini at batch 64 and at the recipe's batch.

    python benchmarks/data_pipeline.py                       # bnas_mini, batches 64 and 256, 3 repeats
    python benchmarks/data_pipeline.py --batch 64 --images 1280 --repeats 5 --workers 0 2
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _setup(model_name, train_ds, eval_ds, batch, out, workers):
    import timm
    import torch

    from bnas_zoo.train.engine import TrainSetup
    from bnas_zoo.train.recipes import load_recipe
    recipe = load_recipe('short', {'epochs': 2, 'batch_size': batch})
    torch.manual_seed(0)
    model = timm.create_model(model_name, num_classes=10)
    return TrainSetup(model=model, train_ds=train_ds, eval_ds=eval_ds, recipe=recipe, output=out, model_name=model_name,
                      workers=workers, channels_last=True, progress=False)


def _loop(model_name, train_ds, eval_ds, batch, workers) -> float:
    """images/s of the second epoch of run_training."""
    from bnas_zoo.train.engine import run_training
    with tempfile.TemporaryDirectory() as out:
        run_training(_setup(model_name, train_ds, eval_ds, batch, Path(out), workers))
        return json.loads((Path(out) / 'summary.json').read_text())[-1]['images_per_s']


def _step(model_name, batch, steps) -> float:
    """train_step.py's synthetic step (channels-last, as bnas-train runs on the CPU), images/s."""
    sys.path.insert(0, str(HERE))
    from train_step import _worker
    return _worker(model_name, 'ours', batch, steps, 1, 1)['images_per_s']


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', default='bnas_mini', help='model (default: bnas_mini)')
    p.add_argument('--batch', type=int, nargs='+', default=[64, 256],
                   help="batch sizes (default: 64, the short recipe's, and 256, cifar10's)")
    p.add_argument('--images', type=int, default=1536, help='training images in the folder (default: 1536)')
    p.add_argument('--repeats', type=int, default=3, help='interleaved repeats; medians are compared (default: 3)')
    p.add_argument('--workers', type=int, nargs='*', default=[0],
                   help="also measure the folder with these numbers of data-loading processes (default: 0, loading "
                        "in the training process; bnas-train's default is always measured)")
    a = p.parse_args()
    import torch

    import bnas_zoo  # noqa: F401
    from bnas_zoo.train.data import build_datasets
    from bnas_zoo.train.loader import default_workers
    from bnas_zoo.train.recipes import load_recipe
    sys.path.insert(0, str(HERE))
    from digits_folder import write_digits_folder

    workers = default_workers(torch.device('cpu'))
    others = [w for w in a.workers if w != workers]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, {a.model}, bnas-train's default "
          f"workers: {workers}; medians of {a.repeats} interleaved runs")
    print(f"{'batch':>5} {'folder img/s':>12} {'tensors img/s':>13} {'step img/s':>10} {'folder/step':>11} "
          f"{'folder/tensors':>14}" + ''.join(f" {f'folder -j {w}':>13} {'/step':>6}" for w in others))
    with tempfile.TemporaryDirectory() as tmp:
        root = write_digits_folder(Path(tmp) / 'digits', train=a.images, val=64, size=28, mode='L', fmt='png')
        cfg = dict(input_size=(3, 32, 32), mean=(0.5,) * 3, std=(0.5,) * 3, crop_pct=1.0)
        folder_train, folder_eval, _ = build_datasets(load_recipe('short'), cfg, str(root), 'folder')
        g = torch.Generator().manual_seed(0)
        tensors = torch.utils.data.TensorDataset(torch.randn(a.images, 3, 32, 32, generator=g),
                                                 torch.randint(0, 10, (a.images,), generator=g))
        for batch in a.batch:
            runs = {'folder': [], 'tensors': [], 'step': [], **{f'folder -j {w}': [] for w in others}}
            for _ in range(a.repeats):
                t = time.perf_counter()
                runs['folder'].append(_loop(a.model, folder_train, folder_eval, batch, workers))
                runs['tensors'].append(_loop(a.model, tensors, folder_eval, batch, workers))
                runs['step'].append(_step(a.model, batch, max(2, a.images // batch // 2)))
                for w in others:
                    runs[f'folder -j {w}'].append(_loop(a.model, folder_train, folder_eval, batch, w))
                print(f'  (batch {batch}: one round in {time.perf_counter() - t:.0f} s: '
                      + ', '.join(f'{k} {v[-1]:.1f}' for k, v in runs.items()) + ')', flush=True)
            m = {k: statistics.median(v) for k, v in runs.items()}
            print(f"{batch:>5} {m['folder']:>12.1f} {m['tensors']:>13.1f} {m['step']:>10.1f} "
                  f"{m['folder'] / m['step']:>10.2f}x {m['folder'] / m['tensors']:>13.2f}x"
                  + ''.join(f" {m[f'folder -j {w}']:>13.1f} {m[f'folder -j {w}'] / m['step']:>5.2f}x" for w in others),
                  flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
