"""XNOR binarization (paper Eq. 3, as the BNAS release trains it) and the binary layers built on it.

Nothing here is a custom ``autograd.Function``, so the models trace with torch.fx and export with
torch.export: weights use ``detach`` straight-through estimators; the activation sign is a
``torch.library`` custom op (one pass instead of four, for speed) proven equal to its ``detach`` form.

- :func:`sign_ste`: activations, ``sign(x)`` forward, gradient passed where ``|x| < 1``.
- :func:`xnor_weight`: weights, ``sign(W) * alpha`` forward (alpha = mean |W| per output channel) with
  exactly the release's XNOR-Net weight gradient, including its ``n * (1 - 1/in)`` factor.
- :func:`project_latent_`: the release's centring and clamping of the latent weights.

How training stays equivalent to the release. The release, before every forward pass, centres and clamps
the latent weights in place (W <- P(W)), runs the network on ``sign(W) * alpha``, and applies the update to
the projected latent: W <- P(W) - lr * update. Here the forward pass evaluates ``P(W)`` as a value-only
projection (so any stored weights, e.g. a release checkpoint, are evaluated exactly as the release
evaluates them), and the latents are projected in place between the backward pass and the optimizer step,
so the step applies to P(W), as in the release. The stored latents are therefore always those the release
would hold: a centred and clamped tensor plus the last update.

That in-place projection needs no special optimizer: every trainable latent binary weight carries a
post-accumulate-grad hook (:func:`ensure_latent_projection`, which BNASNet applies at construction and at
every training forward) that projects it as soon as its gradient is accumulated, at most once per update.
Any optimizer and loop (timm's ``train.py``, a plain ``loss.backward(); opt.step()``) therefore trains as the
release. :func:`attach_latent_projection` instead projects right before each ``optimizer.step()`` (and turns
the hooks of that model off), which bnas-train uses.
"""
from __future__ import annotations

import warnings
import weakref
from typing import Callable, Iterator, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    'sign_ste', 'sign_ste_reference', 'xnor_weight', 'xnor_weight_reference', 'xnor_alpha', 'center_clamp',
    'scale_grad', 'BinaryConv2d', 'BinaryConvBlock', 'BinarySepConvBlock', 'binary_convs', 'binary_param_names', 'project_latent_',
    'attach_latent_projection', 'ensure_latent_projection', 'register_fast_training_path',
]

#: (applies(x, bn, conv), run(x, bn, conv, zero_tail)) of a faster computation of a training-mode
#: BinaryConvBlock, installed by whoever provides one (``bnas_zoo.kernels.training``, which ``import bnas_zoo``
#: loads): the layers know no fast path, the fast path knows the layers
_FAST_TRAINING_PATH: Optional[Tuple[Callable[..., bool], Callable[..., torch.Tensor]]] = None


def register_fast_training_path(applies: Callable[..., bool], run: Callable[..., torch.Tensor]) -> None:
    """Install the fast training computation of :class:`BinaryConvBlock` (``None, None`` removes it):
    ``applies(x, bn, conv)`` decides per call, ``run(x, bn, conv, zero_tail)`` computes the block."""
    global _FAST_TRAINING_PATH
    _FAST_TRAINING_PATH = None if applies is None else (applies, run)


def scale_grad(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Identity in value; multiplies the gradient flowing back into ``x`` by ``scale``."""
    x_d = x.detach()
    return x_d + (x - x_d) * scale


def sign_ste_reference(x: torch.Tensor) -> torch.Tensor:
    """The straight-through sign written with ``detach``: the definition :func:`sign_ste` is tested against."""
    clipped = F.hardtanh(x)  # its gradient is 1 strictly inside (-1, 1)
    return torch.sign(x).detach() + (clipped - clipped.detach())


@torch.library.custom_op('bnas_zoo::sign_ste', mutates_args=())
def _sign_ste(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x)


def _like_input(x: torch.Tensor) -> torch.Tensor:
    """Fake (meta) implementation of both custom ops: the output has the input's shape and dtype."""
    return torch.empty_like(x)


def _save_input(ctx, inputs, output) -> None:
    """Both custom ops' backward needs only their input."""
    ctx.save_for_backward(inputs[0])


_sign_ste.register_fake(_like_input)


def _sign_ste_backward(ctx, grad: torch.Tensor) -> torch.Tensor:
    (x,) = ctx.saved_tensors
    return torch.ops.aten.hardtanh_backward(grad, x, -1.0, 1.0)


_sign_ste.register_autograd(_sign_ste_backward, setup_context=_save_input)


def sign_ste(x: torch.Tensor) -> torch.Tensor:
    """``sign(x)`` (sign(0) = 0, as the release) with the clipped straight-through gradient 1[|x| < 1].

    Identical in value and gradient to :func:`sign_ste_reference`, but one pass over the activations
    instead of four: a ``torch.library`` custom op (sign forward, hardtanh's backward), which torch.fx
    records as one node and torch.export exports (unlike a custom ``autograd.Function``). Called through
    ``torch.ops`` (the same dispatch as ``_sign_ste``), so TorchScript scripts it too.
    """
    return torch.ops.bnas_zoo.sign_ste(x)


def center_clamp(w: torch.Tensor) -> torch.Tensor:
    """The release's latent-weight projection: subtract the mean over input channels, clamp to [-1, 1]."""
    return (w - w.mean(dim=1, keepdim=True)).clamp(-1.0, 1.0)


def xnor_alpha(w: torch.Tensor) -> torch.Tensor:
    """mean |W| over (in, kh, kw) per output channel, summed in the release's order (so that a release
    checkpoint gives bit-identical binarized weights)."""
    return w.abs().sum(dim=3, keepdim=True).sum(dim=2, keepdim=True).sum(dim=1, keepdim=True) / w[0].numel()


def xnor_weight_reference(w: torch.Tensor) -> torch.Tensor:
    """:func:`xnor_weight` written with ``detach`` straight-through estimators: its definition, which the
    tests hold it to, in value and gradient."""
    n = w[0].numel()
    w = scale_grad(w, n * (1.0 - 1.0 / w.shape[1]))
    w = center_clamp(w).detach() + (w - w.detach())  # exactly P(W) in value, identity for the gradient
    inside = (w.abs() <= 1.0).to(w.dtype).detach()
    w_sign = torch.sign(w).detach() + (w - w.detach()) * inside
    return w_sign * xnor_alpha(w)  # d alpha / dW = sign(W) / n


def xnor_weight_value(w: torch.Tensor) -> torch.Tensor:
    """The value of :func:`xnor_weight` in plain tensor ops, without its gradient formula: the custom op's
    forward, and what an eval model computes under export."""
    wp = center_clamp(w)
    return torch.sign(wp) * xnor_alpha(wp)


@torch.library.custom_op('bnas_zoo::xnor_weight', mutates_args=())
def _xnor_weight(w: torch.Tensor) -> torch.Tensor:
    return xnor_weight_value(w)


_xnor_weight.register_fake(_like_input)


def xnor_weight_grad(w: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The release's XNOR-Net gradient of the latent weight ``w`` from the gradient ``g`` with respect to its
    binarized value (the formula in :func:`xnor_weight`)."""
    wp = center_clamp(w)
    n = wp[0].numel()
    sign = torch.sign(wp)
    inside = (wp.abs() <= 1.0).to(wp.dtype)
    mean_sg = (sign * g).sum(dim=(1, 2, 3), keepdim=True) / n
    return (xnor_alpha(wp) * inside * g + sign * mean_sg) * (n * (1.0 - 1.0 / wp.shape[1]))


def _xnor_weight_backward(ctx, g: torch.Tensor) -> torch.Tensor:
    (w,) = ctx.saved_tensors
    return xnor_weight_grad(w, g)


_xnor_weight.register_autograd(_xnor_weight_backward, setup_context=_save_input)


def xnor_weight(w: torch.Tensor) -> torch.Tensor:
    """Binarized weight ``sign(W) * alpha`` of a conv weight ``W`` (out, in, kh, kw).

    ``W`` is first centred and clamped (value only, the gradient passes unchanged), as the release does
    before every forward pass. The gradient reaching ``W`` is the release's XNOR-Net formula, with g the
    gradient w.r.t. the binarized weight, n = in * kh * kw and W the centred, clamped latent::

        (alpha * 1[|W| <= 1] * g + sign(W) * mean(sign(W) * g)) * (1 - 1/in) * n

    A ``torch.library`` custom op (saving only W for the backward, which applies the formula directly);
    :func:`xnor_weight_reference` is the same function written with ``detach``. Called through ``torch.ops``,
    so TorchScript scripts it too.
    """
    return torch.ops.bnas_zoo.xnor_weight(w)



def _is_exporting() -> bool:
    """Under torch.export (also what torch.onnx's dynamo exporter runs) or an ONNX export."""
    return torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export()


def _portable(training: bool) -> bool:
    """Whether a binary layer computes with standard operators only (``torch.sign`` and
    :func:`xnor_weight_value`) instead of the two custom ops: in eval mode under torch.export, an ONNX export
    or ``torch.jit.trace``, so that the artefact runs without bnas_zoo. The values are bit-identical (the
    custom ops' forwards are these very ops); only the gradients would differ, which an exported inference
    graph does not have. Training mode and eager eval (which may record straight-through gradients, e.g. a
    frozen body under a trained head) always use the custom ops, exactly as before."""
    if training or torch.jit.is_scripting():
        return False
    return torch.jit.is_tracing() or _is_exporting()


class BinaryConv2d(nn.Conv2d):
    """Conv2d on signed inputs; with ``binary_weights`` (default) its weights are XNOR-binarized.

    The zero padding is applied to the signed input (as in the release). ``binary_weights=False`` keeps
    float weights on binary activations: the release trains the last two convolutions of its networks so.
    """

    def __init__(self, *args, binary_weights: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.binary_weights = binary_weights
        #: the weight already holds its binarized values (sign * alpha), as loaded from a 1-bit file
        self.deployed = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deployed and self.training and self.weight.requires_grad and torch.is_grad_enabled():
            raise RuntimeError(
                'this binary conv holds binarized weights from a 1-bit file (bnas_zoo.load_1bit): inference only. '
                'Training would update them as float weights; train from the float weights instead '
                "(model.safetensors: timm.create_model('local-dir:DIR' or 'hf-hub:ORG/NAME', pretrained=True)), "
                'or freeze these convs (requires_grad_(False)) to train only the rest')
        if _portable(self.training):  # eval under export or tracing: standard operators only
            weight = xnor_weight_value(self.weight) if self.binary_weights and not self.deployed else self.weight
            return F.conv2d(torch.sign(x), weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        return self.forward_signed(sign_ste(x))

    def forward_signed(self, a: torch.Tensor, binarized: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The convolution of inputs already signed (``a = sign_ste(x)``, or a fused op computing it).
        ``binarized``: ``xnor_weight(self.weight)`` computed by the caller (an op with the same values)."""
        if binarized is not None:
            weight = binarized
        elif self.binary_weights and not self.deployed:
            weight = xnor_weight(self.weight)
        else:
            weight = self.weight
        return F.conv2d(a, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return super().extra_repr() + f', binary_weights={self.binary_weights}' + (', deployed' if self.deployed else '')


class BinaryConvBlock(nn.Module):
    """BatchNorm -> sign -> conv (zero padding on the signed input) -> ReLU: every binary op of BNAS.

    Training on channels-last float32 CPU activations runs the fast path where one is installed
    (:func:`register_fast_training_path`; ``bnas_zoo.kernels.training``: packed XNOR kernels, exact convolution
    sums); everything else computes the float simulation, the release's computation bit for bit (on contiguous
    float32 CPU activations with the BatchNorm and sign fused, ``bnas_zoo.kernels.exact_training``: the same
    values).
    """

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            kernel_size: int,
            stride: int = 1,
            dilation: int = 1,
            affine: bool = True,
            binary_weights: bool = True,
    ):
        super().__init__()
        padding = dilation * (kernel_size - 1) // 2
        self.bn = nn.BatchNorm2d(in_chs, affine=affine)
        self.conv = BinaryConv2d(
            in_chs, out_chs, kernel_size, stride=stride, padding=padding, dilation=dilation, bias=False,
            binary_weights=binary_weights)
        #: the input's last ``zero_tail`` channels are identically zero and left out of it (see
        #: ``Cell.set_zero_tails``); the block takes them as constants
        self.zero_tail = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():  # (TorchScript compiles the float simulation only)
            fast = _FAST_TRAINING_PATH
            if self.training and fast is not None and fast[0](x, self.bn, self.conv):
                return fast[1](x, self.bn, self.conv, self.zero_tail)
        if self.zero_tail:
            x = F.pad(x, [0, 0, 0, 0, 0, self.zero_tail])
        return F.relu(self.conv(self.bn(x)), inplace=True)  # the conv output is fresh: safe in place


class BinarySepConvBlock(nn.Module):
    """A binary separable convolution, for the search-space comparison with separable convolutions:
    BatchNorm -> sign -> depthwise kxk conv -> BatchNorm -> sign -> pointwise 1x1 XNOR conv -> ReLU.

    The depthwise weights stay in float: the XNOR scheme centres weights over the input channels of a group,
    which a depthwise filter (one input channel) would turn into zeros.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, affine: bool = True,
                 binary_weights: bool = True):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_chs, affine=affine)
        self.conv_dw = nn.Conv2d(in_chs, in_chs, kernel_size, stride=stride, padding=kernel_size // 2,
                                 groups=in_chs, bias=False)
        self.bn_pw = nn.BatchNorm2d(in_chs, affine=affine)
        self.conv = BinaryConv2d(in_chs, out_chs, 1, bias=False, binary_weights=binary_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(x)
        x = self.conv_dw(torch.sign(x) if _portable(self.training) else sign_ste(x))
        return F.relu(self.conv(self.bn_pw(x)), inplace=True)


@torch.no_grad()
def binary_sign_alpha(m: BinaryConv2d) -> Tuple[torch.Tensor, torch.Tensor]:
    """The ternary weight signs (int8, {-1, 0, +1}) and per-output-channel alpha (float32) a binary conv
    computes with: ``sign(P(W))`` and ``mean |P(W)|`` of the centred, clamped latent, or those of a conv that
    already holds ``sign * alpha`` (loaded from a 1-bit file)."""
    if m.deployed:
        w = m.weight.float()
        return torch.sign(w).to(torch.int8), w.abs().amax(dim=(1, 2, 3))
    wp = center_clamp(m.weight.float())
    return torch.sign(wp).to(torch.int8), xnor_alpha(wp).flatten()


def binary_convs(model: nn.Module) -> Iterator[BinaryConv2d]:
    """The convolutions of ``model`` whose weights are binarized."""
    for m in model.modules():
        if isinstance(m, BinaryConv2d) and m.binary_weights:
            yield m


@torch.no_grad()
def project_latent_(model: nn.Module) -> None:
    """Centre and clamp, in place, the latent weights of every trainable binary conv of ``model`` (as the
    release does before each update; frozen weights are not updated, so they are left as they are)."""
    for m in binary_convs(model):
        if m.weight.requires_grad:
            m.weight.copy_(center_clamp(m.weight))


def attach_latent_projection(optimizer: torch.optim.Optimizer, model: nn.Module):
    """Centre and clamp ``model``'s latent binary weights in place before every ``optimizer.step()``, so
    that each update applies to the centred, clamped latent as in the release (see the module docstring).

    The weights' own post-backward projection (:func:`ensure_latent_projection`) is turned off for them: the
    projection happens once per update, here. Returns the hook handle (``handle.remove()`` detaches it).
    """
    for m in binary_convs(model):
        m.weight._bnas_step_projection = True

    def hook(opt, args, kwargs):
        project_latent_(model)
    return optimizer.register_step_pre_hook(hook)


def _project_after_grad(w: torch.Tensor) -> None:
    """Post-accumulate-grad hook of a latent binary weight: W <- P(W) in place, once per update.

    The gradient was computed at P(W) (the forward pass projects value-only), so the optimizer step that
    follows applies to P(W), as in the release. Skipped when W was already projected and not modified since
    (gradient accumulation over several backward passes), or when an optimizer hook projects it instead."""
    if getattr(w, '_bnas_step_projection', False) or getattr(w, '_bnas_projected_version', -1) == w._version:
        return
    with torch.no_grad():
        w.copy_(center_clamp(w))
    w._bnas_projected_version = w._version


def ensure_latent_projection(model: nn.Module) -> None:
    """Give every trainable latent binary weight of ``model`` its in-place projection hook (idempotent).

    A parameter that is replaced (``conv.weight = nn.Parameter(...)``, a deep copy) loses its hooks; BNASNet
    calls this at every training forward pass, so such a weight gets the hook back before its backward."""
    for m in binary_convs(model):
        w = m._parameters['weight']  # the tensor itself (never a tracer's proxy)
        if m.deployed or not w.requires_grad:
            continue
        handle = getattr(w, '_bnas_projection_hook', None)
        if handle is not None and handle.id in (w._post_accumulate_grad_hooks or {}):
            continue
        w._bnas_projected_version = -1
        w._bnas_projection_hook = w.register_post_accumulate_grad_hook(_project_after_grad)
    global _decay_check
    if _decay_check is None:
        from torch.optim.optimizer import register_optimizer_step_pre_hook
        _decay_check = register_optimizer_step_pre_hook(_warn_latent_weight_decay)


_decay_check = None
_decay_checked: 'weakref.WeakSet[torch.optim.Optimizer]' = weakref.WeakSet()


def _warn_latent_weight_decay(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
    """At an optimizer's first step: warn if it applies weight decay to latent binary weights, which the
    release does not (``model.no_weight_decay()`` names them; timm's ``create_optimizer_v2`` honours it)."""
    if optimizer in _decay_checked:
        return
    _decay_checked.add(optimizer)
    for group in optimizer.param_groups:
        if not group.get('weight_decay'):
            continue
        for p in group['params']:
            if getattr(p, '_bnas_projection_hook', None) is not None and not getattr(p, '_bnas_step_projection', False):
                warnings.warn(
                    f'{type(optimizer).__name__} applies weight_decay={group["weight_decay"]} to the latent binary '
                    f'weights of a BNAS network, which the released training does not: build the optimizer with '
                    f'timm.optim.create_optimizer_v2(model, ..., weight_decay=...) (it honours '
                    f'model.no_weight_decay()), or put model.no_weight_decay() in a group with weight_decay=0',
                    UserWarning, stacklevel=3)
                return


def binary_param_names(model: nn.Module) -> set:
    """State-dict names of the binarized weights (e.g. to exclude them from weight decay)."""
    names = set()
    for name, m in model.named_modules():
        if isinstance(m, BinaryConv2d) and m.binary_weights:
            names.add(f'{name}.weight')
    return names
