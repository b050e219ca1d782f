"""Inference benchmarks of deployed networks, measured in one run against their baselines: the float-simulated
network and timm's float ``resnet18`` at the same input size, and per binary layer torch's best float conv of
the same shape. Timings are interleaved and reported as medians (shared machines are noisy)."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .deploy import DeployedBNASNet, PackedBinaryConv, deploy, insert_zero_channels, resident_weight_bytes

__all__ = ['ModelBench', 'LayerBench', 'bench_model', 'bench_layers', 'bench_conv_shape', 'format_model_benches',
           'format_layer_benches']


def _medians(fns: Sequence[Callable[[], object]], repeats: int, warmup: int = 2) -> List[float]:
    """Median seconds of each function, the calls interleaved so that load on the machine hits all alike."""
    with torch.inference_mode():
        for _ in range(warmup):
            for f in fns:
                f()
        times: List[List[float]] = [[] for _ in fns]
        for _ in range(repeats):
            for i, f in enumerate(fns):
                t0 = time.perf_counter()
                f()
                times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


@dataclass
class ModelBench:
    name: str
    batch: int
    threads: int
    input_size: Tuple[int, int, int]
    float_ms: float
    deployed_ms: float
    resnet18_ms: float
    max_diff: float
    max_logit: float
    weight_bytes: int
    untrained_bn: bool = False

    @property
    def speedup(self) -> float:
        return self.float_ms / self.deployed_ms

    @property
    def vs_resnet18(self) -> float:
        return self.resnet18_ms / self.deployed_ms


@dataclass
class LayerBench:
    name: str
    shape: str
    binary_ms: float
    float_ms: float
    gops: float

    @property
    def ratio(self) -> float:
        return self.float_ms / self.binary_ms


def bench_model(model: torch.nn.Module, name: str, batch: int = 1, threads: int = 2, repeats: int = 10,
                input_size: Optional[Tuple[int, int, int]] = None, baseline: bool = True,
                fast: Optional[DeployedBNASNet] = None) -> ModelBench:
    """Time ``model`` (eval, float-simulated), its deployed form (``fast``, or ``deploy(model)``) and resnet18
    at the same input size."""
    import timm
    model = model.eval()
    fast = fast if fast is not None else deploy(model)
    size = tuple(input_size or model.pretrained_cfg.get('input_size', (3, 224, 224)))
    x = torch.randn(batch, *size)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            ref, out = model(x), fast(x)
        fns = [lambda: model(x), lambda: fast(x)]
        if baseline:
            resnet = timm.create_model('resnet18', num_classes=1000).eval()
            fns.append(lambda: resnet(x))
        times = _medians(fns, repeats)
    finally:
        torch.set_num_threads(previous)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) and m.running_mean is not None]
    untrained = all(bool((m.running_mean == 0).all() and (m.running_var == 1).all()) for m in bns)
    return ModelBench(name, batch, threads, size, times[0] * 1e3, times[1] * 1e3,
                      times[2] * 1e3 if baseline else float('nan'),
                      (out - ref).abs().max().item(), ref.abs().max().item(), resident_weight_bytes(fast), untrained)


def bench_conv_shape(cin: int, cout: int, hw: int, k: int = 3, stride: int = 1, dilation: int = 1, batch: int = 1,
                     threads: int = 1, repeats: int = 20) -> LayerBench:
    """One binary conv (BatchNorm-sign-pack included) against torch's best float conv of the same shape."""
    gen = torch.Generator().manual_seed(0)
    pad = dilation * (k - 1) // 2
    sign = (torch.randint(0, 2, (cout, cin, k, k), generator=gen) * 2 - 1).to(torch.int8)
    conv = PackedBinaryConv(sign, torch.rand(cout, generator=gen), torch.ones(cin), torch.zeros(cin), stride, pad,
                            dilation)
    return _bench_layer(f'{cin}->{cout} {k}x{k}', conv, torch.randn(batch, cin, hw, hw, generator=gen), threads,
                        repeats)


def _bench_layer(name: str, conv: PackedBinaryConv, x: torch.Tensor, threads: int, repeats: int) -> LayerBench:
    k, s, p, d = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    x_cl = x.contiguous(memory_format=torch.channels_last)
    # the float baseline sees the channels the binary conv computes on
    x = insert_zero_channels(x, conv.in_pad).contiguous()
    w = torch.randn(conv.out_channels, x.shape[1], k, k)
    w_cl = w.contiguous(memory_format=torch.channels_last)
    xf_cl = x.contiguous(memory_format=torch.channels_last)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        t_bin, t_f, t_fcl = _medians([
            lambda: conv(x_cl),
            lambda: F.conv2d(x, w, None, s, p, d),
            lambda: F.conv2d(xf_cl, w_cl, None, s, p, d),
        ], repeats)
    finally:
        torch.set_num_threads(previous)
    n, _, h, wd = x.shape
    oh, ow = (h + 2 * p - d * (k - 1) - 1) // s + 1, (wd + 2 * p - d * (k - 1) - 1) // s + 1
    ops = 2 * n * oh * ow * conv.out_channels * x.shape[1] * k * k
    shape = f'{x.shape[1]}->{conv.out_channels} {k}x{k} s{s} d{d} @{h}x{wd}'
    return LayerBench(name, shape, t_bin * 1e3, min(t_f, t_fcl) * 1e3, ops / t_bin / 1e9)


def bench_layers(model: torch.nn.Module, batch: int = 1, threads: int = 1, repeats: int = 10,
                 input_size: Optional[Tuple[int, int, int]] = None,
                 fast: Optional[DeployedBNASNet] = None) -> List[LayerBench]:
    """Every packed binary conv of the deployed model (``fast``, or ``deploy(model)``) at the shapes of one
    forward pass."""
    fast = fast if fast is not None else deploy(model.eval())
    size = tuple(input_size or model.pretrained_cfg.get('input_size', (3, 224, 224)))
    inputs: Dict[str, torch.Tensor] = {}
    hooks = []
    for name, m in fast.named_modules():
        if isinstance(m, PackedBinaryConv):
            hooks.append(m.register_forward_pre_hook(lambda mod, args, name=name: inputs.setdefault(name, args[0])))
    with torch.inference_mode():
        fast(torch.randn(batch, *size))
    for h in hooks:
        h.remove()
    modules = dict(fast.named_modules())
    return [_bench_layer(name, modules[name], x.clone(), threads, repeats) for name, x in inputs.items()]


def format_model_benches(rows: Sequence[ModelBench]) -> str:
    head = (f"{'model':<12} {'batch':>5} {'thr':>3} {'input':>9} {'float-sim ms':>12} {'deployed ms':>11} "
            f"{'speed-up':>8} {'resnet18 ms':>11} {'vs resnet18':>11} {'max |diff|':>10} {'weights MB':>10}")
    lines = [head]
    for r in rows:
        size = f'{r.input_size[1]}x{r.input_size[2]}'
        lines.append(f'{r.name:<12} {r.batch:>5} {r.threads:>3} {size:>9} {r.float_ms:>12.2f} {r.deployed_ms:>11.2f} '
                     f'{r.speedup:>7.2f}x {r.resnet18_ms:>11.2f} {r.vs_resnet18:>10.2f}x {r.max_diff:>10.2e} '
                     f'{r.weight_bytes / 1e6:>10.2f}')
    lines.append('speed-up: float-simulated / deployed; vs resnet18: timm resnet18 (float, same input) / deployed; '
                 'max |diff|: deployed vs float-simulated logits')
    if any(r.untrained_bn for r in rows):
        lines.append('note: untrained weights (BatchNorm statistics at their initial values). There, many binary '
                     'conv sums are exactly 0 and BatchNorm maps 0 to 0; the float simulation computes such a sum '
                     'with rounding noise (a sum of +-alpha terms) that sign() then turns into +-1, while the '
                     'deployed network keeps the exact 0. Trained weights agree to float rounding.')
    return '\n'.join(lines)


def format_layer_benches(rows: Sequence[LayerBench]) -> str:
    lines = [f"{'layer':<28} {'shape':<30} {'binary ms':>9} {'GOPS':>7} {'best float ms':>13} {'ratio':>7}"]
    for r in rows:
        lines.append(f'{r.name:<28} {r.shape:<30} {r.binary_ms:>9.3f} {r.gops:>7.0f} {r.float_ms:>13.3f} '
                     f'{r.ratio:>6.2f}x')
    lines.append('GOPS: effective binary ops (2 x MACs) per second; best float: torch conv2d, contiguous or '
                 'channels-last, whichever is faster; ratio: best float / binary')
    return '\n'.join(lines)
