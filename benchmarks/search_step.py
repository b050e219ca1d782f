"""Search cost per epoch at the paper's configuration (8 cells, C0 = 16, batch 64, the seven BNAS operations,
32x32 images, 25,000 images per half: 390 steps per epoch), float32 on the CPU, all in one process.

    python benchmarks/search_step.py                 # before / after / after on channels-last
    python benchmarks/search_step.py --steps 1 --layers 5 --channels 8    # a quick look

- before: the search step as bnas-search ran it up to this version (each backward pass computes every
  gradient, the updates use half of them; Python's sum over the candidate operations);
- after: ``train.search.search_step`` (each backward computes only what its update uses);
- channels-last: after, on channels-last activations (``bnas-search --channels-last``): the binary candidates
  run on the packed XNOR kernels, whose exact integer sums differ from the float computation by rounding,
  so its search is not bit for bit the default one.

The three start from the same seed and see the same batches; the script checks that before and after end
in bit-identical supernet weights, architecture parameters and optimizer states, and prints seconds per step
(the median of --steps timed steps after one warm-up step) and per epoch.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--steps', type=int, default=2, help='timed steps per variant (default: 2)')
    parser.add_argument('--layers', type=int, default=8)
    parser.add_argument('--channels', type=int, default=16)
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--no-channels-last', action='store_true', help='skip the channels-last variant')
    args = parser.parse_args()
    import bnas_zoo.supernet as supernet
    from bnas_zoo.binary import attach_latent_projection
    from bnas_zoo.train.search import DEFAULT_OPS, search_step

    variants = ['before', 'after'] + ([] if args.no_channels_last else ['channels-last'])
    steps = args.steps + 1
    g = torch.Generator().manual_seed(1)
    batches = [tuple((torch.randn(args.batch_size, 3, 32, 32, generator=g),
                      torch.randint(0, 10, (args.batch_size,), generator=g)) for _ in range(2))
               for _ in range(steps)]
    setups = {}
    for v in variants:
        torch.manual_seed(0)
        model = supernet.Supernet(list(DEFAULT_OPS), args.layers, args.channels, 10)
        if v == 'channels-last':
            model = model.to(memory_format=torch.channels_last)
        w_opt = torch.optim.SGD(model.weight_parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
        attach_latent_projection(w_opt, model)
        a_opt = torch.optim.Adam(model.arch_parameters(), lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
        setups[v] = (model, w_opt, a_opt, torch.amp.GradScaler('cpu', enabled=False))
    criterion = torch.nn.CrossEntropyLoss()
    times = {v: [] for v in variants}
    lean_sum = supernet._sum
    for i, (arch_batch, weight_batch) in enumerate(batches):
        for v in variants:  # interleaved: the machine's drift hits every variant alike
            model, w_opt, a_opt, scaler = setups[v]
            if v == 'channels-last':
                arch_batch = tuple(t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t
                                   for t in arch_batch)
                weight_batch = tuple(t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t
                                     for t in weight_batch)
            supernet._sum = sum if v == 'before' else lean_sum
            t = time.perf_counter()
            search_step(model, criterion, a_opt, w_opt, scaler, arch_batch, weight_batch, 0, 1.0, 7.7,
                        lean=v != 'before')
            if i:  # the first step warms up
                times[v].append(time.perf_counter() - t)
    supernet._sum = lean_sum

    def state(v):
        model, w_opt, a_opt, _ = setups[v]
        return list(model.state_dict().values()) + [
            t for o in (w_opt, a_opt) for s in o.state.values() for t in s.values() if torch.is_tensor(t)]
    identical = all(torch.equal(a, b) for a, b in zip(state('before'), state('after')))
    per_epoch = 25000 // args.batch_size
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads; supernet {args.layers} cells, '
          f'C0 {args.channels}, batch {args.batch_size}; {per_epoch} steps per epoch')
    base = statistics.median(times['before'])
    for v in variants:
        s = statistics.median(times[v])
        print(f'{v:<14} {s:8.2f} s/step {s * per_epoch / 60:8.1f} min/epoch   {base / s:5.2f}x')
    print(f'before and after end bit-identical: {identical}')
    return 0 if identical else 1


if __name__ == '__main__':
    sys.exit(main())
