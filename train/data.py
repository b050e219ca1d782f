"""Datasets and transforms: the embedded digits, image folder trees and timm's dataset specs (torch/cifar10,
hfds/..., wds/...), all read by timm.data.create_dataset; class-balanced subsets; the transforms."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
from PIL import Image
from timm.data import create_dataset, create_transform
from torchvision import transforms as T

from bnas_zoo.errors import BnasError

__all__ = ['EmbeddedDigits', 'build_datasets', 'data_source', 'data_facts', 'embedded_data_config', 'class_names',
           'targets', 'train_subset', 'to_rgb', 'EMBEDDED_MEAN', 'EMBEDDED_STD', 'EMBEDDED_DATASET',
           'EMBEDDED_DATASET_NAME', 'TIMM_PREFIXES']

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.tif', '.tiff', '.webp', '.ppm', '.pgm')


class DataError(BnasError):
    """A dataset folder that cannot be trained on."""


class EmbeddedDigits(torch.utils.data.Dataset):
    """scikit-learn's handwritten digits (shipped inside the package: nothing is downloaded), upsampled
    from 8x8 to 32x32 RGB images, with a fixed stratified 80/20 split (``train`` 1,437 / ``test`` 360)."""

    num_classes = 10
    in_memory = True  # nothing to decode: data-loading workers would only add their start-up

    def __init__(self, split: str = 'train', transform=None, size: int = 32):
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
        if split not in ('train', 'test'):
            raise DataError(f"embedded data: split {split!r}; expected 'train' or 'test'")
        digits = load_digits()
        idx_train, idx_test = train_test_split(
            np.arange(len(digits.target)), test_size=0.2, random_state=0, stratify=digits.target)
        idx = idx_train if split == 'train' else idx_test
        pixels = (digits.images[idx] * (255.0 / 16.0)).astype(np.uint8)
        self.images = [Image.fromarray(p).resize((size, size), Image.BILINEAR).convert('RGB') for p in pixels]
        self.targets = digits.target[idx].tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        img = self.images[i]
        return (self.transform(img) if self.transform else img), self.targets[i]


#: how model cards name the embedded digits (an identifier, and words for people)
EMBEDDED_DATASET = 'sklearn-digits'
EMBEDDED_DATASET_NAME = "scikit-learn's handwritten digits, upsampled to 32x32"

# statistics of the embedded training split (gray images replicated to 3 channels)
EMBEDDED_MEAN = (0.3048,) * 3
EMBEDDED_STD = (0.3235,) * 3


#: the prefixes of timm's dataset specs (``timm.data.create_dataset``) that --dataset accepts
TIMM_PREFIXES = ('torch', 'hfds', 'hfids', 'tfds', 'wds')


def data_source(dataset: Optional[str], data_dir: Optional[str]) -> str:
    """The data source of a run, from ``--dataset`` (timm train.py's meaning) and ``--data-dir``: 'embedded',
    'folder' (an ImageFolder tree: --dataset empty or omitted, with --data-dir) or a timm dataset spec such as
    'torch/cifar10'. A DataError when neither is given or the spec is unknown."""
    spec = (dataset or '').strip()
    if spec in ('', 'folder'):
        if not data_dir:
            raise DataError('no data: give --data-dir DIR (an image folder tree: DIR/train/<class>/<image>, '
                            'DIR/val/<class>/<image>) or --dataset embedded')
        return 'folder'
    if spec == 'embedded':
        return 'embedded'
    prefix = spec.partition('/')[0].lower()
    if prefix not in TIMM_PREFIXES or not spec.partition('/')[2]:
        raise DataError(f"--dataset {spec!r}: unknown data source; expected 'embedded', a timm dataset spec "
                        f"({', '.join(p + '/NAME' for p in TIMM_PREFIXES)}, e.g. torch/cifar10) or nothing (an image "
                        f"folder tree in --data-dir). The dataset's name for the model card is --dataset-name")
    if prefix == 'torch' and not data_dir:
        raise DataError(f'--dataset {spec}: give --data-dir, the folder torchvision stores it in (nothing is '
                        f'downloaded)')
    return spec


def embedded_data_config(data_cfg: Dict[str, Any]) -> Dict[str, Any]:
    """A model's data config adapted to the embedded digits (32x32, their mean and std)."""
    return dict(data_cfg, mean=EMBEDDED_MEAN, std=EMBEDDED_STD, input_size=(3, 32, 32))


def to_rgb(img: Image.Image) -> Image.Image:
    """A PIL image in RGB mode (grayscale, palette, RGBA, 16-bit ... converted once; RGB returned as is)."""
    return img if img.mode == 'RGB' else img.convert('RGB')


def _transforms(recipe: Dict[str, Any], data_cfg: Dict[str, Any], training: bool):
    """The recipe's transform for images of any size and mode (converted to RGB first, once per sample, as
    timm's datasets do: a no-op for them)."""
    size = data_cfg['input_size'][-1]
    mean, std = data_cfg['mean'], data_cfg['std']
    if recipe.get('random_crop_padding') is not None:  # CIFAR-style pipeline (the release's)
        ops = [T.Lambda(to_rgb), T.Resize(size), T.CenterCrop(size)]  # identity on images of the model's size
        if training:
            ops.append(T.RandomCrop(size, padding=recipe['random_crop_padding']))
            if recipe['hflip'] > 0:
                ops.append(T.RandomHorizontalFlip(recipe['hflip']))
            if recipe['color_jitter'] > 0:
                ops.append(T.ColorJitter(*(recipe['color_jitter'],) * 3))
        return T.Compose(ops + [T.ToTensor(), T.Normalize(mean, std)])
    tf = create_transform(
        data_cfg['input_size'], is_training=training, hflip=recipe['hflip'], color_jitter=recipe['color_jitter'] or None,
        interpolation=data_cfg.get('interpolation', 'bilinear'), mean=mean, std=std, crop_pct=data_cfg.get('crop_pct'))
    return T.Compose([T.Lambda(to_rgb), *tf.transforms])


def build_datasets(recipe: Dict[str, Any], data_cfg: Dict[str, Any], data_dir: Optional[str], data: str,
                   train_split: str = 'train', val_split: str = 'validation',
                   warn_same_split: bool = True, need_train: bool = True, need_eval: bool = True
                   ) -> Tuple[Any, Any, int]:
    """(train dataset, evaluation dataset, number of classes). ``data`` is ``embedded``, ``folder`` or a timm
    dataset spec (``torch/cifar10``, ``hfds/...``, ``wds/...``: read by ``timm.data.create_dataset``).

    A folder tree must hold both splits as subfolders (the evaluation split may be named validation, val or
    test; ``--val-split train`` evaluates on the training images, with a warning), the same class folders in
    both, and at least 2 classes; a DataError otherwise. With ``need_train=False`` (evaluation only) the
    training split may be absent: the train dataset is then None and the classes are the evaluation split's;
    with ``need_eval=False`` (the search) only the training split is read: the evaluation dataset is None."""
    train_tf, eval_tf = _transforms(recipe, data_cfg, True), _transforms(recipe, data_cfg, False)
    if data == 'embedded':
        return EmbeddedDigits('train', train_tf), EmbeddedDigits('test', eval_tf), EmbeddedDigits.num_classes
    if not data_dir and data == 'folder':
        raise DataError('no data: give --data-dir DIR (an image folder tree with train/ and val/ folders) or '
                        '--dataset embedded')
    if data != 'folder':
        return _timm_datasets(data, data_dir, train_split, val_split, train_tf, eval_tf, need_train, need_eval)
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f'--data-dir {root}: no such folder')
    train_dir = _find_split(root, train_split)
    val_dir = _find_split(root, val_split, evaluation=True) if need_eval else (train_dir or root / train_split)
    if val_dir is None:
        others = [d.name for d in _subfolders(root) if train_dir is None or d.resolve() != train_dir.resolve()]
        hint = (f'the folder holds {", ".join(o + "/" for o in others)}: pass --val-split {others[0]}' if others else
                f'to evaluate on the training images knowingly, pass --val-split {train_split}')
        raise DataError(f'--data-dir {root}: no {val_split!r} split (looked for '
                        f'{", ".join(_synonyms(val_split, True))}/); expected '
                        f'{root}/train/<class>/<image> and {root}/val/<class>/<image>; {hint}')
    if train_dir is None and not need_train:
        train_dir = val_dir  # evaluation only: the class folders are the evaluation split's
    if train_dir is None:
        others = [d.name for d in _subfolders(root) if d.resolve() != val_dir.resolve()]
        raise DataError(f'--data-dir {root}: no {train_split!r} split (looked for '
                        f'{", ".join(_synonyms(train_split))}/); expected {root}/train/<class>/<image>'
                        + (f'; the folder holds {", ".join(o + "/" for o in others)}: pass --train-split {others[0]}'
                           if others else ''))
    if need_eval and train_dir.resolve() == val_dir.resolve() and warn_same_split:
        print(f'warning: --data-dir {root}: evaluating on the training images ({train_dir.name}/, as asked); the '
              f'validation figures say nothing about new images', file=sys.stderr, flush=True)
    datasets = []
    for split, folder in ((train_split, train_dir), (val_split, val_dir) if need_eval else (train_split, train_dir)):
        if datasets and not need_eval:
            datasets.append(datasets[0])  # the search reads the training split alone
            break
        try:
            ds = create_dataset('', root=str(folder), split='', is_training=split == train_split)
        except (RuntimeError, FileNotFoundError) as e:
            raise DataError(f'--data-dir {root}: no usable {split!r} split ({str(e).splitlines()[0]}); '
                            f'expected {root}/train/<class>/<image> and {root}/val/<class>/<image>') from None
        if len(ds) == 0:
            raise DataError(f'--data-dir {root}: the {split!r} split holds no images ({", ".join(IMAGE_EXTENSIONS)})')
        datasets.append(ds)
    train_ds, eval_ds = datasets
    train_classes, eval_classes = class_names(train_ds), class_names(eval_ds)
    if not need_eval:
        eval_ds = None
    if train_classes != eval_classes:  # the labels are the class folders' sorted positions: they must agree
        only_train = [c for c in train_classes if c not in eval_classes]
        only_eval = [c for c in eval_classes if c not in train_classes]
        raise DataError(f'--data-dir {root}: the {train_dir.name}/ and {val_dir.name}/ class folders differ '
                        f'(only in {train_dir.name}/: {", ".join(only_train[:5]) or "none"}; only in '
                        f'{val_dir.name}/: {", ".join(only_eval[:5]) or "none"}); the labels would not match')
    if len(train_classes) < 2:
        raise DataError(f'--data-dir {root}: {len(train_classes)} class folder(s) in {train_dir.name}/ '
                        f'({", ".join(train_classes)}); need at least 2 classes (one folder of images per class)')
    train_ds.transform = train_tf
    if eval_ds is not None:
        eval_ds.transform = eval_tf
    return train_ds, eval_ds, len(train_classes)


#: what torchvision's datasets expect under --data-dir (what users have on disk), for the error messages
_TORCH_LAYOUTS = {'cifar10': 'cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta)',
                  'cifar100': 'cifar-100-python/ (train, test, meta)',
                  'mnist': 'MNIST/raw/ (train-images-idx3-ubyte, ...)'}


def _timm_datasets(spec: str, data_dir: Optional[str], train_split: str, val_split: str, train_tf, eval_tf,
                   need_train: bool, need_eval: bool) -> Tuple[Any, Any, int]:
    """Both splits of a timm dataset spec through ``timm.data.create_dataset`` (nothing is downloaded)."""
    prefix, _, name = spec.partition('/')
    datasets = []
    for split, tf, training in ((train_split, train_tf, True), (val_split, eval_tf, False)):
        if (training and not need_train) or (not training and not need_eval):
            datasets.append(None)
            continue
        try:
            ds = create_dataset(spec, root=data_dir, split=split, is_training=training, download=False)
        except ImportError as e:
            package = {'hfds': 'datasets', 'hfids': 'datasets', 'wds': 'webdataset', 'tfds': 'tensorflow-datasets'}
            raise DataError(f'--dataset {spec}: needs the {package.get(prefix.lower(), e.name)} package '
                            f'(pip install {package.get(prefix.lower(), e.name)})') from None
        except Exception as e:  # noqa: BLE001 - torchvision / timm / a reader: the same error for the user
            layout = _TORCH_LAYOUTS.get(name.lower())
            raise DataError(f'--dataset {spec} --data-dir {data_dir}: the {split!r} split cannot be read '
                            f'({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""})'
                            + (f'; expected {Path(data_dir or ".") / layout} as torchvision stores it' if layout else '')
                            ) from None
        ds.transform = tf
        datasets.append(ds)
    train_ds, eval_ds = datasets
    classes = class_names(eval_ds if eval_ds is not None else train_ds)
    if train_ds is not None and eval_ds is not None and class_names(train_ds) != classes:
        raise DataError(f'--dataset {spec}: the {train_split!r} and {val_split!r} splits have other classes')
    if len(classes) < 2:
        raise DataError(f'--dataset {spec}: {len(classes)} class(es) found; need at least 2 (a classification '
                        f'dataset with class names)')
    return train_ds, eval_ds, len(classes)


def class_names(ds) -> list:
    """The class names of a dataset (in label order): a timm reader's ``class_to_idx``, a torchvision
    dataset's ``classes``; [] when it states none."""
    while isinstance(ds, torch.utils.data.Subset):
        ds = ds.dataset
    mapping = getattr(getattr(ds, 'reader', None), 'class_to_idx', None) or getattr(ds, 'class_to_idx', None)
    if mapping:
        return [c for c, _ in sorted(mapping.items(), key=lambda kv: kv[1])]
    return [str(c) for c in (getattr(ds, 'classes', None) or [])]


def targets(ds) -> Optional[list]:
    """The label of every sample without decoding any image (timm folders, torchvision datasets, Subsets),
    or None when the dataset does not list them."""
    if isinstance(ds, torch.utils.data.Subset):
        inner = targets(ds.dataset)
        return None if inner is None else [inner[i] for i in ds.indices]
    samples = getattr(getattr(ds, 'reader', None), 'samples', None)
    if samples is not None:
        return [int(t) for _, t in samples]
    found = getattr(ds, 'targets', None)
    return None if found is None else [int(t) for t in found]


def train_subset(ds, n: int, seed: int):
    """A seeded random subset of ``n`` samples, balanced over the classes (each class gives n / classes, the
    remainder going to the first classes in a seeded order; a class with fewer samples gives them all and the
    others fill in). Falls back to a seeded random subset when the labels are not listed."""
    if n >= len(ds):
        return ds
    rng = np.random.RandomState(seed)
    labels = targets(ds)
    if labels is None:
        return torch.utils.data.Subset(ds, sorted(rng.permutation(len(ds))[:n].tolist()))
    by_class: Dict[int, list] = {}
    for i, t in enumerate(labels):
        by_class.setdefault(t, []).append(i)
    pools = [list(rng.permutation(by_class[c])) for c in sorted(by_class)]
    order = rng.permutation(len(pools))
    chosen: list = []
    while len(chosen) < n:  # one from each class in turn, in a seeded class order
        for c in order:
            if pools[c] and len(chosen) < n:
                chosen.append(int(pools[c].pop()))
    return torch.utils.data.Subset(ds, sorted(chosen))


def _subfolders(root: Path) -> list:
    return sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith('.'))


def _synonyms(split: str, evaluation: bool = False) -> list:
    """A split's name and its synonyms (timm's, and 'test' for an evaluation split)."""
    from timm.data.dataset_factory import _EVAL_SYNONYM, _TRAIN_SYNONYM
    names = [split]
    for group in (_TRAIN_SYNONYM, _EVAL_SYNONYM):
        if split in group:
            names += [s for s in group if s != split]
    if evaluation and 'test' not in names and split not in _TRAIN_SYNONYM:
        names.append('test')  # the other common name of an evaluation split (train/ + test/ trees)
    return names


def _find_split(root: Path, split: str, evaluation: bool = False) -> Optional[Path]:
    """The folder of a split under ``root`` (its name, or a synonym: val or test for validation), or None."""
    for name in _synonyms(split, evaluation):
        if (root / name).is_dir():
            return root / name
    return None


def _split_folder(ds, root: Path, requested: str) -> str:
    """The folder an ImageFolder split was read from ('val' for a requested 'validation'), else the request."""
    found = getattr(getattr(ds, 'reader', None), 'root', None)
    if found is None or Path(found).resolve() == root.resolve():
        return requested
    return Path(found).name


def data_facts(data: str, data_dir: Optional[str], dataset_name: Optional[str], train_ds, eval_ds, classes: int,
               train_split: str = 'train', val_split: str = 'validation') -> Dict[str, Any]:
    """What a run records about its data (for its model card): the dataset's identifier and name, the class
    count, and the splits with their sizes. ``dataset_name`` is the user's name for the data (--dataset-name);
    without it, a timm spec's name (cifar10 for torch/cifar10) or the folder tree's name is used. The embedded
    digits are always :data:`EMBEDDED_DATASET`."""
    if data == 'embedded':
        if dataset_name and dataset_name != EMBEDDED_DATASET:
            raise DataError(f'--dataset-name {dataset_name!r}: --dataset embedded always trains on the embedded '
                            f'digits ({EMBEDDED_DATASET}); --dataset-name names the data of --data-dir')
        return dict(data='embedded', dataset=EMBEDDED_DATASET, dataset_name=EMBEDDED_DATASET_NAME,
                    num_classes=classes, train_split='train', train_images=len(train_ds),
                    eval_split='test', eval_images=len(eval_ds))
    root = Path(data_dir) if data_dir else None
    if data == 'folder':
        name = dataset_name or root.resolve().name
        return dict(data='folder', dataset=name, dataset_name=name, data_dir=root.resolve().name,
                    num_classes=classes, train_split=_split_folder(train_ds, root, train_split),
                    train_images=len(train_ds), eval_split=_split_folder(eval_ds, root, val_split),
                    eval_images=len(eval_ds))
    name = dataset_name or data.partition('/')[2]
    return dict(data=data, dataset=name, dataset_name=name, num_classes=classes, train_split=train_split,
                train_images=len(train_ds), eval_split=val_split, eval_images=len(eval_ds),
                **({'data_dir': root.resolve().name} if root else {}))
