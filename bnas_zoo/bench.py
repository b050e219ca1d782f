"""Inference benchmarks of deployed networks, every baseline measured in the same run: the float networks a
deployer would pick instead (any timm models, at the same input), optionally the float-simulated network, and per
binary layer the measured peak of this CPU's popcount core and torch's best float conv of the same shape.
Timings are interleaved and reported as medians (shared machines are noisy)."""
from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import exactness
from .deploy import DeployedBNASNet, PackedBinaryConv, deploy, insert_zero_channels, resident_weight_bytes

__all__ = ['DEFAULT_BASELINES', 'NetworkTiming', 'Agreement', 'LayerBench', 'ProgramStep', 'popcount_peak',
           'bench_networks', 'bench_model', 'bench_layers', 'bench_conv_shape', 'profile_program',
           'format_network_timings', 'format_layer_benches', 'format_program_profile']

#: the float networks a deployer would weigh a binary network against (timm names)
DEFAULT_BASELINES = ('resnet18', 'mobilenetv3_small_050')


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


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count ``n`` within the block, the previous one after it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def weight_bytes(module: nn.Module) -> int:
    """Bytes of a network's parameters and buffers (a deployed network: its packed resident weights)."""
    return resident_weight_bytes(module)


def popcount_peak(level: str = '', seconds: float = 0.2, tries: int = 5) -> float:
    """The measured peak of the binary inner loop on one core (binary multiply-adds per second, the best of
    ``tries`` runs of ``seconds`` of CPU time each): operands pre-packed in L1, no packing, no im2col, no
    output. ``level``: an instruction-set level of :func:`bnas_zoo.kernels.cpu_isa_levels` ('' = the one in
    use). 0.0 without the compiled kernels."""
    from . import kernels
    if kernels.backend() != 'compiled':
        return 0.0
    return max(torch.ops.bnas_zoo_kernels.popcount_peak(level, seconds) for _ in range(tries))


@dataclass
class NetworkTiming:
    """One network at one batch size and thread count."""
    name: str
    kind: str  # 'deployed', 'float-simulated' or 'baseline'
    batch: int
    threads: int
    input_size: Tuple[int, int, int]
    ms: float
    weight_bytes: int

    @property
    def images_per_second(self) -> float:
        return self.batch / (self.ms / 1e3)


@dataclass
class Agreement:
    """A computation's logits against a reference's on one batch (by default: the deployed network against the
    float-simulated one)."""
    name: str
    max_diff: float
    max_logit: float
    same_argmax: int
    total: int
    what: str = 'deployed vs float-simulated'
    #: the deployed network judged against the float64 simulation by float32's own spread
    #: (:func:`bnas_zoo.exactness.compare_with_float64`); None for other comparisons
    judged: Optional[exactness.Agreement] = None


def bench_networks(nets: Dict[str, Tuple[str, nn.Module]], input_size: Tuple[int, int, int], batches: Sequence[int],
                   threads: Sequence[int], repeats: int = 10, seed: int = 0) -> List[NetworkTiming]:
    """Time every network of ``nets`` (label -> (kind, module)) on the same random input, interleaved, for each
    batch size and thread count."""
    rows: List[NetworkTiming] = []
    gen = torch.Generator().manual_seed(seed)
    for batch in batches:
        x = torch.randn(batch, *input_size, generator=gen)
        for n_threads in threads:
            mods = list(nets.items())
            with _threads(n_threads):
                times = _medians([lambda m=m: m(x) for _, (_, m) in mods], repeats)
            rows += [NetworkTiming(label, kind, batch, n_threads, tuple(input_size), t * 1e3, weight_bytes(m))
                     for (label, (kind, m)), t in zip(mods, times)]
    return rows


def agreement(model: nn.Module, fast: nn.Module, name: str, input_size: Tuple[int, int, int],
              batch: int = 8, seed: int = 0, what: str = 'deployed vs float-simulated',
              judge: bool = False) -> Agreement:
    """``fast``'s logits against ``model``'s on ``batch`` random inputs; ``judge``: also against ``model``'s
    float64 simulation, by float32's own spread (a binary network's float32 results differ by more than
    rounding from one summation order to another: see :mod:`bnas_zoo.exactness`)."""
    x = torch.randn(batch, *input_size, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        ref, out = model.eval()(x), fast(x)
    judged = None
    if judge:
        ref64, spreads = exactness.float32_spread(model, x)
        judged = exactness.compare_with_float64(out, ref64, spreads)
    return Agreement(name, (out - ref).abs().max().item(), ref.abs().max().item(),
                     int((out.argmax(1) == ref.argmax(1)).sum()), batch, what, judged)


def bench_model(model: nn.Module, name: str, batches: Sequence[int] = (1,), threads: Sequence[int] = (2,),
                repeats: int = 10, input_size: Optional[Tuple[int, int, int]] = None,
                baselines: Sequence[str] = DEFAULT_BASELINES, float_simulated: bool = False,
                fast: Optional[DeployedBNASNet] = None,
                bfloat16: bool = False) -> Tuple[List[NetworkTiming], List[Agreement]]:
    """Time the deployed form of ``model`` (``fast``, or ``deploy(model)``) against timm's ``baselines`` (fresh
    float networks: weights do not change their speed) at the same input size, optionally the float-simulated
    ``model`` and (``bfloat16``) the deployed network with bfloat16 float parts; also the deployed network's
    agreement with the float-simulated one, and the bfloat16 network's with the float32 deployed one."""
    import timm
    model = model.eval()
    fast = fast if fast is not None else deploy(model)
    size = tuple(input_size or model.pretrained_cfg.get('input_size', (3, 224, 224)))
    nets: Dict[str, Tuple[str, nn.Module]] = {f'{name} (deployed)': ('deployed', fast)}
    agreements = [agreement(model, fast, name, size, judge=True)]
    if bfloat16:
        half = deploy(model, float_dtype=torch.bfloat16)
        nets[f'{name} (deployed, bfloat16)'] = ('deployed-bfloat16', half)
        agreements.append(agreement(fast, half, name, size, what='bfloat16 float parts vs float32 deployed'))
    if float_simulated:
        nets[f'{name} (float-simulated)'] = ('float-simulated', model)
    for b in baselines:
        if b not in nets:
            nets[b] = ('baseline', timm.create_model(b, in_chans=size[0]).eval())
    return bench_networks(nets, size, batches, threads, repeats), agreements


@dataclass
class LayerBench:
    name: str
    shape: str
    macs: int
    pack_ms: float
    total_ms: float
    float_ms: float
    peak: float  # binary multiply-adds per second of the popcount core (same run)

    @property
    def gmacs(self) -> float:
        return self.macs / (self.total_ms / 1e3) / 1e9

    @property
    def peak_fraction(self) -> float:
        """The layer's rate, BatchNorm-sign-pack included, as a fraction of the peak."""
        return self.macs / (self.total_ms / 1e3) / self.peak if self.peak else float('nan')

    @property
    def conv_peak_fraction(self) -> float:
        """The same without the BatchNorm-sign-pack."""
        conv = max(self.total_ms - self.pack_ms, 1e-9)
        return self.macs / (conv / 1e3) / self.peak if self.peak else float('nan')

    @property
    def ratio(self) -> float:
        return self.float_ms / self.total_ms


def _profile_layer(conv: PackedBinaryConv, x: torch.Tensor, repeats: int) -> Tuple[float, float]:
    """Median (pack seconds, total seconds) of one layer, from the kernels' own clock."""
    x = insert_zero_channels(x, conv.in_pad).contiguous(memory_format=torch.channels_last)
    args = (x, conv.scale, conv.shift, conv.wbits, conv.wmask, conv.wcounts, conv.alpha, conv.int_bias,
            conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.relu)
    profile = torch.ops.bnas_zoo_kernels.binary_conv2d_profile
    for _ in range(2):
        profile(*args)
    samples = [profile(*args) for _ in range(repeats)]
    return statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples)


def _bench_layer(name: str, conv: PackedBinaryConv, x: torch.Tensor, threads: int, repeats: int,
                 peak: float, float_baseline: bool = True) -> LayerBench:
    k, s, p, d = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    xf = insert_zero_channels(x, conv.in_pad).contiguous()
    n, c, h, wd = xf.shape
    oh, ow = (h + 2 * p - d * (k - 1) - 1) // s + 1, (wd + 2 * p - d * (k - 1) - 1) // s + 1
    with _threads(threads):
        pack_s, total_s = _profile_layer(conv, x, repeats)
        float_s = float('nan')
        if float_baseline:  # torch's float conv of the same shape, contiguous or channels-last, the faster
            w = torch.randn(conv.out_channels, c, k, k)
            w_cl, x_cl = w.contiguous(memory_format=torch.channels_last), xf.contiguous(memory_format=torch.channels_last)
            float_s = min(_medians([lambda: F.conv2d(xf, w, None, s, p, d),
                                    lambda: F.conv2d(x_cl, w_cl, None, s, p, d)], repeats))
    shape = f'{c}->{conv.out_channels} {k}x{k} s{s} d{d} @{h}x{wd}'
    macs = n * oh * ow * conv.out_channels * c * k * k
    return LayerBench(name, shape, macs, pack_s * 1e3, total_s * 1e3, float_s * 1e3, peak)


def bench_conv_shape(cin: int, cout: int, hw: int, k: int = 3, stride: int = 1, dilation: int = 1, batch: int = 1,
                     threads: int = 1, repeats: int = 20, peak: Optional[float] = None) -> LayerBench:
    """One binary conv (BatchNorm-sign-pack included) against the popcount peak and torch's best float conv of
    the same shape."""
    gen = torch.Generator().manual_seed(0)
    pad = dilation * (k - 1) // 2
    sign = (torch.randint(0, 2, (cout, cin, k, k), generator=gen) * 2 - 1).to(torch.int8)
    shift = torch.randn(cin, generator=gen) * 0.1  # a BatchNorm as training leaves it: no exact zeros
    conv = PackedBinaryConv(sign, torch.rand(cout, generator=gen), torch.rand(cin, generator=gen) + 0.5, shift,
                            stride, pad, dilation)
    return _bench_layer(f'{cin}->{cout} {k}x{k}', conv, torch.randn(batch, cin, hw, hw, generator=gen), threads,
                        repeats, popcount_peak() if peak is None else peak)


def bench_layers(fast: DeployedBNASNet, input_size: Tuple[int, int, int], batch: int = 1, threads: int = 1,
                 repeats: int = 10, peak: Optional[float] = None, float_baseline: bool = True) -> List[LayerBench]:
    """Every packed binary conv of a deployed network at the shapes of one forward pass, in program order."""
    from .program import run_program_reference
    inputs: List[torch.Tensor] = []
    with torch.inference_mode():
        run_program_reference(torch.randn(batch, *input_size), fast.program_params(), fast.code,
                              on_binary=lambda i, x: inputs.append(x.clone()))
    names = {id(m): n for n, m in fast.named_modules()}
    peak = popcount_peak() if peak is None else peak
    return [_bench_layer(names[id(m)], m, x, threads, repeats, peak, float_baseline)
            for m, x in zip(fast.binary_layers, inputs)]


#: what each kind of instruction of a deployed program computes (bnas_zoo.program)
STEP_KINDS = {
    'BIN': 'binary convs (BatchNorm-sign-pack, XNOR-popcount, epilogue)',
    'SIGNCONV': 'float-weight convs on signs (the last cell\'s; separable convs\' depthwise step)',
    'SHORTCUT': 'float 2x2 reduction shortcuts',
    'CONV': 'float stem convs',
    'AFFINE': 'the CIFAR stem\'s BatchNorm',
    'POOL': 'pooling',
    'ADD': 'adds (inter-cell skips, pooled edges)',
    'COPY': 'copies (pooled edges)',
    'ZERO': 'zero fills (zero nodes and channels)',
    'ALLOC': 'buffer allocation',
}


@dataclass
class ProgramStep:
    """One kind of instruction of a deployed network's program: how many, and their summed median time."""
    kind: str
    count: int
    ms: float


def profile_program(fast: DeployedBNASNet, input_size: Tuple[int, int, int], batch: int = 1, threads: int = 1,
                    repeats: int = 10) -> Tuple[List[ProgramStep], float, float]:
    """Where the deployed forward pass spends its time: the median of each instruction of its program (the
    kernels' own clock), summed by kind, most expensive first; the median of the rest of each program call
    (the call less its instructions: passing the arguments, setting up and freeing the buffers); and the median
    of the head (global pooling and classifier). Needs the compiled kernels."""
    from .program import OPCODES, decode
    x = torch.randn(batch, *input_size, generator=torch.Generator().manual_seed(0))
    params, code = fast.program_params(), fast.code_tensor
    kinds = [OPCODES[op][0] for op, _ in decode(fast.code)[3]]
    profile = torch.ops.bnas_zoo_kernels.run_program_profile
    samples: List[List[float]] = []
    calls: List[float] = []
    with _threads(threads), torch.inference_mode():
        features = fast.forward_features(x)
        for _ in range(repeats + 2):
            t0 = time.perf_counter()
            samples.append(profile(x, params, code, fast.out_total))
            calls.append(time.perf_counter() - t0)
        head = _medians([lambda: fast.forward_head(features)], repeats)[0]
    per_instr = [statistics.median(s[j] for s in samples[2:]) for j in range(len(kinds))]
    steps: Dict[str, ProgramStep] = {}
    for kind, sec in zip(kinds, per_instr):
        step = steps.setdefault(kind, ProgramStep(kind, 0, 0.0))
        step.count += 1
        step.ms += sec * 1e3
    rest = statistics.median(c - sum(s) for c, s in zip(calls[2:], samples[2:]))
    return sorted(steps.values(), key=lambda st: -st.ms), rest * 1e3, head * 1e3


def format_program_profile(steps: Sequence[ProgramStep], call_ms: float, head_ms: float) -> str:
    forward = sum(st.ms for st in steps) + call_ms + head_ms
    lines = [f"{'instruction':<11} {'count':>5} {'ms':>8} {'share':>6}  what"]
    for st in steps:
        lines.append(f'{st.kind:<11} {st.count:>5} {st.ms:>8.3f} {100 * st.ms / forward:>5.1f}%  '
                     f'{STEP_KINDS.get(st.kind, "")}')
    lines.append(f"{'(call)':<11} {'':>5} {call_ms:>8.3f} {100 * call_ms / forward:>5.1f}%  the rest of the program "
                 f'call: passing its arguments, setting up and freeing its buffers')
    lines.append(f"{'(head)':<11} {'':>5} {head_ms:>8.3f} {100 * head_ms / forward:>5.1f}%  global pooling and "
                 f'classifier')
    lines.append(f"{'forward':<11} {sum(st.count for st in steps):>5} {forward:>8.3f} {100.0:>5.1f}%")
    lines.append('ms: each instruction\'s median time (the kernels\' own clock), summed by kind; (call): the median '
                 'of each call\'s time less its instructions\'; share: of the sum of the rows (forward)')
    return '\n'.join(lines)


def format_network_timings(rows: Sequence[NetworkTiming], agreements: Sequence[Agreement] = ()) -> str:
    head = (f"{'network':<36} {'batch':>5} {'thr':>3} {'input':>9} {'ms':>9} {'img/s':>9} {'weights MB':>10}  "
            f"{'vs deployed':>11}")
    lines = [head]
    deployed: Dict[Tuple[int, int], float] = {}  # the deployed network timed last in each setting
    for r in rows:
        if r.kind == 'deployed':
            deployed[(r.batch, r.threads)] = r.ms
        size = f'{r.input_size[1]}x{r.input_size[2]}'
        ref = deployed.get((r.batch, r.threads))
        rel = '' if r.kind == 'deployed' or ref is None else f'{r.ms / ref:.2f}x'
        lines.append(f'{r.name:<36} {r.batch:>5} {r.threads:>3} {size:>9} {r.ms:>9.2f} {r.images_per_second:>9.1f} '
                     f'{r.weight_bytes / 1e6:>10.2f}  {rel:>11}')
    lines.append('ms: median latency of one batch; vs deployed: that network\'s latency / the deployed network\'s '
                 '(above 1: the deployed network is faster); weights: resident parameters and buffers (the deployed '
                 'network holds its binary weights as packed bits)')
    for a in agreements:
        if a.judged is not None:
            lines.append(f'{a.name}: deployed vs the float64 simulation on {a.total} random images: '
                         f'{"within" if a.judged.ok else "NOT within"} float32\'s own spread: {a.judged}')
        else:
            lines.append(f'{a.name}: {a.what} logits on {a.total} random images: max |diff| {a.max_diff:.2e} '
                         f'(largest logit {a.max_logit:.2f}), same class for {a.same_argmax}/{a.total}')
    return '\n'.join(lines)


def format_layer_benches(rows: Sequence[LayerBench]) -> str:
    peak = rows[0].peak if rows else 0.0
    lines = [f'popcount peak (this CPU, one core, measured now): {peak / 1e9:.0f} G binary multiply-adds/s',
             f"{'layer':<30} {'shape':<32} {'ms':>7} {'pack ms':>7} {'GMAC/s':>7} {'% peak':>6} {'conv only':>9} "
             f"{'float ms':>8} {'vs float':>8}"]
    for r in rows:
        measured = r.float_ms == r.float_ms  # not NaN: the float conv was timed
        float_cols = f'{r.float_ms:>8.3f} {r.ratio:>7.2f}x' if measured else f"{'-':>8} {'-':>8}"
        lines.append(f'{r.name:<30} {r.shape:<32} {r.total_ms:>7.3f} {r.pack_ms:>7.3f} {r.gmacs:>7.0f} '
                     f'{100 * r.peak_fraction:>5.0f}% {100 * r.conv_peak_fraction:>8.0f}% {float_cols}')
    lines.append('ms: the layer (BatchNorm-sign-pack included); % peak: its binary multiply-adds per second as a '
                 'fraction of the popcount peak (conv only: without the pack); float ms: torch\'s best float conv of '
                 'the same shape (contiguous or channels-last); vs float: float ms / ms')
    return '\n'.join(lines)
