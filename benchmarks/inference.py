"""Deployed 1-bit networks against their targets, every baseline measured in the same run.

    python benchmarks/inference.py                     # everything below (about 10 minutes on 2 cores)
    python benchmarks/inference.py --repeats 30 --skip-layers

1. per layer (``bnas-zoo bench --layers``): every 3x3, 5x5 and dilated binary layer of bnas_d (224x224) and
   bnas_a (32x32), batch 1 and 8, 1 thread, BatchNorm-sign-pack included, as a fraction of the popcount peak
   measured in the same run. Target: >= 60 %.
2. end to end, batch 1 and 8, 2 threads, medians of interleaved runs: deployed bnas_d, bnas_d_grouped against
   timm's float mobilenetv3_small_050 and resnet18 at 224x224; deployed bnas_a against resnet18 at 32x32.
   Targets: bnas_d latency <= 1.5x mobilenetv3_small_050's (batch 1); bnas_d throughput >= 0.4x
   mobilenetv3_small_050's (batch 8); bnas_a faster than resnet18 (batch 1 and 8); bnas_d_grouped faster
   than bnas_d. For reference (not the default, not a target): bnas_d with bfloat16 float parts
   (``deploy(model, float_dtype=torch.bfloat16)``), fast where the CPU has bfloat16 instructions.
3. the deployed bnas_d's resident weight memory: <= 1.1x its model-1bit.safetensors.
4. outputs: each deployed network against its float64 simulation, within float32's own spread (BatchNorm
   statistics calibrated on data first, as training leaves them).

Networks have fresh weights (speed does not depend on them). Run it on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import timm
import torch

import bnas_zoo
from bnas_zoo import kernels
from bnas_zoo.bench import bench_layers, bench_networks, format_layer_benches, format_network_timings, popcount_peak
from bnas_zoo.deploy import resident_weight_bytes
from bnas_zoo.exactness import calibrate_batchnorm, compare_with_float64, float32_spread


def _verdict(ok: bool) -> str:
    return 'met' if ok else 'MISSED'


def _calibrated(name: str, size) -> torch.nn.Module:
    model = timm.create_model(name).eval()
    gen = torch.Generator().manual_seed(0)
    return calibrate_batchnorm(model, [torch.randn(4, *size, generator=gen) for _ in range(2)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--repeats', type=int, default=15, help='timed runs per measurement (median; default: 15)')
    ap.add_argument('--skip-layers', action='store_true', help='leave out the per-layer tables')
    args = ap.parse_args()
    print(f'kernels: {kernels.backend()} ({kernels.cpu_isa()}; this CPU supports {", ".join(kernels.cpu_isa_levels())})'
          f', torch {torch.__version__}', flush=True)
    imagenet, cifar = (3, 224, 224), (3, 32, 32)
    models = {name: _calibrated(name, size) for name, size in
              (('bnas_d', imagenet), ('bnas_d_grouped', imagenet), ('bnas_a', cifar))}
    fast = {name: bnas_zoo.deploy(m) for name, m in models.items()}

    if not args.skip_layers:
        torch.set_num_threads(1)
        peak = popcount_peak()
        print(f'\n1. binary layers vs the popcount peak ({peak / 1e9:.0f} G binary MAC/s/core, measured now)')
        for name, size in (('bnas_d', imagenet), ('bnas_a', cifar)):
            for batch in (1, 8):
                rows = bench_layers(fast[name], size, batch=batch, threads=1, repeats=args.repeats, peak=peak,
                                    float_baseline=False)
                spatial = [r for r in rows if ' 1x1 ' not in r.shape]
                low = [r for r in spatial if r.peak_fraction < 0.6]
                fractions = [r.peak_fraction for r in spatial]
                print(f'\n{name}, batch {batch}, 1 thread:')
                print(format_layer_benches(rows))
                print(f'   3x3/5x5/dilated layers: {len(spatial) - len(low)}/{len(spatial)} at >= 60 % of the peak '
                      f'(median {100 * statistics.median(fractions):.0f} %, lowest {100 * min(fractions):.0f} %): '
                      f'{_verdict(not low)}', flush=True)

    print('\n2. end to end, 2 threads (medians of interleaved runs)')
    half = bnas_zoo.deploy(models['bnas_d'], float_dtype=torch.bfloat16)
    rows = bench_networks({'bnas_d (deployed)': ('deployed', fast['bnas_d']),
                           'bnas_d (deployed, bfloat16)': ('deployed-bfloat16', half),
                           'bnas_d_grouped (deployed)': ('deployed', fast['bnas_d_grouped']),
                           'mobilenetv3_small_050': ('baseline', timm.create_model('mobilenetv3_small_050').eval()),
                           'resnet18': ('baseline', timm.create_model('resnet18').eval())},
                          imagenet, (1, 8), (2,), args.repeats)
    rows += bench_networks({'bnas_a (deployed)': ('deployed', fast['bnas_a']),
                            'resnet18 @32': ('baseline', timm.create_model('resnet18').eval())},
                           cifar, (1, 8), (2,), args.repeats)
    print(format_network_timings(rows))
    ms = {(r.name, r.batch): r.ms for r in rows}
    lat = ms[('bnas_d (deployed)', 1)] / ms[('mobilenetv3_small_050', 1)]
    print(f'   bnas_d latency / mobilenetv3_small_050, batch 1: {lat:.2f}x (target <= 1.5x: {_verdict(lat <= 1.5)})')
    thr = ms[('mobilenetv3_small_050', 8)] / ms[('bnas_d (deployed)', 8)]
    print(f'   bnas_d throughput / mobilenetv3_small_050, batch 8: {thr:.2f}x (target >= 0.4x: {_verdict(thr >= 0.4)})')
    native = 'native' if torch.ops.mkldnn._is_mkldnn_bf16_supported() else 'emulated: no bfloat16 instructions'
    print(f'   with bfloat16 float parts ({native}; opt-in, for reference): latency '
          f'{ms[("bnas_d (deployed, bfloat16)", 1)] / ms[("mobilenetv3_small_050", 1)]:.2f}x, throughput '
          f'{ms[("mobilenetv3_small_050", 8)] / ms[("bnas_d (deployed, bfloat16)", 8)]:.2f}x')
    for batch in (1, 8):
        r = ms[('resnet18 @32', batch)] / ms[('bnas_a (deployed)', batch)]
        print(f'   bnas_a vs resnet18 at 32x32, batch {batch}: {r:.2f}x as fast (target > 1x: {_verdict(r > 1)})')
        g = ms[('bnas_d (deployed)', batch)] / ms[('bnas_d_grouped (deployed)', batch)]
        print(f'   bnas_d_grouped vs bnas_d, batch {batch}: {g:.2f}x as fast (target > 1x: {_verdict(g > 1)})')

    print('\n3. resident weight memory of deployed bnas_d vs its model-1bit.safetensors')
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / 'model-1bit.safetensors'
        bnas_zoo.save_1bit(models['bnas_d'], path)
        loaded = bnas_zoo.load_1bit(path, deploy=True)
        ratio = resident_weight_bytes(loaded) / path.stat().st_size
        print(f'   deployed {resident_weight_bytes(loaded) / 1e6:.2f} MB, file {path.stat().st_size / 1e6:.2f} MB: '
              f'{ratio:.3f}x (target <= 1.1x: {_verdict(ratio <= 1.1)})')

    print('\n4. deployed outputs against the float64 simulation, tolerance: float32\'s own spread (4 images)')
    torch.set_num_threads(2)
    for name, size in (('bnas_d', (3, 64, 64)), ('bnas_d_grouped', (3, 64, 64)), ('bnas_a', cifar)):
        x = torch.randn(4, *size, generator=torch.Generator().manual_seed(5))
        ref64, spreads = float32_spread(models[name], x)
        with torch.inference_mode():
            agreement = compare_with_float64(fast[name](x), ref64, spreads)
        print(f'   {name}: {agreement} ({_verdict(agreement.ok)})', flush=True)


if __name__ == '__main__':
    main()
