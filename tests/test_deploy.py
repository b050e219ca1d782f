"""Fast 1-bit inference: the packed-bit kernels against F.conv2d at every dispatch level, deployed networks
against the float-simulated ones, the 1-bit file path, export, the reference fallback, the bench command."""
import json
import os
import subprocess
import sys

import pytest
import timm
import torch
import torch.nn.functional as F

import bnas_zoo
from bnas_zoo import kernels
from bnas_zoo.deploy import (DeployedBNASNet, PackedBinaryConv, _bn_scale_shift, _model_source, deploy,
                             resident_weight_bytes)
from bnas_zoo.exactness import calibrate_batchnorm, compare_with_float64, float32_spread
from bnas_zoo.kernels.reference import binary_conv2d_reference, pack_weight_words, pad_channels, unpack_weight_words
from bnas_zoo.program import run_program_reference

from conftest import ALL_MODELS, CIFAR_MODELS, small_input_size

LEVELS = kernels.cpu_isa_levels()


def test_compiled_kernels_are_built_and_used():
    """CI fails here if the compiled path silently fell back to the reference."""
    if os.environ.get('BNAS_ZOO_ALLOW_REFERENCE') == '1':
        pytest.skip('BNAS_ZOO_ALLOW_REFERENCE=1: the reference fallback is accepted on this machine')
    assert kernels.backend() == 'compiled', kernels.build_error()
    assert LEVELS[-1] == 'generic' and kernels.cpu_isa() == LEVELS[0]
    flags = open('/proc/cpuinfo').read() if os.path.exists('/proc/cpuinfo') else ''
    if ' avx512_vpopcntdq' in flags:
        assert LEVELS[0] == 'avx512vpopcntdq'
    if ' avx2' in flags:
        assert 'avx2' in LEVELS


def _ternary(shape, zeros: bool, gen) -> torch.Tensor:
    if zeros:
        return torch.randint(-1, 2, shape, generator=gen).to(torch.int8)
    return (torch.randint(0, 2, shape, generator=gen) * 2 - 1).to(torch.int8)


# (in, out, kernel, stride, dilation, batch, zero weights, residual)
KERNEL_CASES = [
    (64, 64, 3, 1, 1, 1, False, False),
    (37, 20, 3, 2, 1, 2, True, True),
    (130, 33, 5, 1, 2, 1, False, True),
    (70, 17, 5, 2, 1, 3, False, False),
    (200, 48, 1, 1, 1, 1, True, False),
    (5, 16, 3, 1, 2, 2, False, True),
    (96, 40, 1, 2, 1, 1, False, False),
    (128, 128, 3, 2, 2, 1, True, True),
    (36, 36, 3, 1, 1, 2, False, True),     # widths of BNAS-A and BNAS-D-grouped: dense bit im2col
    (72, 10, 3, 1, 2, 1, False, False),
    (88, 88, 5, 1, 1, 1, False, True),
    (144, 36, 3, 2, 1, 1, True, False),
    (256, 24, 1, 1, 1, 2, False, True),
]


@pytest.mark.parametrize('level', LEVELS)
@pytest.mark.parametrize('case', KERNEL_CASES, ids=lambda c: 'x'.join(map(str, c[:6])) + ('-zw' if c[6] else '') + ('-res' if c[7] else ''))
def test_kernel_equals_conv2d_on_ternary_tensors(level, case):
    cin, cout, k, stride, dil, n, zero_w, res = case
    gen = torch.Generator().manual_seed(hash(case) % 2**31)
    pad = dil * (k - 1) // 2
    x = torch.randn(n, cin, 13, 11, generator=gen)
    x[:, : cin // 4] = 0.0                      # exact zeros: sign(BN(0)) = sign(shift)
    scale = torch.randn(cin, generator=gen)
    shift = torch.randn(cin, generator=gen)
    shift[: max(1, cin // 8)] = 0.0             # ... which is 0 for these channels
    w = _ternary((cout, cin, k, k), zero_w, gen)
    alpha = torch.rand(cout, generator=gen) + 0.1
    if cout % 3 == 0:
        alpha[::3] *= -1  # a negative scale (not an XNOR alpha): the float ReLU path
    int_bias = torch.randint(-7, 8, (cout,), generator=gen, dtype=torch.int32)
    a = torch.sign(x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1))
    assert (a == 0).any() and (a != 0).any()
    expected = F.conv2d(a, w.float(), None, stride, pad, dil) + int_bias.view(1, -1, 1, 1).float()
    expected = torch.relu(alpha.view(1, -1, 1, 1) * expected)
    residual = torch.randn(expected.shape, generator=gen) if res else None
    if res:
        expected = expected + residual

    wbits, wmask, wcounts = pack_weight_words(w)
    assert (wmask.numel() > 0) == bool((w == 0).any())
    assert torch.equal(unpack_weight_words(wbits, wmask, cout, cin, k), w.float())
    if level != 'reference':  # the compiled packing, from int8 signs and from float weights
        for src in (w, w.float() * 0.5):
            for got, ref in zip(torch.ops.bnas_zoo_kernels.pack_binary_weights(src), (wbits, wmask, wcounts)):
                assert torch.equal(got, ref)
    padded = -(-cout // 16) * 16
    args = (x, scale, shift, wbits, wmask, wcounts, pad_channels(alpha, padded), pad_channels(int_bias, padded), cout, k,
            stride, pad, dil, True, residual)
    assert torch.equal(binary_conv2d_reference(*args), expected)
    if level != 'reference':
        with kernels.use_isa(level):
            out = torch.ops.bnas_zoo.binary_conv2d(*args)
        assert out.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(out, expected), (out - expected).abs().max()


# (in, out, kernel, stride, dilation, zero weights, residual): inputs with no exact zero, so that the pixels
# away from the border take the kernels' fast epilogue (counts in registers, XNOR scales >= 0)
FAST_CASES = [
    (64, 64, 3, 1, 1, False, False),
    (64, 32, 3, 1, 2, False, True),
    (256, 32, 3, 1, 1, False, True),      # 36 words a pixel, taps read in place: byte counters flushed mid-tap
    (256, 48, 3, 2, 2, True, False),
    (128, 16, 5, 1, 1, False, False),
    (36, 32, 3, 1, 1, False, True),       # through the bit im2col
    (200, 64, 1, 1, 1, False, False),
    (64, 40, 3, 1, 1, False, True),       # a partial last block beside full ones
    (36, 36, 3, 1, 1, False, True),       # ... of 4 channels: part of one vector stored
    (72, 38, 3, 1, 2, False, False),      # ... of 6
]


@pytest.mark.parametrize('level', [lv for lv in LEVELS if lv != 'reference'])
@pytest.mark.parametrize('case', FAST_CASES, ids=lambda c: 'x'.join(map(str, c[:5])) + ('-zw' if c[5] else '') + ('-res' if c[6] else ''))
def test_kernel_fast_epilogue_equals_conv2d(level, case):
    cin, cout, k, stride, dil, zero_w, res = case
    gen = torch.Generator().manual_seed(hash(case) % 2**31)
    pad = dil * (k - 1) // 2
    x = torch.randn(2, cin, 15, 12, generator=gen)
    scale, shift = torch.rand(cin, generator=gen) + 0.5, torch.randn(cin, generator=gen) * 0.1
    a = torch.sign(x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1))
    assert (a != 0).all()
    w = _ternary((cout, cin, k, k), zero_w, gen)
    alpha = torch.rand(cout, generator=gen) + 0.1
    int_bias = torch.randint(-7, 8, (cout,), generator=gen, dtype=torch.int32)
    expected = torch.relu(alpha.view(1, -1, 1, 1) * (F.conv2d(a, w.float(), None, stride, pad, dil)
                                                     + int_bias.view(1, -1, 1, 1).float()))
    residual = torch.randn(expected.shape, generator=gen) if res else None
    if res:
        expected = expected + residual
    wbits, wmask, wcounts = pack_weight_words(w)
    padded = -(-cout // 16) * 16
    args = (x, scale, shift, wbits, wmask, wcounts, pad_channels(alpha, padded), pad_channels(int_bias, padded), cout, k,
            stride, pad, dil, True, residual)
    with kernels.use_isa(level):
        out = torch.ops.bnas_zoo.binary_conv2d(*args)
    assert torch.equal(out, expected), (out - expected).abs().max()


@pytest.mark.parametrize('level', [lv for lv in LEVELS if lv != 'reference'])
@pytest.mark.parametrize('cin,cout,res', [(64, 64, False), (36, 36, True), (48, 40, True), (80, 128, False)])
def test_kernel_without_relu_equals_conv2d(level, cin, cout, res):
    # no ReLU: the register epilogue (one block, or a tile of up to 64 output channels) stores alpha * sum [+ res]
    gen = torch.Generator().manual_seed(cin * 1000 + cout)
    x = torch.randn(2, cin, 9, 10, generator=gen)
    scale, shift = torch.rand(cin, generator=gen) + 0.5, torch.randn(cin, generator=gen) * 0.1
    a = torch.sign(x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1))
    w = _ternary((cout, cin, 3, 3), False, gen)
    alpha = torch.rand(cout, generator=gen) + 0.1
    int_bias = torch.randint(-7, 8, (cout,), generator=gen, dtype=torch.int32)
    expected = alpha.view(1, -1, 1, 1) * (F.conv2d(a, w.float(), None, 1, 1) + int_bias.view(1, -1, 1, 1).float())
    assert (expected < 0).any()
    residual = torch.randn(expected.shape, generator=gen) if res else None
    if res:
        expected = expected + residual
    wbits, wmask, wcounts = pack_weight_words(w)
    padded = -(-cout // 16) * 16
    with kernels.use_isa(level):
        out = torch.ops.bnas_zoo.binary_conv2d(x, scale, shift, wbits, wmask, wcounts, pad_channels(alpha, padded),
                                               pad_channels(int_bias, padded), cout, 3, 1, 1, 1, False, residual)
    assert torch.equal(out, expected), (out - expected).abs().max()


def test_kernel_threads_and_layout_do_not_change_results():
    gen = torch.Generator().manual_seed(1)
    conv = PackedBinaryConv(_ternary((48, 80, 3, 3), False, gen), torch.rand(48, generator=gen), torch.randn(80, generator=gen),
                            torch.randn(80, generator=gen), stride=1, padding=1, dilation=1)
    x = torch.randn(2, 80, 14, 14, generator=gen)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = conv(x)
        torch.set_num_threads(2)
        two = conv(x.contiguous(memory_format=torch.channels_last))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


def _calibrated(model: torch.nn.Module, size, seed: int = 0) -> torch.nn.Module:
    """BatchNorms as training leaves them: random affine parameters, running statistics from data."""
    gen = torch.Generator().manual_seed(seed)
    return calibrate_batchnorm(model, [torch.randn(4, *size, generator=gen) for _ in range(2)], seed=seed)


def _assert_agrees(fast, model: torch.nn.Module, x: torch.Tensor) -> None:
    """The deployed network against the float64 simulation, judged by float32's own spread."""
    ref64, spreads = float32_spread(model, x)
    with torch.no_grad():
        agreement = compare_with_float64(fast(x), ref64, spreads)
    assert agreement.ok, str(agreement)
    assert agreement.decided >= 1, str(agreement)  # the class check decides somewhere


def _program_matches_reference(fast, x: torch.Tensor) -> None:
    """The compiled interpreter computes what the plain-PyTorch one does, bit for bit."""
    with torch.no_grad():
        assert torch.equal(fast.forward_features(x), run_program_reference(x, fast.program_params(), fast.code))


@pytest.mark.parametrize('name', [n for n in ALL_MODELS if n != 'bnas_h'] + ['bnas_d_grouped'])  # bnas_h: bnas_g's cells, wider
def test_deployed_equals_float_simulated(name):
    torch.manual_seed(0)
    size = small_input_size(name)
    model = _calibrated(timm.create_model(name), size)
    fast = deploy(model)
    assert isinstance(fast, DeployedBNASNet) and not any(p.requires_grad for p in fast.parameters())
    x = torch.randn(16, *size, generator=torch.Generator().manual_seed(5))
    _program_matches_reference(fast, x)
    _assert_agrees(fast, model, x)
    # the packed form is the resident one: no binary weight is kept as float
    n_binary = sum(1 for _ in bnas_zoo.binary_convs(model))
    assert sum(1 for m in fast.modules() if isinstance(m, PackedBinaryConv)) == n_binary
    if name in CIFAR_MODELS:  # the identically-zero half of the stage-1 cell outputs is never stored
        assert fast.cells[0].out_range == (0, model.cells[0].out_chs // 2)


def test_agreement_judge_accepts_float32_and_rejects_a_systematic_error():
    """The judge of the deployed network passes float32's own computations and fails an error on every sample
    that is small next to the logits (2 % of one class's logit), which rounding flips do not make, and an error
    beyond float32's spread on three samples of eight (two are what a float32 order may cascade to)."""
    torch.manual_seed(0)
    model = _calibrated(timm.create_model('bnas_mini'), (3, 32, 32))
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    ref64, spreads = float32_spread(model, x)
    assert set(spreads) == {'contiguous', 'channels-last', 'one at a time', 'folded BatchNorm'}
    with torch.no_grad():
        out = model(x)
    assert compare_with_float64(out, ref64, spreads).ok
    wrong = out.clone()
    wrong[:, 3] += 0.02 * ref64.abs().max().float()
    judged = compare_with_float64(wrong, ref64, spreads)
    assert not judged.ok and judged.cascades == 8 and judged.float32_cascades + judged.slack < 8, str(judged)
    three = out.clone()
    three[:3, 3] += 0.2 * ref64.abs().max().float()
    judged = compare_with_float64(three, ref64, spreads)
    assert not judged.ok and judged.beyond == 3, str(judged)
    two = out.clone()
    two[:2, 3] += 0.2 * ref64.abs().max().float()
    judged = compare_with_float64(two, ref64, spreads)
    assert judged.ok and judged.beyond == 2, str(judged)  # their classes follow the cascade: not checked


def test_agreement_judge_counts_cascades_as_float32_orders_make_them():
    """A computation that cascades on more than half of the batch passes when a float32 order cascades on
    nearly as many (seen with bnas_d: the deployed network flipped on five of eight images where the folded
    BatchNorm order flipped on four of them); one that cascades on every sample, or drifts on every sample by
    less than a cascade but more than float32's rounding, fails."""
    gen = torch.Generator().manual_seed(0)
    ref64 = torch.randn(8, 10, generator=gen, dtype=torch.float64) * 4
    scale = ref64.abs().max().item()
    rounding = torch.full((8,), 2e-7 * scale, dtype=torch.float64)
    cascade = 0.02 * scale
    folded = rounding.clone()
    folded[[0, 2, 3, 4]] = cascade
    spreads = {'contiguous': rounding, 'channels-last': rounding, 'folded BatchNorm': folded}

    def computed(cascaded, drift=0.0):
        out = ref64 + 1.5e-7 * scale * torch.randn(8, 10, generator=gen, dtype=torch.float64)
        out[:, 0] += drift
        out[cascaded, 1] += cascade
        return out.float()

    judged = compare_with_float64(computed([0, 2, 3, 4, 5]), ref64, spreads)
    assert judged.ok and judged.cascades == 5 and judged.float32_cascades == 4, str(judged)
    assert judged.rounding < 1e-6 * scale and judged.float32_rounding == pytest.approx(2e-7 * scale), str(judged)
    judged = compare_with_float64(computed(list(range(8))), ref64, spreads)
    assert not judged.ok and judged.cascades == 8 and judged.beyond == 0, str(judged)
    judged = compare_with_float64(computed([0], drift=3e-5 * scale), ref64, spreads)
    assert not judged.ok and judged.cascades == 1 and judged.rounding > 2e-5 * scale, str(judged)


def test_agreement_judge_lets_a_class_follow_a_cascade_but_not_a_rounding_error():
    """A cascade within float32's spread on a sample where no float32 order cascaded may change its class (seen
    with bnas_d_grouped: a flip on a sample whose own float32 spread was rounding-small); a change of class by a
    difference below a cascade but beyond that sample's float32 spread fails."""
    gen = torch.Generator().manual_seed(1)
    ref64 = torch.randn(8, 10, generator=gen, dtype=torch.float64) * 4
    scale = ref64.abs().max().item()
    ref64[:, 0], ref64[:, 1] = scale, scale * 0.9  # class 0, a clear margin of 0.1 * scale
    ref64[7, 1] = scale * (1 - 5e-5)  # sample 7: a margin of 5e-5 of the scale, beyond its rounding
    rounding = torch.full((8,), 2e-7 * scale, dtype=torch.float64)
    folded = rounding.clone()
    folded[[0, 2]] = 0.1 * scale  # a float32 order cascades on two samples
    spreads = {'contiguous': rounding, 'channels-last': rounding, 'folded BatchNorm': folded}
    out = ref64 + 1.5e-7 * scale * torch.randn(8, 10, generator=gen, dtype=torch.float64)
    out[5, 1] += 0.15 * scale  # a cascade on a sample where no float32 order cascaded: class 1 now
    judged = compare_with_float64(out.float(), ref64, spreads)
    assert judged.ok and judged.cascades == 1 and judged.beyond == 0, str(judged)
    assert judged.decided == 5 and judged.same_class == 5, str(judged)  # not 0 and 2 (float32 cascades), nor 5
    out[7, 1] += 1e-4 * scale * 0.8  # below a cascade, beyond float32's spread there: the class flips
    judged = compare_with_float64(out.float(), ref64, spreads)
    assert not judged.ok and judged.cascades == 1 and judged.same_class == 4, str(judged)


def test_folded_batchnorm_is_the_deployed_scale_and_shift():
    from bnas_zoo.exactness import folded_batchnorm
    gen = torch.Generator().manual_seed(3)
    bn = torch.nn.BatchNorm2d(5).eval()
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(5, generator=gen))
        bn.running_var.copy_(torch.rand(5, generator=gen) + 0.1)
        bn.weight.copy_(torch.randn(5, generator=gen))
        bn.bias.copy_(torch.randn(5, generator=gen))
    x = torch.randn(64, 5, 8, 8, generator=gen)
    scale, shift = _bn_scale_shift(_model_source(torch.nn.Sequential(bn)), '0', bn)  # as deploy() folds it
    with folded_batchnorm(bn), torch.no_grad():
        y = bn(x)
    assert torch.equal(y, x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1))
    with torch.no_grad():  # the hooks are gone: torch's BatchNorm again, the same map rounded differently
        assert not torch.equal(bn(x), y) and torch.allclose(bn(x), y, atol=1e-5)


EVERY_OP = {
    'name': 'every_op',
    'normal': [['bin_conv_3x3', 0], ['bin_conv_5x5', 1], ['bin_dil_conv_3x3', 2], ['max_pool_3x3', 1],
               ['bin_dil_conv_5x5', 3], ['avg_pool_3x3', 0], ['none', 4], ['bin_conv_3x3', 2]],
    'normal_concat': [2, 3, 4, 5],
    'reduce': [['bin_conv_5x5', 0], ['avg_pool_3x3', 1], ['max_pool_3x3', 0], ['bin_dil_conv_3x3', 2],
               ['none', 3], ['bin_dil_conv_5x5', 1], ['max_pool_3x3', 0], ['bin_conv_3x3', 4]],
    'reduce_concat': [2, 3, 4, 5],
}
ZERO_MIDDLE = {  # node 3 is identically zero but read by a conv (a materialized zero), node 2 zero in the output
    'name': 'zero_middle',
    'normal': [['none', 0], ['none', 1], ['bin_conv_3x3', 2], ['max_pool_3x3', 0], ['none', 2], ['none', 3],
               ['bin_conv_3x3', 1], ['bin_dil_conv_3x3', 3]],
    'normal_concat': [2, 3, 4, 5],
    'reduce': [['max_pool_3x3', 0], ['none', 1], ['max_pool_3x3', 0], ['none', 2], ['none', 3], ['none', 2],
               ['none', 3], ['none', 4]],
    'reduce_concat': [2, 3, 4, 5],
}


@pytest.mark.parametrize('genotype,stem,kwargs', [
    (EVERY_OP, 'cifar', {}),
    (EVERY_OP, 'imagenet', {}),
    (EVERY_OP, 'cifar', {'fully_binary': True}),
    (ZERO_MIDDLE, 'cifar', {}),
    ('bnas_imagenet', 'imagenet', {'fully_binary': True}),
    ('bnas_cifar', 'cifar', {'inter_cell_skip': False}),
])
def test_deployed_custom_genotypes(genotype, stem, kwargs):
    torch.manual_seed(1)
    size = (3, 32, 32) if stem == 'cifar' else (3, 64, 64)
    model = _calibrated(timm.create_model('bnas_custom', genotype=genotype, layers=5, channels=10, stem=stem,
                                          num_classes=7, **kwargs), size, seed=3)
    x = torch.randn(8, *size)
    fast = deploy(model)
    _program_matches_reference(fast, x)
    _assert_agrees(fast, model, x)


def test_deployed_separable_convs():
    genotype = json.loads(json.dumps(EVERY_OP))
    genotype['normal'][0][0], genotype['reduce'][0][0] = 'bin_sep_conv_3x3', 'bin_sep_conv_5x5'
    torch.manual_seed(2)
    model = _calibrated(timm.create_model('bnas_custom', genotype=genotype, layers=4, channels=8, stem='cifar',
                                          num_classes=5), (3, 32, 32))
    x = torch.randn(8, 3, 32, 32)
    fast = deploy(model)
    _program_matches_reference(fast, x)
    _assert_agrees(fast, model, x)


def _with_zero_signs(model: torch.nn.Module) -> torch.nn.Module:
    """Latent weights whose projection is exactly zero at a few positions (the 1-bit file's zeros list)."""
    with torch.no_grad():
        for i, m in enumerate(bnas_zoo.binary_convs(model)):
            if i % 3 == 0:
                w = m.weight
                w.copy_(w - w.mean(dim=1, keepdim=True))
                w[:, :, 0, 0] = 0.0  # every input channel 0 at this tap: centred and clamped stays 0
    return model


def test_1bit_file_deploys_without_float_weights(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = _with_zero_signs(_calibrated(timm.create_model('bnas_mini'), (3, 32, 32)))
    path = tmp_path / 'model-1bit.safetensors'
    bnas_zoo.save_1bit(model, path, config=dict(architecture='bnas_mini', num_classes=10, model_args={}))

    def no_float_expansion(*args, **kwargs):
        raise AssertionError('the binary weights were expanded to float')
    with monkeypatch.context() as mp:
        mp.setattr(bnas_zoo.packing, 'unpack_state_dict', no_float_expansion)
        fast = bnas_zoo.load_1bit(path, deploy=True)
    assert isinstance(fast, DeployedBNASNet)
    assert any(m.wmask.numel() for m in fast.modules() if isinstance(m, PackedBinaryConv))  # zero signs kept
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(fast(x), deploy(model)(x))
        assert torch.equal(fast(x), deploy(bnas_zoo.load_1bit(path))(x))
    _assert_agrees(fast, model, x)
    packed = [m for m in fast.modules() if isinstance(m, PackedBinaryConv)]
    assert len(packed) == sum(1 for _ in bnas_zoo.binary_convs(model))
    for m in packed:  # bits as int64 words; float only per channel
        assert all(t.dim() == 1 for t in m.buffers() if t.is_floating_point())
        assert m.wbits.dtype == torch.int64


def test_deployed_bnas_d_weight_memory_fits_the_1bit_file(tmp_path):
    model = timm.create_model('bnas_d').eval()
    path = tmp_path / 'model-1bit.safetensors'
    bnas_zoo.save_1bit(model, path, config=dict(architecture='bnas_d', num_classes=1000, model_args={}))
    fast = bnas_zoo.load_1bit(path, deploy=True)
    ratio = resident_weight_bytes(fast) / path.stat().st_size
    assert ratio <= 1.1, ratio


@pytest.mark.parametrize('float_dtype', [torch.float32, torch.bfloat16])
def test_kept_buffers_never_change_a_result(float_dtype):
    """The compiled interpreter keeps a network's buffers from one call to the next (for the next batch of the
    same shape): results equal those of a call on fresh buffers, a result the caller holds (or a view of it)
    survives later calls, another input shape replaces what is kept, and release_memory frees it."""
    if kernels.backend() != 'compiled':
        pytest.skip('the reference interpreter keeps nothing')
    torch.manual_seed(0)
    model = _calibrated(timm.create_model('bnas_mini'), (3, 32, 32))
    fast = deploy(model, float_dtype=float_dtype)
    kept = lambda: torch.ops.bnas_zoo_kernels.workspace_bytes(fast.code_tensor)  # noqa: E731
    gen = torch.Generator().manual_seed(3)
    shapes = [(4, 32), (4, 32), (2, 32), (2, 32), (4, 48), (4, 32)]  # (batch, resolution), every input different
    xs = [torch.randn(n, 3, r, r, generator=gen) for n, r in shapes]
    with torch.no_grad():
        fresh = []
        for x in xs:  # each on buffers of its own
            fresh.append(fast.forward_features(x))
            fast.release_memory()
            assert kept() == 0
        results, kept_bytes = [], {}
        for (n, r), x in zip(shapes, xs):
            results.append(fast.forward_features(x))
            assert kept() > 0
            kept_bytes.setdefault((n, r), kept())
            assert kept() == kept_bytes[(n, r)]  # the same shape again: the same buffers, nothing more
        view = results[0][1:3]
        del results[1]  # a result the caller let go
        results.insert(1, fast.forward_features(xs[1]))
    assert torch.equal(view, fresh[0][1:3])
    for i, (r, f) in enumerate(zip(results, fresh)):
        assert torch.equal(r, f), i
    if float_dtype == torch.float32:
        for r, x in zip(results, xs):
            assert torch.equal(r, run_program_reference(x, fast.program_params(), fast.code))
    assert len({r.data_ptr() for r in results}) == len(results)


def test_one_deployed_network_called_from_several_threads():
    """Calls of the same network from several threads at once each get their own result (a call that finds the
    kept buffers in use works in memory of its own). A smoke test: it fails only when calls happen to overlap."""
    import threading
    torch.manual_seed(0)
    model = _calibrated(timm.create_model('bnas_mini'), (3, 32, 32))
    fast = deploy(model)
    gen = torch.Generator().manual_seed(4)
    inputs = [torch.randn(2 + i % 3, 3, 32, 32, generator=gen) for i in range(6)]
    with torch.no_grad():
        expected = [fast(x) for x in inputs]
    errors = []

    def work(k: int) -> None:
        try:
            with torch.no_grad():
                for r in range(8):
                    i = (k + r) % len(inputs)
                    if not torch.equal(fast(inputs[i]), expected[i]):
                        errors.append((k, r))
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_deployed_network_exports_and_runs_exported():
    torch.manual_seed(0)
    model = _calibrated(timm.create_model('bnas_custom', genotype='bnas_cifar', layers=3, channels=8,
                                          num_classes=4), (3, 32, 32))
    fast = deploy(model)
    x = torch.randn(1, 3, 32, 32)
    exported = torch.export.export(fast, (x,))
    ops = {str(n.target) for n in exported.graph.nodes if n.op == 'call_function'}
    assert 'bnas_zoo.run_program.default' in ops  # the whole cell stack as one op
    with torch.no_grad():
        assert torch.equal(exported.module()(x), fast(x))


def test_reference_fallback_warns_once_and_gives_the_same_outputs(tmp_path):
    torch.manual_seed(0)
    model = _calibrated(timm.create_model('bnas_mini'), (3, 32, 32))
    x = torch.randn(2, 3, 32, 32)
    torch.save({'x': x, 'state': model.state_dict()}, tmp_path / 'in.pt')
    with torch.no_grad():
        expected = deploy(model)(x)
    script = f"""
import warnings, torch, timm, bnas_zoo
d = torch.load({str(tmp_path / 'in.pt')!r}, weights_only=True)
m = timm.create_model('bnas_mini'); m.load_state_dict(d['state']); m.eval()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    fast = bnas_zoo.deploy(m)
    bnas_zoo.deploy(m)
    with torch.no_grad():
        out = fast(d['x'])
msgs = [str(w.message) for w in caught if 'compiled binary kernels unavailable' in str(w.message)]
assert len(msgs) == 1, msgs
assert bnas_zoo.kernels.backend() == 'reference'
torch.save(out, {str(tmp_path / 'out.pt')!r})
"""
    env = dict(os.environ, BNAS_ZOO_DISABLE_KERNELS='1', HF_HUB_OFFLINE='1')
    env.pop('BNAS_ZOO_REQUIRE_KERNELS', None)
    subprocess.run([sys.executable, '-c', script], check=True, env=env, timeout=300)
    assert torch.equal(torch.load(tmp_path / 'out.pt', weights_only=True), expected)


@pytest.mark.slow
def test_trained_digits_run_keeps_its_accuracy_when_deployed(tmp_path):
    from bnas_zoo.train.data import EMBEDDED_MEAN, EMBEDDED_STD, build_datasets
    from bnas_zoo.train.engine import TrainSetup, run_training
    from bnas_zoo.train.recipes import load_recipe
    recipe = load_recipe('embedded', {'epochs': 2, 'batch_size': 32, 'lr': 0.003})
    cfg = dict(input_size=(3, 32, 32), mean=EMBEDDED_MEAN, std=EMBEDDED_STD)
    train_ds, eval_ds, classes = build_datasets(recipe, cfg, None, 'embedded')
    torch.manual_seed(0)
    model = timm.create_model('bnas_custom', genotype='bnas_cifar', layers=3, channels=12, stem='cifar',
                              num_classes=classes)
    run_training(TrainSetup(model=model, train_ds=torch.utils.data.Subset(train_ds, range(640)), eval_ds=eval_ds,
                            recipe=recipe, output=tmp_path, model_name='bnas_custom', seed=0, progress=False,
                            export_args=model.architecture_args()))
    trained = timm.create_model(f'local-dir:{tmp_path}', pretrained=True).eval()
    fast = deploy(trained)
    loader = torch.utils.data.DataLoader(eval_ds, batch_size=128)
    correct_float = correct_fast = 0
    with torch.no_grad():
        for images, labels in loader:
            ref, out = trained(images), fast(images)
            assert torch.equal(ref.argmax(1), out.argmax(1))
            correct_float += (ref.argmax(1) == labels).sum().item()
            correct_fast += (out.argmax(1) == labels).sum().item()
    assert correct_fast == correct_float and correct_float > 0.3 * len(eval_ds)


def test_bfloat16_float_parts():
    """The opt-in bfloat16 float parts: bfloat16 weights (less memory), the compiled interpreter equal to the
    reference one, and outputs close to the float32 deployed network's."""
    model = _calibrated(timm.create_model('bnas_custom', genotype='bnas_imagenet', layers=4, channels=16,
                                          stem='imagenet', num_classes=10), (3, 64, 64))
    exact, half = deploy(model), deploy(model, float_dtype=torch.bfloat16)
    assert half.stems[1].weight.dtype == torch.bfloat16 and half.cells[1].shortcut.weight.dtype == torch.bfloat16
    assert resident_weight_bytes(half) < resident_weight_bytes(exact)
    x = torch.randn(8, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    _program_matches_reference(half, x)
    with torch.no_grad():
        a, b = exact(x), half(x)
    assert not torch.equal(a, b)  # bfloat16 rounding, amplified by the signs it flips (see the README's measurement)
    assert F.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.9
    with pytest.raises(bnas_zoo.BnasError, match='float_dtype'):
        deploy(model, float_dtype=torch.float16)


def test_deploy_refuses_other_models():
    with pytest.raises(bnas_zoo.BnasError, match='expected a bnas model'):
        deploy(timm.create_model('resnet18'))
    with torch.device('meta'):
        model = timm.create_model('bnas_mini')
    with pytest.raises(bnas_zoo.BnasError, match='run on the CPU, and this model is on meta'):
        deploy(model)


def test_portable_kernels_alone(tmp_path):
    """The kernels as built where the CPU is not x86-64 (no x86 instruction-set files): the portable level
    only, and the same outputs as the reference, kernel by kernel and for a whole deployed network."""
    script = """
import torch, timm, bnas_zoo
from bnas_zoo import kernels
from bnas_zoo.exactness import calibrate_batchnorm
from bnas_zoo.kernels.reference import binary_conv2d_reference, pack_weight_words, pad_channels
from bnas_zoo.program import run_program_reference
assert kernels.backend() == 'compiled', kernels.build_error()
assert kernels.cpu_isa_levels() == ['generic'], kernels.cpu_isa_levels()
g = torch.Generator().manual_seed(0)
for cin, cout, k, s, d in [(36, 20, 3, 1, 1), (130, 16, 5, 2, 2), (64, 33, 1, 1, 1)]:
    x = torch.randn(2, cin, 9, 11, generator=g)
    x[:, :5] = 0
    w = torch.randint(-1, 2, (cout, cin, k, k), generator=g).to(torch.int8)
    scale, shift = torch.randn(cin, generator=g), torch.randn(cin, generator=g)
    shift[:3] = 0
    bits, mask, counts = pack_weight_words(w)
    for got, ref in zip(torch.ops.bnas_zoo_kernels.pack_binary_weights(w), (bits, mask, counts)):
        assert torch.equal(got, ref)
    padded = -(-cout // 16) * 16
    args = (x, scale, shift, bits, mask, counts, pad_channels(torch.rand(cout, generator=g), padded),
            pad_channels(torch.randint(-3, 4, (cout,), generator=g, dtype=torch.int32), padded), cout, k, s,
            d * (k - 1) // 2, d, True, None)
    assert torch.equal(torch.ops.bnas_zoo.binary_conv2d(*args), binary_conv2d_reference(*args))
model = calibrate_batchnorm(timm.create_model('bnas_mini'), [torch.randn(4, 3, 32, 32, generator=g)])
fast = bnas_zoo.deploy(model)
x = torch.randn(2, 3, 32, 32, generator=g)
with torch.no_grad():
    assert torch.equal(fast.forward_features(x), run_program_reference(x, fast.program_params(), fast.code))
print('portable ok')
"""
    env = dict(os.environ, BNAS_ZOO_PORTABLE_KERNELS='1', BNAS_ZOO_REQUIRE_KERNELS='1', HF_HUB_OFFLINE='1')
    r = subprocess.run([sys.executable, '-c', script], env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0 and 'portable ok' in r.stdout, r.stdout + r.stderr


def test_bench_command(capsys):
    from bnas_zoo.cli import main
    assert main(['bench', 'bnas_mini', '--batch-size', '1', '--threads', '1', '--repeats', '2', '--layers',
                 '--baseline', 'resnet18', 'lcnet_050', '--bf16', '--profile']) == 0
    out = capsys.readouterr().out
    assert 'bnas_mini (deployed)' in out and 'resnet18' in out and 'lcnet_050' in out and 'max |diff|' in out
    assert 'bnas_mini (deployed, bfloat16)' in out and 'bfloat16 float parts vs float32 deployed logits' in out
    assert "bnas_mini: deployed vs the float64 simulation on 8 random images: within float32's own spread" in out
    assert 'bfloat16: this CPU has' in out
    assert 'popcount peak' in out and '% peak' in out  # the per-layer table
    assert 'calibrated' in out  # untrained weights: calibrated BatchNorms, and it says so
    assert 'where the deployed forward pass spends its time' in out and '(head)' in out  # --profile


def test_program_profile_times_every_instruction_of_the_program():
    from collections import Counter

    from bnas_zoo.bench import format_program_profile, profile_program
    from bnas_zoo.program import OPCODES, decode
    model = _calibrated(timm.create_model('bnas_mini'), (3, 32, 32))
    fast = deploy(model)
    x = torch.randn(2, 3, 32, 32)
    times = torch.ops.bnas_zoo_kernels.run_program_profile(x, fast.program_params(), fast.code_tensor, fast.out_total)
    instructions = decode(fast.code)[3]
    assert len(times) == len(instructions) and all(t >= 0 for t in times)
    steps, call_ms, head_ms = profile_program(fast, (3, 32, 32), batch=2, threads=1, repeats=3)
    assert Counter({st.kind: st.count for st in steps}) == Counter(OPCODES[op][0] for op, _ in instructions)
    assert [st.ms for st in steps] == sorted((st.ms for st in steps), reverse=True)
    binary = next(st for st in steps if st.kind == 'BIN')
    assert binary.count == sum(1 for _ in bnas_zoo.binary_convs(model)) and binary.ms > 0
    assert call_ms > 0 and head_ms > 0
    table = format_program_profile(steps, call_ms, head_ms)
    assert 'BIN' in table and 'binary convs' in table and 'forward' in table


def test_bench_table_compares_each_baseline_with_its_own_deployed_network():
    from bnas_zoo.bench import NetworkTiming, format_network_timings
    size = (3, 224, 224)
    rows = [NetworkTiming('a (deployed)', 'deployed', 1, 2, size, 10.0, 1), NetworkTiming('r18', 'baseline', 1, 2, size, 20.0, 1),
            NetworkTiming('h (deployed)', 'deployed', 1, 2, size, 40.0, 1), NetworkTiming('r18', 'baseline', 1, 2, size, 20.0, 1)]
    lines = format_network_timings(rows).splitlines()
    assert lines[2].endswith('2.00x') and lines[4].endswith('0.50x')
