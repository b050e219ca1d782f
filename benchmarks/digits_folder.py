"""Write a real-format 10-class ImageFolder tree (PNG or JPEG files) from scikit-learn's handwritten digits.

The 1,797 8x8 digits are split by source image into a training and a validation pool (80/20, stratified, as
``--data embedded`` splits them), then rendered with a random affine jitter (rotation, scale, shift) and a
little noise at the size and mode asked for, so that the training images are not copies of the validation
ones. What a user has on disk: ``DIR/train/<digit>/<n>.png`` and ``DIR/val/<digit>/<n>.png``.

    python benchmarks/digits_folder.py /tmp/digits28                      # 6,000 + 2,000 28x28 grayscale PNGs
    python benchmarks/digits_folder.py /tmp/digits64 --size 64 --mode RGB --format jpeg
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def write_digits_folder(root, train: int = 6000, val: int = 2000, size: int = 28, mode: str = 'L',
                        fmt: str = 'png', seed: int = 0) -> Path:
    """Write the tree under ``root`` (``train/`` and ``val/``, one folder per digit); returns ``root``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    root = Path(root)
    digits = load_digits()
    pools = train_test_split(np.arange(len(digits.target)), test_size=0.2, random_state=0, stratify=digits.target)
    rng = np.random.RandomState(seed)
    ext = {'png': '.png', 'jpeg': '.jpg'}[fmt]
    for split, pool, count in (('train', pools[0], train), ('val', pools[1], val)):
        for c in range(10):
            (root / split / str(c)).mkdir(parents=True, exist_ok=True)
        for n in range(count):
            i = pool[n % len(pool)]
            glyph = Image.fromarray((digits.images[i] * (255.0 / 16.0)).astype(np.uint8))
            inner = int(size * rng.uniform(0.6, 0.8))
            glyph = glyph.resize((inner, inner), Image.BICUBIC).rotate(rng.uniform(-12, 12), Image.BILINEAR)
            canvas = Image.new('L', (size, size), 0)
            shift = size - inner
            canvas.paste(glyph, (int(rng.randint(0, shift + 1)), int(rng.randint(0, shift + 1))))
            pixels = np.asarray(canvas, dtype=np.float32) + rng.normal(0, 8, (size, size))
            img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), 'L')
            if mode == 'RGB':  # coloured strokes on a coloured background
                fg, bg = rng.randint(128, 256, 3), rng.randint(0, 96, 3)
                a = np.asarray(img, dtype=np.float32)[..., None] / 255.0
                img = Image.fromarray((a * fg + (1 - a) * bg).astype(np.uint8), 'RGB')
            img.save(root / split / str(digits.target[i]) / f'{n}{ext}', **({'quality': 90} if fmt == 'jpeg' else {}))
    return root


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('root', help='folder to write (train/ and val/ are created in it)')
    p.add_argument('--train', type=int, default=6000, help='training images (default: 6000)')
    p.add_argument('--val', type=int, default=2000, help='validation images (default: 2000)')
    p.add_argument('--size', type=int, default=28, help='image side in pixels (default: 28)')
    p.add_argument('--mode', choices=['L', 'RGB'], default='L', help='grayscale (L, default) or colour (RGB)')
    p.add_argument('--format', choices=['png', 'jpeg'], default='png', help='file format (default: png)')
    p.add_argument('--seed', type=int, default=0, help='random seed of the jitter (default: 0)')
    a = p.parse_args()
    write_digits_folder(a.root, a.train, a.val, a.size, a.mode, a.format, a.seed)
    print(f'wrote {a.train} + {a.val} {a.size}x{a.size} {a.mode} {a.format} images under {a.root}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
