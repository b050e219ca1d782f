"""Training-step throughput and peak memory: bnas_zoo against the release's way of computing the same network.

A training step is forward, cross-entropy, backward and an SGD (momentum) step, float32 on the CPU. Ours is
the model as bnas-train runs it on a CPU: channels-last, so that its binary blocks take the packed XNOR
kernels (``bnas_zoo.kernels.training``); ``--contiguous`` adds a column for the default (contiguous) layout,
the float simulation that is bit-for-bit the release's computation. The
baseline (``release_net.py``) is a straightforward build of the same network that computes every Zeroise
edge, builds and runs every module (also the unused ones), and swaps weights in place each step as the
release does (binarize, forward/backward, restore, XNOR gradient formula). Each measurement runs in its own
process so that its peak resident memory is its own.

    python benchmarks/train_step.py                  # bnas_mini, bnas_a (batch 64), bnas_d (batch 16)
    python benchmarks/train_step.py --models bnas_mini --steps 5

It prints images/s (the best of --repeats timed runs) and peak RSS for both, and the ratio ours / baseline
(target: >= 2x).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT = [('bnas_mini', 64), ('bnas_a', 64), ('bnas_d', 16)]


def _worker(name: str, impl: str, batch: int, steps: int, warmup: int, repeats: int) -> dict:
    import timm
    import torch

    import bnas_zoo
    from bnas_zoo.binary import attach_latent_projection
    from bnas_zoo.genotype import load_genotype
    sys.path.insert(0, str(HERE))
    from release_net import ReleaseBinOp, ReleaseNetwork, release_train_step

    torch.manual_seed(0)
    v = bnas_zoo.VARIANTS[name]
    size = 32 if v.stem == 'cifar' else 224
    classes = 10 if v.stem == 'cifar' else 1000
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, classes, (batch,))
    criterion = torch.nn.CrossEntropyLoss()
    if impl in ('ours', 'contiguous'):
        model = timm.create_model(name).train()
        if impl == 'ours':
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        attach_latent_projection(opt, model)

        def step():
            opt.zero_grad(set_to_none=True)
            loss = criterion(model(x), y)
            loss.backward()
            opt.step()
    else:
        model = ReleaseNetwork(load_genotype(v.genotype).to_dict(), v.layers, v.channels, v.stem == 'imagenet',
                               classes).train()
        binarized = [n for n, m in model.named_modules()
                     if isinstance(m, torch.nn.Conv2d) and n.endswith('.op.0') and not n.startswith('stem')]
        # the release keeps the last two of these in full precision
        binop = ReleaseBinOp(model, binarized[:-2])
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step():
            release_train_step(model, binop, opt, criterion, x, y)
    for _ in range(warmup):
        step()
    best = float('inf')
    for _ in range(repeats):  # the best of several timed runs: the machine's noise only slows a run down
        t = time.perf_counter()
        for _ in range(steps):
            step()
        best = min(best, time.perf_counter() - t)
    return dict(images_per_s=batch * steps / best, peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def _run(name, impl, batch, steps, warmup, repeats) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, '--worker', name, impl, str(batch), str(steps), str(warmup), str(repeats)],
        capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', nargs='*', help='subset of bnas_mini, bnas_a, bnas_d')
    parser.add_argument('--steps', type=int, default=0, help='steps per timed run (default: 5 CIFAR, 2 ImageNet)')
    parser.add_argument('--repeats', type=int, default=3, help='timed runs; the best is reported (default: 3)')
    parser.add_argument('--contiguous', action='store_true',
                        help='also measure ours in the default contiguous layout (the float simulation)')
    parser.add_argument('--worker', nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        name, impl, batch, steps, warmup, repeats = args.worker
        print(json.dumps(_worker(name, impl, int(batch), int(steps), int(warmup), int(repeats))))
        return 0
    import torch
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, float32, CPU')
    extra = f" {'contig img/s':>12} {'ratio':>6}" if args.contiguous else ''
    print(f"{'model':<10} {'batch':>5} {'ours img/s':>11} {'base img/s':>11} {'ratio':>6} {'ours MiB':>9} {'base MiB':>9}"
          + extra)
    for name, batch in DEFAULT:
        if args.models and name not in args.models:
            continue
        steps = args.steps or (5 if name != 'bnas_d' else 2)
        warmup = 2 if name != 'bnas_d' else 1
        ours = _run(name, 'ours', batch, steps, warmup, args.repeats)
        base = _run(name, 'baseline', batch, steps, warmup, args.repeats)
        ratio = ours['images_per_s'] / base['images_per_s']
        extra = ''
        if args.contiguous:
            contig = _run(name, 'contiguous', batch, steps, warmup, args.repeats)
            extra = f" {contig['images_per_s']:>12.1f} {contig['images_per_s'] / base['images_per_s']:>5.2f}x"
        print(f"{name:<10} {batch:>5} {ours['images_per_s']:>11.1f} {base['images_per_s']:>11.1f} {ratio:>5.2f}x "
              f"{ours['peak_rss_mib']:>9.0f} {base['peak_rss_mib']:>9.0f}" + extra, flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
