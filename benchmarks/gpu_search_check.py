"""GPU check of the BNAS search: the paper's supernet (8 cells, C0 = 16, batch 64, 7 operations) on synthetic
CIFAR-shaped data, timing first-order search steps (an architecture step and a weight step each) and
projecting seconds per epoch (CIFAR-10's 25,000 images per half: 390 steps) and the 50-epoch search.

    python benchmarks/gpu_search_check.py [--steps 40] [--amp bf16] [--channels-last]
    python benchmarks/gpu_search_check.py --cpu-smoke      # check the script on the CPU (tiny supernet)

The paper reports about 4 GPU-hours for 50 epochs on an RTX 2080 Ti.
"""
from __future__ import annotations

import argparse
import time

import torch


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--steps', type=int, default=40)
    p.add_argument('--warmup', type=int, default=5)
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--amp', choices=['bf16', 'fp16'])
    p.add_argument('--channels-last', action='store_true')
    p.add_argument('--cpu-smoke', action='store_true')
    args = p.parse_args()
    from bnas_zoo.binary import attach_latent_projection
    from bnas_zoo.genotype import PRIMITIVES
    from bnas_zoo.supernet import Supernet
    from bnas_zoo.train.search import search_step
    if args.cpu_smoke:
        device, layers, channels, batch = torch.device('cpu'), 3, 4, 8
    elif torch.cuda.is_available():
        device, layers, channels, batch = torch.device('cuda'), 8, 16, args.batch_size
    else:
        print('no CUDA device: this check needs a GPU (or --cpu-smoke)')
        return 1
    torch.manual_seed(0)
    model = Supernet(PRIMITIVES, layers, channels, 10).to(device)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    w_opt = torch.optim.SGD(model.weight_parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    attach_latent_projection(w_opt, model)
    a_opt = torch.optim.Adam(model.arch_parameters(), lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    xw, xa = (torch.randn(batch, 3, 32, 32, device=device).contiguous(memory_format=fmt) for _ in range(2))
    yw, ya = (torch.randint(0, 10, (batch,), device=device) for _ in range(2))
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp == 'fp16')
    ce = torch.nn.CrossEntropyLoss()

    def step(epoch=0):  # what bnas-search runs
        search_step(model, ce, a_opt, w_opt, scaler, (xa, ya), (xw, yw), epoch, 1.0, 7.7, args.amp)

    steps = 2 if args.cpu_smoke else args.steps
    for _ in range(1 if args.cpu_smoke else args.warmup):
        step()
    if device.type == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == 'cuda':
        torch.cuda.synchronize()
    per_step = (time.perf_counter() - t) / steps
    epoch_s = per_step * (25000 // batch)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == 'cuda' else float('nan')
    name = torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU smoke run'
    print(f'{name}: supernet {layers} cells, C0 {channels}, batch {batch}, amp {args.amp or "off"}, '
          f'channels_last {args.channels_last}')
    print(f'{per_step:.3f} s per search step -> {epoch_s:.0f} s per epoch -> {50 * epoch_s / 3600:.2f} h for 50 epochs; '
          f'peak {peak:.2f} GiB')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
