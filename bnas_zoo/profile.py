"""Cost profiling of binary networks, larq-style: per layer its precision, parameters at 1 and 32 bits,
memory, binary and full-precision multiply-adds; totals with FLOPs = FP MACs + binary MACs / 64.

Multiply-adds come from ``torch.utils.flop_counter.FlopCounterMode`` (2 FLOPs per MAC), attributed to the
module that ran them. A multiply-add is binary when both operands are 1-bit: a binary-weight convolution on
signed inputs. Convolutions on signed inputs with float weights (the release's last two) are counted as
full precision.

Two accountings are reported:

- ``true``: the network as given (what it costs to run these weights);
- ``paper``: the paper's convention (Table 14), in which every convolution except the stem's is binary, in
  particular the 2x2 full-precision reduction shortcuts and the release's two full-precision convolutions.

Memory counts parameters and BatchNorm running statistics: binary weights at 1 bit, everything else at
32 bits. Memory saving and speed-up compare against the same network entirely in 32-bit float.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from .binary import BinaryConv2d

__all__ = ['LayerCost', 'Totals', 'ModelProfile', 'profile_model', 'format_profile', 'format_summary']

BINARY_MAC_COST = 64  # a binary MAC costs 1/64 of a float MAC (the paper's FLOPs convention)


@dataclass
class LayerCost:
    name: str
    kind: str
    precision: str          # 'binary' (1-bit weights and inputs), 'float', 'float w / 1-bit a'
    output_shape: Tuple[int, ...]
    params_1bit: int
    params_32bit: int       # parameters and running statistics held in 32 bits
    binary_macs: int
    float_macs: int

    @property
    def memory_bytes(self) -> float:
        return self.params_1bit / 8 + self.params_32bit * 4


@dataclass
class Totals:
    params_1bit: int = 0
    params_32bit: int = 0
    binary_macs: int = 0
    float_macs: int = 0

    @property
    def params(self) -> int:
        return self.params_1bit + self.params_32bit

    @property
    def memory_bytes(self) -> float:
        return self.params_1bit / 8 + self.params_32bit * 4

    @property
    def float_memory_bytes(self) -> float:
        return self.params * 4

    @property
    def memory_saving(self) -> float:
        return self.float_memory_bytes / self.memory_bytes

    @property
    def flops(self) -> float:
        return self.float_macs + self.binary_macs / BINARY_MAC_COST

    @property
    def speedup(self) -> float:
        return (self.float_macs + self.binary_macs) / self.flops

    def as_dict(self) -> Dict[str, float]:
        d = asdict(self)
        d.update(params=self.params, memory_bytes=self.memory_bytes, memory_saving=self.memory_saving,
                 flops=self.flops, speedup=self.speedup)
        return d


@dataclass
class ModelProfile:
    model: str
    input_size: Tuple[int, ...]
    layers: List[LayerCost]
    true: Totals
    paper: Totals
    parameters: int = 0  # trainable parameters (what timm / the release count)
    notes: List[str] = field(default_factory=list)

    def as_dict(self) -> Dict:
        return dict(model=self.model, input_size=list(self.input_size), parameters=self.parameters,
                    true=self.true.as_dict(), paper=self.paper.as_dict(),
                    layers=[dict(asdict(lc), memory_bytes=lc.memory_bytes) for lc in self.layers])


def _stem_convs(model: nn.Module) -> set:
    names = set()
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and name.split('.')[0] in ('stem', 'stem0', 'stem1'):
            names.add(name)
    return names


def _state_numel(m: nn.Module) -> int:
    n = sum(p.numel() for p in m.parameters(recurse=False))
    n += sum(b.numel() for k, b in m.named_buffers(recurse=False) if k != 'num_batches_tracked')
    return n


@torch.no_grad()
def profile_model(model: nn.Module, input_size: Optional[Sequence[int]] = None, name: Optional[str] = None) -> ModelProfile:
    """The cost profile of ``model``: per layer and in total, parameters at 1 and 32 bits, memory, binary and
    full-precision multiply-adds and FLOPs (FP MACs + binary MACs / 64), for the network as it runs (``.true``)
    and in the paper's convention (``.paper``: every convolution but the stem binary).

    Args:
        model: a bnas network (any ``torch.nn.Module`` is counted, with its ``BinaryConv2d`` layers as binary),
            on any device; it runs one forward pass in eval mode and is left in the mode it was given in.
        input_size: (C, H, W) of that pass; default the model's pretrained config's (3x224x224 without one).
        name: the name shown in the printed profile (default: the architecture's).

    The counts come from ``torch.utils.flop_counter`` on a batch of one; the speed-up is a cost model (all MACs /
    FLOPs), not a measurement (``bnas-zoo bench`` measures). Returns a :class:`ModelProfile`.
    """
    cfg = getattr(model, 'pretrained_cfg', {}) or {}
    input_size = tuple(input_size or cfg.get('input_size') or (3, 224, 224))
    name = name or cfg.get('architecture') or type(model).__name__
    was_training = model.training
    model.eval()
    shapes: Dict[str, Tuple[int, ...]] = {}
    leaves = [(n, m) for n, m in model.named_modules() if _state_numel(m) > 0]
    handles = [m.register_forward_hook(lambda mod, i, o, n=n: shapes.__setitem__(n, tuple(o.shape)))
               for n, m in leaves]
    prefix = type(model).__name__ + '.'
    try:
        with FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, *input_size, device=next(model.parameters(), torch.zeros(())).device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    flops = {k[len(prefix):]: sum(v.values()) for k, v in counter.get_flop_counts().items() if k.startswith(prefix)}

    stem = _stem_convs(model)
    layers: List[LayerCost] = []
    true, paper = Totals(), Totals()
    for n, m in leaves:
        numel = _state_numel(m)
        macs = int(flops.get(n, 0)) // 2
        binary_weights = isinstance(m, BinaryConv2d) and m.binary_weights
        if binary_weights:
            precision = 'binary'
        elif isinstance(m, BinaryConv2d):
            precision = 'float w / 1-bit a'
        else:
            precision = 'float'
        kind = type(m).__name__
        weight = m.weight.numel() if binary_weights else 0
        layer = LayerCost(n, kind, precision, shapes.get(n, ()), weight, numel - weight,
                          macs if binary_weights else 0, 0 if binary_weights else macs)
        layers.append(layer)
        for totals, is_binary in ((true, binary_weights),
                                  (paper, isinstance(m, nn.Conv2d) and n not in stem)):
            w = m.weight.numel() if is_binary else 0
            totals.params_1bit += w
            totals.params_32bit += numel - w
            totals.binary_macs += macs if is_binary else 0
            totals.float_macs += 0 if is_binary else macs
    return ModelProfile(
        model=name, input_size=input_size, layers=layers, true=true, paper=paper,
        parameters=sum(p.numel() for p in model.parameters()))


def _fmt_int(n: float) -> str:
    return f'{int(round(n)):,}'


def _table(rows: List[List[str]], header: List[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = '+' + '+'.join('-' * (w + 2) for w in widths) + '+'
    fmt = lambda r: '| ' + ' | '.join(str(c).rjust(w) if j else str(c).ljust(w) for j, (c, w) in enumerate(zip(r, widths))) + ' |'
    return '\n'.join([line, fmt(header), line] + [fmt(r) for r in rows] + [line])


def format_summary(p: ModelProfile) -> str:
    """The totals of a profile: true figures and, separately labelled, the paper's convention."""
    rows = []
    for label, t in (('true (this network)', p.true), ("paper's convention", p.paper)):
        rows.append([label, _fmt_int(t.params_1bit), _fmt_int(t.params_32bit), f'{t.memory_bytes / 2**20:.2f}',
                     f'{t.memory_saving:.2f}x', _fmt_int(t.binary_macs), _fmt_int(t.float_macs),
                     f'{t.flops / 1e8:.3f}', f'{t.speedup:.2f}x'])
    header = ['accounting', '1-bit params', '32-bit params', 'memory MiB', 'mem saving', 'binary MACs',
              'FP MACs', 'FLOPs x1e8', 'theoretical speed-up']
    title = (f'{p.model}  input {"x".join(map(str, p.input_size))}  parameters {p.parameters:,}  '
             f'(FLOPs = FP MACs + binary MACs / {BINARY_MAC_COST}; memory counts BN statistics at 32 bits; '
             f'theoretical speed-up = all MACs / FLOPs, a cost model, not a measurement: `bnas-zoo bench` measures)')
    return title + '\n' + _table(rows, header)


def format_profile(p: ModelProfile) -> str:
    """The per-layer table followed by the summary."""
    rows = [[lc.name, lc.kind, lc.precision, 'x'.join(map(str, lc.output_shape[1:])), _fmt_int(lc.params_1bit),
             _fmt_int(lc.params_32bit), f'{lc.memory_bytes / 1024:.2f}', _fmt_int(lc.binary_macs),
             _fmt_int(lc.float_macs)] for lc in p.layers]
    header = ['layer', 'type', 'precision', 'output', '1-bit params', '32-bit params', 'memory KiB',
              'binary MACs', 'FP MACs']
    return _table(rows, header) + '\n' + format_summary(p)
