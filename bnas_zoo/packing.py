"""Exact 1-bit weight files: every binary convolution stored as packed sign bits plus one fp32 scale per output
channel, everything else as it is, and the model rebuilt from that file alone.

The bits are those the network computes with: the sign of the centred, clamped latent weight, and alpha its
mean absolute value per output channel. A latent weight whose projection is exactly zero has sign 0 (as in
the release) and cannot be a bit: its positions are stored as a (usually empty) index list, so the rebuilt
model's outputs are identical to the latent model's.

Layout of ``model-1bit.safetensors`` (tensors), for a binary conv ``NAME`` of shape (out, in, kh, kw):

- ``NAME.weight.bits``  uint8, the sign bits (1 = +1) of the flattened weight, ``numpy.packbits`` order;
- ``NAME.weight.alpha`` float32 (out,), the per-output-channel scale;
- ``NAME.weight.zeros`` int64, flat indices of the weights whose sign is 0 (only when there are any);

and one metadata entry ``bnas_zoo``, a JSON object: ``format`` ("1bit-v1"), ``config`` (timm's config.json
content: architecture, model_args with the genotype) and ``binary_shapes`` (NAME.weight -> shape).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .binary import BinaryConv2d, binary_sign_alpha
from .errors import BnasError, CheckpointError
from .files import atomic_write

__all__ = ['FORMAT', 'binary_sign_alpha', 'unpack_signs', 'pack_state_dict', 'unpack_state_dict', 'save_1bit',
           'read_1bit', 'load_1bit', 'theoretical_1bit_bytes']

FORMAT = '1bit-v1'
METADATA_KEY = 'bnas_zoo'


def _binary_modules(model: torch.nn.Module) -> Dict[str, BinaryConv2d]:
    return {n: m for n, m in model.named_modules() if isinstance(m, BinaryConv2d) and m.binary_weights}


def unpack_signs(tensors: Dict[str, torch.Tensor], key: str, shape) -> torch.Tensor:
    """The ternary signs (int8, shaped ``shape``) of the packed binary weight ``key`` of a 1-bit state dict:
    its ``.bits`` (1 = +1, else -1) with its ``.zeros`` positions set to 0."""
    bits = np.unpackbits(tensors[f'{key}.bits'].numpy(), count=int(np.prod(shape)))
    sign = torch.from_numpy(bits.astype(np.int8) * 2 - 1)
    if f'{key}.zeros' in tensors:
        sign[tensors[f'{key}.zeros']] = 0
    return sign.view(tuple(shape))


@torch.no_grad()
def pack_state_dict(model: torch.nn.Module) -> Tuple[Dict[str, torch.Tensor], Dict[str, list]]:
    """The 1-bit state dict of ``model`` and the shapes of its binary weights."""
    state = model.state_dict()
    binary = _binary_modules(model)
    out: Dict[str, torch.Tensor] = {}
    shapes: Dict[str, list] = {}
    for name, m in binary.items():
        key = f'{name}.weight'
        sign, alpha = binary_sign_alpha(m)
        flat = sign.flatten()
        out[f'{key}.bits'] = torch.from_numpy(np.packbits((flat > 0).numpy()))
        out[f'{key}.alpha'] = alpha.float().contiguous()
        zeros = (flat == 0).nonzero().flatten()
        if zeros.numel():
            out[f'{key}.zeros'] = zeros.to(torch.int64)
        shapes[key] = list(m.weight.shape)
    for key, t in state.items():
        if key not in shapes:
            out[key] = t.contiguous()
    return out, shapes


def unpack_state_dict(tensors: Dict[str, torch.Tensor], shapes: Dict[str, list]) -> Dict[str, torch.Tensor]:
    """The binarized weights (sign * alpha, exact) and the other tensors of a 1-bit state dict."""
    packed = {key + suffix for key in shapes for suffix in ('.bits', '.alpha', '.zeros')}
    out = {k: v for k, v in tensors.items() if k not in packed}
    for key, shape in shapes.items():
        alpha = tensors[f'{key}.alpha'].float()
        out[key] = (unpack_signs(tensors, key, shape).float() * alpha.view(-1, 1, 1, 1)).contiguous()
    return out


def theoretical_1bit_bytes(model: torch.nn.Module) -> int:
    """Binary weights at 1 bit plus one fp32 scale per output channel, all other tensors as stored."""
    binary = {f'{n}.weight': m for n, m in _binary_modules(model).items()}
    total = 0.0
    for key, t in model.state_dict().items():
        if key in binary:
            total += t.numel() / 8 + t.shape[0] * 4
        else:
            total += t.numel() * t.element_size()
    return int(round(total))


def model_config(model: torch.nn.Module) -> Dict[str, Any]:
    """timm's config.json content for a bnas network (architecture, num_classes, model_args with the genotype
    itself, pretrained_cfg), as ``timm.models.save_for_hf`` writes it: what rebuilds the network."""
    import tempfile

    from timm.models._hub import save_config_for_hf
    if not callable(getattr(model, 'architecture_args', None)) or not getattr(model, 'pretrained_cfg', None):
        raise BnasError(f'save_1bit: the model ({type(model).__name__}) is not a bnas network created with timm; '
                        f"give its config (timm's config.json content) as config=")
    with tempfile.TemporaryDirectory(prefix='bnas_config_') as tmp:
        path = Path(tmp) / 'config.json'
        save_config_for_hf(model, str(path), model_args=model.architecture_args())
        return json.loads(path.read_text())


def save_1bit(model: torch.nn.Module, path: Union[str, Path], config: Optional[Dict[str, Any]] = None) -> Path:
    """Write ``model``'s exact 1-bit file to ``path`` (safetensors, written atomically) and return the path.

    Every binary convolution is stored as packed sign bits plus one fp32 scale per output channel, everything
    else as it is (see the module documentation). ``config``: timm's config.json content, which the file carries
    so that :func:`load_1bit` rebuilds the network from it alone; default: the model's own (its architecture
    and arguments, the genotype included). Works on any bnas model on any device; nothing is changed in it.
    """
    if config is None:
        config = model_config(model)
    tensors, shapes = pack_state_dict(model)
    tensors = {k: v.cpu() for k, v in tensors.items()}
    # one metadata entry: safetensors writes several in no fixed order, and the file must be reproducible
    info = {'format': FORMAT, 'binary_shapes': shapes, 'config': config}
    metadata = {METADATA_KEY: json.dumps(info, sort_keys=True)}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def read_1bit(path: Union[str, Path]) -> Tuple[Dict[str, torch.Tensor], Dict[str, tuple], Dict[str, Any]]:
    """Open and validate a 1-bit file: ``(tensors, binary shapes, config)``, nothing built, nothing downloaded.

    Checks the metadata (format, a config of a bnas architecture, binary_shapes) and every packed tensor (bits
    uint8 of ceil(n/8) bytes, alpha finite float32 per output channel, zeros int64 indices in [0, n)), that no
    packed tensor is missing or extra and that every other float tensor is finite. Raises
    :class:`CheckpointError` naming the file, the tensor or field, and what was expected.
    """
    from .registry import check_model_config
    path = Path(path)
    try:
        with safe_open(str(path), framework='pt') as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, RuntimeError, ValueError, TypeError) as e:
        raise CheckpointError(f'{path}: not a readable safetensors file (truncated or corrupted?): {e}') from None
    try:
        info = json.loads(metadata[METADATA_KEY], parse_constant=lambda c: None)
    except (KeyError, ValueError, TypeError, RecursionError):
        info = None
    if not isinstance(info, dict) or info.get('format') != FORMAT:
        raise CheckpointError(f"{path}: not a bnas_zoo 1-bit file (no '{METADATA_KEY}' metadata: a JSON object of "
                              f"format {FORMAT!r})")
    config = info.get('config')
    if not config:
        raise CheckpointError(f'{path}: the 1-bit file carries no model config; it cannot be rebuilt alone')
    check_model_config(config, f"{path}: metadata field 'config'")
    raw = info.get('binary_shapes')
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: metadata field 'binary_shapes' is {type(raw).__name__}; expected an object "
                              f"NAME.weight -> [out, in, kh, kw]")
    shapes: Dict[str, tuple] = {}
    for key, shape in raw.items():
        if (not key.endswith('.weight') or not isinstance(shape, list) or len(shape) != 4
                or not all(isinstance(d, int) and not isinstance(d, bool) and 0 < d <= 1 << 20 for d in shape)):
            raise CheckpointError(f"{path}: metadata field 'binary_shapes.{key}' is {shape!r}; expected the shape "
                                  f"[out, in, kh, kw] (positive integers) of a binary conv weight NAME.weight")
        shapes[key] = tuple(shape)
    packed = {key + suffix for key in shapes for suffix in ('.bits', '.alpha', '.zeros')}
    extra = sorted(k for k in tensors if k not in packed and (k.endswith(('.bits', '.alpha', '.zeros')) or k in shapes))
    if extra:
        raise CheckpointError(f"{path}: tensor {extra[0]} is not a packed weight named in 'binary_shapes' "
                              f"({len(extra)} such); expected only the packed tensors of the binary convs it lists")
    for key, shape in shapes.items():
        n = math.prod(shape)
        expect = {'.bits': (torch.uint8, (n + 7) // 8), '.alpha': (torch.float32, shape[0]), '.zeros': (torch.int64, None)}
        for suffix, (dtype, length) in expect.items():
            t = tensors.get(key + suffix)
            if t is None:
                if suffix == '.zeros':
                    continue
                raise CheckpointError(f'{path}: tensor {key}{suffix} is missing; expected {str(dtype)[6:]} '
                                      f'of length {length} for the binary weight {key} of shape {list(shape)}')
            if t.dtype != dtype or t.ndim != 1 or (length is not None and t.numel() != length):
                raise CheckpointError(
                    f'{path}: tensor {key}{suffix} is {str(t.dtype)[6:]} of shape {list(t.shape)}; expected '
                    f'{str(dtype)[6:]} of shape [{length if length is not None else "k"}] for the binary weight '
                    f'{key} of shape {list(shape)}')
        if not bool(torch.isfinite(tensors[f'{key}.alpha']).all()):
            raise CheckpointError(f'{path}: tensor {key}.alpha holds NaN or infinite values; expected finite scales')
        zeros = tensors.get(f'{key}.zeros')
        if zeros is not None and zeros.numel() and not (0 <= int(zeros.min()) and int(zeros.max()) < n):
            raise CheckpointError(f'{path}: tensor {key}.zeros holds indices outside [0, {n}); expected flat '
                                  f'indices into the weight {key} of shape {list(shape)}')
    for key, t in tensors.items():
        if key not in packed and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f'{path}: tensor {key} holds NaN or infinite values; expected finite weights')
    return tensors, shapes, config


def load_1bit(path: Union[str, Path], deploy: bool = False, **create_kwargs) -> torch.nn.Module:
    """Rebuild a model from its 1-bit file alone, for inference only.

    Args:
        path: a file written by :func:`save_1bit` or published as ``model-1bit.safetensors``; it is validated
            first (:func:`read_1bit`) and never unpickled.
        deploy: ``False`` (default): the timm model on the CPU, its binary convs holding their exact binarized
            weights (``sign * alpha``; outputs identical to the source model in eval mode). ``True``: the fast
            packed-bit network of :func:`bnas_zoo.deploy`, built straight from the bits (never expanded to
            float; CPU only, x86-64 kernels with a portable fallback).
        create_kwargs: passed to ``timm.create_model`` with the file's own arguments (e.g. ``drop_rate``).

    Inference only: the file holds the binarized weights, not the latent float weights that training updates,
    so the binary convs refuse a training forward pass with gradients (an error, rather than silently training
    them as float convs). To train or fine-tune, load the float weights (``model.safetensors`` through
    ``local-dir:`` or ``hf-hub:``). Raises :class:`~bnas_zoo.errors.CheckpointError` for a file that is not a
    valid 1-bit file of a bnas network.
    """
    import timm

    from . import registry  # noqa: F401  (registers the architectures)
    path = Path(path)
    tensors, shapes, config = read_1bit(path)
    kwargs = dict(config.get('model_args') or {})
    kwargs.setdefault('num_classes', config.get('num_classes'))
    kwargs.update(create_kwargs)
    try:
        if deploy:
            with torch.device('meta'):  # the structure only: no weight is allocated
                model = timm.create_model(config['architecture'], pretrained=False, **kwargs)
        else:
            model = timm.create_model(config['architecture'], pretrained=False, **kwargs)
    except (BnasError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: metadata field 'config' does not build {config['architecture']}: {e}") from None
    if deploy:
        from .deploy import deploy_1bit
        _check_fits(path, model, tensors, shapes, config['architecture'])
        return deploy_1bit(model, tensors, lambda key: (unpack_signs(tensors, key, shapes[key]),
                                                        tensors[f'{key}.alpha'].float()))
    state = unpack_state_dict(tensors, shapes)
    binary = _binary_modules(model)
    if set(shapes) != {f'{name}.weight' for name in binary}:
        raise CheckpointError(f"{path}: metadata field 'binary_shapes' names other convs than the binary convs of "
                              f"{config['architecture']}")
    for name, m in binary.items():
        m.deployed = True
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f'{path}: does not fit {config["architecture"]}: {str(e).splitlines()[0]}') from None
    return model.eval()


def _check_fits(path: Path, model: torch.nn.Module, tensors: Dict[str, torch.Tensor], shapes: Dict[str, list],
                architecture: str) -> None:
    """The 1-bit tensors are exactly those of ``model`` (names and shapes), else a CheckpointError."""
    binary = {f'{n}.weight' for n in _binary_modules(model)}
    expected = {k: tuple(t.shape) for k, t in model.state_dict().items()}
    if set(shapes) != binary:
        extra, missing = sorted(set(shapes) - binary), sorted(binary - set(shapes))
        raise CheckpointError(f'{path}: binary_shapes does not fit {architecture}: '
                              f'unexpected {extra[:3]}, missing {missing[:3]}')
    for key in binary:
        if tuple(shapes[key]) != expected[key]:
            raise CheckpointError(f'{path}: binary_shapes[{key!r}] is {list(shapes[key])}; '
                                  f'{architecture} expects {list(expected[key])}')
    packed = {key + suffix for key in binary for suffix in ('.bits', '.alpha', '.zeros')}
    plain = {k for k in tensors if k not in packed}
    if plain != set(expected) - binary:
        extra, missing = sorted(plain - set(expected)), sorted(set(expected) - binary - plain)
        raise CheckpointError(f'{path}: tensors do not fit {architecture}: unexpected {extra[:3]}, missing {missing[:3]}')
    for key in plain:
        if tuple(tensors[key].shape) != expected[key]:
            raise CheckpointError(f'{path}: tensor {key!r} has shape {list(tensors[key].shape)}; '
                                  f'{architecture} expects {list(expected[key])}')
