"""Portable exports of an eval-mode network: ONNX, torch.export (``.pt2``) and TorchScript (traced).

In eval mode a binary network is sign, convolution with fixed binarized weights, BatchNorm and pooling; under
export or tracing, :class:`~bnas_zoo.binary.BinaryConv2d` computes with standard operators only (``torch.sign``
and plain tensor ops for ``sign(P(W)) * alpha``, bit-identical to the custom ops). The artefacts therefore
hold no ``bnas_zoo`` operator and run where torch (``.pt2``, TorchScript) or onnxruntime (ONNX) runs, without
``import bnas_zoo``. :func:`export_model` refuses to write an artefact that still names a ``bnas_zoo`` op.

ONNX uses torch's dynamo-based exporter (``torch.onnx.export(..., dynamo=True)``: torch.export, then
onnxscript), the maintained one, which handles every bnas network; the older TorchScript-based exporter
(``dynamo=False``, deprecated by torch) is about ten times faster but cannot export the ImageNet networks
(``batch_norm for unknown channel size``). The weights are stored inside the ``.onnx`` file. All three
artefacts take a batch of any size (dynamic batch dimension) at the input resolution they were exported at.

The artefacts hold float weights (each binary weight as ``sign * alpha``), not packed bits: the 1-bit form
exists only in ``model-1bit.safetensors`` and in :func:`bnas_zoo.deploy`'s network. Each artefact records the
input preprocessing (:func:`preprocessing`: mean, std, input size, resize interpolation and crop): in the ONNX
model's metadata (``metadata_props``), and as ``preprocessing.json`` among the extra files of ``.pt2``
(``torch.export.load(path, extra_files={'preprocessing.json': ''})``) and TorchScript
(``torch.jit.load(path, _extra_files={'preprocessing.json': ''})``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from .errors import BnasError, first_line
from .files import atomic_write

__all__ = ['FORMATS', 'ONNX_OPSET', 'export_model', 'default_input_size', 'preprocessing']

#: the formats :func:`export_model` writes
FORMATS = ('onnx', 'pt2', 'torchscript')
#: the ONNX opset of the exported graphs
ONNX_OPSET = 18
_EXAMPLE_BATCH = 2  # an example batch > 1, so that the exporters keep the batch dimension dynamic


def default_input_size(model: nn.Module) -> Tuple[int, int, int]:
    """(C, H, W) of the model's pretrained config (its native resolution)."""
    cfg = getattr(model, 'pretrained_cfg', None) or getattr(model, 'default_cfg', None) or {}
    size = cfg.get('input_size')
    if not size:
        raise BnasError('the model has no default input size; give one (input_size=(C, H, W) / --input-size)')
    return tuple(int(s) for s in size)


def preprocessing(model: nn.Module, input_size: Optional[Sequence[int]] = None) -> Dict[str, Any]:
    """How inputs must be prepared for ``model`` (timm's data config of its pretrained config): ``mean`` and
    ``std`` (per channel, applied to RGB values in [0, 1]), ``input_size`` (C, H, W; ``input_size`` overrides
    it), ``interpolation`` and ``crop_pct`` of the evaluation resize, and the ``architecture`` and
    ``num_classes`` of the network."""
    from timm.data import resolve_data_config
    cfg = resolve_data_config({}, model=model)
    size = tuple(int(s) for s in (input_size or cfg['input_size']))
    return dict(architecture=(getattr(model, 'pretrained_cfg', None) or {}).get('architecture'),
                num_classes=getattr(model, 'num_classes', None), input_size=list(size),
                mean=[float(v) for v in cfg['mean']], std=[float(v) for v in cfg['std']],
                interpolation=cfg['interpolation'], crop_pct=float(cfg['crop_pct']), crop_mode=cfg.get('crop_mode'))


def _custom_ops(names: Sequence[str]) -> list:
    return sorted({n for n in names if 'bnas_zoo' in n})


def _check_graph_module(gm: torch.fx.GraphModule, what: str) -> None:
    left = _custom_ops([str(node.target) for node in gm.graph.nodes if node.op == 'call_function'])
    if left:
        raise BnasError(f'{what}: the exported graph still calls {", ".join(left)} (is the model in eval mode?)')


def _onnx_modules():
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise BnasError(f'ONNX export needs the onnx and onnxscript packages ({e}); install them with: '
                        f'pip install "bnas_zoo[onnx]"') from None
    import onnx
    return onnx


def export_model(model: nn.Module, fmt: str, out, input_size: Optional[Sequence[int]] = None,
                 opset: int = ONNX_OPSET) -> Path:
    """Export ``model`` in eval mode to the file ``out`` and return its path.

    Args:
        model: a bnas network (any ``torch.nn.Module`` that exports); it runs on the CPU for the export and is
            left in the mode (train/eval) it was given in. Its weights are written as they are: load trained
            weights first (``local-dir:``, ``hf-hub:`` or ``pretrained=True``).
        fmt: ``'onnx'`` (torch's dynamo exporter, weights inside the file; needs ``pip install
            "bnas_zoo[onnx]"``), ``'pt2'`` (``torch.export.save``) or ``'torchscript'`` (``torch.jit.trace`` +
            save).
        out: the file to write (its folder is created); written atomically, a complete checked file or none.
        input_size: (C, H, W) of the input, default the model's pretrained config; the batch dimension stays
            dynamic, the resolution is fixed.
        opset: the ONNX opset (default 18).

    The file holds float weights (``sign * alpha``), not 1-bit ones, and the input preprocessing of
    :func:`preprocessing`. Load it without bnas_zoo: ``onnxruntime.InferenceSession(path)``,
    ``torch.export.load(path).module()``, ``torch.jit.load(path)``. Raises :class:`~bnas_zoo.errors.BnasError`
    for an unknown format, a bad input size, an unwritable path or a graph that still holds a bnas_zoo op.
    """
    if fmt not in FORMATS:
        raise BnasError(f'unknown export format {fmt!r}; expected one of {", ".join(FORMATS)}')
    size = tuple(input_size) if input_size is not None else default_input_size(model)
    if len(size) != 3 or any(int(s) < 1 for s in size):
        raise BnasError(f'input size {size}: expected (channels, height, width), each >= 1')
    out = Path(out)
    if out.is_dir():
        raise BnasError(f'--out {out}: is a folder; give a file name')
    if fmt == 'onnx':
        onnx = _onnx_modules()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BnasError(f'--out {out}: cannot create its folder ({e.strerror or e})') from None
    example = torch.randn(_EXAMPLE_BATCH, *size)
    info = json.dumps(preprocessing(model, size))
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(example)
    except (RuntimeError, ValueError, AssertionError) as e:
        raise BnasError(f'input size {size}: the model cannot run it ({first_line(e)})') from None
    finally:
        model.train(was_training)

    def write(tmp: Path) -> None:
        if fmt == 'pt2':
            batch = torch.export.Dim('batch', min=1)
            ep = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
            _check_graph_module(ep.graph_module, 'pt2')
            torch.export.save(ep, str(tmp), extra_files={'preprocessing.json': info})
        elif fmt == 'torchscript':
            traced = torch.jit.trace(model, (example,), check_trace=False)
            left = _custom_ops([n.kind() for n in traced.inlined_graph.nodes()])
            if left:
                raise BnasError(f'torchscript: the traced graph still calls {", ".join(left)}')
            torch.jit.save(traced, str(tmp), _extra_files={'preprocessing.json': info})
        else:
            batch = torch.export.Dim('batch', min=1)
            program = torch.onnx.export(
                model, (example,), dynamo=True, opset_version=opset, input_names=['input'],
                output_names=['logits'], dynamic_shapes=({0: batch},), external_data=False, verbose=False)
            program.save(str(tmp), external_data=False)
            proto = onnx.load(str(tmp))
            domains = _custom_ops([n.domain or '' for n in proto.graph.node])
            if domains:
                raise BnasError(f'onnx: the exported graph still uses the domain(s) {", ".join(domains)}')
            onnx.checker.check_model(proto)
            for key, value in json.loads(info).items():  # the preprocessing, for any ONNX runtime to read
                entry = proto.metadata_props.add()
                entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
            onnx.save(proto, str(tmp))

    model.eval()
    tmp = out.with_name(out.name + '.tmp')
    try:
        with torch.no_grad():
            atomic_write(out, write)  # a complete, checked file or none
    finally:
        model.train(was_training)
        tmp.unlink(missing_ok=True)
    return out

