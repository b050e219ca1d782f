"""Training recipes: YAML files holding every hyper-parameter, each overridable from the command line."""
from __future__ import annotations

import math
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from bnas_zoo.errors import BnasError

__all__ = ['RECIPE_KEYS', 'list_recipes', 'load_recipe', 'recipe_dir']

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
    'sched_cycle_epochs': (int, type(None)),
    'cycle_decay': (float, int),
    'min_lr': (float, int),
    'warmup_epochs': (int,),
    'warmup_lr': (float, int),
    'label_smoothing': (float, int),
    'color_jitter': (float, int),
    'hflip': (float, int),
    'random_crop_padding': (int, type(None)),
    'drop_path': (float, int),
    'drop_rate': (float, int),
    'grad_clip': (float, int, type(None)),
    'binary_weight_decay': (bool,),
}


#: the values a recipe key may take (low, high exclusive or None, in words), beyond its type
RANGES: Dict[str, tuple] = {
    'lr': (1e-12, None, 'a positive finite number'),
    'weight_decay': (0, None, 'a finite number >= 0'),
    'momentum': (0, 1, 'a number in [0, 1)'),
    'sched_cycle_epochs': (1, None, 'null or an integer >= 1'),
    'cycle_decay': (1e-12, None, 'a positive finite number'),
    'min_lr': (0, None, 'a finite number >= 0'),
    'warmup_epochs': (0, None, 'an integer >= 0'),
    'warmup_lr': (0, None, 'a finite number >= 0'),
    'label_smoothing': (0, 1, 'a number in [0, 1)'),
    'color_jitter': (0, None, 'a finite number >= 0'),
    'hflip': (0, 1, 'a probability in [0, 1]'),
    'random_crop_padding': (0, None, 'null or an integer >= 0'),
    'drop_path': (0, 1, 'a probability in [0, 1)'),
    'drop_rate': (0, 1, 'a probability in [0, 1)'),
    'grad_clip': (1e-12, None, 'null or a positive finite number'),
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


def load_recipe(name_or_path: str, overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """A bundled recipe (``cifar10``, ``imagenet-minreg``, ...) or a YAML path, with ``overrides`` applied.

    Override values given as strings are parsed as YAML scalars (``"0.1"`` -> 0.1, ``"null"`` -> None).
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
    _check(recipe, str(path))
    for key, value in (overrides or {}).items():
        if key not in RECIPE_KEYS:
            raise RecipeError(f"override {key}: unknown recipe key; expected one of {', '.join(RECIPE_KEYS)}")
        recipe[key] = _parse_value(value) if isinstance(value, str) and key not in ('opt', 'sched', 'data', 'description') else value
        if isinstance(recipe[key], int) and not isinstance(recipe[key], bool) and float in RECIPE_KEYS[key]:
            recipe[key] = float(recipe[key])
    return _check(recipe, f'{path} (with overrides)')
