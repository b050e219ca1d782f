"""The bnas_zoo variants, their pretrained configs, and their registration in timm.

``import bnas_zoo`` registers ``bnas_mini``, ``bnas_a`` .. ``bnas_c`` (CIFAR-10, 32x32), ``bnas_d`` ..
``bnas_h`` and ``bnas_d_grouped`` (ImageNet, 224x224) and ``bnas_custom`` (any genotype).

Pretrained weights. ``pretrained=True`` on a registered name downloads only weights that this version of
bnas_zoo pins: the repository ``bnas-zoo/{variant}.{tag}`` on the Hugging Face Hub *at the commit* listed in
:data:`PUBLISHED_REVISIONS`, so that nobody who later controls that name can change what users load. No weights
are published yet, so the table is empty, ``timm.list_pretrained('bnas*')`` lists nothing, and
``pretrained=True`` on a registered name is a :class:`~bnas_zoo.errors.CheckpointError` raised before any
network request. A mirror is the user's own choice: with the environment variable ``BNAS_ZOO_HUB_ORG=ORG``
(read at import time) every variant loads ``ORG/{variant}.{tag}`` (its main branch). ``hf-hub:ORG/NAME[@REV]``
and ``local-dir:PATH`` load any published or local weights, and ``pretrained_cfg_overlay=dict(file=...)`` a file.
"""
from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from huggingface_hub import errors as hf_errors
from safetensors import SafetensorError
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from .errors import BnasError, CheckpointError, ModelConfigError, first_line
from .network import BNASNet

__all__ = ['HUB_ORG', 'DEFAULT_HUB_ORG', 'HUB_MIRROR', 'PUBLISHED_REVISIONS', 'VARIANTS', 'Variant', 'CIFAR10_MEAN',
           'CIFAR10_STD', 'hub_repo_id', 'pretrained_hub_id', 'checkpoint_filter_fn', 'read_weights',
           'MODEL_ARGS', 'check_model_config', 'read_model_folder', 'check_weights']

#: the Hugging Face Hub organisation of bnas_zoo's own weights
DEFAULT_HUB_ORG = 'bnas-zoo'
#: a mirror organisation chosen by the user (environment variable BNAS_ZOO_HUB_ORG, read at import), or None
HUB_MIRROR = os.environ.get('BNAS_ZOO_HUB_ORG') or None
#: the organisation the registered names refer to: the mirror, else bnas_zoo's own
HUB_ORG = HUB_MIRROR or DEFAULT_HUB_ORG
#: variant -> the commit (40 hex digits) of ``bnas-zoo/{variant}.{tag}`` that holds its published weights.
#: ``pretrained=True`` on a registered name downloads exactly that revision, and only variants listed here have
#: pretrained weights. Empty: no weights are published yet.
PUBLISHED_REVISIONS: Dict[str, str] = {}

CIFAR10_MEAN = (0.49139968, 0.48215827, 0.44653124)
CIFAR10_STD = (0.24703233, 0.24348505, 0.26158768)


@dataclass(frozen=True)
class Variant:
    genotype: str
    layers: int
    channels: int
    stem: str
    tag: str
    paper_name: str
    stem_groups: int = 1
    shortcut_groups: int = 1

    @property
    def model_args(self) -> Dict[str, Any]:
        args = dict(genotype=self.genotype, layers=self.layers, channels=self.channels, stem=self.stem)
        if self.stem_groups != 1 or self.shortcut_groups != 1:
            args.update(stem_groups=self.stem_groups, shortcut_groups=self.shortcut_groups)
        return args


#: the paper's networks (Table 5) and our reconstruction of BNAS-D-dagger
VARIANTS: Dict[str, Variant] = {
    'bnas_mini': Variant('bnas_cifar', 10, 24, 'cifar', 'cifar10', 'BNAS-Mini'),
    'bnas_a': Variant('bnas_cifar', 20, 36, 'cifar', 'cifar10', 'BNAS-A'),
    'bnas_b': Variant('bnas_cifar', 12, 64, 'cifar', 'cifar10', 'BNAS-B'),
    'bnas_c': Variant('bnas_cifar', 16, 108, 'cifar', 'cifar10', 'BNAS-C'),
    'bnas_d': Variant('bnas_imagenet', 12, 64, 'imagenet', 'in1k', 'BNAS-D'),
    'bnas_e': Variant('bnas_imagenet', 12, 68, 'imagenet', 'in1k', 'BNAS-E'),
    'bnas_f': Variant('bnas_imagenet', 15, 68, 'imagenet', 'in1k', 'BNAS-F'),
    'bnas_g': Variant('bnas_imagenet', 11, 74, 'imagenet', 'in1k', 'BNAS-G'),
    'bnas_h': Variant('bnas_imagenet', 16, 128, 'imagenet', 'in1k', 'BNAS-H'),
    # our reconstruction of the paper's BNAS-D-dagger (Sec. 5.2.1): grouped full-precision layers, wider
    'bnas_d_grouped': Variant('bnas_imagenet', 12, 88, 'imagenet', 'in1k', 'BNAS-D†*', stem_groups=4,
                              shortcut_groups=4),
}


def hub_repo_id(variant: str, org: Optional[str] = None) -> str:
    """The Hub repository named for ``variant``: ``{org}/{variant}.{tag}`` (default org: :data:`HUB_ORG`)."""
    v = VARIANTS[variant]
    return f'{org or HUB_ORG}/{variant}.{v.tag}'


def pretrained_hub_id(variant: str) -> Optional[str]:
    """Where ``pretrained=True`` loads ``variant``'s weights from: ``ORG/NAME`` of the user's mirror
    (``BNAS_ZOO_HUB_ORG``), ``bnas-zoo/NAME@COMMIT`` once bnas_zoo's weights are published and pinned in
    :data:`PUBLISHED_REVISIONS`, else ``None`` (no pretrained weights: nothing is downloaded)."""
    if HUB_MIRROR:
        return hub_repo_id(variant, HUB_MIRROR)
    revision = PUBLISHED_REVISIONS.get(variant)
    return f'{hub_repo_id(variant, DEFAULT_HUB_ORG)}@{revision}' if revision else None


_CIFAR_DATA = dict(num_classes=10, input_size=(3, 32, 32), pool_size=(8, 8), crop_pct=1.0, interpolation='bilinear',
                   mean=CIFAR10_MEAN, std=CIFAR10_STD, first_conv='stem.conv')
_IMAGENET_DATA = dict(num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7), crop_pct=0.875,
                      interpolation='bicubic', mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
                      first_conv='stem0.conv1')


def _cfg(variant: str, **kwargs) -> Dict[str, Any]:
    v = VARIANTS[variant]
    data = _CIFAR_DATA if v.stem == 'cifar' else _IMAGENET_DATA
    return dict(
        hf_hub_id=pretrained_hub_id(variant),  # None: no pretrained weights (timm lists none)
        fixed_input_size=False,
        classifier='classifier',
        paper_ids='arXiv:2110.08562',
        paper_name='BNAS v2: Learning Architectures for Binary Networks with Empirical Improvements',
        **data,
        **kwargs,
    )


default_cfgs = generate_default_cfgs({
    f'{name}.{v.tag}': _cfg(name) for name, v in VARIANTS.items()
} | {
    'bnas_custom': dict(_IMAGENET_DATA, classifier='classifier', fixed_input_size=False),
})


def _adapt_stem_bn(state_dict: Dict[str, torch.Tensor], model: BNASNet) -> None:
    """The CIFAR stem starts with a BatchNorm over the input channels: adapt it like the first conv."""
    for key in [k for k in state_dict if k.startswith('stem.bn.') and state_dict[k].ndim == 1]:
        t = state_dict[key]
        n = model.in_chans
        if t.shape[0] == n:
            continue
        if n == 1:
            state_dict[key] = t.mean(0, keepdim=True)
        else:  # cycle the channels, as timm's adapt_input_conv does for the conv
            state_dict[key] = t.repeat((n + t.shape[0] - 1) // t.shape[0])[:n].clone()


#: the keys of a training checkpoint (timm's train.py, bnas-train's last.pth.tar) that hold a state dict
_STATE_KEYS = ('state_dict', 'model')
_EMA_KEYS = ('state_dict_ema', 'model_ema')


def _unwrap_state_dict(obj: Any, source: str, use_ema: bool = False) -> Dict[str, Any]:
    """The state dict of a loaded weight file: itself, or its ``state_dict`` (``state_dict_ema`` with
    ``use_ema``) when it is a training checkpoint."""
    if not isinstance(obj, dict):
        raise CheckpointError(f'{source}: holds a {type(obj).__name__}; expected a state dict or a training '
                              f"checkpoint (a dict with 'state_dict')")
    for key in _EMA_KEYS if use_ema else _STATE_KEYS:
        if isinstance(obj.get(key), dict):
            return obj[key]
    if use_ema:
        raise CheckpointError(f"{source}: no EMA weights ('state_dict_ema') in it; load its weights without "
                              f'--use-ema')
    return obj


def read_weights(path: str, source: Optional[str] = None, use_ema: bool = False) -> Dict[str, Any]:
    """The state dict in a weight file: safetensors, or a torch checkpoint (a state dict, or a training
    checkpoint such as timm train.py's ``model_best.pth.tar``: its ``state_dict``, or with ``use_ema`` its
    ``state_dict_ema``). A torch file is read with ``torch.load(weights_only=True)`` only (tensors and plain
    containers; the ``argparse.Namespace`` of timm's training arguments is allowed, as timm does)."""
    import argparse
    from safetensors.torch import load_file
    source = source or path
    try:
        with open(path, 'rb') as f:
            magic = f.read(4)
    except OSError as e:
        raise CheckpointError(f'{source}: cannot read it ({e.strerror or e})') from None
    if magic[:2] == b'PK' or magic[:1] == b'\x80':  # a torch.save zip archive / a legacy pickle
        try:
            allow = (torch.serialization.safe_globals([argparse.Namespace])
                     if hasattr(torch.serialization, 'safe_globals') else contextlib.nullcontext())
            with allow:
                obj = torch.load(path, map_location='cpu', weights_only=True)
        except pickle.UnpicklingError as e:
            detail = [line.strip() for line in str(e).splitlines() if 'Unsupported global' in line]
            raise CheckpointError(
                f'{source}: a torch checkpoint that torch.load(weights_only=True) refuses: it pickles more than '
                f'tensors and plain containers ({detail[0] if detail else first_line(e)}); expected a state dict '
                f'or a training checkpoint of tensors, or a safetensors file') from None
        except (RuntimeError, EOFError, OSError) as e:
            raise CheckpointError(f'{source}: not a readable torch checkpoint ({first_line(e)})') from None
        return _unwrap_state_dict(obj, source, use_ema)
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f'{source}: neither a safetensors file nor a torch checkpoint ({e})') from None
    if use_ema:
        raise CheckpointError(f"{source}: a safetensors file holds one set of weights, no separate EMA weights; "
                              f"give it without --use-ema (EMA weights are in a training checkpoint's "
                              f"'state_dict_ema', or a run folder's checkpoint_ema.safetensors)")
    return tensors


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: BNASNet) -> Dict[str, torch.Tensor]:
    """Adapt a bnas_zoo state dict to ``model`` (input channels), refusing the release's raw layout. A training
    checkpoint (timm's train.py, a dict with ``state_dict``) gives its ``state_dict``."""
    state_dict = _unwrap_state_dict(state_dict, 'the weights')
    if any(k.startswith('module.') or '._ops.' in k for k in state_dict):
        raise CheckpointError(
            "these are the BNAS authors' raw weights (keys 'module.*' / '_ops'); convert them first with "
            "`bnas-zoo convert-official CKPT --model NAME --output DIR`")
    check_weights(state_dict, model.state_dict())
    state_dict = dict(state_dict)
    _adapt_stem_bn(state_dict, model)
    return state_dict


def check_weights(state_dict: Dict[str, Any], expected: Dict[str, torch.Tensor], source: str = 'the weights') -> None:
    """Refuse tensors that would load silently wrong: a non-float tensor where the model holds floats (it would
    be cast), and NaN or infinite values. float16 and bfloat16 are accepted (loading widens them exactly)."""
    for key, t in state_dict.items():
        if not isinstance(key, str) or not isinstance(t, torch.Tensor):
            raise CheckpointError(f'{source}: entry {key!r} is a {type(t).__name__}; expected tensors named by strings')
        ours = expected.get(key)
        if ours is not None and ours.is_floating_point() and not t.is_floating_point():
            raise CheckpointError(f'{source}: tensor {key} is {str(t.dtype)[6:]}; expected floating point '
                                  f'(float32, float16 or bfloat16) weights')
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f'{source}: tensor {key} holds NaN or infinite values; expected finite weights')


#: what ``create_model('bnas_custom')`` builds when given no architecture at all (as timm's generic tools and
#: tests create every registered name): the search's size, 8 cells of C0 = 16 with the bundled CIFAR cell
CUSTOM_DEFAULT = dict(genotype='bnas_cifar', layers=8, channels=16, stem='cifar')


def _create(variant: str, pretrained: bool = False, **kwargs) -> BNASNet:
    base = variant.split('.')[0]
    model_args = dict(VARIANTS[base].model_args) if base in VARIANTS else {}
    model_args.update(kwargs)
    if base == 'bnas_custom':
        missing = [k for k in ('genotype', 'layers', 'channels') if k not in model_args]
        if len(missing) == 3:  # no architecture at all (timm's generic tools create every name so): the default
            model_args.update(CUSTOM_DEFAULT)
            missing = []
        if missing:
            raise TypeError(f"bnas_custom needs {', '.join(missing)}: create_model('bnas_custom', "
                            f"genotype=PATH_OR_DICT, layers=L, channels=C, stem='cifar'|'imagenet', num_classes=K)")
        if model_args.get('stem', 'cifar') == 'cifar' and not model_args.get('pretrained_cfg'):
            overlay = dict(_CIFAR_DATA, **(model_args.pop('pretrained_cfg_overlay', None) or {}))
            model_args['pretrained_cfg_overlay'] = overlay
    if pretrained and not _has_weights(base, model_args):  # refused before any network request
        raise CheckpointError(_no_pretrained_weights(variant, base))
    try:
        return build_model_with_cfg(
            BNASNet, variant, pretrained,
            pretrained_filter_fn=checkpoint_filter_fn,
            feature_cfg=dict(feature_cls='getter', out_indices=(0, 1, 2, 3)),
            **model_args,
        )
    except CheckpointError as e:
        if not pretrained:
            raise
        raise CheckpointError(f'{variant}: the pretrained weights from {_weights_source(model_args)}: {e}') from None
    except _HUB_MISSES as e:
        if not pretrained:
            raise
        raise CheckpointError(_weights_unavailable(variant, base, model_args, e)) from None
    except (SafetensorError, pickle.UnpicklingError, EOFError, RuntimeError) as e:
        if not pretrained or (isinstance(e, RuntimeError) and not _is_load_error(e)):
            raise
        raise CheckpointError(
            f'{variant}: the pretrained weights from {_weights_source(model_args)} do not load: '
            f'{_first_lines(e)}') from e


#: what huggingface_hub raises when weights cannot be had: offline and not cached, unreachable, not published
_HUB_MISSES = (hf_errors.EntryNotFoundError, hf_errors.RepositoryNotFoundError, hf_errors.RevisionNotFoundError,
               hf_errors.HfHubHTTPError, hf_errors.OfflineModeIsEnabled)


def _has_weights(base: str, model_args: Dict[str, Any]) -> bool:
    """Whether the pretrained config that timm will resolve names a weight source (file, URL or Hub id)."""
    from timm.models._builder import resolve_pretrained_cfg
    cfg = resolve_pretrained_cfg(base, pretrained_cfg=model_args.get('pretrained_cfg'),
                                 pretrained_cfg_overlay=model_args.get('pretrained_cfg_overlay'))
    return bool(cfg.has_weights)


def _alternatives(name: str) -> str:
    return (f"Alternatives: convert the BNAS authors' released checkpoint (`bnas-zoo convert-official CKPT --model "
            f"{name} --output DIR`, then timm.create_model('local-dir:DIR', pretrained=True)), load published weights "
            f"with timm.create_model('hf-hub:ORG/NAME', pretrained=True), train your own (`bnas-train --model {name} "
            f"...`), or create the model without pretrained=True.")


def _no_pretrained_weights(variant: str, base: str) -> str:
    name = base if base in VARIANTS else 'NAME'
    if base not in VARIANTS:
        return f'{variant}: has no pretrained weights of its own (nothing was downloaded). {_alternatives(name)}'
    return (f"{variant}: no pretrained weights are published for it yet, so nothing was downloaded (this version of "
            f"bnas_zoo loads its own weights only from a pinned revision of {hub_repo_id(base, DEFAULT_HUB_ORG)}; "
            f"`bnas-zoo list` shows which are; BNAS_ZOO_HUB_ORG=ORG loads them from a mirror). {_alternatives(name)}")


def _weights_unavailable(variant: str, base: str, model_args: Dict[str, Any], e: BaseException) -> str:
    source = _weights_source(model_args)
    if source == 'the pretrained config' and base in VARIANTS:
        source = f'hf_hub_id {pretrained_hub_id(base)}'
    name = base if base in VARIANTS else 'NAME'
    return (f'{variant}: no pretrained weights could be had from {source}: the Hugging Face Hub was not reachable '
            f'(offline?) or the repository holds no such weights ({type(e).__name__}). {_alternatives(name)}')


def _is_load_error(e: RuntimeError) -> bool:
    msg = str(e)
    return any(s in msg for s in ('loading state_dict', 'size mismatch', 'PytorchStreamReader', 'Invalid magic',
                                  'safetensors', 'header', 'Weights only load failed'))


def _first_lines(e: BaseException, n: int = 12) -> str:
    lines = str(e).strip().splitlines() or [type(e).__name__]
    return '\n'.join(lines[:n]) + ('\n...' if len(lines) > n else '')


def _weights_source(model_args: Dict[str, Any]) -> str:
    cfg = dict(model_args.get('pretrained_cfg') or {}) if isinstance(model_args.get('pretrained_cfg'), dict) else {}
    cfg.update(model_args.get('pretrained_cfg_overlay') or {})
    for key in ('file', 'hf_hub_id', 'url'):
        if cfg.get(key):
            if key == 'file' and os.path.isdir(cfg[key]):  # local-dir: the folder's weight file
                return f"file {os.path.join(cfg[key], 'model.safetensors')}"
            return f'{key} {cfg[key]}'
    return 'the pretrained config'


#: the arguments of a bnas network (what a config's model_args may hold)
MODEL_ARGS = tuple(inspect.signature(BNASNet.__init__).parameters)[1:]
ARCHITECTURES = (*VARIANTS, 'bnas_custom', *(f'{n}.{v.tag}' for n, v in VARIANTS.items()))


def check_model_config(config: Any, source: str) -> Dict[str, Any]:
    """Check timm config.json content of a bnas model (``architecture`` a bnas name, ``model_args`` a dict of
    network arguments, ``num_classes`` a positive integer): raises CheckpointError naming ``source`` and field."""
    if not isinstance(config, dict):
        raise CheckpointError(f'{source}: the model config is a JSON {type(config).__name__}; expected an object '
                              f'with architecture and model_args')
    arch = config.get('architecture')
    if arch not in ARCHITECTURES:
        raise CheckpointError(f"{source}: field 'architecture' is {arch!r}; expected a bnas_zoo model "
                              f"({', '.join(VARIANTS)} or bnas_custom)")
    args = config.get('model_args', {})
    if not isinstance(args, dict):
        raise CheckpointError(f"{source}: field 'model_args' is a {type(args).__name__}; expected an object of "
                              f"network arguments ({', '.join(MODEL_ARGS)})")
    unknown = [k for k in args if k not in MODEL_ARGS]
    if unknown:
        raise CheckpointError(f"{source}: field 'model_args' holds unknown argument(s) {', '.join(map(str, unknown))}; "
                              f"expected some of {', '.join(MODEL_ARGS)}")
    if arch == 'bnas_custom':
        missing = [k for k in ('genotype', 'layers', 'channels') if k not in args]
        if missing:
            raise CheckpointError(f"{source}: field 'model_args' lacks {', '.join(missing)}; bnas_custom needs "
                                  f"genotype, layers and channels")
    for key in ('num_classes', 'layers', 'channels', 'in_chans'):
        for where, value in (('', config.get(key)), ('model_args.', args.get(key))):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1
                                      or value > 1_000_000):
                raise CheckpointError(f"{source}: field '{where}{key}' is {value!r}; expected a positive integer")
    for key in ('drop_rate', 'drop_path_rate'):
        value = args.get(key)
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value < 1):
            raise CheckpointError(f"{source}: field 'model_args.{key}' is {value!r}; expected a number in [0, 1)")
    for key in ('pretrained_cfg', 'model_args'):
        if key in config and not isinstance(config[key], dict):
            raise CheckpointError(f"{source}: field {key!r} is a {type(config[key]).__name__}; expected an object")
    return config


def read_model_folder(folder: Any) -> Dict[str, Any]:
    """The checked config.json of a model folder (``local-dir:``) that also holds model.safetensors."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f'{folder}: no such model folder; expected a folder with config.json and '
                              f'model.safetensors (written by convert-official, bnas-train or save_for_hf)')
    path = folder / 'config.json'
    for name in ('config.json', 'model.safetensors'):
        if not (folder / name).is_file():
            raise CheckpointError(f'{folder}: no {name}; expected a model folder written by convert-official, '
                                  f'by bnas-train or by timm.models.save_for_hf')
    try:
        config = json.loads(path.read_text(encoding='utf-8'))
    except (UnicodeDecodeError, RecursionError):
        raise CheckpointError(f'{path}: not readable JSON text') from None
    except ValueError as e:
        raise CheckpointError(f'{path}: not valid JSON ({first_line(e)})') from None
    return check_model_config(config, str(path))


def create_checked(name: str, **kwargs) -> BNASNet:
    """``timm.create_model(name, **kwargs)`` for a command line or a file: a ``local-dir:`` folder is checked
    first, and arguments that cannot build a network are a :class:`BnasError` instead of a raw exception."""
    import timm
    if name.startswith('local-dir:'):
        read_model_folder(name[len('local-dir:'):])
    unknown = [k for k in kwargs if k not in (*MODEL_ARGS, 'pretrained', 'pretrained_cfg_overlay')]
    if unknown:
        raise ModelConfigError(f"unknown model argument(s) {', '.join(unknown)}; expected some of {', '.join(MODEL_ARGS)}")
    try:
        return timm.create_model(name, **kwargs)
    except BnasError:
        raise
    except (TypeError, ValueError, RuntimeError, KeyError, AttributeError, OSError) as e:
        raise ModelConfigError(f'{name}: cannot build the model: {first_line(e)}') from None


@register_model
def bnas_mini(pretrained: bool = False, **kwargs) -> BNASNet:
    """BNAS-Mini (CIFAR-10): CIFAR cell, 10 cells, C0 = 24."""
    return _create('bnas_mini', pretrained, **kwargs)


@register_model
def bnas_a(pretrained: bool = False, **kwargs) -> BNASNet:
    """BNAS-A (CIFAR-10): CIFAR cell, 20 cells, C0 = 36."""
    return _create('bnas_a', pretrained, **kwargs)


@register_model
def bnas_b(pretrained: bool = False, **kwargs) -> BNASNet:
    """BNAS-B (CIFAR-10): CIFAR cell, 12 cells, C0 = 64."""
    return _create('bnas_b', pretrained, **kwargs)


@register_model
def bnas_c(pretrained: bool = False, **kwargs) -> BNASNet:
    """BNAS-C (CIFAR-10): CIFAR cell, 16 cells, C0 = 108."""
    return _create('bnas_c', pretrained, **kwargs)


@register_model
def bnas_d(pretrained: bool = False, **kwargs) -> BNASNet:
    """BNAS-D (ImageNet): ImageNet cell, 12 cells, C0 = 64."""
    return _create('bnas_d', pretrained, **kwargs)


@register_model
def bnas_e(pretrained: bool = False, **kwargs) -> BNASNet:
    """BNAS-E (ImageNet): ImageNet cell, 12 cells, C0 = 68."""
    return _create('bnas_e', pretrained, **kwargs)


@register_model
def bnas_f(pretrained: bool = False, **kwargs) -> BNASNet:
    """BNAS-F (ImageNet): ImageNet cell, 15 cells, C0 = 68."""
    return _create('bnas_f', pretrained, **kwargs)


@register_model
def bnas_g(pretrained: bool = False, **kwargs) -> BNASNet:
    """BNAS-G (ImageNet): ImageNet cell, 11 cells, C0 = 74."""
    return _create('bnas_g', pretrained, **kwargs)


@register_model
def bnas_h(pretrained: bool = False, **kwargs) -> BNASNet:
    """BNAS-H (ImageNet): ImageNet cell, 16 cells, C0 = 128."""
    return _create('bnas_h', pretrained, **kwargs)


@register_model
def bnas_d_grouped(pretrained: bool = False, **kwargs) -> BNASNet:
    """BNAS-D with grouped full-precision layers: our reconstruction of the paper's BNAS-D-dagger.

    Not a released network. The paper (Sec. 5.2.1, Tables 8-9) reaches its best minimal-regularization results
    with "group convolutions for the layers that are not binarized, i.e. the convolution layers in the stem,
    and increasing the number of channels ... without increases of FLOPs", and gives no configuration. Ours:
    ImageNet cell, 12 cells, C0 = 88 (BNAS-D: 64), the stem convolutions after the first in 4 groups and the
    2x2 reduction shortcuts in 4 groups. Chosen as the widest network with moderate grouping (4) whose FLOPs do
    not exceed BNAS-D's, in both accountings of ``bnas-zoo profile``: the paper's convention 1.454e8 (BNAS-D
    1.476e8) and as it runs 3.486e8 (BNAS-D 4.068e8); the float shortcuts, which grow with the width squared,
    must be grouped for the second. 49.4 M parameters. Default training recipe: ``imagenet-minreg``.
    """
    return _create('bnas_d_grouped', pretrained, **kwargs)


@register_model
def bnas_custom(pretrained: bool = False, **kwargs) -> BNASNet:
    """Any genotype: ``genotype=PATH_OR_DICT, layers=L, channels=C, stem='cifar'|'imagenet', num_classes=K``.

    Given none of genotype, layers and channels (as timm's generic tools create every registered name), it
    builds :data:`CUSTOM_DEFAULT`: the bundled CIFAR cell, 8 cells, C0 = 16, CIFAR stem; given some of them but
    not all, it is an error naming the missing ones."""
    return _create('bnas_custom', pretrained, **kwargs)
