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

from bnas_zoo.binary import BinaryConvBlock
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
