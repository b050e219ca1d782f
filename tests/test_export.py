"""Portable exports: eval models export with standard operators only (no bnas_zoo op), bit-identical to the
custom-op forward; the ONNX file runs in onnxruntime, the .pt2 and TorchScript files in a Python that never
imports bnas_zoo."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

import bnas_zoo
from bnas_zoo import binary
from bnas_zoo.binary import BinaryConv2d, BinaryConvBlock
from bnas_zoo.cli import main
from bnas_zoo.export import export_model
from conftest import ALL_MODELS, small_input_size

CUSTOM_CELL = {
    'normal': [['bin_sep_conv_3x3', 0], ['bin_conv_5x5', 1], ['avg_pool_3x3', 1], ['bin_dil_conv_5x5', 2],
               ['max_pool_3x3', 0], ['bin_conv_3x3', 3], ['none', 3], ['none', 4]],
    'normal_concat': [2, 3, 4, 5],
    'reduce': [['max_pool_3x3', 0], ['bin_conv_3x3', 1], ['avg_pool_3x3', 0], ['bin_sep_conv_5x5', 2],
               ['none', 3], ['bin_dil_conv_3x3', 2], ['none', 3], ['none', 4]],
    'reduce_concat': [2, 3, 4, 5],
}


def _custom():
    return timm.create_model('bnas_custom', genotype=CUSTOM_CELL, layers=5, channels=8, stem='cifar',
                             num_classes=10)


def _portable_forward(model, x):
    """The forward as exported: every binary layer on standard operators."""
    old, calls = binary._portable, []
    binary._portable = lambda training: calls.append(training) or not training
    try:
        with torch.no_grad():
            y = model(x)
    finally:
        binary._portable = old
    assert calls and not any(calls)  # every binary layer took the standard-operator path
    return y


@pytest.mark.parametrize('name', ALL_MODELS + ['custom'])
def test_export_forward_is_bit_identical_to_the_custom_ops(name):
    model = (_custom() if name == 'custom' else timm.create_model(name)).eval()
    x = torch.randn(2, *small_input_size(name if name != 'custom' else 'bnas_mini'))
    expected = model(x)  # eager eval: the custom ops (straight-through gradients kept)
    assert expected.requires_grad
    got = _portable_forward(model, x)
    assert torch.equal(got, expected.detach())


def test_eager_eval_keeps_straight_through_gradients_and_training_is_untouched():
    conv = BinaryConv2d(4, 4, 3, padding=1).eval()
    x = (torch.randn(1, 4, 6, 6) * 0.5).requires_grad_()
    conv(x).sum().backward()
    assert x.grad.abs().sum() > 0  # torch.sign alone would give a zero gradient
    assert not binary._portable(True)
    gm = torch.export.export(BinaryConv2d(4, 4, 3, padding=1).train(), (torch.randn(1, 4, 6, 6),)).graph_module
    targets = {str(n.target) for n in gm.graph.nodes if n.op == 'call_function'}
    assert {'bnas_zoo.sign_ste.default', 'bnas_zoo.xnor_weight.default'} <= targets
    gm = torch.export.export(BinaryConv2d(4, 4, 3, padding=1).eval(), (torch.randn(1, 4, 6, 6),)).graph_module
    assert not any('bnas_zoo' in str(n.target) for n in gm.graph.nodes)


def _trained_like(model: nn.Module, x: torch.Tensor, seed: int = 0) -> int:
    """Give every BatchNorm statistics as a trained network has them (not the initial 0/1), with a margin:
    each BatchNorm that feeds a sign gets, per channel, its threshold (running mean, bias 0) in the middle of
    the widest gap between the channel's values on ``x`` (in its central half), so that no sign input lies
    within float rounding of 0. Channels that are identically 0 on ``x`` (the zero-padded channels of the
    CIFAR cells) keep mean and bias 0: BatchNorm keeps them exactly 0 and the sign sees exact zeros. Returns
    how many exact zeros the binary layers' signs see on ``x``.

    Why: a binary network is discontinuous. With the initial statistics, binary conv sums that are exactly 0
    in theory reach sign() directly, and float rounding (which depends on the summation order of each conv
    kernel, different in onnxruntime) decides +-1; values within rounding of 0 flip likewise. A trained
    network's sign inputs are shifted away from 0; the margin makes that hold for every value of the test."""
    g = torch.Generator().manual_seed(seed)
    sign_bns = set()
    for m in model.modules():
        if isinstance(m, BinaryConvBlock):
            sign_bns.add(m.bn)
        elif isinstance(m, binary.BinarySepConvBlock):
            sign_bns.update((m.bn, m.bn_pw))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d) and m not in sign_bns:
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(c, generator=g) * 0.3)

    def set_threshold(bn, inp):
        v = inp[0].detach().transpose(0, 1).reshape(bn.num_features, -1).sort(dim=1).values
        n = v.shape[1]
        lo, hi = n // 4, max(n // 4 + 1, 3 * n // 4)
        gaps = v[:, lo + 1:hi + 1] - v[:, lo:hi]
        i = gaps.argmax(dim=1, keepdim=True) + lo
        # a central half without a real gap (mostly ReLU zeros, with their rounding noise): the whole range
        whole = (v[:, 1:] - v[:, :-1]).argmax(dim=1, keepdim=True)
        i = torch.where(gaps.amax(dim=1, keepdim=True) > 1e-3, i, whole)
        t = (v.gather(1, i) + v.gather(1, i + 1)).squeeze(1) / 2
        zero = v.abs().amax(dim=1) == 0
        bn.running_mean.copy_(torch.where(zero, 0.0, t))
        bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        if bn.affine:
            bn.weight.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
            bn.bias.zero_()

    zeros = []
    hooks = [bn.register_forward_pre_hook(set_threshold) for bn in sign_bns]
    hooks += [m.register_forward_pre_hook(lambda mod, inp: zeros.append(int((inp[0] == 0).sum())))
              for m in model.modules() if isinstance(m, BinaryConv2d)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return sum(zeros)


def _onnxruntime():
    return pytest.importorskip('onnxruntime', reason='the ONNX tests need onnxruntime: pip install "bnas_zoo[onnx]"')


def _run_onnx(path, x):
    ort = _onnxruntime()
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    return torch.from_numpy(session.run(None, {'input': x.numpy()})[0])


# the bundled cells and stems on small networks (the exporter's time grows with the graph: bnas_mini took 18 s,
# bnas_d 58 s); custom: a cell of every other operation
@pytest.mark.parametrize('name', ['cifar', 'imagenet', 'custom'])
def test_onnx_runs_in_onnxruntime_as_eager(name, tmp_path):
    _onnxruntime()
    if name == 'custom':
        model = _custom().eval()
    else:
        model = timm.create_model('bnas_custom', genotype=f'bnas_{name}', layers=5, channels=8, stem=name,
                                  num_classes=10).eval()
    size = small_input_size('bnas_d' if name == 'imagenet' else 'bnas_mini')
    x = torch.randn(3, *size)  # another batch size than the export example (2): the batch is dynamic
    exact_zeros = _trained_like(model, x)
    if name in ('cifar', 'custom'):  # CIFAR cells: zero-padded channels reach the signs
        assert exact_zeros > 0
    path = export_model(model, 'onnx', tmp_path / f'{name}.onnx', input_size=size)
    import onnx
    proto = onnx.load(str(path))
    ops = {n.op_type for n in proto.graph.node}
    assert 'Sign' in ops and all(n.domain in ('', 'ai.onnx') for n in proto.graph.node)
    meta = {p.key: p.value for p in proto.metadata_props}  # the preprocessing travels with the file
    cfg = model.pretrained_cfg
    assert json.loads(meta['mean']) == pytest.approx(list(cfg['mean']))
    assert json.loads(meta['std']) == pytest.approx(list(cfg['std']))
    assert json.loads(meta['input_size']) == list(size) and meta['interpolation'] == cfg['interpolation']
    with torch.no_grad():
        expected = model(x)
    got = _run_onnx(path, x)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()
    assert torch.equal(got.argmax(1), expected.argmax(1))


def test_onnx_sign_of_zero_and_zero_padding_after_the_sign(tmp_path):
    """A block whose BatchNorm maps identically-zero channels (and pixels) to exact zeros: ONNX keeps
    sign(0) = 0, and pads the signed input with zeros (the borders differ from padding before BN + sign)."""
    _onnxruntime()
    torch.manual_seed(1)
    block = BinaryConvBlock(6, 5, 3, affine=False).eval()
    with torch.no_grad():
        block.bn.running_mean.copy_(torch.tensor([0.0, 0.0, 0.0, 0.3, -0.2, 0.1]))
        block.bn.running_var.copy_(torch.tensor([1.0, 0.5, 2.0, 1.5, 0.7, 1.0]))
    x = torch.randn(2, 6, 7, 7)
    x[:, :3, 2:5, 2:5] = 0.0  # exact zeros on the zero-mean channels, inside and at borders
    x[:, :3, 0, :] = 0.0
    path = export_model(block, 'onnx', tmp_path / 'block.onnx', input_size=(6, 7, 7))
    with torch.no_grad():
        expected = block(x)
        s = torch.sign(block.bn(x))
        assert (s == 0).sum() >= 2 * 3 * (9 + 7)
        w = binary.xnor_weight_value(block.conv.weight)
        sign_zero_is_one = F.relu(F.conv2d(torch.where(s == 0, 1.0, s), w, padding=1))
        padded_before_bn = F.relu(F.conv2d(torch.sign(block.bn(F.pad(x, (1, 1, 1, 1)))), w))
    assert not torch.allclose(sign_zero_is_one, expected)  # the checks below can tell these apart
    assert not torch.allclose(padded_before_bn[..., 0, :], expected[..., 0, :])
    got = _run_onnx(path, x)
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()
    for border in (got[..., 0, :] - expected[..., 0, :], got[..., -1, :] - expected[..., -1, :],
                   got[..., :, 0] - expected[..., :, 0], got[..., :, -1] - expected[..., :, -1]):
        assert border.abs().max() <= 1e-5 * expected.abs().max()


def _run_without_bnas_zoo(code: str, tmp_path) -> str:
    """Run ``code`` in a fresh Python whose path cannot reach bnas_zoo; it must print OK."""
    script = tmp_path / 'run.py'
    script.write_text(textwrap.dedent(code) + textwrap.dedent('''
        import sys
        assert not any(m == 'bnas_zoo' or m.startswith('bnas_zoo.') for m in sys.modules), 'bnas_zoo imported'
        print('OK')
    '''))
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    env['OMP_NUM_THREADS'] = '1'
    # -I: isolated mode (no cwd, no user site, no PYTHONPATH); the meta-path blocker makes any import fail
    blocker = ("import sys\nclass _Block:\n    def find_spec(self, name, path=None, target=None):\n"
               "        if name == 'bnas_zoo' or name.startswith('bnas_zoo.'):\n"
               "            raise ImportError('bnas_zoo is blocked in this test')\n"
               "sys.meta_path.insert(0, _Block())\n")
    runner = tmp_path / 'runner.py'
    runner.write_text(blocker + f"exec(compile(open({str(script)!r}).read(), 'run.py', 'exec'))\n")
    proc = subprocess.run([sys.executable, '-I', str(runner)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_pt2_loads_and_runs_without_bnas_zoo(tmp_path):
    model = timm.create_model('bnas_mini').eval()
    x = torch.randn(3, 3, 32, 32)
    _trained_like(model, x)  # BatchNorm thresholds with a margin on these very inputs: no sign within rounding of 0
    path = export_model(model, 'pt2', tmp_path / 'm.pt2', input_size=(3, 32, 32))
    with torch.no_grad():
        torch.save({'x': x, 'y': model(x)}, tmp_path / 'io.pt')
    out = _run_without_bnas_zoo(f'''
        import torch
        io = torch.load({str(tmp_path / 'io.pt')!r})
        program = torch.export.load({str(path)!r})
        assert not any('bnas_zoo' in str(n.target) for n in program.graph.nodes)
        y = program.module()(io['x'])
        assert (y - io['y']).abs().max() <= 1e-5 * io['y'].abs().max(), (y - io['y']).abs().max()
        assert torch.equal(y.argmax(1), io['y'].argmax(1))
    ''', tmp_path)
    assert out.strip().endswith('OK')


def test_torchscript_trace_loads_and_runs_without_bnas_zoo(tmp_path):
    model = _custom().eval()
    x = torch.randn(3, 3, 32, 32)
    _trained_like(model, x)  # BatchNorm thresholds with a margin on these very inputs: no sign within rounding of 0
    path = export_model(model, 'torchscript', tmp_path / 'm.ts', input_size=(3, 32, 32))
    with torch.no_grad():
        torch.save({'x': x, 'y': model(x)}, tmp_path / 'io.pt')
    _run_without_bnas_zoo(f'''
        import torch
        io = torch.load({str(tmp_path / 'io.pt')!r})
        y = torch.jit.load({str(path)!r})(io['x'])
        assert (y - io['y']).abs().max() <= 1e-5 * io['y'].abs().max(), (y - io['y']).abs().max()
        assert torch.equal(y.argmax(1), io['y'].argmax(1))
    ''', tmp_path)


def test_the_blocker_catches_bnas_zoo(tmp_path):
    """The subprocess of the two tests above fails when the artefact needs bnas_zoo (as a plain eager trace
    of the custom ops does)."""
    conv = BinaryConv2d(3, 4, 3, padding=1).eval()
    gm = torch.export.export(conv.train(), (torch.randn(1, 3, 8, 8),))  # training mode: the custom ops
    torch.export.save(gm, str(tmp_path / 'custom.pt2'))
    with pytest.raises(AssertionError):
        _run_without_bnas_zoo(f'''
            import torch
            torch.export.load({str(tmp_path / 'custom.pt2')!r})
        ''', tmp_path)


def test_cli_export(tmp_path, capsys):
    out = tmp_path / 'sub' / 'mini.pt2'
    # a registered name without a choice of weights is refused: random weights must be asked for
    assert main(['export', 'bnas_mini', '--format', 'pt2', '--output', str(out)]) == 2
    assert '--pretrained' in capsys.readouterr().err and not out.exists()
    assert main(['export', 'bnas_mini', '--format', 'pt2', '--output', str(out), '--input-size', '32',
                 '--random-weights']) == 0
    printed = capsys.readouterr().out
    assert out.is_file() and 'torch.export.load' in printed and 'untrained' in printed
    assert 'mean (0.4914, 0.4822, 0.4465)' in printed and 'std (0.247, 0.2435, 0.2616)' in printed
    extra = {'preprocessing.json': ''}
    program = torch.export.load(str(out), extra_files=extra)
    assert json.loads(extra['preprocessing.json'])['input_size'] == [3, 32, 32]
    assert program.module()(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert main(['export', 'bnas_nope', '--format', 'pt2', '--output', str(out), '--random-weights']) == 2
    assert 'unknown model' in capsys.readouterr().err
    assert main(['export', 'bnas_mini', '--format', 'pt2', '--output', str(tmp_path), '--random-weights']) == 2
    assert 'is a folder' in capsys.readouterr().err
    assert main(['export', 'bnas_mini', '--format', 'pt2', '--out', str(out), '--input-size', '30',
                 '--random-weights']) == 2  # --out: the former spelling of --output
    assert 'multiples of 4' in capsys.readouterr().err
    with pytest.MonkeyPatch.context() as mp:  # ONNX without its optional packages: how to install them
        mp.setitem(sys.modules, 'onnxscript', None)
        assert main(['export', 'bnas_mini', '--format', 'onnx', '--output', str(tmp_path / 'm.onnx'),
                     '--random-weights']) == 2
        assert 'bnas_zoo[onnx]' in capsys.readouterr().err and not (tmp_path / 'm.onnx').exists()
    for argv in (['export', 'bnas_mini', '--format', 'tflite', '--output', str(out)],
                 ['export', 'bnas_mini', '--format', 'pt2']):  # no --output
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
    assert '--output' in capsys.readouterr().err
    # a local-dir: folder is exported with its weights
    model = timm.create_model('bnas_mini').eval()
    x = torch.randn(3, 3, 32, 32)
    _trained_like(model, x)  # BatchNorm thresholds with a margin on these very inputs: no sign within rounding of 0
    from timm.models import save_for_hf
    save_for_hf(model, str(tmp_path / 'run'), model_args=model.architecture_args(), safe_serialization=True)
    assert main(['export', f'local-dir:{tmp_path / "run"}', '--format', 'torchscript',
                 '--output', str(tmp_path / 'run.ts')]) == 0
    assert 'its weights' in capsys.readouterr().out
    with torch.no_grad():
        assert torch.equal(torch.jit.load(str(tmp_path / 'run.ts'))(x), model(x))
