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
  classifier) as channels-last float convolutions with BatchNorm folded in where that is exact.

The outputs are those of the float-simulated network: ``sign(0) = 0``, zero padding of the signed input, zero
weight signs contribute 0, and the integer sums are exact; the remaining differences are float rounding in the
folded BatchNorms and scales (a few units in the last place), which can flip the sign of an activation that
lies within rounding of a BatchNorm threshold.
"""
from __future__ import annotations

import copy
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .binary import BinaryConv2d, BinaryConvBlock, BinarySepConvBlock
from .cell import Cell
from .errors import ModelConfigError
from .kernels import ensure_loaded, pack_weight_words
from .kernels.reference import OB_CHS, pad_channels
from .network import BNASNet
from .packing import binary_sign_alpha, unpack_signs

__all__ = ['deploy', 'deploy_1bit', 'DeployedBNASNet', 'DeployedCell', 'PackedBinaryConv', 'SignFloatConv',
           'Shortcut2x2', 'resident_weight_bytes']

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


def _file_source(tensors: Dict[str, torch.Tensor], shapes: Dict[str, list]) -> _Source:
    def binary(name: str, m: BinaryConv2d) -> Tuple[torch.Tensor, torch.Tensor]:
        key = f'{name}.weight'
        return unpack_signs(tensors, key, shapes[key]), tensors[f'{key}.alpha'].float()
    return _Source(lambda k: tensors[k], binary)


def _bn_scale_shift(src: _Source, prefix: str, bn: nn.BatchNorm2d) -> Tuple[torch.Tensor, torch.Tensor]:
    """Eval BatchNorm as ``x * scale + shift`` (computed in float64, stored in float32)."""
    mean = src.tensor(f'{prefix}.running_mean').double()
    var = src.tensor(f'{prefix}.running_var').double()
    scale = 1.0 / torch.sqrt(var + bn.eps)
    if bn.affine:
        scale = scale * src.tensor(f'{prefix}.weight').double()
        shift = src.tensor(f'{prefix}.bias').double() - mean * scale
    else:
        shift = -mean * scale
    return scale.float(), shift.float()


def insert_zero_channels(x: torch.Tensor, pad: Range) -> torch.Tensor:
    """``x`` with ``pad[0]`` zero channels inserted before its channels and ``pad[1]`` after them."""
    return F.pad(x, (0, 0, 0, 0, pad[0], pad[1])) if pad[0] or pad[1] else x


# --- deployed layers ---------------------------------------------------------------------------------------
class PackedBinaryConv(nn.Module):
    """BatchNorm -> sign -> binary conv -> alpha -> ReLU on packed bits, optionally plus a residual (the other
    edge of the same node): one ``torch.ops.bnas_zoo.binary_conv2d`` call.

    ``in_pad``: zero channels to add before / after the stored input channels, where the constant channels
    cannot be folded (a k x k conv whose BatchNorm maps zero to a non-zero sign: its border taps differ).
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
        wbits, wmask = pack_weight_words(sign)
        self.register_buffer('wbits', wbits)
        self.register_buffer('wmask', wmask)
        self.register_buffer('alpha', pad_channels(alpha.float(), padded))
        ib = torch.zeros(padded, dtype=torch.int32)
        if int_bias is not None:
            ib[:out_chs] = int_bias.to(torch.int32)
        self.register_buffer('int_bias', ib)
        self.register_buffer('scale', scale.float().contiguous())
        self.register_buffer('shift', shift.float().contiguous())

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        return torch.ops.bnas_zoo.binary_conv2d(
            insert_zero_channels(x, self.in_pad), self.scale, self.shift, self.wbits, self.wmask, self.alpha,
            self.int_bias, self.out_channels, self.kernel_size, self.stride, self.padding, self.dilation, self.relu,
            residual)

    def extra_repr(self) -> str:
        zeros = ', zero weights' if self.wmask.numel() else ''
        return (f'{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, '
                f'padding={self.padding}, dilation={self.dilation}{zeros}')


class SignFloatConv(nn.Module):
    """BatchNorm -> sign -> float-weight conv [-> ReLU] (+ residual), in channels-last float: the convolutions
    the release keeps in full precision on binary activations (the last cell's last two), and the depthwise
    step of a binary separable conv (``groups``, no ReLU)."""

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, stride: int, padding: int,
                 dilation: int, in_pad: Range = (0, 0), groups: int = 1, relu: bool = True):
        super().__init__()
        self.stride, self.padding, self.dilation, self.in_pad = stride, padding, dilation, in_pad
        self.groups, self.relu = groups, relu
        self.register_buffer('weight', weight.float().contiguous(memory_format=torch.channels_last))
        self.register_buffer('scale', scale.float().view(1, -1, 1, 1))
        self.register_buffer('shift', shift.float().view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        a = torch.sign(insert_zero_channels(x, self.in_pad) * self.scale + self.shift)
        y = F.conv2d(a, self.weight, None, self.stride, self.padding, self.dilation, self.groups)
        if self.relu:
            y = torch.relu(y)
        return y if residual is None else y + residual


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
    # k x k with non-zero constant signs: border taps differ, so compute them (zero channels re-inserted)
    return PackedBinaryConv(sign, alpha, scale, shift, in_pad=(lo, in_total - hi), **geometry)


def _binary_block(block: BinaryConvBlock, prefix: str, src: _Source, in_range: Range, in_total: int) -> nn.Module:
    return _binary_conv(block.bn, f'{prefix}.bn', block.conv, f'{prefix}.conv', src, in_range, in_total)


class DeployedSepConv(nn.Module):
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

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.pw(self.dw(x), residual)


def _fold_conv_bn(conv_w: torch.Tensor, conv_b: Optional[torch.Tensor], scale: torch.Tensor,
                  shift: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """conv followed by a BatchNorm (``x * scale + shift``) as one conv with bias."""
    w = conv_w.double() * scale.double().view(-1, 1, 1, 1)
    b = shift.double() + (scale.double() * conv_b.double() if conv_b is not None else 0.0)
    return w.float(), b.float()


def _conv(weight: torch.Tensor, bias: Optional[torch.Tensor], stride: int, padding: int, groups: int = 1) -> nn.Conv2d:
    conv = nn.Conv2d(weight.shape[1] * groups, weight.shape[0], weight.shape[2], stride=stride, padding=padding,
                     bias=bias is not None, groups=groups)
    with torch.no_grad():
        conv.weight = nn.Parameter(weight.contiguous(memory_format=torch.channels_last), requires_grad=False)
        if bias is not None:
            conv.bias = nn.Parameter(bias.float(), requires_grad=False)
    return conv


class Shortcut2x2(nn.Module):
    """The reduction shortcut (BatchNorm folded in) as what a 2x2 stride-2 conv without padding is: a matrix
    product of non-overlapping 2x2 patches (a space-to-depth view of the channels-last input) with the weights;
    faster than torch's conv for these shapes at small batches. A grouped shortcut runs as torch's grouped conv."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, groups: int = 1):
        super().__init__()
        out_chs, in_chs = weight.shape[:2]
        self.groups = groups
        if groups == 1:
            weight = weight.permute(2, 3, 1, 0).reshape(4 * in_chs, out_chs).contiguous()
        else:
            weight = weight.contiguous(memory_format=torch.channels_last)
        self.register_buffer('weight', weight)
        self.register_buffer('bias', bias.float().contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.groups != 1:
            return F.conv2d(x, self.weight, self.bias, 2, 0, 1, self.groups)
        n, c, h, w = x.shape
        patches = x.permute(0, 2, 3, 1).reshape(n, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 2, 4, 5)
        y = torch.addmm(self.bias, patches.reshape(n * (h // 2) * (w // 2), 4 * c), self.weight)
        return y.view(n, h // 2, w // 2, -1).permute(0, 3, 1, 2)  # channels-last memory


def _widen(x: torch.Tensor, have: Range, want: Range) -> torch.Tensor:
    """Zero-pad the channels of a tensor holding ``have`` to hold ``want`` (a superset)."""
    return insert_zero_channels(x, (have[0] - want[0], want[1] - have[1]))


class DeployedCell(nn.Module):
    """A compiled cell on packed-bit convolutions, with the same node program as :class:`~bnas_zoo.cell.Cell`
    (identically-zero edges and nodes cost nothing, shared pooling edges are computed once), and each node's
    second convolution fused with the sum of its edges."""

    def __init__(self, cell: Cell, prefix: str, src: _Source, r0: Range, r1: Range, c_pp: int, c_p: int):
        super().__init__()
        plan = cell.plan
        ch = cell.channels
        self.pre0 = _binary_block(cell.preprocess0, f'{prefix}.preprocess0', src, r0, c_pp) \
            if cell.preprocess0 is not None else None
        self.pre1 = _binary_block(cell.preprocess1, f'{prefix}.preprocess1', src, r1, c_p) \
            if cell.preprocess1 is not None else None
        ops: Dict[str, nn.Module] = {}
        fused = set()
        for key, op in cell.ops.items():
            p = f'{prefix}.ops.{key}'
            if isinstance(op, BinaryConvBlock):
                ops[key] = _binary_block(op, p, src, (0, ch), ch)
                fused.add(key)
            elif isinstance(op, BinarySepConvBlock):
                ops[key] = DeployedSepConv(op, p, src)
                fused.add(key)
            else:  # parameter-free pooling (maybe shared by several edges)
                ops[key] = copy.deepcopy(op)
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
        self.body_zero = tuple(cell._body_zero)  # which body nodes are zero tensors (shaped like _zero_ref)
        self.zero_ref = cell._zero_ref

        # output: the body nodes (zero nodes inside it as zeros) hold body_range; plus the skip
        total = cell.out_chs
        self.out_total = total
        self.body = tuple(cell._body)
        self.body_range, self.skip_range, self.out_range = cell.stored_ranges(r1)
        self.has_skip = cell.skip
        self.shortcut: Optional[Shortcut2x2] = None
        self.shortcut_pad: Range = (0, 0)
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
                w = w[:, r1[0]:r1[1]]
            else:  # grouped: the input keeps all its channels (the zero ones re-inserted)
                self.shortcut_pad = (r1[0], c_p - r1[1])
            self.shortcut = Shortcut2x2(w.float(), b.float(), g)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states: Dict[int, torch.Tensor] = {}
        if self.pre0 is not None:
            states[0] = self.pre0(s0)
        if self.pre1 is not None:
            states[1] = self.pre1(s1)
        pooled: Dict[str, torch.Tensor] = {}
        for node, is_zero, edges in self.program:
            if is_zero:
                ref = states[0] if 0 in states else states[1]
                states[node] = torch.zeros_like(ref[:, :, ::self.zero_stride, ::self.zero_stride])
                continue
            h: Optional[torch.Tensor] = None
            for key, inp, fused in edges:
                if fused:
                    h = self.ops[key](states[inp], h)
                else:
                    if key not in pooled:
                        pooled[key] = self.ops[key](states[inp])
                    h = pooled[key] if h is None else h + pooled[key]
            assert h is not None
            states[node] = h

        skip: Optional[torch.Tensor] = None
        if self.has_skip:
            if self.shortcut is not None:
                skip = self.shortcut(insert_zero_channels(s1, self.shortcut_pad))
            else:
                skip = s1
        if not self.body:
            if skip is not None:
                return skip
            ref = states[0] if 0 in states else states[1]
            z = torch.zeros_like(ref[:, :1, ::self.zero_stride, ::self.zero_stride])
            return z.expand(-1, self.out_total, -1, -1).contiguous(memory_format=torch.channels_last)
        parts = [torch.zeros_like(states[self.zero_ref]) if z else states[n] for n, z in zip(self.body, self.body_zero)]
        body = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        if skip is None:
            return body
        if self.body_range == self.skip_range:
            return body + skip
        return _widen(body, self.body_range, self.out_range) + _widen(skip, self.skip_range, self.out_range)


class DeployedBNASNet(nn.Module):
    """The inference-only form of a :class:`~bnas_zoo.network.BNASNet` (see the module docstring).

    ``forward(x)`` gives the logits, ``forward_features`` / ``forward_head`` as in timm; the input is an
    (N, in_chans, H, W) float batch with H and W multiples of ``input_multiple``. Not trainable.
    """

    def __init__(self, model: BNASNet, src: _Source):
        super().__init__()
        self.stem_type = model.stem_type
        self.in_chans = model.in_chans
        self.num_classes = model.num_classes
        self.num_features = model.num_features
        self.input_multiple = model.input_multiple
        self.pretrained_cfg = dict(getattr(model, 'pretrained_cfg', None) or {})
        self.architecture = self.pretrained_cfg.get('architecture', type(model).__name__)

        if model.stem_type == 'cifar':
            scale, shift = _bn_scale_shift(src, 'stem.bn', model.stem.bn)
            self.register_buffer('stem_scale', scale.view(1, -1, 1, 1))
            self.register_buffer('stem_shift', shift.view(1, -1, 1, 1))
            self.stem_conv = _conv(src.tensor('stem.conv.weight'), None, stride=1, padding=1)
            c_pp = c_p = model.stem.conv.out_channels
        else:
            w1, b1 = _fold_conv_bn(src.tensor('stem0.conv1.weight'), None,
                                   *_bn_scale_shift(src, 'stem0.bn1', model.stem0.bn1))
            w2, b2 = _fold_conv_bn(src.tensor('stem0.conv2.weight'), None,
                                   *_bn_scale_shift(src, 'stem0.bn2', model.stem0.bn2))
            w3, b3 = _fold_conv_bn(src.tensor('stem1.conv.weight'), None,
                                   *_bn_scale_shift(src, 'stem1.bn', model.stem1.bn))
            self.stem0_conv1 = _conv(w1, b1, stride=2, padding=1)
            self.stem0_conv2 = _conv(w2, b2, stride=2, padding=1, groups=model.stem0.conv2.groups)
            self.stem1_conv = _conv(w3, b3, stride=2, padding=1, groups=model.stem1.conv.groups)
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

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        torch._assert(x.dim() == 4 and x.shape[1] == self.in_chans,
                      f'expected an (N, {self.in_chans}, H, W) input batch')
        torch._assert(x.shape[2] % self.input_multiple == 0 and x.shape[3] % self.input_multiple == 0,
                      f'input height and width must be multiples of {self.input_multiple}')
        x = x.contiguous(memory_format=torch.channels_last)
        if self.stem_type == 'cifar':
            s0 = s1 = torch.relu(self.stem_conv(x * self.stem_scale + self.stem_shift))
        else:
            s0 = self.stem0_conv2(torch.relu(self.stem0_conv1(x)))
            s1 = self.stem1_conv(torch.relu(s0))
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return _widen(s1, self.out_range, (0, self.out_total))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        return x if pre_logits else self.classifier(x)

    @torch.inference_mode()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """``forward`` under ``torch.inference_mode`` (no autograd bookkeeping)."""
        return self.forward(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def resident_weight_bytes(module: nn.Module) -> int:
    """Bytes of every parameter and buffer of ``module`` (the deployed network's resident weights)."""
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def deploy(model: nn.Module) -> DeployedBNASNet:
    """The inference-only, packed-bit form of a bnas model: same outputs as ``model.eval()``, much faster on CPUs.

    Args:
        model: a bnas network (a registered name, ``bnas_custom``, ``fully_binary``, or loaded from
            ``local-dir:``, ``hf-hub:`` or a 1-bit file) on the CPU, holding the weights to deploy (trained or
            converted: freshly initialised weights deploy too, but compute nothing useful). It is not changed.
            An already deployed network is returned as it is.

    Returns a module for inference only (its parameters need no gradients, it cannot be trained): a float32
    ``(N, in_chans, H, W)`` batch on the CPU in, H and W multiples of the stem's (4 for CIFAR, 32 for ImageNet),
    logits out, as ``model.eval()`` gives them. The binary weights stay packed (1 bit each plus one float scale
    per output channel), never expanded to float. The binary convolutions run on C++ kernels chosen at run time
    for the CPU (x86-64: AVX-512 with VPOPCNTDQ, AVX-512, AVX2; portable code elsewhere), compiled on first use
    with a C++ compiler and ninja; without them a pure-PyTorch reference gives the same outputs slowly
    (``bnas_zoo.kernels.backend()`` says which runs). No GPU path: on a GPU run ``model.eval()`` itself::

        fast = bnas_zoo.deploy(timm.create_model('local-dir:weights/bnas_d', pretrained=True))
        logits = fast(images)

    Raises :class:`~bnas_zoo.errors.ModelConfigError` for a model that is not a bnas network.
    """
    if isinstance(model, DeployedBNASNet):
        return model
    if not isinstance(model, BNASNet):
        raise ModelConfigError(f'deploy: expected a bnas model (BNASNet), got {type(model).__name__}')
    ensure_loaded()
    return DeployedBNASNet(model, _model_source(model))


def deploy_1bit(skeleton: BNASNet, tensors: Dict[str, torch.Tensor], shapes: Dict[str, list]) -> DeployedBNASNet:
    """The deployed network straight from the tensors of a 1-bit file: ``skeleton`` only gives the structure
    (build it on the ``meta`` device: it holds no weights); binary weights go from packed bits to the kernels'
    packed layout without ever being expanded to float."""
    ensure_loaded()
    return DeployedBNASNet(skeleton, _file_source(tensors, shapes))
