"""Datasets and transforms: the embedded digits, ImageFolder trees (timm.data.create_dataset), transforms."""
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

__all__ = ['EmbeddedDigits', 'build_datasets', 'data_source', 'data_facts', 'embedded_data_config', 'EMBEDDED_MEAN',
           'EMBEDDED_STD', 'EMBEDDED_DATASET', 'EMBEDDED_DATASET_NAME']

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.tif', '.tiff', '.webp', '.ppm', '.pgm')


class DataError(BnasError):
    """A dataset folder that cannot be trained on."""


class EmbeddedDigits(torch.utils.data.Dataset):
    """scikit-learn's handwritten digits (shipped inside the package: nothing is downloaded), upsampled
    from 8x8 to 32x32 RGB images, with a fixed stratified 80/20 split (``train`` 1,437 / ``test`` 360)."""

    num_classes = 10

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


def data_source(data: Optional[str], data_dir: Optional[str]) -> str:
    """'embedded' or 'folder', from --data / --data-dir; an error when neither is given."""
    source = data or ('folder' if data_dir else None)
    if source is None:
        raise DataError('no data: give --data embedded or --data-dir DIR')
    return source


def embedded_data_config(data_cfg: Dict[str, Any]) -> Dict[str, Any]:
    """A model's data config adapted to the embedded digits (32x32, their mean and std)."""
    return dict(data_cfg, mean=EMBEDDED_MEAN, std=EMBEDDED_STD, input_size=(3, 32, 32))


def _transforms(recipe: Dict[str, Any], data_cfg: Dict[str, Any], training: bool):
    size = data_cfg['input_size'][-1]
    mean, std = data_cfg['mean'], data_cfg['std']
    if recipe.get('random_crop_padding') is not None:  # CIFAR-style pipeline (the release's)
        ops = [T.Resize(size), T.CenterCrop(size)]  # identity on images of the model's size
        if training:
            ops.append(T.RandomCrop(size, padding=recipe['random_crop_padding']))
            if recipe['hflip'] > 0:
                ops.append(T.RandomHorizontalFlip(recipe['hflip']))
            if recipe['color_jitter'] > 0:
                ops.append(T.ColorJitter(*(recipe['color_jitter'],) * 3))
        return T.Compose(ops + [T.ToTensor(), T.Normalize(mean, std)])
    return create_transform(
        data_cfg['input_size'], is_training=training, hflip=recipe['hflip'], color_jitter=recipe['color_jitter'] or None,
        interpolation=data_cfg.get('interpolation', 'bilinear'), mean=mean, std=std, crop_pct=data_cfg.get('crop_pct'))


def _count_images(root: Path) -> int:
    return sum(1 for p in root.rglob('*') if p.suffix.lower() in IMAGE_EXTENSIONS)


def build_datasets(recipe: Dict[str, Any], data_cfg: Dict[str, Any], data_dir: Optional[str], data: str,
                   train_split: str = 'train', val_split: str = 'validation',
                   warn_same_split: bool = True, need_train: bool = True) -> Tuple[Any, Any, int]:
    """(train dataset, evaluation dataset, number of classes). ``data`` is ``embedded`` or ``folder``.

    A folder tree must hold both splits as subfolders (``--val-split train`` evaluates on the training images,
    with a warning), the same class folders in both, and at least 2 classes; a DataError otherwise. With
    ``need_train=False`` (evaluation only) the training split may be absent: the train dataset is then None and
    the classes are the evaluation split's."""
    train_tf, eval_tf = _transforms(recipe, data_cfg, True), _transforms(recipe, data_cfg, False)
    if data == 'embedded':
        return EmbeddedDigits('train', train_tf), EmbeddedDigits('test', eval_tf), EmbeddedDigits.num_classes
    if not data_dir:
        raise DataError('no data: give --data-dir DIR (an ImageFolder tree with train/ and val/ folders) or --data embedded')
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f'--data-dir {root}: no such folder')
    train_dir, val_dir = _find_split(root, train_split, 'train'), _find_split(root, val_split, 'validation')
    if val_dir is None:
        raise DataError(f'--data-dir {root}: no {val_split!r} split (looked for {", ".join(_synonyms(val_split))}/); '
                        f'expected {root}/train/<class>/<image> and {root}/val/<class>/<image>; to evaluate on the '
                        f'training images knowingly, pass --val-split {train_split}')
    if train_dir is None and not need_train:
        train_dir = val_dir  # evaluation only: the class folders are the evaluation split's
    if train_dir is None:
        raise DataError(f'--data-dir {root}: no {train_split!r} split (looked for '
                        f'{", ".join(_synonyms(train_split))}/); expected {root}/train/<class>/<image>')
    if train_dir.resolve() == val_dir.resolve() and warn_same_split:
        print(f'warning: --data-dir {root}: evaluating on the training images ({train_dir.name}/, as asked); the '
              f'validation figures say nothing about new images', file=sys.stderr, flush=True)
    datasets = []
    for split, folder in ((train_split, train_dir), (val_split, val_dir)):
        try:
            ds = create_dataset('', root=str(folder), split='', is_training=split == train_split)
        except (RuntimeError, FileNotFoundError) as e:
            raise DataError(f'--data-dir {root}: no usable {split!r} split ({str(e).splitlines()[0]}); '
                            f'expected {root}/train/<class>/<image> and {root}/val/<class>/<image>') from None
        if len(ds) == 0:
            raise DataError(f'--data-dir {root}: the {split!r} split holds no images ({", ".join(IMAGE_EXTENSIONS)})')
        datasets.append(ds)
    train_ds, eval_ds = datasets
    train_classes = sorted(getattr(train_ds.reader, 'class_to_idx', {}) or {})
    eval_classes = sorted(getattr(eval_ds.reader, 'class_to_idx', {}) or {})
    if train_classes != eval_classes:  # the labels are the class folders' sorted positions: they must agree
        only_train = [c for c in train_classes if c not in eval_classes]
        only_eval = [c for c in eval_classes if c not in train_classes]
        raise DataError(f'--data-dir {root}: the {train_dir.name}/ and {val_dir.name}/ class folders differ '
                        f'(only in {train_dir.name}/: {", ".join(only_train[:5]) or "none"}; only in '
                        f'{val_dir.name}/: {", ".join(only_eval[:5]) or "none"}); the labels would not match')
    if len(train_classes) < 2:
        raise DataError(f'--data-dir {root}: {len(train_classes)} class folder(s) in {train_dir.name}/ '
                        f'({", ".join(train_classes)}); need at least 2 classes (one folder of images per class)')
    train_ds.transform, eval_ds.transform = train_tf, eval_tf
    return train_ds, eval_ds, len(train_classes)


def _synonyms(split: str) -> list:
    from timm.data.dataset_factory import _EVAL_SYNONYM, _TRAIN_SYNONYM
    for group in (_TRAIN_SYNONYM, _EVAL_SYNONYM):
        if split in group:
            return [split] + [s for s in group if s != split]
    return [split]


def _find_split(root: Path, split: str, kind: str) -> Optional[Path]:
    """The folder of a split under ``root`` (its name, or a synonym: val for validation), or None."""
    for name in _synonyms(split):
        if (root / name).is_dir():
            return root / name
    return None


def _split_folder(ds, root: Path, requested: str) -> str:
    """The folder an ImageFolder split was read from ('val' for a requested 'validation'), else the request."""
    found = getattr(getattr(ds, 'reader', None), 'root', None)
    if found is None or Path(found).resolve() == root.resolve():
        return requested
    return Path(found).name


def data_facts(data: str, data_dir: Optional[str], dataset: Optional[str], train_ds, eval_ds, classes: int,
               train_split: str = 'train', val_split: str = 'validation') -> Dict[str, Any]:
    """What a run records about its data (for its model card): the dataset's identifier and name, the class
    count, and the splits with their sizes. ``dataset`` is the user's name for an ImageFolder tree; without it
    the tree's folder name is used. The embedded digits are always :data:`EMBEDDED_DATASET`."""
    if data == 'embedded':
        if dataset and dataset != EMBEDDED_DATASET:
            raise DataError(f'--dataset {dataset!r}: --data embedded always trains on the embedded digits '
                            f'({EMBEDDED_DATASET}); --dataset names an ImageFolder tree given with --data-dir')
        return dict(data='embedded', dataset=EMBEDDED_DATASET, dataset_name=EMBEDDED_DATASET_NAME,
                    num_classes=classes, train_split='train', train_images=len(train_ds),
                    eval_split='test', eval_images=len(eval_ds))
    root = Path(data_dir)
    name = dataset or root.resolve().name
    return dict(data='folder', dataset=name, dataset_name=name, data_dir=root.resolve().name, num_classes=classes,
                train_split=_split_folder(train_ds, root, train_split), train_images=len(train_ds),
                eval_split=_split_folder(eval_ds, root, val_split), eval_images=len(eval_ds))
