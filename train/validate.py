"""``bnas-validate``: top-1 / top-5 of a model on a dataset.

    bnas-validate --model local-dir:runs/mini --dataset embedded
    bnas-validate --model bnas_d --pretrained --data-dir /data/imagenet --val-split validation
    bnas-validate --model local-dir:runs/a --dataset torch/cifar10 --data-dir /data/cifar    # torchvision's files
    bnas-validate --model bnas_mini --checkpoint runs/mini/model.safetensors --dataset embedded
    bnas-validate --model bnas_mini --checkpoint runs/pets/model.safetensors --data-dir pets   # its head's classes
    bnas-validate --model bnas_mini --checkpoint output/train/RUN/model_best.pth.tar --data-dir DIR  # timm train.py
        (the classifier takes the checkpoint's class count)
    bnas-validate --model hf-hub:ORG/NAME --data-dir DIR --json
    bnas-validate --model local-dir:runs/x --use-ema --data-dir DIR   # the EMA weights of a --model-ema run
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

import torch

from bnas_zoo.errors import BnasError, CheckpointError, run_cli

from .flags import add_amp_flags, add_data_flags, add_model_flags, add_workers_flag, amp_of, data_of

__all__ = ['main']


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='bnas-validate', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_flags(p)
    p.add_argument('--checkpoint', help="weights for --model: a safetensors file (a run's model.safetensors) or a "
                                        "torch checkpoint (a state dict, or a training checkpoint such as timm "
                                        "train.py's model_best.pth.tar), read with torch.load(weights_only=True) "
                                        "(default: the weights --model loads)")
    p.add_argument('--use-ema', action='store_true',
                   help="the EMA weights: of --checkpoint (its 'state_dict_ema'), or without --checkpoint those of the "
                        "bnas-train run folder local-dir:RUN trained with --model-ema (default: off)")
    p.add_argument('--num-classes', type=int,
                   help="outputs of the model's head (default: those of --checkpoint's classifier, else the model's)")
    add_data_flags(p)
    p.add_argument('--val-split', '--split', default='validation',
                   help="the split to evaluate: a sub-folder of --data-dir (synonyms are found: val, valid, test) or "
                        "the split of a --dataset spec; --split is timm validate.py's name (default: validation; the "
                        "test split of --dataset embedded)")
    p.add_argument('-b', '--batch-size', type=int, default=64, help='evaluation batch size (default: 64)')
    add_workers_flag(p)
    p.add_argument('--device', default=None, help='cpu, cuda, cuda:1 ... (default: cuda if available, else cpu)')
    add_amp_flags(p)
    p.add_argument('--json', action='store_true', help='print the result as JSON (default: one line of text)')
    p.add_argument('--debug', action='store_true', help='on an error, show the Python traceback too (default: off)')
    return p


def _classifier_name(model) -> str:
    """The state-dict prefix of ``model``'s classifier ('classifier' for bnas models), or ''."""
    head = model.get_classifier() if hasattr(model, 'get_classifier') else None
    return next((name for name, m in model.named_modules() if m is head and name), '')


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli('bnas-validate', lambda: _main(args), args.debug)


def _main(args) -> int:
    import timm
    import bnas_zoo  # noqa: F401
    from bnas_zoo.registry import check_weights, create_checked, read_weights
    from .data import build_datasets, data_source, embedded_data_config
    from .engine import evaluate
    from .loader import default_workers, make_loader, set_epoch
    from .recipes import load_recipe

    data = data_source(data_of(args), args.data_dir)
    amp = amp_of(args)
    pretrained = args.pretrained or args.model.startswith(('local-dir:', 'hf-hub:'))
    if args.num_classes is not None and args.num_classes < 1:
        raise BnasError(f'--num-classes {args.num_classes}: expected an integer >= 1')
    if args.batch_size < 1 or (args.workers is not None and args.workers < 0):
        raise BnasError(f'--batch-size {args.batch_size} / --workers {args.workers}: expected >= 1 / >= 0')
    state = None
    if args.use_ema and not args.checkpoint:  # the EMA weights that bnas-train --model-ema keeps in its run folder
        if not args.model.startswith('local-dir:'):
            raise BnasError('--use-ema: give --checkpoint FILE (a training checkpoint with EMA weights), or --model '
                            'local-dir:RUN of a bnas-train run trained with --model-ema')
        from bnas_zoo.hub.publish import ema_weights_file
        args.checkpoint, args.use_ema = str(ema_weights_file(args.model[len('local-dir:'):])), False
    if args.checkpoint:
        state = read_weights(args.checkpoint, f'--checkpoint {args.checkpoint}', use_ema=args.use_ema)
    model = create_checked(args.model, pretrained=pretrained and state is None)
    num_classes = args.num_classes
    if state is not None:
        head = _classifier_name(model)
        weight = state.get(f'{head}.weight') if head else None
        if weight is None or weight.ndim < 1:
            if num_classes is None:
                raise CheckpointError(f'--checkpoint {args.checkpoint}: no classifier weight ({head or "?"}.weight) '
                                      f'to read the class count from; give --num-classes')
        elif num_classes is not None and num_classes != weight.shape[0]:
            raise CheckpointError(f'--checkpoint {args.checkpoint}: its classifier has {weight.shape[0]} outputs, '
                                  f'not --num-classes {num_classes}')
        else:
            num_classes = int(weight.shape[0])
        if num_classes != model.num_classes:
            model = create_checked(args.model, pretrained=False, num_classes=num_classes)
        check_weights(state, model.state_dict(), f'--checkpoint {args.checkpoint}')
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise CheckpointError(f'--checkpoint {args.checkpoint}: does not fit {args.model}: '
                                  f'{str(e).splitlines()[1] if len(str(e).splitlines()) > 1 else e}') from None
    elif num_classes is not None and num_classes != model.num_classes:
        if pretrained:
            raise BnasError(f'--num-classes {num_classes}: the weights of {args.model} have {model.num_classes} '
                            f'outputs (a new head would be untrained); give the fine-tuned weights with --checkpoint')
        model = create_checked(args.model, pretrained=False, num_classes=num_classes)
    data_cfg = timm.data.resolve_data_config({}, model=model)
    recipe = load_recipe('embedded' if data == 'embedded' else 'imagenet-minreg')
    if data == 'embedded':
        data_cfg = embedded_data_config(data_cfg)
        _, ds, classes = build_datasets(recipe, data_cfg, None, 'embedded')
    else:
        _, ds, classes = build_datasets(recipe, data_cfg, args.data_dir, data, val_split=args.val_split,
                                        warn_same_split=False, need_train=False)
    if model.num_classes != classes:
        raise BnasError(f'{args.model} has {model.num_classes} outputs but the dataset has {classes} classes'
                        + ('' if args.checkpoint or args.num_classes else
                           ' (fine-tuned weights: give them with --checkpoint, or the class count with --num-classes)'))
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    workers = args.workers if args.workers is not None else default_workers(device)
    loader = set_epoch(make_loader(ds, args.batch_size, 0, False, False, workers, device), 0)
    result = evaluate(model.to(device), loader, device, amp=amp)
    result.update(model=args.model, images=len(ds), split='test' if data == 'embedded' else args.val_split)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.model}: top-1 {result['top1']:.2f} %  top-5 {result['top5']:.2f} %  loss {result['loss']:.4f}  "
              f"({result['images']} images, {result['split']} split)")
    return 0


if __name__ == '__main__':
    sys.exit(main())
