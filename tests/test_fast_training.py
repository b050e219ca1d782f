"""The fast training path (bnas_zoo.kernels.training): channels-last binary blocks on the packed XNOR kernels.

Its definition is the float simulation with the binary convolutions summed exactly (integer sums of +-1
times alpha): the blocks are held to that in value and gradient; the compiled helpers to their plain-PyTorch
definitions; whole networks to the float simulation computed with exact sums, and training to the float path.
"""
import copy

import pytest
import timm
import torch
import torch.nn.functional as F

from bnas_zoo.binary import (BinaryConvBlock, attach_latent_projection, center_clamp, sign_ste, xnor_alpha,
                             xnor_weight, xnor_weight_grad)
from bnas_zoo.kernels import pack_weight_words, training

pytestmark = pytest.mark.skipif(not training.fast_path_available(), reason='compiled kernels unavailable')

CL = torch.channels_last


def _separated_input(n, c, h, w, seed=0):
    """Activations whose BatchNorm outputs (batch statistics, gamma in [1, 1.5], beta in [-0.2, 0.2]) stay
    at least 0.1 away from 0 and +-1, where sign and its straight-through mask switch: every channel is a
    permutation of the levels -1.5, -0.5, 0.5, 1.5 (mean 0, variance 1.25), shifted and scaled."""
    g = torch.Generator().manual_seed(seed)
    levels = torch.tensor([-1.5, -0.5, 0.5, 1.5]).repeat_interleave(n * h * w // 4)
    assert levels.numel() == n * h * w
    chans = [levels[torch.randperm(levels.numel(), generator=g)] for _ in range(c)]
    x = torch.stack(chans).view(c, n, h, w).permute(1, 0, 2, 3)
    x = x * (torch.rand(1, c, 1, 1, generator=g) + 0.5) + torch.randn(1, c, 1, 1, generator=g)
    return x.contiguous()


def _block(cin, cout, k, stride=1, dilation=1, affine=True, seed=0):
    torch.manual_seed(seed)
    blk = BinaryConvBlock(cin, cout, k, stride=stride, dilation=dilation, affine=affine).train()
    if affine:
        with torch.no_grad():
            blk.bn.weight.uniform_(1.0, 1.5)
            blk.bn.bias.uniform_(-0.2, 0.2)
    return blk


def _exact_block(blk, x):
    return training.xnor_conv_block_reference(x, blk.bn, blk.conv, blk.zero_tail)


def _defined_block(blk, x):
    """``xnor_conv_block_reference`` with the fast path's roundings: its batch statistics (values; the gradient is the
    plain BatchNorm formula's), y = x * scale + shift, and its alpha. A network built of these computes the
    fast path's forward pass bit for bit in plain PyTorch ops."""
    x = F.pad(x, [0, 0, 0, 0, 0, blk.zero_tail])
    bn, c = blk.bn, blk.conv
    var_t, mean_t = torch.var_mean(x, dim=(0, 2, 3), unbiased=False)
    mean_k, var_k = torch.ops.bnas_zoo_kernels.batch_stats(x.detach())
    mean, var = mean_t + (mean_k - mean_t).detach(), var_t + (var_k - var_t).detach()
    invstd = torch.rsqrt(var + bn.eps)
    scale = invstd * bn.weight if bn.affine else invstd
    shift = bn.bias - mean * scale if bn.affine else -mean * scale
    a = sign_ste(x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1))
    with torch.no_grad():
        n = x.numel() / x.shape[1]
        bn.num_batches_tracked.add_(1)
        bn.running_mean.lerp_(mean_k, bn.momentum)
        bn.running_var.lerp_(var_k * (n / (n - 1)), bn.momentum)
    wp, alpha = torch.ops.bnas_zoo_kernels.xnor_project(c.weight.detach())
    exact = F.conv2d(a, torch.sign(wp), None, c.stride, c.padding, c.dilation) * alpha.view(1, -1, 1, 1)
    y = F.conv2d(a, xnor_weight(c.weight), None, c.stride, c.padding, c.dilation)
    return F.relu(y + (exact - y).detach())


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


BLOCKS = [  # cin, cout, k, stride, dilation, affine, zero_tail
    (24, 24, 3, 1, 1, True, 0),
    (36, 36, 3, 1, 2, True, 0),  # dilated
    (144, 36, 1, 1, 1, True, 0),
    (72, 36, 3, 2, 1, False, 0),  # the CIFAR preprocessing after a reduction: stride 2, no affine
    (70, 33, 5, 1, 1, True, 0),  # more than one 64-channel word, a partial 16-channel output block
    (144, 36, 1, 1, 1, True, 72),  # zero tail: constant channels sign(beta) folded into the integer sum
    (144, 36, 3, 2, 1, False, 72),  # zero tail without affine: the constant channels are sign(0) = 0
    (96, 24, 3, 1, 1, True, 48),  # zero tail that a 3x3 affine block must put back (border pixels differ)
]


@pytest.mark.parametrize('cin,cout,k,stride,dilation,affine,tail', BLOCKS)
def test_fast_block_equals_exact_float_simulation(cin, cout, k, stride, dilation, affine, tail):
    blk = _block(cin, cout, k, stride, dilation, affine)
    blk.zero_tail = tail
    ref = copy.deepcopy(blk)
    x = _separated_input(8, cin - tail, 12, 12)
    x_fast = x.to(memory_format=CL).requires_grad_()
    x_ref = x.clone().requires_grad_()
    assert training.applies(x_fast, blk.bn, blk.conv) and not training.applies(x_ref, blk.bn, blk.conv)
    y, y_ref = blk(x_fast), _exact_block(ref, x_ref)
    assert y.is_contiguous(memory_format=CL)
    assert _rel(y, y_ref) < 1e-6  # alpha is summed in another order: the last bit may differ
    g = torch.randn_like(y_ref)
    (y * g).sum().backward()
    (y_ref * g).sum().backward()
    assert _rel(x_fast.grad, x_ref.grad) < 1e-5
    assert _rel(blk.conv.weight.grad, ref.conv.weight.grad) < 1e-5
    if affine:
        assert _rel(blk.bn.weight.grad, ref.bn.weight.grad) < 1e-5
        assert _rel(blk.bn.bias.grad, ref.bn.bias.grad) < 1e-5
    # running statistics as nn.BatchNorm2d updates them (unbiased variance, momentum 0.1)
    assert _rel(blk.bn.running_mean, ref.bn.running_mean) < 1e-5
    assert _rel(blk.bn.running_var, ref.bn.running_var) < 1e-5
    assert blk.bn.num_batches_tracked.item() == ref.bn.num_batches_tracked.item() == 1


def test_fast_block_cumulative_running_average():
    blk = _block(16, 16, 3)
    blk.bn.momentum = None  # cumulative moving average
    ref = copy.deepcopy(blk)
    for seed in range(3):
        x = _separated_input(4, 16, 8, 8, seed)
        blk(x.to(memory_format=CL))
        ref.bn(x)
    assert _rel(blk.bn.running_mean, ref.bn.running_mean) < 1e-5
    assert _rel(blk.bn.running_var, ref.bn.running_var) < 1e-5


def test_fast_path_dispatch(monkeypatch):
    """Only training on channels-last float32 activations with binary weights takes the packed kernels;
    training on contiguous ones takes the fused float simulation (exact_training), eval neither."""
    import bnas_zoo.binary as binary
    blk = _block(16, 16, 3)
    x = _separated_input(4, 16, 8, 8)
    assert training.applies(x.to(memory_format=CL), blk.bn, blk.conv)
    assert not training.applies(x, blk.bn, blk.conv)  # contiguous: the release's float computation
    assert not training.applies(x.to(memory_format=CL).double(), blk.bn, blk.conv)
    fp = BinaryConvBlock(16, 16, 3, binary_weights=False)
    assert not training.applies(x.to(memory_format=CL), fp.bn, fp.conv)
    applies, run = binary._FAST_TRAINING_PATH  # what importing bnas_zoo installed: these very functions
    assert (applies, run) == (training._fast_applies, training._fast_block)
    calls = []
    def recording(*a):
        calls.append(a[0].is_contiguous())
        return run(*a)
    monkeypatch.setattr(binary, '_FAST_TRAINING_PATH', (applies, recording))
    blk.train()(x.to(memory_format=CL))
    blk.train()(x)
    blk.eval()(x.to(memory_format=CL))
    blk.eval()(x)
    with torch.no_grad():
        blk.train()(x.to(memory_format=CL))
    assert calls == [False, True, False]


def test_batch_stats_kernel():
    for shape in [(4, 1, 5, 3), (8, 70, 9, 9), (2, 16, 1, 1)]:
        x = torch.randn(*shape) * 3 + 1
        mean, var = torch.ops.bnas_zoo_kernels.batch_stats(x.to(memory_format=CL))
        ref_mean, ref_var = training.batch_stats_reference(x)
        assert torch.allclose(mean, ref_mean, rtol=1e-5, atol=1e-6) and torch.allclose(var, ref_var, rtol=1e-5)
    mean, var = torch.ops.bnas_zoo_kernels.batch_stats(torch.zeros(2, 8, 4, 4).to(memory_format=CL))
    assert torch.equal(mean, torch.zeros(8)) and torch.equal(var, torch.zeros(8))


@pytest.mark.parametrize('shape', [(16, 16, 3, 3), (36, 70, 1, 1), (33, 130, 5, 5)])
def test_weight_kernels(shape):
    w = torch.randn(*shape)
    wp, alpha = torch.ops.bnas_zoo_kernels.xnor_project(w)
    assert torch.allclose(wp, center_clamp(w), atol=1e-6)
    assert torch.allclose(alpha, xnor_alpha(center_clamp(w)).flatten(), rtol=1e-5)
    for signs in (torch.sign(wp), torch.sign(wp) * (torch.rand(shape) > 0.1)):  # with and without zero weights
        for got, ref in zip(torch.ops.bnas_zoo_kernels.pack_binary_weights(signs), pack_weight_words(signs)):
            assert torch.equal(got, ref)
    g = torch.randn(*shape)
    got = torch.ops.bnas_zoo_kernels.xnor_weight_backward(wp, alpha, g)
    assert _rel(got, xnor_weight_grad(w, g)) < 1e-5


def test_bn_sign_backward_kernel():
    x = _separated_input(4, 20, 6, 6)
    gamma, beta = torch.rand(20) * 0.5 + 1.0, torch.rand(20) * 0.4 - 0.2
    xr = x.clone().requires_grad_()
    gr, br = gamma.clone().requires_grad_(), beta.clone().requires_grad_()
    a = sign_ste(F.batch_norm(xr, None, None, gr, br, training=True))
    g = torch.randn_like(a)
    (a * g).sum().backward()
    mean, var = torch.ops.bnas_zoo_kernels.batch_stats(x.to(memory_format=CL))
    invstd = torch.rsqrt(var + 1e-5)
    scale, shift = invstd * gamma, beta - mean * invstd * gamma
    sign = torch.ops.bnas_zoo_kernels.bn_sign(x.to(memory_format=CL), scale, shift)
    assert torch.equal(sign, a.detach())
    gx, gg, gb = torch.ops.bnas_zoo_kernels.bn_sign_backward(g.to(memory_format=CL), x.to(memory_format=CL),
                                                              scale, shift, mean, invstd, gamma)
    assert _rel(gx, xr.grad) < 1e-5 and _rel(gg, gr.grad) < 1e-5 and _rel(gb, br.grad) < 1e-5


def _defined(model):
    """``model`` with its binary blocks computed by :func:`_defined_block`."""
    for m in model.modules():
        if isinstance(m, BinaryConvBlock) and m.conv.binary_weights:
            m.forward = (lambda blk: lambda x: _defined_block(blk, x))(m)
    return model


@pytest.mark.parametrize('name,size', [('bnas_mini', 32), ('bnas_d', 64)])
def test_fast_network_training_step(name, size):
    """A training step of a whole network on the fast path against the same network written in plain
    PyTorch ops (:func:`_defined_block`): the same loss, gradients and running statistics."""
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10).train()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d) and m.affine:
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    model = model.to(memory_format=CL)
    ref = _defined(copy.deepcopy(model))
    x, y = torch.randn(8, 3, size, size).to(memory_format=CL), torch.randint(0, 10, (8,))
    loss_ref = F.cross_entropy(ref(x), y)
    loss_ref.backward()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    assert torch.equal(loss, loss_ref)
    grads = {n: p.grad for n, p in model.named_parameters()}
    floor = 1e-3 * max(p.grad.abs().max().item() for p in ref.parameters())
    for n, p in ref.named_parameters():
        worst = ((grads[n] - p.grad).abs().max() / max(p.grad.abs().max().item(), floor)).item()
        assert worst < 1e-4, (n, worst)
    for (n, b), (_, b_ref) in zip(model.named_buffers(), ref.named_buffers()):
        assert torch.allclose(b.float(), b_ref.float(), rtol=1e-5, atol=1e-7), n


def test_fast_training_learns_like_the_float_path():
    """SGD on a fixed batch: the fast path and the float path (the release's computation) reach the same
    loss trajectory closely."""
    losses = {}
    for layout in ('contiguous', 'channels_last'):
        torch.manual_seed(0)
        model = timm.create_model('bnas_mini', num_classes=4, channels=8, layers=5).train()
        x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 4, (16,))
        if layout == 'channels_last':
            model, x = model.to(memory_format=CL), x.to(memory_format=CL)
        opt = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9)
        attach_latent_projection(opt, model)
        out = []
        for _ in range(8):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            out.append(loss.item())
        losses[layout] = out
    assert losses['channels_last'][-1] < 0.8 * losses['channels_last'][0]  # it learns
    for a, b in zip(losses['channels_last'], losses['contiguous']):
        assert abs(a - b) < 0.02 * b


def test_zero_tails_are_exact():
    """Stage-1 CIFAR cells leave out their zero channels: outputs, features and gradients are those of the
    full tensors, bit for bit, on the release's float path."""
    torch.manual_seed(0)
    model = timm.create_model('bnas_mini', num_classes=10)
    layers = len(model.cells)
    tails = [c.out_tail for c in model.cells]
    c0 = model.channels
    assert tails[:layers // 3] == [2 * c0] * (layers // 3) and not any(tails[layers // 3:])
    full = copy.deepcopy(model)
    for cell in full.cells:
        cell.set_zero_tails(0, 0, leave_out=False)
    x = torch.randn(4, 3, 32, 32)
    for train in (False, True):
        model.train(train)
        full.train(train)
        assert torch.equal(model(x), full(x))
        feats, feats_full = model.forward_intermediates(x, intermediates_only=True), full.forward_intermediates(
            x, intermediates_only=True)
        assert [f.shape for f in feats] == [f.shape for f in feats_full]
        assert all(torch.equal(a, b) for a, b in zip(feats, feats_full))
    model.zero_grad()
    full.zero_grad()
    model(x).sum().backward()
    full(x).sum().backward()
    for (n, p), (_, q) in zip(model.named_parameters(), full.named_parameters()):
        assert torch.equal(p.grad, q.grad), n
