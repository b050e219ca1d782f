"""Training recipes: YAML files holding every hyper-parameter, each overridable from the command line."""
from __future__ import annotations

import math
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from bnas_zoo.errors import BnasError

__all__ = ['RECIPE_KEYS', 'RECIPE_HELP', 'RECIPE_DEFAULTS', 'SCHEDULE_KEYS', 'list_recipes', 'load_recipe',
           'recipe_dir']

#: every key a recipe holds, with its type(s) (None allowed where the default is None)
RECIPE_KEYS: Dict[str, tuple] = {
    'description': (str,),
    'data': (str,),
    'epochs': (int,),
    'batch_size': (int,),
    'opt': (str,),
    'lr': (float, int),
    'weight_decay': (float, int),
    'momentum': (float, int),
    'sched': (str,),
    'sched_cycle_epochs': (int, float, type(None)),
    'cycle_decay': (float, int),
    'min_lr': (float, int),
    'warmup_epochs': (int, float),
    'warmup_lr': (float, int),
    'label_smoothing': (float, int),
    'color_jitter': (float, int),
    'hflip': (float, int),
    'random_crop_padding': (int, type(None)),
    'drop_path': (float, int),
    'drop_rate': (float, int),
    'grad_clip': (float, int, type(None)),
    'binary_weight_decay': (bool,),
    'bn_recalibration': (int,),
}

#: keys a recipe file may leave out (recipes written before they existed), with the value they then take
RECIPE_DEFAULTS: Dict[str, Any] = {'bn_recalibration': 0}


#: what each recipe key means, for ``bnas-train --help`` (the default of each flag is the recipe's value)
RECIPE_HELP: Dict[str, str] = {
    'epochs': 'training epochs; the warm-up and the cycle length of the recipe keep their share of the run',
    'batch_size': 'images per optimizer step, over all processes (the learning rate is not rescaled with it)',
    'opt': "optimizer, any name of timm's create_optimizer_v2 (sgd, adam, adamw, lamb, ...)",
    'lr': 'peak learning rate (at the recipe\'s batch size)',
    'weight_decay': 'weight decay of the float conv and linear weights (never BatchNorm or biases)',
    'momentum': 'momentum of SGD-type optimizers',
    'sched': "learning-rate schedule, a name of timm's create_scheduler_v2 (cosine, step, ...), stepped every update",
    'sched_cycle_epochs': 'length of one cosine cycle in epochs (restarts), null for one cycle over the run',
    'cycle_decay': 'factor applied to the peak rate at each restart',
    'min_lr': 'learning rate at the end of the schedule',
    'warmup_epochs': 'epochs of linear warm-up from --warmup-lr to --lr (may be a fraction, e.g. 0.5)',
    'warmup_lr': 'learning rate at the start of the warm-up',
    'label_smoothing': 'label smoothing of the cross-entropy (0: none)',
    'color_jitter': 'colour jitter strength of the training augmentation (0: none)',
    'hflip': 'probability of a horizontal flip of a training image (0 for digits and text)',
    'random_crop_padding': "CIFAR-style augmentation: images resized to the model's input, random crop with this "
                           "zero padding; null: timm's random-resized-crop pipeline",
    'drop_path': 'drop-path probability of each edge of a cell (training only)',
    'drop_rate': 'dropout before the classifier',
    'grad_clip': 'clip the gradient norm to this value, null for no clipping',
    'binary_weight_decay': 'also decay the latent binary weights (the release does not)',
    'bn_recalibration': 'at the end of each epoch, recompute the BatchNorm running statistics over this many '
                        'training images (at most a quarter of the epoch) with the epoch\'s final weights, before '
                        'evaluating and saving (0: off, the running averages of the epoch, which lag behind a '
                        'binary network whose weights move quickly)',
}

#: recipe keys measured in epochs that keep their share of the run when --epochs overrides the recipe's
SCHEDULE_KEYS = ('warmup_epochs', 'sched_cycle_epochs')


#: the values a recipe key may take (low, high exclusive or None, in words), beyond its type
RANGES: Dict[str, tuple] = {
    'lr': (1e-12, None, 'a positive finite number'),
    'weight_decay': (0, None, 'a finite number >= 0'),
    'momentum': (0, 1, 'a number in [0, 1)'),
    'sched_cycle_epochs': (1e-3, None, 'null or a positive number of epochs'),
    'cycle_decay': (1e-12, None, 'a positive finite number'),
    'min_lr': (0, None, 'a finite number >= 0'),
    'warmup_epochs': (0, None, 'a number of epochs >= 0'),
    'warmup_lr': (0, None, 'a finite number >= 0'),
    'label_smoothing': (0, 1, 'a number in [0, 1)'),
    'color_jitter': (0, None, 'a finite number >= 0'),
    'hflip': (0, 1, 'a probability in [0, 1]'),
    'random_crop_padding': (0, None, 'null or an integer >= 0'),
    'drop_path': (0, 1, 'a probability in [0, 1)'),
    'drop_rate': (0, 1, 'a probability in [0, 1)'),
    'grad_clip': (1e-12, None, 'null or a positive finite number'),
    'bn_recalibration': (0, None, 'an integer >= 0 (images)'),
}


class RecipeError(BnasError):
    """A recipe file or override that does not fit."""


def recipe_dir() -> Path:
    return Path(str(resources.files('bnas_zoo.train') / 'recipes'))


def list_recipes() -> List[str]:
    return sorted(p.stem for p in recipe_dir().glob('*.yaml'))


def _check(recipe: Dict[str, Any], source: str) -> Dict[str, Any]:
    unknown = sorted(set(recipe) - set(RECIPE_KEYS))
    if unknown:
        raise RecipeError(f"{source}: unknown recipe key(s) {', '.join(unknown)}; expected keys: {', '.join(RECIPE_KEYS)}")
    missing = sorted(set(RECIPE_KEYS) - set(recipe) - {'description'})
    if missing:
        raise RecipeError(f"{source}: missing recipe key(s) {', '.join(missing)}")
    for key, value in recipe.items():
        types = RECIPE_KEYS[key]
        if isinstance(value, bool) and bool not in types:
            ok = False
        else:
            ok = isinstance(value, types)
        if not ok:
            names = ' or '.join('null' if t is type(None) else t.__name__ for t in types)
            raise RecipeError(f'{source}: recipe key {key!r} is {value!r}; expected {names}')
    if recipe['epochs'] < 1 or recipe['batch_size'] < 1 or recipe['lr'] <= 0:
        raise RecipeError(f'{source}: epochs, batch_size and lr must be positive')
    for key, (low, high, expected) in RANGES.items():
        value = recipe[key]
        if value is None or isinstance(value, (bool, str)):
            continue
        if not (math.isfinite(value) and low <= value and (high is None or value < high or
                                                             (key == 'hflip' and value == 1))):
            raise RecipeError(f'{source}: recipe key {key!r} is {value!r}; expected {expected}')
    return recipe


def _parse_value(text: str) -> Any:
    return yaml.safe_load(text)


def load_recipe(name_or_path: str, overrides: Optional[Dict[str, Any]] = None,
                notices: Optional[List[str]] = None) -> Dict[str, Any]:
    """A bundled recipe (``cifar10``, ``imagenet-minreg``, ...) or a YAML path, with ``overrides`` applied.

    Override values given as strings are parsed as YAML scalars (``"0.1"`` -> 0.1, ``"null"`` -> None).

    The schedule fits the run: when ``epochs`` is overridden, the warm-up and the cycle length (not overridden
    themselves) keep their share of the run (cifar10's 180 warm-up epochs of 600 become 0.6 of 2), and one
    line per change is appended to ``notices``. A warm-up that covers the whole run is refused.
    """
    path = Path(name_or_path)
    if not path.is_file():
        if name_or_path not in list_recipes():
            raise RecipeError(f"unknown recipe {name_or_path!r}; expected one of {', '.join(list_recipes())} or a YAML path")
        path = recipe_dir() / f'{name_or_path}.yaml'
    try:
        recipe = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise RecipeError(f'{path}: not valid YAML ({e})') from None
    if not isinstance(recipe, dict):
        raise RecipeError(f'{path}: expected a mapping of recipe keys')
    recipe = dict(RECIPE_DEFAULTS, **recipe)
    _check(recipe, str(path))
    recipe_epochs = recipe['epochs']
    for key, value in (overrides or {}).items():
        if key not in RECIPE_KEYS:
            raise RecipeError(f"override {key}: unknown recipe key; expected one of {', '.join(RECIPE_KEYS)}")
        recipe[key] = _parse_value(value) if isinstance(value, str) and key not in ('opt', 'sched', 'data', 'description') else value
        if isinstance(recipe[key], int) and not isinstance(recipe[key], bool) and float in RECIPE_KEYS[key]:
            recipe[key] = float(recipe[key])
    _check(recipe, f'{path} (with overrides)')
    name = path.stem if path.parent == recipe_dir() else str(path)
    if recipe['epochs'] != recipe_epochs:
        for key in SCHEDULE_KEYS:
            if key in (overrides or {}) or not recipe[key]:
                continue
            value = round(recipe[key] * recipe['epochs'] / recipe_epochs, 3)
            if notices is not None:
                notices.append(f"--epochs {recipe['epochs']} (the {name} recipe has {recipe_epochs}): "
                               f"{key.replace('_', '-')} {recipe[key]:g} -> {value:g}, the same share of the run")
            recipe[key] = int(value) if float(value).is_integer() else value
    if recipe['warmup_epochs'] >= recipe['epochs']:
        raise RecipeError(f"recipe {name}: the warm-up ({recipe['warmup_epochs']:g} epochs) covers the whole run "
                          f"({recipe['epochs']} epochs): the learning rate would never reach lr {recipe['lr']:g}; "
                          f"give fewer --warmup-epochs (a fraction of an epoch is fine) or more --epochs")
    return recipe
