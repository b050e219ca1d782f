import pytest
import torch
import torch.nn.functional as F

from bnas_zoo.binary import (
    BinaryConv2d, BinaryConvBlock, attach_latent_projection, binary_param_names, center_clamp, project_latent_,
    scale_grad, sign_ste, sign_ste_reference, xnor_weight, xnor_weight_reference,
)


def _latent(out=5, inp=4, k=3, seed=0):
    """A latent weight whose projection hits the clamp boundary (|W| = 1) and has exact zeros."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, inp, k, k, generator=g) * 0.8
    w[:, :, 2, 2] = 0.3     # constant across input channels: centred to exactly 0, sign 0 as in the release
    w[0, :, 0, 0] = torch.tensor([3.0, -0.5, -0.5, -0.5])  # centred: 2.625 -> clamped to 1
    return w


@pytest.mark.parametrize('fn', [sign_ste, sign_ste_reference])
def test_sign_ste_values_and_clipped_gradient(fn):
    x = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.3, 1.0, 1.5], requires_grad=True)
    y = fn(x)
    assert y.tolist() == [-1.0, -1.0, -1.0, 0.0, 1.0, 1.0, 1.0]
    y.backward(torch.arange(1.0, 8.0))
    # gradient passed where |x| < 1, zeroed where |x| >= 1
    assert x.grad.tolist() == [0.0, 0.0, 3.0, 4.0, 5.0, 0.0, 0.0]


def test_sign_ste_op_equals_its_detach_definition():
    x = torch.randn(4, 8, 5, 5) * 1.5
    x[0, 0, 0, :3] = torch.tensor([1.0, -1.0, 0.0])
    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    g = torch.randn_like(x)
    ya, yb = sign_ste(a), sign_ste_reference(b)
    assert torch.equal(ya, yb)
    ya.backward(g)
    yb.backward(g)
    assert torch.equal(a.grad, b.grad)
    # one node in an FX graph; exportable
    gm = torch.fx.symbolic_trace(lambda t: sign_ste(t) * 2)
    assert any('sign_ste' in str(n.target) for n in gm.graph.nodes)
    exported = torch.export.export(_SignModule(), (x,))
    assert torch.equal(exported.module()(x), torch.sign(x))


class _SignModule(torch.nn.Module):
    def forward(self, x):
        return sign_ste(x)


def test_scale_grad_is_identity_in_value():
    x = torch.randn(10, requires_grad=True)
    y = scale_grad(x, 7.5)
    assert torch.equal(y, x)
    y.sum().backward()
    assert torch.allclose(x.grad, torch.full_like(x, 7.5))


def test_xnor_weight_op_equals_its_detach_definition():
    w = _latent() * 3
    a, b = w.clone().requires_grad_(True), w.clone().requires_grad_(True)
    ya, yb = xnor_weight(a), xnor_weight_reference(b)
    assert torch.equal(ya, yb)
    g = torch.randn_like(w)
    ya.backward(g)
    yb.backward(g)
    assert torch.allclose(a.grad, b.grad, rtol=1e-5, atol=1e-5)


def test_xnor_weight_forward_is_sign_times_alpha_of_the_projected_latent():
    w = _latent()
    wp = (w - w.mean(1, keepdim=True)).clamp(-1, 1)   # the release's centring and clamping
    assert (wp.abs() == 1).any() and (wp == 0).any()
    alpha = wp.abs().mean(dim=(1, 2, 3), keepdim=True)
    wb = xnor_weight(w)
    assert torch.allclose(wb, torch.sign(wp) * alpha, rtol=1e-6, atol=0)
    for o in range(w.shape[0]):  # values {-alpha, 0, +alpha} per output channel
        assert len(set(wb[o].abs().unique().tolist()) - {0.0}) == 1
    assert torch.equal(wb == 0, wp == 0)
    assert torch.equal(center_clamp(w), wp)


@pytest.mark.parametrize('fn', [xnor_weight, xnor_weight_reference])
@pytest.mark.parametrize('scale', [1.0, 14.0])
def test_xnor_weight_gradient_equals_release_formula(scale, fn):
    """The latent weight's gradient must be the release's XNOR-Net update (spec §3), computed here
    independently: g = dL/d(binarized weight) from a plain convolution, then the formula, evaluated (as the
    release does) at the centred, clamped latent."""
    w = _latent() * scale  # 14: far outside [-1, 1], most projected weights sit on the clamp boundary
    x = torch.randn(2, w.shape[1], 8, 8)
    r = torch.randn(2, w.shape[0], 8, 8)

    w_ours = w.clone().requires_grad_(True)
    (F.conv2d(x, fn(w_ours), padding=1) * r).sum().backward()

    wp = (w - w.mean(1, keepdim=True)).clamp(-1, 1)
    n = wp[0].numel()
    alpha = wp.abs().sum(dim=(1, 2, 3), keepdim=True) / n
    wb = (torch.sign(wp) * alpha).requires_grad_(True)
    (F.conv2d(x, wb, padding=1) * r).sum().backward()
    g = wb.grad
    inside = (wp.abs() <= 1).float()
    expected = alpha * inside * g + torch.sign(wp) * (torch.sign(wp) * g).mean(dim=(1, 2, 3), keepdim=True)
    expected = expected * (1 - 1 / w.shape[1]) * n

    assert torch.allclose(w_ours.grad, expected, rtol=1e-5, atol=1e-5)
    assert w_ours.grad[0, 0, 0, 0] != 0  # a weight on the clamp boundary keeps its gradient


def test_binary_conv_block_signs_input_and_pads_with_zero():
    block = BinaryConvBlock(4, 6, 3, stride=1, dilation=2).eval()
    x = torch.randn(2, 4, 9, 9)
    xs = torch.sign(block.bn(x))
    expected = F.relu(F.conv2d(xs, xnor_weight(block.conv.weight), padding=2, dilation=2))
    assert torch.equal(block(x), expected)
    fp = BinaryConv2d(4, 6, 3, padding=1, bias=False, binary_weights=False)
    assert torch.equal(fp(x), F.conv2d(torch.sign(x), fp.weight, padding=1))


def test_latent_projection_before_every_optimizer_step():
    """As the release: the update applies to the centred, clamped latent (W <- P(W) - lr * grad)."""
    model = torch.nn.Sequential(BinaryConvBlock(3, 4, 3), BinaryConvBlock(4, 4, 1, binary_weights=False))
    with torch.no_grad():
        model[0].conv.weight.mul_(20)  # far outside [-1, 1]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    handle = attach_latent_projection(opt, model)
    model(torch.randn(2, 3, 8, 8)).square().sum().backward()
    before = model[0].conv.weight.detach().clone()
    grad = model[0].conv.weight.grad.clone()
    fp_before = model[1].conv.weight.detach().clone()
    fp_grad = model[1].conv.weight.grad.clone()
    opt.step()
    assert torch.allclose(model[0].conv.weight, center_clamp(before) - 0.1 * grad, atol=1e-6)
    assert not torch.allclose(model[0].conv.weight, before - 0.1 * grad, atol=1e-3)
    # float-weight convs are left alone
    assert torch.allclose(model[1].conv.weight, fp_before - 0.1 * fp_grad, atol=1e-6)
    handle.remove()
    assert binary_param_names(model) == {'0.conv.weight'}


def test_project_latent_in_place():
    conv = BinaryConv2d(3, 2, 3)
    with torch.no_grad():
        conv.weight.mul_(10)
    expected = center_clamp(conv.weight.detach())
    project_latent_(conv)
    assert torch.equal(conv.weight, expected)
