"""GPU readiness: train bnas_d on synthetic ImageNet-shaped data for a fixed number of steps with AMP and
channels_last, and print images/s and peak GPU memory for float32 / AMP / AMP + channels_last.

    python benchmarks/gpu_train_check.py                 # ~2-3 minutes on one modern GPU
    python benchmarks/gpu_train_check.py --compile --steps 30 --batch-size 128

The training step is the real one: bnas_zoo's model, SGD with the XNOR latent projection, cross-entropy.
"""
from __future__ import annotations

import argparse
import time

import torch


def run(model_name: str, batch: int, steps: int, warmup: int, amp, channels_last: bool, compile_: bool,
        device: str = 'cuda', size: int = 224) -> dict:
    import timm

    import bnas_zoo  # noqa: F401
    from bnas_zoo.binary import attach_latent_projection
    device = torch.device(device)
    cuda = device.type == 'cuda'
    torch.manual_seed(0)
    model = timm.create_model(model_name).to(device).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    attach_latent_projection(opt, model)
    step_model = torch.compile(model) if compile_ else model
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 1000, (batch,), device=device)
    crit = torch.nn.CrossEntropyLoss()
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
            loss = crit(step_model(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    dt = time.perf_counter() - t
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float('nan')
    return dict(images_per_s=batch * steps / dt, peak_gib=peak)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', default='bnas_d')
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--steps', type=int, default=20)
    p.add_argument('--warmup', type=int, default=5)
    p.add_argument('--compile', action='store_true', help='also torch.compile the model')
    p.add_argument('--cpu-smoke', action='store_true', help='check the script itself on the CPU (tiny inputs)')
    args = p.parse_args()
    device, size = ('cpu', 64) if args.cpu_smoke else ('cuda', 224)
    if device == 'cuda' and not torch.cuda.is_available():
        print('no CUDA device: this check needs a GPU (or --cpu-smoke to check the script)')
        return 1
    name = torch.cuda.get_device_name() if device == 'cuda' else 'CPU smoke run'
    print(f'{name}  torch {torch.__version__}  {args.model}  batch {args.batch_size}  '
          f'{args.steps} timed steps')
    configs = [('float32', None, False), ('bf16 AMP', torch.bfloat16, False), ('bf16 AMP + channels_last', torch.bfloat16, True),
               ('fp16 AMP + channels_last', torch.float16, True)]
    for label, amp, cl in configs:
        if device == 'cpu' and amp == torch.float16:
            continue
        r = run(args.model, args.batch_size, args.steps, args.warmup, amp, cl, args.compile, device, size)
        print(f"{label:<28} {r['images_per_s']:>9.1f} img/s   peak {r['peak_gib']:.2f} GiB", flush=True)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
