"""The float simulation's fused BatchNorm-sign (bnas_zoo.kernels.exact_training): on contiguous float32 CPU
tensors it must compute what nn.BatchNorm2d followed by the straight-through sign computes, bit for bit in
value (signs, running statistics) and to float rounding in gradient, and whole networks must train exactly as
with the plain ops."""
import copy

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from bnas_zoo.binary import BinaryConvBlock, xnor_weight, xnor_weight_grad
from bnas_zoo.kernels import exact_training, ops

pytestmark = pytest.mark.skipif(ops.backend() != 'compiled', reason='compiled kernels unavailable')


@pytest.fixture
def plain_ops(monkeypatch):
    """A context in which the fused op is off: the blocks compute with the plain ops."""
    def off():
        monkeypatch.setitem(exact_training._check, 'ok', False)
    return off


def _activations(n, c, h, w, seed):
    """Inputs as a BatchNorm of a binary network meets them: ReLU outputs of a convolution (many exact zeros,
    skewed, a large mean in some channels), one channel constant."""
    g = torch.Generator().manual_seed(seed)
    x = F.conv2d(torch.randn(n, 3, h, w, generator=g), torch.randn(c, 3, 3, 3, generator=g), padding=1)
    x = F.relu(x) * torch.rand(1, c, 1, 1, generator=g) * 4 + torch.rand(1, c, 1, 1, generator=g) * 3
    x[:, c // 2] = 0.75
    return x.contiguous()


def test_this_machines_batch_norm_is_reproduced():
    """The check run before first use passes here, so that the suite exercises the fused op (where ATen's own
    arithmetic differed, the blocks would silently use the plain ops instead)."""
    assert exact_training._matches_aten()
    assert exact_training.available()


CASES = [  # n, c, h, w, zero_tail, affine, momentum, track_running_stats
    (4, 24, 32, 32, 0, True, 0.1, True),
    (2, 19, 7, 5, 5, True, 0.1, True),
    (1, 9, 3, 3, 0, False, 0.1, True),
    (3, 12, 8, 8, 12, False, None, True),
    (5, 8, 4, 6, 3, True, 0.3, False),
    (2, 70, 16, 16, 2, True, None, True),
]


@pytest.mark.parametrize('n,c,h,w,tail,affine,momentum,track', CASES)
def test_batch_norm_sign_equals_batch_norm_then_sign(n, c, h, w, tail, affine, momentum, track):
    x = _activations(n, c, h, w, seed=c)
    bn = nn.BatchNorm2d(c + tail, affine=affine, momentum=momentum, track_running_stats=track).train()
    if affine:
        with torch.no_grad():
            bn.weight.uniform_(-1.5, 1.5)
            bn.bias.uniform_(-1.5, 1.5)  # the tail's signs: sign(beta), and |beta| > 1 masks its gradient
    ref_bn = copy.deepcopy(bn)
    for step in range(3):  # the running averages over several steps (momentum None: a cumulative average)
        xs = x * (1 + step) - step
        xa, xr = xs.clone().requires_grad_(), xs.clone().requires_grad_()
        a = exact_training.batch_norm_sign(xa, bn, tail)
        r = exact_training.batch_norm_sign_reference(xr, ref_bn, tail)
        assert torch.equal(a, r)
        assert all(torch.equal(p, q) for p, q in zip(bn.buffers(), ref_bn.buffers()))
        g = torch.randn(r.shape, generator=torch.Generator().manual_seed(step))
        a.backward(g)
        r.backward(g)
        torch.testing.assert_close(xa.grad, xr.grad[:, :c], rtol=1e-4, atol=1e-5 * xr.grad.abs().max().item())
        if affine:
            for p, q in ((bn.weight, ref_bn.weight), (bn.bias, ref_bn.bias)):
                torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5 * q.grad.abs().max().item())
                p.grad = q.grad = None
    assert (a == 1).any() and (a == -1).any()
    if tail and not affine:
        assert (a[:, c:] == 0).all()  # sign(0) = 0: the tail without a BatchNorm bias


@pytest.mark.parametrize('shape', [(16, 16, 3, 3), (36, 70, 1, 1), (33, 130, 5, 5)])
def test_xnor_weight_is_the_layers_in_value_and_the_release_formula_in_gradient(shape):
    """The contiguous path's XNOR weight: bit for bit the layers' binarized weight, and the release's gradient
    (bnas_zoo.binary.xnor_weight_grad, evaluated at the latent) from the binarized weight alone, in the layout
    of the incoming gradient; an output channel of zeros (alpha 0) and clamped latents included."""
    torch.manual_seed(0)
    w = torch.randn(*shape) * 0.6
    w[1] = 0.0
    w[2, :5] = 4.0  # centred and clamped at 1
    a, b = w.clone().requires_grad_(True), w.clone().requires_grad_(True)
    ya, yb = exact_training.xnor_weight(a), xnor_weight(b)
    assert torch.equal(ya, yb) and (ya[1] == 0).all() and (ya[2].abs() == ya[2].abs().max()).any()
    for layout in (torch.contiguous_format, torch.channels_last):
        g = torch.randn(*shape).contiguous(memory_format=layout)
        (ga,) = torch.autograd.grad(ya, a, g, retain_graph=True)
        expected = xnor_weight_grad(w, g)
        assert (ga - expected).abs().max() <= 1e-5 * expected.abs().max()
        assert torch.equal(ga[1], torch.zeros_like(ga[1])) and ga.is_contiguous(memory_format=layout)
        grad_fn = ya.grad_fn.name()
        assert 'xnor_weight_float32' in grad_fn, grad_fn


def test_block_takes_the_fused_op_only_where_it_applies():
    blk = BinaryConvBlock(8, 8, 3).train()
    x = torch.randn(2, 8, 6, 6)
    assert exact_training.applies(x, blk.bn, blk.conv)
    assert not exact_training.applies(x.contiguous(memory_format=torch.channels_last), blk.bn, blk.conv)
    assert not exact_training.applies(x.double(), blk.bn, blk.conv)
    assert not exact_training.applies(x[:1, :, :1, :1], blk.bn, blk.conv)  # one value per channel: BatchNorm's error
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert not exact_training.applies(x, blk.bn, blk.conv)
    assert not exact_training.applies(x, blk.double().bn, blk.conv)  # float64 parameters
    blk.float().bn.eval()  # frozen statistics
    assert not exact_training.applies(x, blk.bn, blk.conv)


def test_check_failure_falls_back_to_the_plain_ops(monkeypatch):
    monkeypatch.setitem(exact_training._check, 'ok', None)
    monkeypatch.setattr(exact_training, '_matches_aten', lambda: False)
    blk = BinaryConvBlock(8, 8, 3).train()
    assert not exact_training.applies(torch.randn(2, 8, 6, 6), blk.bn, blk.conv)


@pytest.mark.parametrize('name', ['bnas_mini', 'bnas_a'])
def test_network_trains_as_with_the_plain_ops(name, plain_ops):
    """Training steps of a whole network (zero tails, reduction shortcuts, the release's float last convs) on
    contiguous tensors: the same logits and loss, bit for bit, the same BatchNorm running statistics, and the
    plain ops' gradients to float rounding."""
    torch.manual_seed(0)
    fused = timm.create_model(name, num_classes=10).train()
    plain = copy.deepcopy(fused)
    x, y = torch.randn(6, 3, 32, 32), torch.randint(0, 10, (6,))
    out = fused(x)
    loss = F.cross_entropy(out, y)
    loss.backward()
    plain_ops()
    out_ref = plain(x)
    loss_ref = F.cross_entropy(out_ref, y)
    loss_ref.backward()
    assert torch.equal(out, out_ref) and torch.equal(loss, loss_ref)
    assert all(torch.equal(p, q) for p, q in zip(fused.buffers(), plain.buffers()))
    # (some gradients are mathematically zero and computed as float noise: the scale is floored)
    floor = 1e-3 * max(q.grad.abs().max().item() for q in plain.parameters())
    for (k, p), q in zip(fused.named_parameters(), plain.parameters()):
        err = (p.grad - q.grad).abs().max().item() / max(q.grad.abs().max().item(), floor)
        assert err < 1e-4, (k, err)


@pytest.mark.parametrize('stride', [1, 2])
def test_max_pool_kernel_gives_torchs_values_and_argmax_positions(stride):
    """The cells' compiled 3x3 max pooling against PyTorch's max_pool2d_with_indices: the same values and the
    same positions (the first maximum in window order: ReLU zeros and rounded values make ties everywhere),
    NaN taken wherever it lies, -inf and -0.0 kept, planes of one row or one column."""
    g = torch.Generator().manual_seed(stride)
    for shape in [(4, 16, 32, 32), (3, 7, 9, 5), (2, 3, 1, 6), (2, 2, 7, 1), (1, 1, 1, 1), (2, 5, 16, 16)]:
        x = torch.relu(torch.randn(shape, generator=g) * 2).round()
        flat = x.view(-1)
        flat[torch.randperm(flat.numel(), generator=g)[:max(1, flat.numel() // 50)]] = float('nan')
        flat[::13] = float('-inf')
        flat[5::17] = -0.0
        out, idx = torch.ops.bnas_zoo_kernels.max_pool3x3(x, stride)
        ref, ref_idx = torch.ops.aten.max_pool2d_with_indices(x, [3, 3], [stride, stride], [1, 1], [1, 1], False)
        assert torch.equal(idx, ref_idx)
        assert torch.equal(out.isnan(), ref.isnan())
        assert torch.equal(out.nan_to_num(0.0), ref.nan_to_num(0.0))
        assert torch.equal(out.signbit(), ref.signbit())
    x = torch.full((1, 1, 3, 3), float('-inf'))  # nothing greater than the start: the window's first element
    assert torch.equal(torch.ops.bnas_zoo_kernels.max_pool3x3(x, 1)[1],
                       torch.ops.aten.max_pool2d_with_indices(x, [3, 3], [1, 1], [1, 1], [1, 1], False)[1])


@pytest.mark.parametrize('stride', [1, 2])
def test_cells_max_pool_takes_the_kernel_with_torchs_gradients(stride):
    from bnas_zoo.operations import MaxPool3x3
    x = torch.relu(torch.randn(3, 8, 11, 10) * 2).round()
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = MaxPool3x3(stride)(a), nn.MaxPool2d(3, stride, 1)(b)
    assert 'max_pool3x3' in ya.grad_fn.name(), ya.grad_fn.name()
    assert torch.equal(ya, yb)
    r = torch.randn(ya.shape)
    (ya * r).sum().backward()
    (yb * r).sum().backward()
    assert torch.equal(a.grad, b.grad)
    with torch.no_grad():  # traced graphs record plain max_pool2d (portable: no bnas_zoo op)
        traced = torch.jit.trace(MaxPool3x3(stride), x)
    assert 'bnas_zoo::' not in str(traced.graph) and 'aten::max_pool2d' in str(traced.graph)
    assert torch.equal(traced(x), yb)
