"""Fast 1-bit inference against its targets, every baseline measured in the same run.

    python benchmarks/inference.py                # per-layer table, bnas_d and bnas_a end to end, memory
    python benchmarks/inference.py --repeats 30 --skip-e2e

Targets:
- per layer (batch 1, 1 thread), 3x3 binary conv 64->64 @56, 128->128 @28, 256->256 @14, 512->512 @7: at least
  4x torch's best float conv of the same shape (contiguous or channels-last, whichever is faster);
- end to end (batch 1, 2 threads): deployed bnas_d at least 5x the float-simulated bnas_d and faster than timm's
  float resnet18 at 224x224; deployed bnas_a at least 3x the float-simulated bnas_a; batch 8 reported too;
- the deployed bnas_d's resident weight memory at most 1.1x its model-1bit.safetensors.

Timings are medians of interleaved runs; run it on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import timm
import torch

import bnas_zoo
from bnas_zoo import kernels
from bnas_zoo.bench import bench_conv_shape, bench_model, format_layer_benches, format_model_benches
from bnas_zoo.deploy import resident_weight_bytes

LAYER_SHAPES = [(64, 56), (128, 28), (256, 14), (512, 7)]


def _verdict(ok: bool) -> str:
    return 'met' if ok else 'MISSED'


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--repeats', type=int, default=20, help='timed runs per measurement (median)')
    ap.add_argument('--skip-e2e', action='store_true', help='only the per-layer table and the memory check')
    args = ap.parse_args()
    print(f'kernels: {kernels.backend()} ({kernels.cpu_isa()}), torch {torch.__version__}')

    print('\n1. per layer: 3x3 binary conv (BatchNorm-sign-pack included) vs best float conv, batch 1, 1 thread')
    layers = [bench_conv_shape(c, c, hw, repeats=args.repeats) for c, hw in LAYER_SHAPES]
    print(format_layer_benches(layers))
    for r in layers:
        print(f'   {r.shape}: {r.ratio:.2f}x (target >= 4x: {_verdict(r.ratio >= 4.0)})')

    print('\n2. resident weight memory of deployed bnas_d vs its model-1bit.safetensors')
    model = timm.create_model('bnas_d').eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / 'model-1bit.safetensors'
        bnas_zoo.save_1bit(model, path, config=dict(architecture='bnas_d', num_classes=1000, model_args={}))
        fast = bnas_zoo.load_1bit(path, deploy=True)
        ratio = resident_weight_bytes(fast) / path.stat().st_size
        print(f'   deployed {resident_weight_bytes(fast) / 1e6:.2f} MB, file {path.stat().st_size / 1e6:.2f} MB: '
              f'{ratio:.3f}x (target <= 1.1x: {_verdict(ratio <= 1.1)})')
    if args.skip_e2e:
        return

    print('\n3. end to end: float-simulated eager vs deployed vs resnet18 (same input size)')
    rows = []
    for name in ('bnas_d', 'bnas_a'):
        m = timm.create_model(name).eval()
        fast = bnas_zoo.deploy(m)
        for batch in (1, 8):
            rows.append(bench_model(m, name, batch=batch, threads=2, repeats=max(5, args.repeats // 2), fast=fast))
            print(f'   measured {name} batch {batch}', flush=True)
    print(format_model_benches(rows))
    for r in rows:
        if r.batch != 1:
            continue
        target = 5.0 if r.name == 'bnas_d' else 3.0
        print(f'   {r.name} batch 1: {r.speedup:.2f}x the float-simulated network (target >= {target:g}x: '
              f'{_verdict(r.speedup >= target)})' +
              (f', {r.vs_resnet18:.2f}x resnet18 (target > 1x: {_verdict(r.vs_resnet18 > 1.0)})'
               if r.name == 'bnas_d' else ''))


if __name__ == '__main__':
    main()
