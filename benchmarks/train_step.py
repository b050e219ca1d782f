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
    python benchmarks/train_step.py --models bnas_mini --steps 5 --contiguous

The measurements are interleaved: --rounds rounds, each running ours, the baseline (and the contiguous
layout) once, in an order that rotates from round to round, so that a slow spell of a shared machine falls on
all of them. Each run reports the best of --repeats timed runs; the table gives the median images/s of the
rounds, the median of the rounds' ratios ours / baseline (target: >= 2x; contiguous: >= 1.6x) with their
range, and the peak RSS.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
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
    parser.add_argument('--repeats', type=int, default=2, help='timed runs per process; the best is kept (default: 2)')
    parser.add_argument('--rounds', type=int, default=3,
                        help='interleaved rounds; medians over them are reported (default: 3)')
    parser.add_argument('--contiguous', action='store_true',
                        help='also measure ours in the default contiguous layout (the float simulation)')
    parser.add_argument('--worker', nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        name, impl, batch, steps, warmup, repeats = args.worker
        print(json.dumps(_worker(name, impl, int(batch), int(steps), int(warmup), int(repeats))))
        return 0
    import torch
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, float32, CPU; {args.rounds} interleaved '
          f'rounds, medians (ratio range in brackets)')
    impls = ['ours', 'baseline'] + (['contiguous'] if args.contiguous else [])
    extra = f" {'contig img/s':>12} {'ratio':>18}" if args.contiguous else ''
    print(f"{'model':<10} {'batch':>5} {'ours img/s':>11} {'base img/s':>11} {'ratio':>18} {'ours MiB':>9} "
          f"{'base MiB':>9}" + extra)
    for name, batch in DEFAULT:
        if args.models and name not in args.models:
            continue
        steps = args.steps or (5 if name != 'bnas_d' else 2)
        warmup = 2 if name != 'bnas_d' else 1
        runs = {impl: [] for impl in impls}
        for r in range(args.rounds):
            for impl in impls[r % len(impls):] + impls[:r % len(impls)]:
                runs[impl].append(_run(name, impl, batch, steps, warmup, args.repeats))
        speed = {impl: [m['images_per_s'] for m in runs[impl]] for impl in impls}

        def ratio(impl: str) -> str:
            rs = [a / b for a, b in zip(speed[impl], speed['baseline'])]
            return f'{statistics.median(rs):.2f}x [{min(rs):.2f}-{max(rs):.2f}]'

        mib = {impl: max(m['peak_rss_mib'] for m in runs[impl]) for impl in impls}
        extra = (f" {statistics.median(speed['contiguous']):>12.1f} {ratio('contiguous'):>18}"
                 if args.contiguous else '')
        print(f"{name:<10} {batch:>5} {statistics.median(speed['ours']):>11.1f} "
              f"{statistics.median(speed['baseline']):>11.1f} {ratio('ours'):>18} {mib['ours']:>9.0f} "
              f"{mib['baseline']:>9.0f}" + extra, flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
