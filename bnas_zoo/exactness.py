"""BatchNorm statistics as training leaves them, for networks without trained weights, and a fair measure of
agreement between two computations of a binary network.

A freshly initialised network's BatchNorms are the identity (running mean 0, variance 1, gamma 1, beta 0): every
binary conv sum that is exactly 0, and every ReLU output 0, reaches ``sign`` as an exact 0, which no trained
network shows. Benchmarks and agreement tests therefore run on :func:`calibrate_batchnorm`: random affine
parameters, and running statistics computed from data by forward passes, as training would leave them.

Binary networks amplify float rounding: a sign input within rounding of 0 flips with the summation order and
the flip cascades. :func:`float32_spread` measures how far float32 itself strays from the float64 computation
under four orders of float32 arithmetic; :func:`compare_with_float64` judges another runtime (the deployed
kernels, ONNX) as one more such order: cascading on about as many samples, agreeing to float32's rounding
elsewhere, and giving the same classes where the decision is not within float32's spread.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Tuple

import torch
import torch.nn as nn

__all__ = ['recomputed_batchnorm_statistics', 'calibrate_batchnorm', 'is_uncalibrated', 'folded_batchnorm',
           'float32_spread', 'compare_with_float64', 'Agreement']


def is_uncalibrated(model: nn.Module) -> bool:
    """Whether every BatchNorm of ``model`` still has its initial running statistics (mean 0, variance 1)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None]
    return bool(bns) and all(bool((m.running_mean == 0).all() and (m.running_var == 1).all()) for m in bns)


@contextlib.contextmanager
def recomputed_batchnorm_statistics(model: nn.Module) -> Iterator[List[nn.modules.batchnorm._BatchNorm]]:
    """Within the block, ``model`` is in training mode and the running statistics of its BatchNorms (those that
    keep them, yielded) start afresh as a plain (cumulative) average of the forward passes run in the block;
    afterwards each BatchNorm's momentum and the model's mode are put back."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    momenta = [m.momentum for m in norms]
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
    model.train()
    try:
        yield norms
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor], seed: int = 0,
                        affine: bool = True) -> nn.Module:
    """Give ``model``'s BatchNorms data-driven running statistics (in place; returns it in eval mode).

    ``affine``: first draw the affine parameters at random (gamma in [0.5, 1.5), beta in [-0.3, 0.3), from
    ``seed``), as a trained network has them; then run ``batches`` (inputs as the model takes them) in training
    mode with a cumulative average, so that the running statistics are those of that data.
    """
    gen = torch.Generator().manual_seed(seed)
    if affine:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=gen) * 0.6 - 0.3)
    with recomputed_batchnorm_statistics(model):
        for x in batches:
            model(x)
    return model.eval()


@contextlib.contextmanager
def folded_batchnorm(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, every eval BatchNorm of ``model`` computes ``x * scale + shift``, with ``scale`` and
    ``shift`` folded from its statistics in float64 and rounded to float32: the same map as ``(x - mean) /
    sqrt(var + eps) * weight + bias``, rounded as deployment computes it (``bnas_zoo.deploy.fold_batchnorm``)."""
    from .deploy import fold_batchnorm

    def folded(bn: nn.modules.batchnorm._BatchNorm, inputs, output):
        scale, shift = fold_batchnorm(bn.running_mean, bn.running_var, bn.eps, bn.weight if bn.affine else None,
                                      bn.bias if bn.affine else None)
        view = (1, -1) + (1,) * (inputs[0].dim() - 2)
        return inputs[0] * scale.to(inputs[0].dtype).view(view) + shift.to(inputs[0].dtype).view(view)

    handles = [m.register_forward_hook(folded) for m in model.modules()
               if isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.training and m.running_var is not None]
    try:
        yield model
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def float32_spread(model: nn.Module, x: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """The float64 logits of ``model`` (eval) on ``x``, and float32's own deviation from them for each sample
    (the largest absolute logit difference) under four orders of float32 arithmetic: contiguous input,
    channels-last input, one image at a time (other convolution algorithms), and BatchNorms folded to a scale
    and a shift (:func:`folded_batchnorm`, the form a deployed network computes)."""
    model = model.eval()
    ref = model.double()(x.double())
    model.float()
    x = x.float()
    outs = {'contiguous': model(x.contiguous()),
            'channels-last': model(x.contiguous(memory_format=torch.channels_last)),
            'one at a time': torch.cat([model(x[i:i + 1]) for i in range(x.shape[0])])}
    with folded_batchnorm(model):
        outs['folded BatchNorm'] = model(x.contiguous())
    return ref, {k: (v.double() - ref).abs().amax(1) for k, v in outs.items()}


def _tolerance(spread, scale: float):
    """The judge's bound for a float32 ``spread`` (a number or a tensor of them): 3x it, plus 1e-5 of the
    largest float64 logit ``scale`` (where float32 happens to match float64 exactly)."""
    return 3.0 * spread + 1e-5 * scale


#: a sample "cascaded" when its largest logit difference exceeds this fraction of the largest float64 logit:
#: float32 rounding of these networks' logits is about 1e-7 of it, a flipped sign moves them by 1e-3 and more
CASCADE = 1e-4


@dataclass
class Agreement:
    """Another computation of a network against its float64 simulation, judged by float32's own spread."""
    max_diff: float          # the largest |logit difference| over the batch
    beyond: int              # samples whose largest difference exceeds the tolerance
    cascades: int            # samples whose largest difference exceeds CASCADE of the largest float64 logit
    float32_cascades: int    # the same for float32's orders: the most of any one order
    rounding: float          # the median of the largest differences over the samples that did not cascade
    float32_rounding: float  # the same over float32's orders and samples (float32's rounding level)
    max_spread: float        # float32's largest deviation over the batch and the summation orders
    decided: int             # samples it did not cascade on whose float64 top-2 margin exceeds twice their
                             # own tolerance (3x float32's spread on that sample)
    same_class: int          # of those, samples the other computation classifies the same
    total: int
    scale: float             # the largest |float64 logit|

    @property
    def tolerance(self) -> float:
        return _tolerance(self.max_spread, self.scale)

    @property
    def slack(self) -> int:
        """How many more samples than float32's most-cascading order the computation may cascade on: chance."""
        return max(1, self.total // 4)

    @property
    def ok(self) -> bool:
        return (self.beyond <= self.slack
                and self.cascades <= self.float32_cascades + self.slack
                and self.rounding <= _tolerance(self.float32_rounding, self.scale)
                and self.same_class == self.decided)

    def __str__(self) -> str:
        return (f'max |diff| {self.max_diff:.2e} (float32 spread {self.max_spread:.2e}, tolerance {self.tolerance:.2e}; '
                f'{self.beyond} of {self.total} samples beyond it), cascaded on {self.cascades} samples (float32 '
                f'orders: up to {self.float32_cascades}), elsewhere median {self.rounding:.2e} (float32 '
                f'{self.float32_rounding:.2e}), same class for {self.same_class}/{self.decided} decided samples of '
                f'{self.total}')


@torch.no_grad()
def compare_with_float64(out: torch.Tensor, ref64: torch.Tensor, spreads: Dict[str, torch.Tensor]) -> Agreement:
    """Judge logits ``out`` against the float64 logits as float32's own orders of computation (``spreads``,
    :func:`float32_spread`) compare with them. A binary network's sign inputs within rounding of 0 flip with the
    summation order and the flip cascades: on some samples, not always the same ones, and on few or on most
    samples of a batch depending on the network and its statistics. So the other computation passes when

    - its differences stay within 3x float32's largest deviation over the batch on all samples but a quarter
      (at least one): a cascade larger than any float32 order's is evidence of an error only when it is common;
    - it cascades (differs by more than ``CASCADE`` of the largest logit) on at most a quarter of the batch (at
      least one sample) more than the most-cascading float32 order: an error present in every sample fails;
    - where it did not cascade, the median of its differences is within 3x float32's rounding level (the median
      of the float32 orders' differences where they did not cascade): a small systematic error fails;
    - it gives float64's class on every sample it did not cascade on whose float64 top-2 margin exceeds twice
      that sample's own tolerance (3x float32's spread on that sample): where it cascaded (allowed above, on
      about as many samples as float32's orders), the class may follow the cascade, as float32's would."""
    diff = (out.double() - ref64).abs().amax(1)
    orders = torch.stack(list(spreads.values()))
    per_sample = orders.amax(0)
    max_spread = per_sample.max().item()
    scale = ref64.abs().max().item()
    limit = CASCADE * scale
    calm = orders[orders <= limit]
    float32_rounding = calm.median().item() if calm.numel() else limit
    mine = diff[diff <= limit]
    rounding = mine.median().item() if mine.numel() else 0.0
    top2 = ref64.topk(2, dim=1).values if ref64.shape[1] > 1 else torch.cat([ref64, ref64 - 1], 1)
    beyond = diff > _tolerance(max_spread, scale)
    cascaded = diff > limit  # counted above; its class may follow the cascade
    decided = ((top2[:, 0] - top2[:, 1]) > 2 * _tolerance(per_sample, scale)) & ~cascaded
    same = (out.argmax(1) == ref64.argmax(1)) & decided
    return Agreement(diff.max().item(), int(beyond.sum()), int(cascaded.sum()),
                     int((orders > limit).sum(1).max()), rounding, float32_rounding, max_spread,
                     int(decided.sum()), int(same.sum()), out.shape[0], scale)
