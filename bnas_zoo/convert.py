"""Conversion of the BNAS authors' released checkpoints to bnas_zoo safetensors folders.

Both release formats are read with ``torch.load(..., weights_only=True)`` (never full unpickling): a bare
state dict (CIFAR, BNAS-A) or a dict holding ``state_dict`` (ImageNet, BNAS-D..H). Keys lose their
``module.`` prefix and are renamed to ours; only keys of modules bnas_zoo does not build (e.g. the unused
input-1 preprocessing of the CIFAR reduction cells) are dropped; anything else that does not fit is refused
with the list of offending keys.

Class order. The release trained and evaluated its ImageNet networks on folders renamed by its
``prepare_imgnet.py``: each synset folder becomes ``str(i)``, i the synset's line in its
``synset_to_label.txt`` (the 1000 synsets sorted, i.e. the standard ImageNet-1k order), and
``torchvision.datasets.ImageFolder`` then numbers the classes in the *string* order of those names ("0", "1",
"10", "100", ...). Output k of a released BNAS-D..H is therefore the class of the k-th name in that string
order, not synset k. :func:`convert_official` permutes the classifier's rows and bias to the standard order
(output j = the j-th synset in sorted order, as timm's ImageNet models and a synset-named ImageFolder number
them); see :func:`release_imagenet_class_order`. The CIFAR network (BNAS-A) was trained on torchvision's
``CIFAR10``, whose labels are the standard CIFAR-10 order (airplane, automobile, bird, cat, deer, dog, frog,
horse, ship, truck; also the sorted order of those names): its classifier is kept as it is.
"""
from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import torch

from .compiler import release_conv_slots
from .errors import CheckpointError
from .files import output_folder
from .network import BNASNet
from .registry import check_weights

__all__ = ['release_key_to_ours', 'load_release_checkpoint', 'convert_release_state_dict', 'convert_official',
           'guess_release_variant', 'release_imagenet_class_order', 'to_standard_class_order']

_RULES: List[Tuple[re.Pattern, str]] = [(re.compile(p), r) for p, r in [
    (r'^stem\.op\.0\.', 'stem.conv.'),
    (r'^stem0\.0\.', 'stem0.conv1.'),
    (r'^stem0\.1\.', 'stem0.bn1.'),
    (r'^stem0\.3\.', 'stem0.conv2.'),
    (r'^stem0\.4\.', 'stem0.bn2.'),
    (r'^stem1\.1\.', 'stem1.conv.'),
    (r'^stem1\.2\.', 'stem1.bn.'),
    (r'^(cells\.\d+)\.preprocess([01])(?:_red)?\.op\.0\.', r'\1.preprocess\2.conv.'),
    (r'^(cells\.\d+)\.preprocess([01])(?:_red)?\.bn\.', r'\1.preprocess\2.bn.'),
    (r'^(cells\.\d+)\.preprocess_res\.0\.', r'\1.shortcut.bn.'),
    (r'^(cells\.\d+)\.preprocess_res\.1\.', r'\1.shortcut.conv.'),
    (r'^(cells\.\d+)\._ops\.(\d+)\.op\.0\.', r'\1.ops.\2.conv.'),
    (r'^(cells\.\d+)\._ops\.(\d+)\.bn\.', r'\1.ops.\2.bn.'),
]]


def release_key_to_ours(key: str) -> str:
    """Our name for a release state-dict key (``module.`` stripped); unchanged when no rule applies."""
    if key.startswith('module.'):
        key = key[len('module.'):]
    for pattern, repl in _RULES:
        new, n = pattern.subn(repl, key, count=1)
        if n:
            return new
    return key


def load_release_checkpoint(path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    """Read either release format with ``weights_only=True`` and return its (raw) state dict."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'{path}: no such checkpoint file')
    try:
        obj = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f'{path}: refused: the file holds objects other than tensors and plain containers, and only '
            f'weights_only loading is allowed ({str(e).splitlines()[0]})') from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise CheckpointError(f'{path}: not a readable PyTorch checkpoint (truncated or corrupted?): '
                              f'{str(e).splitlines()[0] if str(e) else type(e).__name__}') from None
    if isinstance(obj, dict) and 'state_dict' in obj and isinstance(obj['state_dict'], dict):
        obj = obj['state_dict']
    if isinstance(obj, dict) and not all(isinstance(k, str) for k in obj):
        bad = next(k for k in obj if not isinstance(k, str))
        raise CheckpointError(f'{path}: key {bad!r} is a {type(bad).__name__}; expected a state dict whose keys '
                              f'are parameter names (strings)')
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"{path}: expected a state dict of tensors, or a dict with a 'state_dict' entry (the two release "
            f"formats); got {type(obj).__name__}")
    return obj


def guess_release_variant(release: Dict[str, torch.Tensor]) -> Optional[str]:
    """The registered variant whose stem, width and depth match a release state dict, if any."""
    from .registry import VARIANTS
    sd = {release_key_to_ours(k): v for k, v in release.items()}
    cells = {int(k.split('.')[1]) for k in sd if k.startswith('cells.')}
    if not cells:
        return None
    if 'stem0.conv2.weight' in sd:
        stem, c0 = 'imagenet', sd['stem0.conv2.weight'].shape[0]
    elif 'stem.conv.weight' in sd:
        stem, c0 = 'cifar', sd['stem.conv.weight'].shape[0] // 3
    else:
        return None
    for name, v in VARIANTS.items():
        if (v.stem, v.channels, v.layers) == (stem, c0, max(cells) + 1):
            return name
    return None


def _unbuilt_prefixes(model: BNASNet) -> List[str]:
    """Release modules that bnas_zoo does not build for ``model`` (no non-zero path uses them)."""
    prefixes = []
    for i, cell in enumerate(model.cells):
        for slot in release_conv_slots(cell.plan.edges):
            try:
                model.get_submodule(f'cells.{i}.{slot}')
            except AttributeError:
                prefixes.append(f'cells.{i}.{slot}.')
    return prefixes


def convert_release_state_dict(
        release: Dict[str, torch.Tensor],
        model: BNASNet,
        source: str = '<state dict>',
        model_name: Optional[str] = None,
) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Map a release state dict onto ``model``'s keys. Returns (state dict, dropped release keys).

    Raises :class:`CheckpointError` listing missing, unexpected and wrong-shaped keys.
    """
    name = model_name or getattr(model, 'pretrained_cfg', {}).get('architecture', 'the model')
    ours = model.state_dict()
    unbuilt = _unbuilt_prefixes(model)
    out: Dict[str, torch.Tensor] = {}
    dropped, unexpected, wrong_shape = [], [], []
    seen_wrong = set()
    for key, value in release.items():
        new = release_key_to_ours(key)
        if new in ours:
            if tuple(value.shape) != tuple(ours[new].shape):
                wrong_shape.append(f'{key}: {tuple(value.shape)} in the checkpoint, {tuple(ours[new].shape)} in {name}')
                seen_wrong.add(new)
            else:
                out[new] = value.to(ours[new].dtype) if value.is_floating_point() else value
        elif any(new.startswith(p) for p in unbuilt):
            dropped.append(key)
        else:
            unexpected.append(key)
    check_weights({k: release[k] for k in release if release_key_to_ours(k) in out},
                  {k: ours[release_key_to_ours(k)] for k in release if release_key_to_ours(k) in out}, source)
    missing = [k for k in ours if k not in out and k not in seen_wrong]
    if missing or unexpected or wrong_shape:
        lines = [f'{source}: this checkpoint does not fit {name}']
        guess = guess_release_variant(release)
        if guess and guess != name:
            lines[0] += f' (it looks like a checkpoint of {guess})'
        for title, keys in (('missing', missing), ('unexpected', unexpected), ('wrong shape', wrong_shape)):
            if keys:
                shown = keys[:20] + ([f'... and {len(keys) - 20} more'] if len(keys) > 20 else [])
                lines.append(f'  {title} ({len(keys)}): ' + '\n    '.join([''] + shown))
        raise CheckpointError('\n'.join(lines))
    return out, dropped


def release_imagenet_class_order(num_classes: int = 1000) -> List[int]:
    """The standard class index of each output of a released ImageNet network.

    The release's ``prepare_imgnet.py`` names the folder of standard class i ``str(i)``, and torchvision's
    ``ImageFolder`` numbers folders in string order, so output k of the released network is standard class
    ``release_imagenet_class_order()[k]``: ``[0, 1, 10, 100, 101, ..., 109, 11, 110, ...]``.
    """
    return sorted(range(num_classes), key=str)


def to_standard_class_order(state_dict: Dict[str, torch.Tensor], num_classes: int = 1000,
                            classifier: str = 'classifier') -> Dict[str, torch.Tensor]:
    """``state_dict`` with its classifier's rows (weight and bias) moved from the release's ImageNet output
    order to the standard one: row j of the result is the released row of standard class j."""
    order = torch.tensor(release_imagenet_class_order(num_classes))
    rows = torch.argsort(order)  # rows[j]: the released output of standard class j
    out = dict(state_dict)
    for key in (f'{classifier}.weight', f'{classifier}.bias'):
        if key in out:
            if out[key].shape[0] != num_classes:
                raise CheckpointError(f'{key}: {out[key].shape[0]} outputs; expected the {num_classes} ImageNet classes')
            out[key] = out[key][rows].contiguous()
    return out


def convert_official(checkpoint: Union[str, Path], model_name: str, out_dir: Union[str, Path]) -> Path:
    """Convert a release checkpoint of ``model_name`` (``bnas_a``, ``bnas_d`` .. ``bnas_h``, or the release
    layouts of ``bnas_mini``, ``bnas_b``, ``bnas_c``) to ``out_dir/model.safetensors`` and
    ``out_dir/config.json`` (timm's format: ``timm.create_model('local-dir:OUT', pretrained=True)``).

    ImageNet networks get their classifier permuted from the release's class order to the standard ImageNet-1k
    order (see the module documentation); CIFAR networks keep torchvision's CIFAR-10 order, which is the
    standard one. A checkpoint that does not fit is refused (:class:`CheckpointError`) and nothing is written.
    Returns the output folder.
    """
    import timm
    from timm.models import save_for_hf

    from .registry import VARIANTS
    if model_name not in VARIANTS:
        raise CheckpointError(f"--model {model_name!r}: unknown model; expected one of {', '.join(VARIANTS)}")
    release = load_release_checkpoint(checkpoint)
    model = timm.create_model(model_name)
    state_dict, _ = convert_release_state_dict(release, model, str(checkpoint), model_name)
    if model.stem_type == 'imagenet':
        state_dict = to_standard_class_order(state_dict, model.num_classes)
    model.load_state_dict(state_dict, strict=True)
    out_dir = output_folder(out_dir, '--output')  # only once the conversion succeeded: a refusal writes nothing
    # the provenance, for the model card: these weights were trained by others, not by bnas_zoo
    save_for_hf(model, str(out_dir), model_config=dict(bnas_converted_from=Path(checkpoint).name),
                safe_serialization=True)
    return out_dir
