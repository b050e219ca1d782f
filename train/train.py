"""``bnas-train`` (also ``python -m bnas_zoo.train``): train or fine-tune a bnas model with a recipe.

    bnas-train --model bnas_mini --dataset embedded --output runs/mini      # the embedded digits, minutes
    bnas-train --model bnas_mini --data-dir DIR --epochs 2 --output runs/x  # an image folder tree, a short run
    bnas-train --model bnas_a --recipe cifar10 --dataset torch/cifar10 --data-dir /data/cifar --output runs/a
    bnas-train --model bnas_d --recipe imagenet-minreg --data-dir /data/imagenet --output runs/d --amp bf16
    bnas-train --model bnas_d --pretrained --num-classes 37 --data-dir pets --dataset-name oxford-iiit-pet \\
        --head-epochs 2 --output runs/pets
    bnas-train --model bnas_custom --model-arg genotype=cell.json --model-arg layers=8 --model-arg channels=16 \\
        --dataset embedded --output runs/cell                               # a searched cell (bnas-search)
    torchrun --nproc_per_node 8 -m bnas_zoo.train --model bnas_d --recipe imagenet-standard ...

The data: --data-dir DIR holding train/ and val/ (or validation/, or test/) with one folder of images per
class (any size and mode: PNG, JPEG, grayscale, colour); --dataset torch/cifar10 (or torch/mnist, ...) reads
what torchvision stores in --data-dir; --dataset hfds/NAME, wds/NAME: timm's other dataset specs.

The recipe (every hyper-parameter; `bnas-train --help` lists them): without --recipe, 'short' for runs of
fewer than 30 epochs and for fine-tuning from trained weights (Adam, no warm-up: learns in an epoch or two),
else the paper's recipe of the architecture (cifar10 for a CIFAR stem, imagenet-minreg otherwise), 'embedded'
for --dataset embedded. Every recipe key is also a flag (--lr 0.002 --epochs 20) that overrides it; with
another --epochs, the recipe's warm-up and cycle length keep their share of the run (a notice says so).
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import List, Optional

import torch
import yaml

from bnas_zoo.errors import BnasError, run_cli

from .flags import (add_amp_flags, add_data_flags, add_model_flags, add_run_flags, add_workers_flag, amp_of,
                    data_of)
from .recipes import RECIPE_HELP, RECIPE_KEYS, list_recipes, load_recipe

__all__ = ['main', 'build_parser', 'default_recipe', 'SHORT_RUN_EPOCHS']

#: runs of fewer epochs than this (and fine-tuning) use the 'short' recipe unless --recipe says otherwise
SHORT_RUN_EPOCHS = 30

#: timm train.py's names of recipe keys, accepted as well
TIMM_ALIASES = {'label_smoothing': ['--smoothing'], 'grad_clip': ['--clip-grad'], 'drop_rate': ['--drop'],
                'cycle_decay': ['--lr-cycle-decay'], 'batch_size': ['-b']}

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='bnas-train', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_flags(p)
    p.add_argument('--num-classes', type=int, help='outputs of the classifier (default: the classes of the data)')
    p.add_argument('--model-arg', action='append', default=[], metavar='KEY=VALUE',
                   help='extra create_model argument, e.g. fully_binary=true; repeatable (default: none)')
    p.add_argument('--recipe', help=f"bundled recipe ({', '.join(list_recipes())}) or a YAML path (default: short "
                                    f"for fewer than {SHORT_RUN_EPOCHS} --epochs or trained starting weights, "
                                    f"embedded for --dataset embedded, else cifar10 for a CIFAR stem and "
                                    f"imagenet-minreg otherwise)")
    add_data_flags(p)
    p.add_argument('--dataset-name', metavar='NAME',
                   help='the name of the data recorded in the run for its model card, e.g. a Hub dataset id such '
                        'as oxford-iiit-pet (default: the --data-dir folder\'s name, or the spec\'s: cifar10)')
    p.add_argument('--train-split', default='train',
                   help='training split: the sub-folder of --data-dir, or the split of a --dataset spec (default: train)')
    p.add_argument('--val-split', default='validation',
                   help="evaluation split (synonyms are found: val, valid, test); a --data-dir without one is "
                        "refused, naming the folders it holds; --val-split train evaluates on the training images, "
                        "knowingly, with a warning (default: validation)")
    p.add_argument('--train-subset', type=int, metavar='N',
                   help='train on N training images only: a random subset fixed by --seed, balanced over the '
                        'classes (default: all)')
    p.add_argument('--output', required=True,
                   help='run folder: model.safetensors + config.json (best epoch), checkpoints/, summary.csv/json, '
                        'curves.png, recipe.yaml (required)')
    add_run_flags(p, 'run')
    p.add_argument('--head-epochs', type=int, default=0, metavar='N',
                   help='train only the classifier for the first N epochs (default: 0)')
    p.add_argument('--model-ema', type=float, nargs='?', const=0.9998, metavar='DECAY',
                   help='also keep an exponential moving average of the weights (timm ModelEmaV3), evaluated each '
                        'epoch and checkpointed; --model-ema alone: decay 0.9998 (default: off)')
    p.add_argument('--model-ema-decay', type=float, metavar='DECAY',
                   help="timm's spelling: --model-ema with this decay (default: none)")
    p.add_argument('--device', default=None, help='cpu, cuda, cuda:1 ... (default: cuda if available, else cpu)')
    add_amp_flags(p)
    p.add_argument('--channels-last', action=argparse.BooleanOptionalAction, default=None,
                   help='channels-last memory format (default: on for the CPU, off on a GPU). On the CPU the binary '
                        'layers then train on the packed XNOR-popcount kernels (1.4x to 2.6x faster, by model); '
                        '--no-channels-last runs the float simulation, bit for bit the released code\'s computation')
    p.add_argument('--compile', action='store_true', help='torch.compile the model (default: off)')
    p.add_argument('--seed', type=int, default=0,
                   help='seeds everything random (the model\'s initial and new head weights, the data order and '
                        'subset, the augmentation of each image): the same command and seed give the same run on '
                        'the same machine, whatever --workers (default: 0)')
    add_workers_flag(p)
    p.add_argument('--no-progress', action='store_true', help='no progress bar (default: a bar per epoch)')
    p.epilog = ('An epoch never runs zero steps: when the training set is smaller than the batch size (the last, '
                'incomplete batch is dropped), the batch size is lowered to the number of training images, with a '
                'notice (the learning rate is not rescaled; set --batch-size and --lr yourself to choose).')
    p.add_argument('--debug', action='store_true', help='on an error, show the Python traceback too (default: off)')
    g = p.add_argument_group("recipe overrides (each recipe key; timm train.py's names accepted too)")
    for key, types in RECIPE_KEYS.items():
        if key in ('description', 'data'):
            continue
        names = ['--' + key.replace('_', '-'), *TIMM_ALIASES.get(key, [])]
        kinds = '/'.join('null' if t is type(None) else t.__name__ for t in types)
        g.add_argument(*names, dest=f'override_{key}', metavar='VALUE',
                       help=f"{RECIPE_HELP[key]} ({kinds}; default: the recipe's)")
    return p


def _check_output(output: Path, resume: bool, overwrite: bool) -> None:
    try:
        output.mkdir(parents=True, exist_ok=True)
        probe = output / f'.write_test.{os.getpid()}'  # one per process: torchrun starts several
        probe.write_text('ok')
        probe.unlink()
    except OSError as e:
        raise BnasError(f'--output {output}: not writable ({e.strerror})') from None
    from .checkpoint import has_checkpoint
    from .engine import CHECKPOINT_MANIFEST
    if not resume and not overwrite and has_checkpoint(output, CHECKPOINT_MANIFEST):
        raise BnasError(f'--output {output} already holds a run: continue it with --resume, or start again with --overwrite')


def _model_kwargs(items: List[str]) -> dict:
    from bnas_zoo.registry import MODEL_ARGS
    out = {}
    for item in items:
        if '=' not in item:
            raise BnasError(f'--model-arg {item!r}: expected KEY=VALUE')
        k, v = item.split('=', 1)
        if k not in MODEL_ARGS or k in ('num_classes', 'drop_rate'):
            raise BnasError(f"--model-arg {item!r}: unknown model argument {k!r}; expected one of "
                            f"{', '.join(a for a in MODEL_ARGS if a not in ('num_classes', 'drop_rate'))} "
                            f"(the classes come from the data or --num-classes, drop_rate from the recipe)")
        try:
            out[k] = yaml.safe_load(v)
        except yaml.YAMLError:
            raise BnasError(f'--model-arg {item!r}: the value is not a YAML scalar') from None
    return out


# flags that only say how this invocation continues or restarts a run, not what the run is
_INVOCATION_FLAGS = {'--resume': 'flag', '--stop-after': 'value', '--overwrite': 'flag', '--debug': 'flag'}


def reproduce_command(argv: List[str]) -> str:
    """The command that trains this run from scratch: this invocation's arguments without --resume,
    --stop-after and --overwrite (resuming is exact, so the result is the same)."""
    kept, i = [], 0
    while i < len(argv):
        arg = argv[i]
        name = arg.split('=', 1)[0]
        kind = _INVOCATION_FLAGS.get(name)
        i += 1
        if kind is None:
            kept.append(arg)
        elif '=' not in arg and i < len(argv) and kind == 'value':
            i += 1  # the flag's value
    world = int(os.environ.get('WORLD_SIZE', '1'))
    prog = f'torchrun --nproc_per_node {world} -m bnas_zoo.train' if world > 1 else 'bnas-train'
    return ' '.join([prog, shlex.join(kept)]) if kept else prog


def _check_args(args: argparse.Namespace) -> None:
    for flag, value, least in (('--train-subset', args.train_subset, 1), ('--stop-after', args.stop_after, 1),
                               ('--head-epochs', args.head_epochs, 0), ('--workers', args.workers, 0),
                               ('--num-classes', args.num_classes, 1)):
        if value is not None and value < least:
            raise BnasError(f'{flag} {value}: expected an integer >= {least}')
    if args.model_ema_decay is not None:
        if args.model_ema is not None and args.model_ema != args.model_ema_decay:
            raise BnasError(f'--model-ema {args.model_ema} and --model-ema-decay {args.model_ema_decay} disagree')
        args.model_ema = args.model_ema_decay
    if args.model_ema is not None and not 0 < args.model_ema < 1:
        raise BnasError(f'--model-ema {args.model_ema}: expected a decay in (0, 1), e.g. 0.9998')


def default_recipe(model: torch.nn.Module, data: str, epochs: Optional[int] = None, pretrained: bool = False) -> str:
    """The recipe of a run without --recipe: 'embedded' for the embedded digits; 'short' for fewer than
    :data:`SHORT_RUN_EPOCHS` epochs or trained starting weights (fine-tuning); else from the architecture
    (however the model was named: registry name, bnas_custom, local-dir:, hf-hub:): 'cifar10' for a CIFAR stem,
    'imagenet-minreg' otherwise."""
    if data == 'embedded':
        return 'embedded'
    if pretrained or (epochs is not None and epochs < SHORT_RUN_EPOCHS):
        return 'short'
    return 'cifar10' if getattr(model, 'stem_type', None) == 'cifar' else 'imagenet-minreg'


def _fit_batch(recipe: dict, train_images: int, world: int) -> dict:
    """The recipe with a batch size that gives every epoch at least one step (the last, incomplete batch is
    dropped): lowered to the training set's size, with a notice, when the set is smaller than the batch."""
    batch = recipe['batch_size']
    if train_images // world >= max(1, batch // world):
        return recipe
    fitted = (train_images // world) * world
    if fitted < 1:
        raise BnasError(f'the training set holds {train_images} image(s), fewer than the {world} processes; '
                        f'an epoch would train nothing')
    _notice(f'the training set holds {train_images} image(s), fewer than the batch size {batch} (an epoch would '
            f'train nothing: the incomplete last batch is dropped); using --batch-size {fitted} (the learning rate '
            f'is not rescaled)')
    return dict(recipe, batch_size=fitted)


#: below this many updates a short run from scratch gets a notice (measured, README "Why short": on 3,000
#: varied images 92 updates gave 16 % and 460 gave 81 %; on 6,000 digits 186 updates gave 77 %)
FEW_UPDATES = 150


def _few_updates_notice(recipe: dict, train_images: int) -> None:
    """Say so when a short run from scratch makes few optimizer updates: it will learn little."""
    steps = train_images // recipe['batch_size']  # per epoch (the last, incomplete batch is dropped)
    updates = recipe['epochs'] * steps
    if 0 < updates < FEW_UPDATES:
        suggest = -(-3 * FEW_UPDATES // steps)
        _notice(f"this run makes {updates} updates ({recipe['epochs']} epoch(s) of {steps} batches of "
                f"{recipe['batch_size']}); from scratch that learns little: --epochs {suggest} gives "
                f"{suggest * steps} (README: \"Why short\")")


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.command = reproduce_command(argv)
    return run_cli('bnas-train', lambda: _main(args), args.debug)


def _notice(text: str) -> None:
    if int(os.environ.get('RANK', '0')) == 0:
        print(f'bnas-train: notice: {text}', file=sys.stderr, flush=True)


def _main(args: argparse.Namespace) -> int:
    import timm

    import bnas_zoo  # noqa: F401  (registers the architectures with timm)
    from bnas_zoo.registry import VARIANTS, create_checked

    from .data import build_datasets, data_facts, data_source, embedded_data_config, train_subset
    from .engine import TrainSetup, run_training, seed_everything
    _check_args(args)
    data = data_source(data_of(args), args.data_dir)
    amp = amp_of(args)
    base = args.model.split(':')[-1].split('/')[-1].split('.')[0]
    if args.model.split(':')[0] not in ('local-dir', 'hf-hub') and args.model not in (*VARIANTS, 'bnas_custom'):
        raise BnasError(f"unknown model {args.model!r}; expected one of {', '.join(VARIANTS)}, bnas_custom "
                        f"(with --model-arg genotype=... layers=... channels=...), local-dir:PATH or hf-hub:ORG/NAME")
    overrides = {k[len('override_'):]: v for k, v in vars(args).items() if k.startswith('override_') and v is not None}
    if args.recipe:
        load_recipe(args.recipe, overrides)  # a bad recipe or override is refused before anything is built
    output = Path(args.output)
    _check_output(output, args.resume, args.overwrite)
    # everything random from here on (the model's initial weights, a new head, the data) follows --seed
    seed_everything(args.seed)

    distributed = int(os.environ.get('WORLD_SIZE', '1')) > 1
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    if distributed:
        local_rank = int(os.environ.get('LOCAL_RANK', '0'))
        if device.type == 'cuda':
            device = torch.device('cuda', local_rank)
            torch.cuda.set_device(device)
        torch.distributed.init_process_group(backend='nccl' if device.type == 'cuda' else 'gloo')

    # the model first (its data config decides the transforms), then the data, then the head size
    kwargs = _model_kwargs(args.model_arg)
    pretrained = args.pretrained or args.model.startswith(('local-dir:', 'hf-hub:'))
    probe = create_checked(args.model, pretrained=False, **kwargs)
    # the default recipe: short runs and fine-tuning get 'short', else the architecture's (its stem)
    recipe_name = args.recipe
    if not recipe_name:
        epochs = yaml.safe_load(overrides['epochs']) if 'epochs' in overrides else None
        epochs = epochs if isinstance(epochs, int) else None  # a bad value: load_recipe names it below
        recipe_name = default_recipe(probe, data, epochs, pretrained)
        if recipe_name == 'short':
            _notice(f"recipe short ({'fine-tuning trained weights' if pretrained else f'fewer than {SHORT_RUN_EPOCHS} epochs'}"
                    f"; --recipe chooses another)")
    notices: List[str] = []
    recipe = load_recipe(recipe_name, overrides, notices)
    for line in notices:
        _notice(line)
    data_cfg = timm.data.resolve_data_config({}, model=probe)
    if data == 'embedded':
        data_cfg = embedded_data_config(data_cfg)
    train_ds, eval_ds, classes = build_datasets(recipe, data_cfg, args.data_dir, data, args.train_split, args.val_split)
    facts = data_facts(data, args.data_dir, args.dataset_name, train_ds, eval_ds, classes, args.train_split,
                       args.val_split)
    if args.train_subset:
        if isinstance(train_ds, torch.utils.data.IterableDataset):
            raise BnasError(f'--train-subset: --dataset {data} is streamed (an iterable dataset); a subset of it '
                            f'cannot be drawn')
        train_ds = train_subset(train_ds, args.train_subset, args.seed)
        facts['train_images'] = len(train_ds)
    if args.num_classes is not None and args.num_classes != classes:
        raise BnasError(f'--num-classes {args.num_classes}: the dataset has {classes} classes; a head of '
                        f'{args.num_classes} outputs does not fit it')
    recipe = _fit_batch(recipe, len(train_ds), int(os.environ.get('WORLD_SIZE', '1')))
    if recipe_name == 'short' and not pretrained and not args.resume:
        _few_updates_notice(recipe, len(train_ds))
    seed_everything(args.seed)  # the model's weights do not depend on how much randomness the data setup used
    model = create_checked(args.model, pretrained=pretrained, num_classes=classes, drop_rate=recipe['drop_rate'],
                           **kwargs)
    arch = model.pretrained_cfg.get('architecture', base)
    setup = TrainSetup(
        model=model, train_ds=train_ds, eval_ds=eval_ds, recipe=recipe, output=output, model_name=arch,
        device=device, seed=args.seed, workers=args.workers, amp=amp,
        channels_last=args.channels_last if args.channels_last is not None else device.type == 'cpu',
        compile=args.compile, head_epochs=args.head_epochs, stop_after=args.stop_after, ema_decay=args.model_ema,
        resume=output if args.resume else None,
        progress=not args.no_progress, export_args=model.architecture_args(),
        run_info=dict(facts, model=args.model, recipe_name=recipe_name,
                      recipe={k: v for k, v in recipe.items() if k != 'description'},
                      head_epochs=args.head_epochs, model_ema=args.model_ema, seed=args.seed, command=args.command))
    if int(os.environ.get('RANK', '0')) == 0 and not args.resume:
        (output / 'recipe.yaml').write_text(yaml.safe_dump(dict(recipe, model=args.model, recipe=recipe_name),
                                                           sort_keys=False))
    best = run_training(setup)
    if not distributed or torch.distributed.get_rank() == 0:
        print(f"best: epoch {best['epoch']}, top-1 {best['top1']:.2f} %, top-5 {best.get('top5', 0):.2f} % "
              f"-> {output / 'model.safetensors'} (load with timm.create_model('local-dir:{output}', pretrained=True))")
    if distributed:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == '__main__':
    sys.exit(main())
