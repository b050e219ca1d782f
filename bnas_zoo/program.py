"""The deployed network as one program: a flat list of instructions over channels-last buffers, run by one
compiled op (``bnas_zoo::run_program``, ``kernels/csrc/program.cpp``) with no Python between the layers, or by
:func:`run_program_reference` here (plain PyTorch and the ``binary_conv2d`` op: the fallback where the kernels
cannot be built, and what the tests hold the compiled interpreter to).

A buffer is an (N, C, H, W) float32 tensor in channels-last memory; a *slice* is ``(buffer, first channel,
channels)`` of it, so that a node writes its output straight into its place in the cell's concatenated output
(no concatenation), and an edge adds into its node in place. Buffer 0 is the input. ``code`` holds ``VERSION,
number of buffers, returned buffer, float mode``, then each opcode followed by its operands (the op takes it as a
1-D int64 tensor, ``DeployedBNASNet.code_tensor``: cheaper to pass than a list of thousands of ints). The float mode says
how float parts whose weights are bfloat16 compute (FLOAT32: none are; BF16: natively, in oneDNN's and the
BLAS's bfloat16 kernels; BF16_EMULATED: in float32 on the bfloat16-rounded input and weights, the result rounded
to bfloat16, for CPUs without bfloat16 instructions). Instructions::

    ALLOC    buf, C, like, stride             buf = empty (N, C, ceil(H / stride), ceil(W / stride)) of buffer `like`
    ZERO     buf, off, ch                     slice = 0
    COPY     buf, off, ch, src, soff          slice = src slice
    ADD      buf, off, ch, src, soff          slice += src slice
    AFFINE   out, in, scale, shift            out = in * scale + shift  (per channel; a new buffer)
    CONV     out, in, weight, bias, stride, pad, dil, groups, relu_in, relu_out
                                              out = [relu](conv2d([relu](in), weight, bias))  (a new buffer)
    BIN      out, off, res, roff, in, ioff, ich, C, lo, scale, shift, wbits, wmask, wcounts, alpha, int_bias,
             cout, k, stride, pad, dil, relu  out slice = binary_conv2d(...) [+ res slice]
    SIGNCONV out, off, res, roff, in, ioff, ich, C, lo, scale, shift, weight, cout, stride, pad, dil, groups, relu
                                              out slice = [relu](conv2d(sign(in * scale + shift), weight)) [+ res]
    POOL     out, off, in, ioff, ich, kind, stride    3x3 max (kind 0) / average without padding (kind 1)
    SHORTCUT out, in, ioff, ich, C, lo, weight, bias, groups   2x2 stride-2 conv (a new buffer)

Tensor operands are indices into the op's ``params`` list (-1: none). ``C, lo``: the layer reads a C-channel
input of which the slice holds channels [lo, lo + ich); the others are identically zero (left out of memory).
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = ['VERSION', 'FLOAT32', 'BF16', 'BF16_EMULATED', 'OPCODES', 'Slice', 'ProgramBuilder', 'run_program_reference']

VERSION = 1
FLOAT32, BF16, BF16_EMULATED = range(3)
ALLOC, ZERO, COPY, ADD, AFFINE, CONV, BIN, SIGNCONV, POOL, SHORTCUT = range(1, 11)
#: opcode -> (name, operand count)
OPCODES = {ALLOC: ('ALLOC', 4), ZERO: ('ZERO', 3), COPY: ('COPY', 5), ADD: ('ADD', 5), AFFINE: ('AFFINE', 4),
           CONV: ('CONV', 10), BIN: ('BIN', 22), SIGNCONV: ('SIGNCONV', 18), POOL: ('POOL', 7),
           SHORTCUT: ('SHORTCUT', 9)}

Slice = Tuple[int, int, int]  # (buffer, first channel, channels)


class ProgramBuilder:
    """Collects the instructions and their tensors; the deployed modules call it to emit themselves."""

    def __init__(self):
        self.code: List[int] = []
        self.param_refs: List[Tuple[object, str]] = []  # (module, buffer name) of each tensor operand
        self._index: Dict[Tuple[int, str], int] = {}
        self.buffers = 1  # buffer 0: the input
        self.binary_layers: List[object] = []  # the module of each BIN instruction, in order

    def param(self, module: object, name: str) -> int:
        """The operand index of ``module``'s tensor ``name`` (by reference: the program reads the module's
        current tensor, also after ``module.to(...)``)."""
        key = (id(module), name)
        if key not in self._index:
            self._index[key] = len(self.param_refs)
            self.param_refs.append((module, name))
        return self._index[key]

    def emit(self, op: int, *operands: int) -> None:
        assert len(operands) == OPCODES[op][1], (OPCODES[op][0], operands)
        self.code.append(op)
        self.code.extend(int(v) for v in operands)

    def new_buffer(self) -> int:
        self.buffers += 1
        return self.buffers - 1

    def alloc(self, channels: int, like: int, stride: int = 1) -> Slice:
        buf = self.new_buffer()
        self.emit(ALLOC, buf, channels, like, stride)
        return (buf, 0, channels)

    def zero(self, s: Slice) -> None:
        if s[2]:
            self.emit(ZERO, *s)

    def finish(self, result: Slice, float_mode: int = FLOAT32) -> List[int]:
        assert result[1] == 0, 'the returned buffer must be whole'
        return [VERSION, self.buffers, result[0], float_mode] + self.code


def decode(code: Sequence[int]) -> Tuple[int, int, int, List[Tuple[int, List[int]]]]:
    """(number of buffers, returned buffer, float mode, [(opcode, operands)]) of a program; raises on a
    malformed one."""
    if len(code) < 4 or code[0] != VERSION or code[3] not in (FLOAT32, BF16, BF16_EMULATED):
        raise ValueError(f'not a bnas_zoo program of version {VERSION}')
    out, i = [], 4
    while i < len(code):
        op = code[i]
        if op not in OPCODES:
            raise ValueError(f'unknown opcode {op} at {i}')
        n = OPCODES[op][1]
        out.append((op, list(code[i + 1:i + 1 + n])))
        i += 1 + n
    return code[1], code[2], code[3], out


# --- the reference interpreter ------------------------------------------------------------------------------
def _view(bufs: List[torch.Tensor], buf: int, off: int, ch: int) -> torch.Tensor:
    return bufs[buf].narrow(1, off, ch)


def _with_zero_channels(x: torch.Tensor, total: int, lo: int) -> torch.Tensor:
    if lo == 0 and x.shape[1] == total:
        return x
    return F.pad(x, (0, 0, 0, 0, lo, total - lo - x.shape[1]))


def in_precision(fn: Callable[..., torch.Tensor], x: torch.Tensor, weight: torch.Tensor,
                 bias: Optional[torch.Tensor], mode: int) -> torch.Tensor:
    """``fn(x, weight, bias)`` in the program's float precision: float32 where the weight is; with bfloat16
    weights natively (BF16) or emulated (BF16_EMULATED); the result as float32."""
    if weight.dtype != torch.bfloat16:
        return fn(x, weight, bias)
    if mode == BF16:
        return fn(x.to(torch.bfloat16), weight, bias).float()
    y = fn(x.to(torch.bfloat16).float(), weight.float(), bias.float() if bias is not None else None)
    return y.to(torch.bfloat16).float()


def float_conv(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride: int, pad: int,
               dil: int, groups: int) -> torch.Tensor:
    """The float convolutions of a deployed network (stems, float-weight convs on signs, grouped shortcuts):
    oneDNN's, on channels-last tensors, whatever the batch size (torch's conv2d picks slower kernels for
    small inputs)."""
    x = x.contiguous(memory_format=torch.channels_last)
    return torch.mkldnn_convolution(x, weight, bias, (pad, pad), (stride, stride), (dil, dil), groups)


def shortcut_2x2(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int) -> torch.Tensor:
    """The 2x2 stride-2 reduction shortcut: dense, a matrix product of the space-to-depth view of the input
    with ``weight`` as (out, 4 * in) (oneDNN's matrix product where torch has oneDNN: up to 1.4x MKL's ``addmm``
    at these shapes, which repacks the whole weight matrix at every call); grouped, oneDNN's grouped
    convolution (``weight`` as (out, in / g, 2, 2))."""
    if groups != 1:
        return float_conv(x, weight, bias, 2, 0, 1, groups)
    n, c, h, w = x.shape
    x = x[:, :, :h // 2 * 2, :w // 2 * 2]
    patches = x.permute(0, 2, 3, 1).reshape(n, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 2, 4, 5)
    patches = patches.reshape(n * (h // 2) * (w // 2), 4 * c)
    if torch.backends.mkldnn.is_available():
        y = torch.ops.mkldnn._linear_pointwise(patches, weight, bias, 'none', [], '')
    else:
        y = F.linear(patches, weight, bias)
    return y.view(n, h // 2, w // 2, -1).permute(0, 3, 1, 2)


def run_program_reference(x: torch.Tensor, params: Sequence[torch.Tensor], code: Sequence[int],
                          on_binary: Optional[Callable[[int, torch.Tensor], None]] = None) -> torch.Tensor:
    """Run a program in PyTorch ops (``binary_conv2d`` through the dispatcher: the compiled kernels when they
    are built, else their reference). ``on_binary(i, input)``: called with the input of the i-th BIN
    instruction as stored (its identically-zero channels left out), e.g. to benchmark each layer at its real
    shape."""
    nbuf, ret, mode, instrs = decode(code)
    bufs: List[Optional[torch.Tensor]] = [x.contiguous(memory_format=torch.channels_last)] + [None] * (nbuf - 1)
    n_bin = 0
    for op, a in instrs:
        seen = None
        if op == BIN and on_binary is not None:
            seen = lambda xin, i=n_bin: on_binary(i, xin)  # noqa: E731
        n_bin += op == BIN
        execute(bufs, params, op, a, mode, seen)
    return bufs[ret]


def execute(bufs: List[Optional[torch.Tensor]], params: Sequence[torch.Tensor], op: int, a: Sequence[int],
            mode: int = FLOAT32, on_binary_input: Optional[Callable[[torch.Tensor], None]] = None) -> None:
    """One instruction of the reference interpreter, on the buffers ``bufs`` (buffer 0: the input), in the
    float mode ``mode``."""
    p = lambda i: params[i] if i >= 0 else None  # noqa: E731
    if op == ALLOC:
        buf, c, like, s = a
        ref = bufs[like]
        shape = (ref.shape[0], c, -(-ref.shape[2] // s), -(-ref.shape[3] // s))
        bufs[buf] = torch.empty(shape, dtype=torch.float32, memory_format=torch.channels_last)
    elif op == ZERO:
        _view(bufs, *a).zero_()
    elif op == COPY:
        buf, off, ch, src, soff = a
        _view(bufs, buf, off, ch).copy_(_view(bufs, src, soff, ch))
    elif op == ADD:
        buf, off, ch, src, soff = a
        _view(bufs, buf, off, ch).add_(_view(bufs, src, soff, ch))
    elif op == AFFINE:
        out, inp, scale, shift = a
        bufs[out] = (bufs[inp] * p(scale).view(1, -1, 1, 1) + p(shift).view(1, -1, 1, 1)).contiguous(
            memory_format=torch.channels_last)
    elif op == CONV:
        out, inp, w, b, s, pad, dil, groups, relu_in, relu_out = a
        y = bufs[inp]
        if relu_in:
            y = torch.relu(y)
        y = in_precision(lambda x_, w_, b_: float_conv(x_, w_, b_, s, pad, dil, groups), y, p(w), p(b), mode)
        bufs[out] = (torch.relu(y) if relu_out else y).contiguous(memory_format=torch.channels_last)
    elif op == BIN:
        (out, off, res, roff, inp, ioff, ich, c, lo, scale, shift, wbits, wmask, wcounts, alpha, int_bias,
         cout, k, s, pad, dil, relu) = a
        if on_binary_input is not None:
            on_binary_input(_view(bufs, inp, ioff, ich))
        xin = _with_zero_channels(_view(bufs, inp, ioff, ich), c, lo)
        r = _view(bufs, res, roff, cout) if res >= 0 else None
        wm = p(wmask) if wmask >= 0 else torch.zeros(0, dtype=torch.int64)
        y = torch.ops.bnas_zoo.binary_conv2d(xin, p(scale), p(shift), p(wbits), wm, p(wcounts), p(alpha),
                                             p(int_bias), cout, k, s, pad, dil, bool(relu), r)
        _view(bufs, out, off, cout).copy_(y)
    elif op == SIGNCONV:
        out, off, res, roff, inp, ioff, ich, c, lo, scale, shift, w, cout, s, pad, dil, groups, relu = a
        xin = _with_zero_channels(_view(bufs, inp, ioff, ich), c, lo)
        sgn = torch.sign(xin * p(scale).view(1, -1, 1, 1) + p(shift).view(1, -1, 1, 1))
        y = in_precision(lambda x_, w_, b_: float_conv(x_, w_, b_, s, pad, dil, groups), sgn, p(w), None, mode)
        if relu:
            y = torch.relu(y)
        if res >= 0:
            y = y + _view(bufs, res, roff, cout)
        _view(bufs, out, off, cout).copy_(y)
    elif op == POOL:
        out, off, inp, ioff, ich, kind, s = a
        xin = _view(bufs, inp, ioff, ich)
        y = F.max_pool2d(xin, 3, s, 1) if kind == 0 else F.avg_pool2d(xin, 3, s, 1, count_include_pad=False)
        _view(bufs, out, off, ich).copy_(y)
    elif op == SHORTCUT:
        out, inp, ioff, ich, c, lo, w, b, groups = a
        xin = _with_zero_channels(_view(bufs, inp, ioff, ich), c, lo)
        y = in_precision(lambda x_, w_, b_: shortcut_2x2(x_, w_, b_, groups), xin, p(w), p(b), mode)
        bufs[out] = y.contiguous(memory_format=torch.channels_last)
