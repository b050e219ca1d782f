"""A straightforward re-implementation of the BNAS authors' released networks and of their XNOR training step.

It is the baseline of ``benchmarks/train_step.py`` and the independent oracle of the tests: it keeps the
release's module names (so a release state dict loads into it strictly), builds every edge and both
preprocessings, computes every Zeroise edge (``x.mul(0.)``), and binarizes weights the release's way:
before each forward the latent weights are centred, clamped, saved and overwritten in place by
``sign(W) * alpha``; after backward they are restored and their gradient replaced by the XNOR-Net formula.
It shares no code with bnas_zoo's compiler or binary layers.
"""
from __future__ import annotations

from typing import Iterable, List, Tuple

import torch
import torch.nn as nn


class BinActive(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.sign()

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        g = g.clone()
        g[x.ge(1)] = 0
        g[x.le(-1)] = 0
        return g


class BinConv(nn.Module):
    """bn -> sign -> op = (conv, ReLU), the release's binary op layout (``X.bn``, ``X.op.0``)."""

    def __init__(self, c_in, c_out, k, stride, padding, dilation=1, affine=True):
        super().__init__()
        self.bn = nn.BatchNorm2d(c_in, affine=affine)
        self.op = nn.Sequential(
            nn.Conv2d(c_in, c_out, k, stride=stride, padding=padding, dilation=dilation, bias=False),
            nn.ReLU(inplace=False))

    def forward(self, x):
        return self.op(BinActive.apply(self.bn(x)))


class Zero(nn.Module):
    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        if self.stride == 1:
            return x.mul(0.)
        return x[:, :, ::self.stride, ::self.stride].mul(0.)


def make_op(name: str, c: int, stride: int) -> nn.Module:
    if name == 'none':
        return Zero(stride)
    if name == 'max_pool_3x3':
        return nn.MaxPool2d(3, stride=stride, padding=1)
    if name == 'avg_pool_3x3':
        return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
    k = int(name[-1])
    if name.startswith('bin_dil_conv'):
        return BinConv(c, c, k, stride, 2 * (k // 2), dilation=2)
    return BinConv(c, c, k, stride, k // 2)


class ReleaseCell(nn.Module):
    def __init__(self, normal, reduce, c_pp, c_p, c, reduction, reduction_prev, skip, imagenet):
        super().__init__()
        edges = reduce if reduction else normal
        if reduction_prev:
            pre0 = BinConv(c_pp, c, 3, 2, 1, affine=imagenet)
        else:
            pre0 = BinConv(c_pp, c, 1, 1, 0)
        pre1 = BinConv(c_p, c, 1, 1, 0)
        self.red_names = imagenet and reduction
        if self.red_names:
            self.preprocess0_red, self.preprocess1_red = pre0, pre1
        else:
            self.preprocess0, self.preprocess1 = pre0, pre1
        self.reduction = reduction
        self.skip = skip
        if reduction and skip:
            self.preprocess_res = nn.Sequential(nn.BatchNorm2d(c_p), nn.Conv2d(c_p, 4 * c, 2, stride=2, bias=True))
        self._ops = nn.ModuleList(
            [make_op(op, c, 2 if reduction and i < 2 else 1) for op, i in edges])
        self._indices = [i for _, i in edges]

    def forward(self, s0, s1):
        res = s1
        if self.red_names:
            s0, s1 = self.preprocess0_red(s0), self.preprocess1_red(s1)
        else:
            s0, s1 = self.preprocess0(s0), self.preprocess1(s1)
        states = [s0, s1]
        for n in range(len(self._ops) // 2):
            a, b = 2 * n, 2 * n + 1
            states.append(self._ops[a](states[self._indices[a]]) + self._ops[b](states[self._indices[b]]))
        out = torch.cat(states[2:], dim=1)
        if self.skip:
            out = out + (self.preprocess_res(res) if self.reduction else res)
        return out


class ReleaseNetwork(nn.Module):
    def __init__(self, genotype: dict, layers: int, c0: int, imagenet: bool, num_classes: int):
        super().__init__()
        normal, reduce = genotype['normal'], genotype['reduce']
        self.imagenet = imagenet
        if imagenet:
            self.stem0 = nn.Sequential(
                nn.Conv2d(3, c0 // 2, 3, 2, 1, bias=False), nn.BatchNorm2d(c0 // 2), nn.ReLU(inplace=False),
                nn.Conv2d(c0 // 2, c0, 3, 2, 1, bias=False), nn.BatchNorm2d(c0))
            self.stem1 = nn.Sequential(nn.ReLU(inplace=False), nn.Conv2d(c0, c0, 3, 2, 1, bias=False), nn.BatchNorm2d(c0))
            c_pp = c_p = c0
            reduction_prev = True
        else:
            self.stem = nn.Module()
            self.stem.bn = nn.BatchNorm2d(3)
            self.stem.op = nn.Sequential(nn.Conv2d(3, 3 * c0, 3, padding=1, bias=False), nn.ReLU(inplace=False))
            c_pp = c_p = 3 * c0
            reduction_prev = False
        c = c0
        self.cells = nn.ModuleList()
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                c *= 2
            self.cells.append(ReleaseCell(normal, reduce, c_pp, c_p, c, reduction, reduction_prev, i > 0, imagenet))
            reduction_prev = reduction
            c_pp, c_p = c_p, 4 * c
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)

    def forward(self, x):
        if self.imagenet:
            s0 = self.stem0(x)
            s1 = self.stem1(s0)
        else:
            s0 = s1 = self.stem.op(self.stem.bn(x))
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.classifier(self.global_pooling(s1).flatten(1))


class ReleaseBinOp:
    """The release's XNOR weight handling: binarization() before forward, restore() and
    update_binary_grad_weight() after backward, on the named convolutions."""

    def __init__(self, model: nn.Module, binarized: Iterable[str]):
        self.targets: List[nn.Parameter] = [model.get_submodule(n).weight for n in binarized]
        self.saved: List[torch.Tensor] = [p.data.clone() for p in self.targets]

    @torch.no_grad()
    def binarization(self):
        for i, p in enumerate(self.targets):
            p.data.sub_(p.data.mean(1, keepdim=True))   # mean-centre
            p.data.clamp_(-1.0, 1.0)                      # clamp
            self.saved[i].copy_(p.data)                   # save the latent weight
            n = p.data[0].nelement()
            alpha = p.data.norm(1, 3, keepdim=True).sum(2, keepdim=True).sum(1, keepdim=True).div(n)
            p.data.copy_(p.data.sign().mul(alpha))      # binarize in place

    @torch.no_grad()
    def restore(self):
        for i, p in enumerate(self.targets):
            p.data.copy_(self.saved[i])

    @torch.no_grad()
    def update_binary_grad_weight(self):
        for p in self.targets:
            w = p.data
            n = w[0].nelement()
            s = w.size()
            m = w.norm(1, 3, keepdim=True).sum(2, keepdim=True).sum(1, keepdim=True).div(n).expand(s).clone()
            m[w.lt(-1.0)] = 0
            m[w.gt(1.0)] = 0
            m = m.mul(p.grad)
            m_add = w.sign().mul(p.grad).sum(3, keepdim=True).sum(2, keepdim=True).sum(1, keepdim=True).div(n).expand(s)
            m_add = m_add.mul(w.sign())
            p.grad.copy_(m.add(m_add).mul(1.0 - 1.0 / s[1]).mul(n))


def release_train_step(model, binop, optimizer, criterion, x, y):
    binop.binarization()
    loss = criterion(model(x), y)
    optimizer.zero_grad(set_to_none=False)
    loss.backward()
    binop.restore()
    binop.update_binary_grad_weight()
    optimizer.step()
    return loss


@torch.no_grad()
def release_eval(model, binop, x):
    model.eval()
    binop.binarization()
    out = model(x)
    binop.restore()
    return out


def build_release(layout: dict, genotype: dict) -> Tuple[ReleaseNetwork, ReleaseBinOp]:
    """The release network of a layout file (``official_layouts/<model>.json``) and its binarizer."""
    cfg = layout['official_config']
    net = ReleaseNetwork(genotype, cfg['layers'], cfg['init_channels'], cfg['input_size'][1] > 32, cfg['num_classes'])
    return net, ReleaseBinOp(net, layout['binarized_convs'])


def synthetic_release_state_dict(layout: dict, seed: int = 0) -> dict:
    """Random tensors for every key and shape of a layout, with plausible values (latent weights centred and
    clamped, positive running variances), ``module.``-prefixed as the release saves them."""
    g = torch.Generator().manual_seed(seed)
    binarized = {f'{n}.weight' for n in layout['binarized_convs']}
    out = {}
    for key, shape in layout['state_dict'].items():
        if key.endswith('num_batches_tracked'):
            t = torch.tensor(1000, dtype=torch.long)
        elif key.endswith('running_var'):
            t = torch.rand(shape, generator=g) * 0.5 + 0.5
        elif key.endswith('running_mean'):
            t = torch.randn(shape, generator=g) * 0.1
        elif key.endswith('bn.weight') or (key.endswith('.weight') and len(shape) == 1):
            t = torch.rand(shape, generator=g) * 0.5 + 0.75
        elif key in binarized:
            t = torch.randn(shape, generator=g) * 0.5
            t = (t - t.mean(1, keepdim=True)).clamp(-1, 1)
        elif len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            t = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
        elif len(shape) == 2:
            t = torch.randn(shape, generator=g) * (1.0 / shape[1]) ** 0.5
        else:
            t = torch.randn(shape, generator=g) * 0.1
        out['module.' + key] = t
    return out
