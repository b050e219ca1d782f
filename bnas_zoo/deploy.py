"""Fast 1-bit inference: a trained BNAS network (or its 1-bit file) turned into an inference-only network that
computes its binary convolutions on packed bits.

:func:`deploy` walks a :class:`~bnas_zoo.network.BNASNet` (or, with :func:`deploy_1bit`, the tensors of a
``model-1bit.safetensors`` over a network skeleton that holds no weights) and builds:

- every binary convolution (BatchNorm -> sign -> XNOR conv -> ReLU) as one :class:`PackedBinaryConv`: the
  BatchNorm folded to a per-channel map whose sign is written straight into packed bits, the weights stored
  as packed sign bits (the resident form; never expanded to float), integer popcount accumulation, the
  alpha scale, the ReLU and the sum with the other edge of its node fused into the output;
- channels known to be identically zero (in the CIFAR networks the upper half of every stage-1 cell output:
  Zeroise nodes, and no skip mixes them before the first reduction) kept out of memory: each tensor between
  cells holds only its live channel range, a 1x1 binary conv folds the constant signs of the others into an
  integer bias, a 2x2 shortcut folds them into its bias;
- the float parts (stems, 2x2 reduction shortcuts, the float-weight convolutions of the last cell,
  classifier) as channels-last float convolutions with BatchNorm folded in where that is exact;
- the whole forward pass up to the classifier as one program (:mod:`bnas_zoo.program`) that one compiled op
  runs with no Python between the layers: each node writes straight into its place in the cell's concatenated
  output, each edge adds into its node in place.

The outputs are those of the float-simulated network: ``sign(0) = 0``, zero padding of the signed input, zero
weight signs contribute 0, and the integer sums are exact; the remaining differences are float rounding in the
folded BatchNorms and scales (a few units in the last place), which can flip the sign of an activation that
lies within rounding of a BatchNorm threshold.
"""
from __future__ import annotations

import copy
import weakref
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import program as prog
from .binary import BinaryConv2d, BinaryConvBlock, BinarySepConvBlock, binary_sign_alpha
from .cell import Cell
from .errors import ModelConfigError
from .kernels import ensure_loaded, pack_weight_words
from .kernels.reference import OB_CHS, pad_channels
from .network import BNASNet
from .program import ProgramBuilder, Slice

__all__ = ['deploy', 'deploy_1bit', 'DeployedBNASNet', 'DeployedCell', 'PackedBinaryConv', 'SignFloatConv',
           'DeployedSepConv', 'Shortcut2x2', 'resident_weight_bytes']

Range = Tuple[int, int]  # live channels [lo, hi) of a tensor whose other channels are identically zero


# --- where the tensors come from: a live model, or a 1-bit file --------------------------------------------
class _Source:
    """State-dict tensors by name, and the (sign, alpha) of each binary conv by module name."""

    def __init__(self, tensor: Callable[[str], torch.Tensor],
                 binary: Callable[[str, BinaryConv2d], Tuple[torch.Tensor, torch.Tensor]]):
        self.tensor = lambda key: tensor(key).detach().float()
        self.binary = binary


def _model_source(model: nn.Module) -> _Source:
    state = model.state_dict()
    return _Source(lambda k: state[k], lambda name, m: binary_sign_alpha(m))


def _file_source(tensors: Dict[str, torch.Tensor],
                 binary_weight: Callable[[str], Tuple[torch.Tensor, torch.Tensor]]) -> _Source:
    return _Source(lambda k: tensors[k], lambda name, m: binary_weight(f'{name}.weight'))


def fold_batchnorm(mean: torch.Tensor, var: torch.Tensor, eps: float, weight: Optional[torch.Tensor] = None,
                   bias: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Eval BatchNorm as ``x * scale + shift`` (computed in float64, returned in float32)."""
    scale = 1.0 / torch.sqrt(var.double() + eps)
    if weight is not None:
        scale = scale * weight.double()
    shift = (bias.double() if bias is not None else 0.0) - mean.double() * scale
    return scale.float(), shift.float()


def _bn_scale_shift(src: _Source, prefix: str, bn: nn.BatchNorm2d) -> Tuple[torch.Tensor, torch.Tensor]:
    """Eval BatchNorm ``prefix`` of the source as ``x * scale + shift`` (:func:`fold_batchnorm`)."""
    affine = (src.tensor(f'{prefix}.weight'), src.tensor(f'{prefix}.bias')) if bn.affine else (None, None)
    return fold_batchnorm(src.tensor(f'{prefix}.running_mean'), src.tensor(f'{prefix}.running_var'), bn.eps,
                          *affine)


def insert_zero_channels(x: torch.Tensor, pad: Range) -> torch.Tensor:
    """``x`` with ``pad[0]`` zero channels inserted before its channels and ``pad[1]`` after them."""
    return F.pad(x, (0, 0, 0, 0, pad[0], pad[1])) if pad[0] or pad[1] else x


# --- deployed layers: their tensors, and the instructions that compute them -------------------------------
class _Emitter(nn.Module):
    """A deployed layer: holds its tensors as buffers and emits its instructions into a program."""

    def _p(self, b: ProgramBuilder, name: str) -> int:
        return b.param(self, name)


class PackedBinaryConv(_Emitter):
    """BatchNorm -> sign -> binary conv -> alpha -> ReLU on packed bits, optionally plus a residual (the other
    edge of the same node): one ``torch.ops.bnas_zoo.binary_conv2d`` call (one BIN instruction in the program).

    ``in_pad``: zero channels to add before / after the stored input channels, where the constant channels
    cannot be folded (a k x k conv whose BatchNorm maps zero to a non-zero sign: its border taps differ); the
    kernels take them as constants without storing them.
    """

    def __init__(self, sign: torch.Tensor, alpha: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
                 stride: int, padding: int, dilation: int, int_bias: Optional[torch.Tensor] = None,
                 relu: bool = True, in_pad: Range = (0, 0)):
        super().__init__()
        ensure_loaded()  # the op's CPU implementation: compiled kernels, or the reference
        out_chs, in_chs, k, _ = sign.shape
        self.out_channels, self.in_channels, self.kernel_size = out_chs, in_chs, k
        self.stride, self.padding, self.dilation, self.relu = stride, padding, dilation, relu
        self.in_pad = in_pad
        padded = -(-out_chs // OB_CHS) * OB_CHS
        wbits, wmask, wcounts = pack_weight_words(sign)
        self.register_buffer('wbits', wbits)
        self.register_buffer('wmask', wmask)
        self.register_buffer('wcounts', wcounts)
        self.register_buffer('alpha', pad_channels(alpha.float(), padded))
        ib = torch.zeros(padded, dtype=torch.int32)
        if int_bias is not None:
            ib[:out_chs] = int_bias.to(torch.int32)
        self.register_buffer('int_bias', ib)
        self.register_buffer('scale', scale.float().contiguous())
        self.register_buffer('shift', shift.float().contiguous())

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        """This layer alone on a stored input (its zero channels left out, as in the network)."""
        return torch.ops.bnas_zoo.binary_conv2d(
            insert_zero_channels(x, self.in_pad), self.scale, self.shift, self.wbits, self.wmask, self.wcounts,
            self.alpha, self.int_bias, self.out_channels, self.kernel_size, self.stride, self.padding, self.dilation,
            self.relu, residual)

    def emit(self, b: ProgramBuilder, x: Slice, out: Slice, res: Optional[Slice] = None) -> None:
        assert x[2] == self.in_channels - self.in_pad[0] - self.in_pad[1] and out[2] == self.out_channels
        b.binary_layers.append(self)
        r = res if res is not None else (-1, 0, 0)
        b.emit(prog.BIN, out[0], out[1], r[0], r[1], *x, self.in_channels, self.in_pad[0], self._p(b, 'scale'),
               self._p(b, 'shift'), self._p(b, 'wbits'), self._p(b, 'wmask') if self.wmask.numel() else -1,
               self._p(b, 'wcounts'), self._p(b, 'alpha'), self._p(b, 'int_bias'), self.out_channels,
               self.kernel_size, self.stride, self.padding, self.dilation, int(self.relu))

    def extra_repr(self) -> str:
        zeros = ', zero weights' if self.wmask.numel() else ''
        return (f'{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, '
                f'padding={self.padding}, dilation={self.dilation}{zeros}')


class SignFloatConv(_Emitter):
    """BatchNorm -> sign -> float-weight conv [-> ReLU] (+ residual), in channels-last float: the convolutions
    the release keeps in full precision on binary activations (the last cell's last two), and the depthwise
    step of a binary separable conv (``groups``, no ReLU)."""

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, stride: int, padding: int,
                 dilation: int, in_pad: Range = (0, 0), groups: int = 1, relu: bool = True):
        super().__init__()
        self.stride, self.padding, self.dilation, self.in_pad = stride, padding, dilation, in_pad
        self.groups, self.relu = groups, relu
        self.out_channels, self.in_channels = weight.shape[0], weight.shape[1] * groups
        self.register_buffer('weight', weight.float().contiguous(memory_format=torch.channels_last))
        self.register_buffer('scale', scale.float().contiguous())
        self.register_buffer('shift', shift.float().contiguous())

    def emit(self, b: ProgramBuilder, x: Slice, out: Slice, res: Optional[Slice] = None) -> None:
        r = res if res is not None else (-1, 0, 0)
        b.emit(prog.SIGNCONV, out[0], out[1], r[0], r[1], *x, self.in_channels, self.in_pad[0], self._p(b, 'scale'),
               self._p(b, 'shift'), self._p(b, 'weight'), self.out_channels, self.stride, self.padding,
               self.dilation, self.groups, int(self.relu))


def _binary_conv(bn: nn.BatchNorm2d, bn_prefix: str, conv: BinaryConv2d, conv_prefix: str, src: _Source,
                 in_range: Range, in_total: int) -> nn.Module:
    """BatchNorm -> sign -> conv -> ReLU reading a tensor that holds channels ``in_range`` of ``in_total``
    (the others identically zero)."""
    scale, shift = _bn_scale_shift(src, bn_prefix, bn)
    lo, hi = in_range
    k = conv.kernel_size[0]
    geometry = dict(stride=conv.stride[0], padding=conv.padding[0], dilation=conv.dilation[0])
    if not conv.binary_weights:
        return SignFloatConv(src.tensor(f'{conv_prefix}.weight'), scale, shift, in_pad=(lo, in_total - hi),
                             **geometry)
    sign, alpha = src.binary(conv_prefix, conv)
    if (lo, hi) == (0, in_total):
        return PackedBinaryConv(sign, alpha, scale, shift, **geometry)
    outside = torch.ones(in_total, dtype=torch.bool)
    outside[lo:hi] = False
    const_sign = (torch.sign(shift) * outside).to(torch.int64)  # the sign a zero channel takes after the BN
    if k == 1:  # exact fold: each constant channel adds sign * w to every output pixel
        int_bias = (sign[:, :, 0, 0].to(torch.int64) * const_sign).sum(1)
        return PackedBinaryConv(sign[:, lo:hi].contiguous(), alpha, scale[lo:hi], shift[lo:hi], int_bias=int_bias,
                                **geometry)
    if not bool(const_sign.any()):  # the constant channels' sign is 0: they contribute nothing
        return PackedBinaryConv(sign[:, lo:hi].contiguous(), alpha, scale[lo:hi], shift[lo:hi], **geometry)
    # k x k with non-zero constant signs: border taps differ, so compute them (zero channels taken as constants)
    return PackedBinaryConv(sign, alpha, scale, shift, in_pad=(lo, in_total - hi), **geometry)


def _binary_block(block: BinaryConvBlock, prefix: str, src: _Source, in_range: Range, in_total: int) -> nn.Module:
    return _binary_conv(block.bn, f'{prefix}.bn', block.conv, f'{prefix}.conv', src, in_range, in_total)


class DeployedSepConv(_Emitter):
    """The binary separable conv of the search-space comparison: BatchNorm -> sign -> float depthwise conv
    (channels-last torch), then the pointwise binary conv on packed bits."""

    def __init__(self, block: BinarySepConvBlock, prefix: str, src: _Source):
        super().__init__()
        dw = block.conv_dw
        scale, shift = _bn_scale_shift(src, f'{prefix}.bn', block.bn)
        self.dw = SignFloatConv(src.tensor(f'{prefix}.conv_dw.weight'), scale, shift, stride=dw.stride[0],
                                padding=dw.padding[0], dilation=1, groups=dw.groups, relu=False)
        c = block.bn_pw.num_features
        self.pw = _binary_conv(block.bn_pw, f'{prefix}.bn_pw', block.conv, f'{prefix}.conv', src, (0, c), c)

    def emit(self, b: ProgramBuilder, x: Slice, out: Slice, res: Optional[Slice] = None) -> None:
        mid = b.alloc(self.dw.out_channels, like=out[0])
        self.dw.emit(b, x, mid)
        self.pw.emit(b, mid, out, res)


def _fold_conv_bn(conv_w: torch.Tensor, conv_b: Optional[torch.Tensor], scale: torch.Tensor,
                  shift: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """conv followed by a BatchNorm (``x * scale + shift``) as one conv with bias."""
    w = conv_w.double() * scale.double().view(-1, 1, 1, 1)
    b = shift.double() + (scale.double() * conv_b.double() if conv_b is not None else 0.0)
    return w.float(), b.float()


class FloatConv(_Emitter):
    """A float convolution of the stems (BatchNorm folded in), on oneDNN, channels-last."""

    def __init__(self, weight: torch.Tensor, bias: Optional[torch.Tensor], stride: int, padding: int, groups: int = 1):
        super().__init__()
        self.stride, self.padding, self.groups = stride, padding, groups
        self.register_buffer('weight', weight.float().contiguous(memory_format=torch.channels_last))
        self.register_buffer('bias', bias.float().contiguous() if bias is not None else None)

    def emit(self, b: ProgramBuilder, x: int, relu_in: bool = False, relu_out: bool = False) -> Slice:
        out = b.new_buffer()
        b.emit(prog.CONV, out, x, self._p(b, 'weight'), self._p(b, 'bias') if self.bias is not None else -1,
               self.stride, self.padding, 1, self.groups, int(relu_in), int(relu_out))
        return (out, 0, self.weight.shape[0])


class Shortcut2x2(_Emitter):
    """The reduction shortcut (BatchNorm folded in) as what a 2x2 stride-2 conv without padding is: a matrix
    product of non-overlapping 2x2 patches (a space-to-depth view of the channels-last input) with the weights;
    faster than torch's conv for these shapes at small batches. A grouped shortcut runs as oneDNN's grouped
    conv. ``in_total``, ``in_lo``: the input it reads has ``in_total`` channels, of which the stored ones start at
    ``in_lo`` (the others are zero: grouped only; a dense shortcut's weights are cut to the stored channels)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, groups: int = 1, in_lo: int = 0):
        super().__init__()
        out_chs, in_chs = weight.shape[:2]
        self.groups, self.out_channels, self.in_total, self.in_lo = groups, out_chs, in_chs * groups, in_lo
        if groups == 1:
            weight = weight.permute(0, 2, 3, 1).reshape(out_chs, 4 * in_chs).contiguous()
        else:
            weight = weight.contiguous(memory_format=torch.channels_last)
        self.register_buffer('weight', weight)
        self.register_buffer('bias', bias.float().contiguous())

    def emit(self, b: ProgramBuilder, x: Slice) -> Slice:
        out = b.new_buffer()
        b.emit(prog.SHORTCUT, out, *x, self.in_total, self.in_lo, self._p(b, 'weight'), self._p(b, 'bias'),
               self.groups)
        return (out, 0, self.out_channels)


class DeployedCell(_Emitter):
    """A compiled cell on packed-bit convolutions, with the same node program as :class:`~bnas_zoo.cell.Cell`
    (identically-zero edges and nodes cost nothing, shared pooling edges are computed once), and each node's
    second convolution fused with the sum of its edges."""

    def __init__(self, cell: Cell, prefix: str, src: _Source, r0: Range, r1: Range, c_pp: int, c_p: int):
        super().__init__()
        plan = cell.plan
        ch = cell.channels
        self.channels = ch
        self.pre0 = _binary_block(cell.preprocess0, f'{prefix}.preprocess0', src, r0, c_pp) \
            if cell.preprocess0 is not None else None
        self.pre1 = _binary_block(cell.preprocess1, f'{prefix}.preprocess1', src, r1, c_p) \
            if cell.preprocess1 is not None else None
        ops: Dict[str, nn.Module] = {}
        fused = set()
        self.pools: Dict[str, Tuple[int, int]] = {}  # key -> (kind: 0 max / 1 average, stride)
        for key, op in cell.ops.items():
            p = f'{prefix}.ops.{key}'
            if isinstance(op, BinaryConvBlock):
                ops[key] = _binary_block(op, p, src, (0, ch), ch)
                fused.add(key)
            elif isinstance(op, BinarySepConvBlock):
                ops[key] = DeployedSepConv(op, p, src)
                fused.add(key)
            else:  # parameter-free pooling (maybe shared by several edges)
                kind = 0 if isinstance(op, nn.MaxPool2d) else 1
                stride = op.stride if isinstance(op.stride, int) else op.stride[0]
                self.pools[key] = (kind, stride)
        self.ops = nn.ModuleDict(ops)
        self.zero_stride = 2 if plan.reduction else 1

        # node program: (node, is a materialized zero, ((op key, input node, fused), ...)), pooling first so
        # that the convolution can add the node's sum so far in its output pass
        program = []
        for node in range(2, 2 + plan.steps):
            if node in plan.materialized_zeros:
                program.append((node, True, ()))
            elif node in plan.live_nodes:
                edges = [(str(plan.shared.get(k, k)), plan.edges[k][1]) for k in plan.node_edges(node)]
                edges = [(key, inp, key in fused) for key, inp in edges]
                program.append((node, False, tuple(sorted(edges, key=lambda e: e[2]))))
        self.program = tuple(program)
        self.body_zero = tuple(cell._body_zero)  # which body nodes are zero tensors

        # output: the body nodes (zero nodes inside it as zeros) hold body_range; plus the skip
        self.out_total = cell.out_chs
        self.body = tuple(cell._body)
        self.body_range, self.skip_range, self.out_range = cell.stored_ranges(r1)
        self.r0, self.r1 = r0, r1
        self.has_skip = cell.skip
        self.shortcut: Optional[Shortcut2x2] = None
        if cell.skip and cell.shortcut is not None:
            sp = f'{prefix}.shortcut'
            scale, shift = _bn_scale_shift(src, f'{sp}.bn', cell.shortcut.bn)
            w = src.tensor(f'{sp}.conv.weight').double()
            b = src.tensor(f'{sp}.conv.bias').double()
            g = cell.shortcut.conv.groups
            # each output channel's input channels (its group's): the BatchNorm's scale and shift for them
            in_idx = (torch.arange(w.shape[0]) // (w.shape[0] // g)).view(-1, 1) * w.shape[1] + torch.arange(w.shape[1])
            scale_w, shift_w = scale.double()[in_idx], shift.double()[in_idx]
            # BatchNorm before a 2x2 stride-2 conv without padding folds exactly; zero channels into the bias
            b = b + (w * shift_w[:, :, None, None]).sum((1, 2, 3))
            w = w * scale_w[:, :, None, None]
            if g == 1:
                self.shortcut = Shortcut2x2(w[:, r1[0]:r1[1]].float(), b.float())
            else:  # grouped: the input keeps all its channels (the zero ones taken as constants)
                self.shortcut = Shortcut2x2(w.float(), b.float(), g, in_lo=r1[0])

    def emit(self, b: ProgramBuilder, s0: Slice, s1: Slice) -> Slice:
        """The cell's instructions; ``s0``, ``s1`` hold the stored channels (``r0``, ``r1``) of its inputs.
        Returns its output buffer, which holds ``out_range``."""
        like, zs, ch = s1[0], self.zero_stride, self.channels
        states: Dict[int, Slice] = {}
        if self.pre0 is not None:
            states[0] = b.alloc(ch, like)
            self.pre0.emit(b, s0, states[0])
        if self.pre1 is not None:
            states[1] = b.alloc(ch, like)
            self.pre1.emit(b, s1, states[1])
        lo, hi = self.out_range
        out: Optional[Slice] = None
        if self.body or not self.has_skip:
            out = b.alloc(hi - lo, like, zs)
            if not self.body:  # neither nodes nor skip: zeros
                b.zero(out)
                return out
            # the channels of the output outside the body: zero (the skip is added below)
            b.zero((out[0], 0, self.body_range[0] - lo))
            b.zero((out[0], self.body_range[1] - lo, hi - self.body_range[1]))
            for j, node in enumerate(self.body):  # each body node's place in the output
                states[node] = (out[0], self.body_range[0] - lo + j * ch, ch)
                if self.body_zero[j]:
                    b.zero(states[node])
        for node, is_zero, _ in self.program:
            if node not in states:
                states[node] = b.alloc(ch, like, zs)
                if is_zero:
                    b.zero(states[node])

        uses: Dict[str, int] = {}
        for _, _, edges in self.program:
            for key, _, fused in edges:
                if not fused:
                    uses[key] = uses.get(key, 0) + 1
        pooled: Dict[str, Slice] = {}
        for node, is_zero, edges in self.program:
            target, first = states[node], True
            for key, inp, fused in edges:
                if fused:
                    self.ops[key].emit(b, states[inp], target, None if first else target)
                else:
                    kind, stride = self.pools[key]
                    src = states[inp]
                    if first and uses[key] == 1:
                        b.emit(prog.POOL, target[0], target[1], *src, kind, stride)
                    else:
                        if key not in pooled:
                            pooled[key] = b.alloc(src[2], like, zs)
                            b.emit(prog.POOL, pooled[key][0], 0, *src, kind, stride)
                        b.emit(prog.COPY if first else prog.ADD, *target, pooled[key][0], 0)
                first = False

        skip: Optional[Slice] = None
        if self.has_skip:
            skip = self.shortcut.emit(b, s1) if self.shortcut is not None else s1
        if out is None:  # no body: the output is the skip
            assert skip is not None and skip[1] == 0
            return skip
        if skip is not None:
            b.emit(prog.ADD, out[0], self.skip_range[0] - lo, skip[2], skip[0], skip[1])
        return out


class DeployedBNASNet(nn.Module):
    """The inference-only form of a :class:`~bnas_zoo.network.BNASNet` (see the module docstring).

    ``forward(x)`` gives the logits, ``forward_features`` / ``forward_head`` as in timm; the input is an
    (N, in_chans, H, W) float32 CPU batch with H and W multiples of ``input_multiple``. Not trainable.
    ``forward_features`` is one ``bnas_zoo::run_program`` op (the compiled interpreter, or its plain-PyTorch
    reference where the kernels could not be built); the program is in ``code`` and its tensors in
    ``program_params()``.

    The compiled interpreter keeps the network's buffers (about one forward pass's activations at the last batch
    size) from one call to the next and reuses them when the next batch has the same shape, instead of taking
    them afresh each call; :meth:`release_memory` frees them (they are freed with the network too).
    """

    def __init__(self, model: BNASNet, src: _Source, float_dtype: torch.dtype = torch.float32):
        super().__init__()
        self.stem_type = model.stem_type
        self.in_chans = model.in_chans
        self.num_classes = model.num_classes
        self.num_features = model.num_features
        self.input_multiple = model.input_multiple
        self.pretrained_cfg = dict(getattr(model, 'pretrained_cfg', None) or {})
        self.architecture = self.pretrained_cfg.get('architecture', type(model).__name__)

        self.stem_affine: Optional[_Affine] = None
        if model.stem_type == 'cifar':
            self.stem_affine = _Affine(*_bn_scale_shift(src, 'stem.bn', model.stem.bn))
            self.stems = nn.ModuleList([FloatConv(src.tensor('stem.conv.weight'), None, stride=1, padding=1)])
            c_pp = c_p = model.stem.conv.out_channels
        else:
            w1, b1 = _fold_conv_bn(src.tensor('stem0.conv1.weight'), None,
                                   *_bn_scale_shift(src, 'stem0.bn1', model.stem0.bn1))
            w2, b2 = _fold_conv_bn(src.tensor('stem0.conv2.weight'), None,
                                   *_bn_scale_shift(src, 'stem0.bn2', model.stem0.bn2))
            w3, b3 = _fold_conv_bn(src.tensor('stem1.conv.weight'), None,
                                   *_bn_scale_shift(src, 'stem1.bn', model.stem1.bn))
            self.stems = nn.ModuleList([FloatConv(w1, b1, stride=2, padding=1),
                                        FloatConv(w2, b2, stride=2, padding=1, groups=model.stem0.conv2.groups),
                                        FloatConv(w3, b3, stride=2, padding=1, groups=model.stem1.conv.groups)])
            c_pp = c_p = model.stem0.conv2.out_channels
        r_pp: Range = (0, c_pp)
        r_p: Range = (0, c_p)
        cells = []
        for i, cell in enumerate(model.cells):
            d = DeployedCell(cell, f'cells.{i}', src, r_pp, r_p, c_pp, c_p)
            cells.append(d)
            c_pp, c_p = c_p, cell.out_chs
            r_pp, r_p = r_p, d.out_range
        self.cells = nn.ModuleList(cells)
        self.out_range, self.out_total = r_p, c_p
        self.global_pool = copy.deepcopy(model.global_pool)
        if isinstance(model.classifier, nn.Linear):
            self.classifier = nn.Linear(model.classifier.in_features, model.classifier.out_features)
            with torch.no_grad():
                self.classifier.weight.copy_(src.tensor('classifier.weight'))
                self.classifier.bias.copy_(src.tensor('classifier.bias'))
        else:
            self.classifier = copy.deepcopy(model.classifier)
        self.requires_grad_(False)
        self.eval()
        self.float_dtype = float_dtype
        float_mode = prog.FLOAT32
        if float_dtype == torch.bfloat16:  # the float parts' weights in bfloat16 (the classifier stays float32)
            for m in self.modules():
                if isinstance(m, (FloatConv, SignFloatConv, Shortcut2x2)):
                    for name in ('weight', 'bias'):
                        t = getattr(m, name, None)
                        if t is not None:
                            setattr(m, name, t.to(torch.bfloat16))
            float_mode = prog.BF16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else prog.BF16_EMULATED
        builder = ProgramBuilder()
        self.code = builder.finish(self._emit(builder), float_mode)
        self.code_tensor = torch.tensor(self.code, dtype=torch.int64)  # as the op takes it: cheap to pass
        # the resolution of the features: the ImageNet stems divide it by 8, each reduction cell by 2
        self.out_stride = (1 if self.stem_type == 'cifar' else 8) * 2 ** sum(c.zero_stride == 2 for c in self.cells)
        self._param_refs = builder.param_refs
        self._params = self.program_params()
        self._binary_layers = tuple(builder.binary_layers)
        weakref.finalize(self, _release_workspace, self.code_tensor).atexit = False

    def release_memory(self) -> None:
        """Free the buffers kept from the last call (the next call takes new ones)."""
        _release_workspace(self.code_tensor)

    def _emit(self, b: ProgramBuilder) -> Slice:
        if self.stem_type == 'cifar':
            t = self.stem_affine.emit(b, 0)
            s0 = s1 = self.stems[0].emit(b, t[0], relu_out=True)
        else:
            t = self.stems[0].emit(b, 0, relu_out=True)
            s0 = self.stems[1].emit(b, t[0])
            s1 = self.stems[2].emit(b, s0[0], relu_in=True)
        for cell in self.cells:
            s0, s1 = s1, cell.emit(b, s0, s1)
        lo, hi = self.out_range
        if (lo, hi) == (0, self.out_total):
            return s1
        out = b.alloc(self.out_total, s1[0])
        b.zero((out[0], 0, lo))
        b.zero((out[0], hi, self.out_total - hi))
        b.emit(prog.COPY, out[0], lo, hi - lo, s1[0], s1[1])
        return out

    @property
    def binary_layers(self) -> Tuple[PackedBinaryConv, ...]:
        """The packed binary convolutions in the order the program runs them."""
        return self._binary_layers

    def program_params(self) -> list:
        """The program's tensors, in the order its instructions index them."""
        return [getattr(m, name) for m, name in self._param_refs]

    def _apply(self, fn, recurse=True):
        result = super()._apply(fn, recurse)
        if hasattr(self, '_param_refs'):
            self._params = self.program_params()
        return result

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        torch._assert(x.dim() == 4 and x.shape[1] == self.in_chans,
                      f'expected an (N, {self.in_chans}, H, W) input batch')
        torch._assert(x.shape[2] % self.input_multiple == 0 and x.shape[3] % self.input_multiple == 0,
                      f'input height and width must be multiples of {self.input_multiple}')
        torch._assert(x.device.type == 'cpu', 'a deployed network runs on the CPU: give it a CPU tensor')
        return torch.ops.bnas_zoo.run_program(x.float(), self._params, self.code_tensor, self.out_total,
                                              self.out_stride)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        return x if pre_logits else self.classifier(x)

    @torch.inference_mode()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """``forward`` under ``torch.inference_mode`` (no autograd bookkeeping)."""
        return self.forward(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class _Affine(_Emitter):
    """The CIFAR stem's BatchNorm on the image: ``x * scale + shift`` per channel."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor):
        super().__init__()
        self.register_buffer('scale', scale.float().contiguous())
        self.register_buffer('shift', shift.float().contiguous())

    def emit(self, b: ProgramBuilder, x: int) -> Slice:
        out = b.new_buffer()
        b.emit(prog.AFFINE, out, x, self._p(b, 'scale'), self._p(b, 'shift'))
        return (out, 0, self.scale.numel())


def _release_workspace(code: torch.Tensor) -> None:
    """Free what the compiled interpreter keeps for the program in ``code`` (nothing to do without it)."""
    if ensure_loaded() == 'compiled':
        torch.ops.bnas_zoo_kernels.release_workspace(code)


def resident_weight_bytes(module: nn.Module) -> int:
    """Bytes of every parameter and buffer of ``module`` (the deployed network's resident weights)."""
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def _check_float_dtype(float_dtype: torch.dtype) -> None:
    if float_dtype not in (torch.float32, torch.bfloat16):
        raise ModelConfigError(f'deploy: float_dtype must be torch.float32 (exact, the default) or torch.bfloat16 '
                               f'(the float parts in bfloat16), got {float_dtype}')


def deploy(model: nn.Module, float_dtype: torch.dtype = torch.float32) -> DeployedBNASNet:
    """The inference-only, packed-bit form of a bnas model: the outputs of ``model.eval()`` within float32's own
    rounding, much faster on CPUs.

    Args:
        model: a bnas network (a registered name, ``bnas_custom``, ``fully_binary``, or loaded from
            ``local-dir:``, ``hf-hub:`` or a 1-bit file) on the CPU (any other device is refused: the kernels are
            CPU kernels), holding the weights to deploy (trained or converted: freshly initialised weights deploy
            too, but compute nothing useful). It is not changed. An already deployed network is returned as it is.
        float_dtype: ``torch.float32`` (default: exact) or ``torch.bfloat16``: the float parts (stems, 2x2
            reduction shortcuts, the last cell's float convolutions) with bfloat16 weights and inputs, half their
            memory; fast only on CPUs with bfloat16 instructions (AVX512-BF16, AMX), elsewhere emulated in
            float32 (same rounding, slower). The binary layers are exact either way.

    Returns a module for inference only (its parameters need no gradients, it cannot be trained): a float32
    ``(N, in_chans, H, W)`` batch on the CPU in, H and W multiples of the stem's (4 for CIFAR, 32 for ImageNet),
    logits out, as ``model.eval()`` gives them. The binary weights stay packed (1 bit each plus one float scale
    per output channel), never expanded to float. Its forward pass up to the classifier is one compiled op that
    runs the whole network; the binary convolutions run on C++ kernels chosen at run time for the CPU (x86-64:
    AVX-512 with VPOPCNTDQ, AVX-512, AVX2; portable code elsewhere), compiled on first use with a C++ compiler
    and ninja; without them a pure-PyTorch reference gives the same outputs slowly
    (``bnas_zoo.kernels.backend()`` says which runs). No GPU path: on a GPU run ``model.eval()`` itself::

        fast = bnas_zoo.deploy(timm.create_model('local-dir:weights/bnas_d', pretrained=True))
        logits = fast(images)

    Raises:
        bnas_zoo.ModelConfigError: not a bnas model, not on the CPU, or another ``float_dtype``.
    """
    if isinstance(model, DeployedBNASNet):
        return model
    if not isinstance(model, BNASNet):
        raise ModelConfigError(f'deploy: expected a bnas model (BNASNet), got {type(model).__name__}')
    devices = {t.device.type for t in list(model.parameters()) + list(model.buffers())}
    if devices - {'cpu'}:
        raise ModelConfigError(f"deploy: the packed-bit kernels run on the CPU, and this model is on "
                               f"{', '.join(sorted(devices - {'cpu'}))}: deploy(model.cpu())")
    _check_float_dtype(float_dtype)
    ensure_loaded()
    return DeployedBNASNet(model, _model_source(model), float_dtype)


def deploy_1bit(skeleton: BNASNet, tensors: Dict[str, torch.Tensor],
                binary_weight: Callable[[str], Tuple[torch.Tensor, torch.Tensor]],
                float_dtype: torch.dtype = torch.float32) -> DeployedBNASNet:
    """The deployed network straight from the tensors of a 1-bit file (``bnas_zoo.load_1bit(..., deploy=True)``):
    ``skeleton`` only gives the structure (build it on the ``meta`` device: it holds no weights), ``tensors``
    the float tensors by state-dict key, ``binary_weight(key)`` the ternary signs (int8) and per-output-channel
    alpha of each binary weight, read from the packed bits one layer at a time and packed again into the
    kernels' layout, never expanded to float."""
    _check_float_dtype(float_dtype)
    ensure_loaded()
    return DeployedBNASNet(skeleton, _file_source(tensors, binary_weight), float_dtype)
