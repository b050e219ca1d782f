"""``bnas-search``: search a binary cell (BNAS, paper Sec. 4) and write it as a genotype JSON.

    bnas-search --dataset embedded --epochs 4 --cells 5 --channels 8 --output runs/cell        # CPU, minutes
    bnas-search --dataset torch/cifar10 --data-dir /data/cifar --epochs 50 --output runs/cell  # the paper's
    bnas-search --data-dir DIR --epochs 50 --output runs/cell                 # an image folder tree (train/ split)

The run folder (--output) receives the genotype(s) (genotype.json for the first --gamma, genotype.gamma<g>.json
for the others), the checkpoints (checkpoints/epoch-NNNN/, the newest two), search_log.json and alphas.png.
Build the cell with timm.create_model('bnas_custom', genotype='DIR/genotype.json', layers=..., channels=...).

The training images are halved (fixed by --seed): one half trains the supernet weights (SGD, cosine), the
other the architecture parameters (Adam), alternating first-order updates. The architecture loss carries the
diversity regularizer -lambda * H(p) * exp(-epoch / tau). The cell is derived with the Zeroise rule (Eq. 5)
for each --gamma. --stop-after N ends a time-boxed job after N epochs; --resume continues it exactly (the same
result as one run). Ablations: --no-dilated, --no-zeroise (DARTS-style derivation), --no-regularizer,
--no-skip; --sep-conv adds binary separable convolutions to the space (the paper's comparison).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from bnas_zoo.errors import BnasError, CheckpointError, first_line, run_cli
from bnas_zoo.files import atomic_write

from .flags import add_amp_flags, add_data_flags, add_run_flags, add_workers_flag, amp_of, data_of

__all__ = ['main', 'search', 'search_step']

DEFAULT_OPS = ('none', 'max_pool_3x3', 'avg_pool_3x3', 'bin_dil_conv_3x3', 'bin_dil_conv_5x5', 'bin_conv_3x3',
               'bin_conv_5x5')
GENOTYPE = 'genotype.json'  # the genotype of the first --gamma, in the run folder


class _Replaced(argparse.Action):
    """An older flag whose meaning changed: a clear error naming its replacement."""

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f'{option_string} was replaced by --output DIR, the run folder (the genotype is written '
                     f'to DIR/{GENOTYPE}, the checkpoints, log and plot beside it)')


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='bnas-search', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_flags(p)
    p.add_argument('--train-split', default='train',
                   help='the split searched on (halved): a sub-folder of --data-dir or the split of a --dataset '
                        'spec (default: train)')
    p.add_argument('--output', required=True, metavar='DIR',
                   help=f'run folder: {GENOTYPE} (+ genotype.gamma<g>.json), checkpoints/, search_log.json, '
                        f'alphas.png (required)')
    p.add_argument('--out', '--run-dir', nargs='?', action=_Replaced, help=argparse.SUPPRESS)
    add_run_flags(p, 'search', ': the checkpoint is kept, no genotype is written yet')
    p.add_argument('--epochs', type=int, default=50, help='search epochs (default: 50, the paper\'s)')
    p.add_argument('--cells', dest='cells', type=int, default=8, help='cells of the supernet (default: 8, the paper\'s)')
    p.add_argument('--layers', dest='cells', type=int, help=argparse.SUPPRESS)  # the older name
    p.add_argument('--channels', type=int, default=16, help='first-cell width C0 of the supernet (default: 16)')
    p.add_argument('-b', '--batch-size', type=int, default=64, help='batch size of both halves (default: 64)')
    p.add_argument('--lr', type=float, default=0.025,
                   help='supernet weights: SGD learning rate, cosine-annealed to --min-lr (default: 0.025)')
    p.add_argument('--min-lr', type=float, default=0.001, help='final learning rate of the cosine schedule (default: 0.001)')
    p.add_argument('--weight-decay', type=float, default=3e-4, help='weight decay of the supernet weights (default: 3e-4)')
    p.add_argument('--arch-lr', type=float, default=3e-4,
                   help='architecture parameters: Adam learning rate, betas 0.5 and 0.999 (default: 3e-4)')
    p.add_argument('--arch-weight-decay', type=float, default=1e-3,
                   help='weight decay of the architecture parameters (default: 1e-3)')
    p.add_argument('--lam', type=float, default=1.0, help='diversity regularizer weight lambda (default: 1.0)')
    p.add_argument('--tau', type=float, default=7.7, help='diversity regularizer annealing tau, in epochs (default: 7.7)')
    p.add_argument('--gamma', type=float, nargs='+', default=[1.0, 3.0],
                   help='Zeroise transfer factors to derive a cell for, one genotype each (default: 1 3)')
    p.add_argument('--ops', nargs='+', help=f"candidate operations (default: {' '.join(DEFAULT_OPS)})")
    p.add_argument('--no-dilated', action='store_true', help='ablation: without the dilated binary convs (default: off)')
    p.add_argument('--no-zeroise', action='store_true',
                   help='ablation: DARTS-style derivation, Zeroise never kept (default: off)')
    p.add_argument('--no-regularizer', action='store_true', help='ablation: lambda = 0 (default: off)')
    p.add_argument('--no-skip', action='store_true', help='ablation: no inter-cell skip connections (default: off)')
    p.add_argument('--sep-conv', action='store_true',
                   help='comparison: add binary separable convolutions (bin_sep_conv_3x3/5x5) to the space (default: off)')
    p.add_argument('--seed', type=int, default=0,
                   help='random seed: the halves, the order, the augmentation, the supernet; the same seed gives '
                        'the same search (default: 0)')
    p.add_argument('--train-subset', type=int, metavar='N',
                   help='search on N training images only: a random subset fixed by --seed, balanced over the '
                        'classes (default: all)')
    add_workers_flag(p)
    p.add_argument('--device', default=None, help='torch device, e.g. cuda or cpu (default: cuda when available)')
    add_amp_flags(p)
    p.add_argument('--channels-last', action='store_true',
                   help='channels-last memory format: faster on GPUs; on the CPU the binary candidate operations '
                        'then run on the packed XNOR kernels (faster; the results differ from the default float '
                        'computation by float rounding) (default: off)')
    p.add_argument('--no-progress', action='store_true', help='no progress bars (default: a bar per epoch)')
    p.add_argument('--debug', action='store_true', help='on an error, show the Python traceback too (default: off)')
    return p


def _check(args) -> Dict[str, Any]:
    from bnas_zoo.operations import OPS, SEP_CONV_OPS
    ops = list(args.ops or DEFAULT_OPS)
    unknown = [o for o in ops if o not in OPS]
    if unknown:
        raise BnasError(f"--ops: unknown operation(s) {', '.join(unknown)}; expected some of {', '.join(OPS)}")
    if args.no_dilated:
        ops = [o for o in ops if not o.startswith('bin_dil_conv')]
    if args.sep_conv:
        ops += [o for o in SEP_CONV_OPS if o not in ops]
    if len(set(ops)) != len(ops) or len(ops) < 2:
        raise BnasError(f'--ops: expected at least two distinct operations, got {ops}')
    for g in args.gamma:
        if not (g > 0 and math.isfinite(g)):
            raise BnasError(f'--gamma {g}: expected a positive number (1 keeps Zeroise as found, 3 for ImageNet)')
    if not (args.lam >= 0 and math.isfinite(args.lam)):
        raise BnasError(f'--lam {args.lam}: expected >= 0')
    if not (args.tau > 0 and math.isfinite(args.tau)):
        raise BnasError(f'--tau {args.tau}: expected > 0 (epochs)')
    for flag, value, positive in (('--lr', args.lr, True), ('--arch-lr', args.arch_lr, True),
                                  ('--min-lr', args.min_lr, False), ('--weight-decay', args.weight_decay, False),
                                  ('--arch-weight-decay', args.arch_weight_decay, False)):
        if not (math.isfinite(value) and (value > 0 if positive else value >= 0)):
            raise BnasError(f"{flag} {value}: expected a {'positive' if positive else 'non-negative'} finite number")
    if (args.train_subset is not None and args.train_subset < 1) or (args.workers is not None and args.workers < 0):
        raise BnasError('--train-subset >= 1 and --workers >= 0 expected')
    if args.epochs < 1 or args.cells < 3 or args.channels < 2 or args.batch_size < 1:
        raise BnasError('--epochs >= 1, --cells >= 3, --channels >= 2 and --batch-size >= 1 expected')
    if args.stop_after is not None and args.stop_after < 1:
        raise BnasError(f'--stop-after {args.stop_after}: expected >= 1 (epochs of this invocation)')
    if args.resume and args.overwrite:
        raise BnasError('--resume continues the search in --output, --overwrite starts it again: give one of them')
    from bnas_zoo.files import output_folder

    from .checkpoint import has_checkpoint
    out = output_folder(args.output, '--output')
    if not args.resume and not args.overwrite and (has_checkpoint(out, SEARCH_MANIFEST) or (out / GENOTYPE).exists()):
        raise BnasError(f'--output {out} already holds a search: continue it with --resume, or start again with '
                        f'--overwrite')
    return dict(ops=ops, lam=0.0 if args.no_regularizer else args.lam)


def _halves(ds, batch: int, seed: int):
    n = len(ds)
    if n < 4 * batch:
        raise BnasError(f'the training data has {n} images: too few to halve into batches of {batch} '
                        f'(need at least {4 * batch}); lower --batch-size or add images')
    perm = np.random.RandomState(seed).permutation(n).tolist()
    return torch.utils.data.Subset(ds, perm[:n // 2]), torch.utils.data.Subset(ds, perm[n // 2:])


SEARCH_MANIFEST = 'search_checkpoint.json'


def _resume(run_dir: Path, model, w_opt, a_opt, sched, scaler, config: Dict[str, Any]) -> Dict[str, Any]:
    """Restore a search from the newest intact checkpoint unit in ``run_dir``, everything checked before
    anything is used; returns the state with ``unit`` and ``skipped`` (see ``engine.load_checkpoint``)."""
    from .engine import check_same_settings, check_state_dict_fits, read_checkpoint_unit, restore_or_refuse
    info = read_checkpoint_unit(run_dir, SEARCH_MANIFEST)
    unit = info['unit']
    state_path = unit / 'search_state.pt'
    try:
        state = torch.load(state_path, map_location='cpu', weights_only=True)
        weights = load_file(str(unit / 'supernet.safetensors'))
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same error for the user
        raise CheckpointError(f'--resume {run_dir}: unreadable checkpoint ({first_line(e)})') from None
    kinds = dict(epoch=int, w_opt=dict, a_opt=dict, sched=dict, rng=dict, history=list, config=dict)
    if not isinstance(state, dict) or any(not isinstance(state.get(k), t) for k, t in kinds.items()):
        raise CheckpointError(f"--resume {state_path}: expected the search state (a dict with "
                              f"{', '.join(kinds)}), got {type(state).__name__} with other fields")
    if state['epoch'] != info['epoch']:
        raise CheckpointError(f"--resume {unit}: search_state.pt is of epoch {state['epoch'] + 1} but "
                              f"{SEARCH_MANIFEST} names epoch {info['epoch'] + 1}")
    check_same_settings(state['config'], config, f'--resume {run_dir}',
                        'start a new search (another --output, or --overwrite)')
    if not all(isinstance(h, dict) and {'epoch', 'probs', 'entropy', 'learnable_share'} <= set(h)
               for h in state['history']):
        raise CheckpointError(f"--resume {state_path}: field 'history' is not the search's per-epoch rows")
    check_state_dict_fits(weights, model, f'--resume {unit / "supernet.safetensors"}')

    def restore() -> None:
        model.load_state_dict(weights)
        w_opt.load_state_dict(state['w_opt'])
        a_opt.load_state_dict(state['a_opt'])
        sched.load_state_dict(state['sched'])
        if state.get('scaler'):  # the fp16 gradient scaler (an empty state when it is off)
            scaler.load_state_dict(state['scaler'])
    restore_or_refuse(state_path, restore, state['rng'])
    return dict(state, unit=unit, skipped=info['skipped'])


def _check_finite(t: torch.Tensor, what: str, epoch: int) -> None:
    if not bool(torch.isfinite(t.detach()).all()):
        raise BnasError(f'epoch {epoch + 1}: {what} is no longer finite (NaN or infinite); the search diverged and '
                        f'nothing was written for this epoch; lower --lr / --arch-lr')


def _atomic_json(path: Path, data: Any) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + '\n'))


def _write_log(run_dir: Path, history: List[Dict[str, Any]], ops: List[str], skip: bool, plot: bool = True) -> None:
    """search_log.json (each epoch's row, with its architecture probabilities) and the pictures drawn from it
    (bnas_zoo.search_plots: the probabilities over the epochs when ``plot``, the cells derived after each
    epoch)."""
    from bnas_zoo.search_plots import SEARCH_LOG, write_search_figures
    rows = [dict(h, ops=ops, inter_cell_skip=skip) for h in history]
    _atomic_json(run_dir / SEARCH_LOG, rows)
    write_search_figures(run_dir, rows, plot=plot)


def search_step(model, criterion, a_opt, w_opt, scaler, arch_batch, weight_batch, epoch: int, lam: float,
                tau: float, amp: Optional[str] = None, lean: bool = True):
    """One step of the search: a first-order architecture update on ``arch_batch``, then a weight update on
    ``weight_batch``. Returns the two losses.

    ``lean`` (the default) computes in each backward pass only the gradients its update uses: the
    architecture step's backward skips every weight gradient (half of each convolution's backward) and the
    weight step's skips the architecture gradients (a full reduction per candidate operation). The other
    gradients were computed and thrown away (``zero_grad``) before: the search's results are bit for bit the
    same; ``lean=False`` is that former way, kept for the benchmark and the test that compare the two.
    """
    from bnas_zoo.derive import diversity_regularizer

    from .engine import autocast
    device = next(model.parameters()).device
    arch, weights = model.arch_parameters(), model.weight_parameters()
    a_opt.zero_grad(set_to_none=True)  # architecture step (first order)
    with autocast(device, amp):
        loss_a = criterion(model(arch_batch[0]), arch_batch[1])
    loss_a = loss_a + diversity_regularizer(model.probabilities(), epoch, lam, tau)
    _check_finite(loss_a, 'the architecture loss', epoch)
    if lean:
        for p, g in zip(arch, torch.autograd.grad(scaler.scale(loss_a), arch)):
            p.grad = g
    else:
        scaler.scale(loss_a).backward()
    scaler.step(a_opt)
    w_opt.zero_grad(set_to_none=True)  # weight step
    with autocast(device, amp):
        loss_w = criterion(model(weight_batch[0]), weight_batch[1])
    _check_finite(loss_w, 'the weight loss', epoch)
    scaler.scale(loss_w).backward(inputs=weights if lean else None)
    scaler.unscale_(w_opt)
    nn.utils.clip_grad_norm_(weights, 5.0)
    scaler.step(w_opt)
    scaler.update()
    return loss_a, loss_w


def search(args) -> Dict[str, Any]:
    from timm.scheduler import create_scheduler_v2

    from bnas_zoo.binary import attach_latent_projection
    from bnas_zoo.derive import derive_genotype, learnable_share, mean_entropy
    from bnas_zoo.draw import draw_cell
    from bnas_zoo.genotype import validate_genotype_dict
    from bnas_zoo.operations import CONV_OPS
    from bnas_zoo.registry import CIFAR10_MEAN, CIFAR10_STD
    from bnas_zoo.search_plots import REDRAW_SECONDS
    from bnas_zoo.supernet import Supernet

    from .checkpoint import clear_checkpoints, write_checkpoint_unit
    from .data import build_datasets, data_source, embedded_data_config, train_subset
    from .engine import evaluate, resume_notice, rng_state
    from .loader import default_workers, make_loader, set_epoch, to_device
    from .recipes import load_recipe

    checked = _check(args)
    ops, lam = checked['ops'], checked['lam']
    data = data_source(data_of(args), args.data_dir)
    amp = amp_of(args)
    run_dir = Path(args.output)
    recipe = load_recipe('embedded' if data == 'embedded' else 'cifar10')
    data_cfg = dict(input_size=(3, 32, 32), mean=CIFAR10_MEAN, std=CIFAR10_STD)
    if data == 'embedded':
        data_cfg = embedded_data_config(data_cfg)
    train_ds, _, classes = build_datasets(recipe, data_cfg, args.data_dir, data, args.train_split, need_eval=False)
    if args.train_subset:
        train_ds = train_subset(train_ds, args.train_subset, args.seed)
    weights_half, arch_half = _halves(train_ds, args.batch_size, args.seed)

    torch.manual_seed(args.seed)
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    model = Supernet(ops, args.cells, args.channels, classes, inter_cell_skip=not args.no_skip).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    w_opt = torch.optim.SGD(model.weight_parameters(), lr=args.lr, momentum=0.9, weight_decay=args.weight_decay)
    attach_latent_projection(w_opt, model)
    a_opt = torch.optim.Adam(model.arch_parameters(), lr=args.arch_lr, betas=(0.5, 0.999),
                             weight_decay=args.arch_weight_decay)
    sched, _ = create_scheduler_v2(w_opt, sched='cosine', num_epochs=args.epochs, min_lr=args.min_lr)
    criterion = nn.CrossEntropyLoss()
    scaler = torch.amp.GradScaler(device.type, enabled=amp == 'fp16')
    source = data if data == 'embedded' else (data if data != 'folder' else str(args.data_dir))
    provenance = dict(data=source, seed=args.seed, epochs=args.epochs, layers=args.cells, channels=args.channels,
                      lam=lam, tau=args.tau, ops=ops, keep_zeroise=not args.no_zeroise,
                      inter_cell_skip=not args.no_skip, searched_on=data, source='bnas-search (bnas_zoo)',
                      paper='Kim, Singh, Choi. BNAS v2 (arXiv:2110.08562)')
    # what the search is: a resume must give the same (another --epochs is refused with the reason)
    config = dict(ops=ops, layers=args.cells, channels=args.channels, skip=not args.no_skip, epochs=args.epochs,
                  batch_size=args.batch_size, lr=args.lr, min_lr=args.min_lr, weight_decay=args.weight_decay,
                  arch_lr=args.arch_lr, arch_weight_decay=args.arch_weight_decay, lam=lam, tau=args.tau,
                  seed=args.seed, data=source, train_split=args.train_split, train_subset=args.train_subset)

    start, history = 0, []
    if args.resume:
        state = _resume(run_dir, model, w_opt, a_opt, sched, scaler, config)
        start, history = state['epoch'] + 1, state['history']
        print(resume_notice(state, '--resume'), file=sys.stderr, flush=True)
        if history:  # a search killed while writing them: the checkpoint's history repairs them (the plot is
            # redrawn after the epochs this command runs, if any)
            _write_log(run_dir, history, ops, not args.no_skip, plot=start >= args.epochs)
    else:  # a search started (again) here: no unit of another search may be resumed later
        clear_checkpoints(run_dir, SEARCH_MANIFEST, ['supernet.safetensors', 'search_state.pt'])

    learnable = [o for o in ops if o in CONV_OPS]
    workers = args.workers if args.workers is not None else default_workers(device, weights_half)
    loader_w = make_loader(weights_half, args.batch_size, args.seed, True, True, workers, device)
    loader_a = make_loader(arch_half, args.batch_size, args.seed + 1, True, True, workers, device)
    loader_eval = make_loader(arch_half, args.batch_size, args.seed, False, False, workers, device)
    last_epoch = args.epochs if not args.stop_after else min(args.epochs, start + args.stop_after)
    drawn = time.monotonic()  # alphas.png: redrawn every REDRAW_SECONDS and after the last epoch of this command
    for epoch in range(start, last_epoch):
        model.train()
        t0, seen, loss_sum = time.perf_counter(), 0, 0.0
        bar = tqdm(zip(set_epoch(loader_w, epoch), set_epoch(loader_a, epoch)), total=min(len(loader_w), len(loader_a)),
                   desc=f'search {epoch + 1}/{args.epochs}', disable=args.no_progress)
        for (xw, yw), (xa, ya) in bar:  # one iterator per epoch and half
            xw, yw = to_device(xw, device, args.channels_last), to_device(yw, device)
            xa, ya = to_device(xa, device, args.channels_last), to_device(ya, device)
            _, loss_w = search_step(model, criterion, a_opt, w_opt, scaler, (xa, ya), (xw, yw), epoch, lam, args.tau,
                                    amp)
            seen += yw.shape[0]
            loss_sum += loss_w.item() * yw.shape[0]
            bar.set_postfix(loss=f'{loss_sum / seen:.3f}', img_s=f'{2 * seen / (time.perf_counter() - t0):.0f}')
        sched.step(epoch + 1)
        for name, p in model.named_parameters():
            _check_finite(p, f'parameter {name}', epoch)
        probs = {k: v.detach().cpu() for k, v in model.probabilities().items()}
        geno = derive_genotype(probs, ops, model.steps, 1.0, not args.no_zeroise)
        val = evaluate(model, set_epoch(loader_eval, 0), device, channels_last=args.channels_last)
        row = dict(epoch=epoch + 1, train_loss=loss_sum / max(seen, 1), arch_half_top1=val['top1'],
                   entropy=mean_entropy(probs).item(), learnable_share=learnable_share(geno, learnable),
                   regularizer_weight=lam * math.exp(-epoch / args.tau), seconds=time.perf_counter() - t0,
                   genotype=dict(normal=geno['normal'], reduce=geno['reduce']),
                   probs={k: v.tolist() for k, v in probs.items()})
        history.append(row)
        weights = {k: v.contiguous() for k, v in model.state_dict().items()}
        state = dict(epoch=epoch, w_opt=w_opt.state_dict(), a_opt=a_opt.state_dict(), sched=sched.state_dict(),
                     scaler=scaler.state_dict(), rng=rng_state(), history=history, config=config)
        write_checkpoint_unit(run_dir, SEARCH_MANIFEST, {'supernet.safetensors': lambda tmp: save_file(weights, str(tmp)),
                                                         'search_state.pt': lambda tmp: torch.save(state, tmp)}, epoch)
        plot = epoch == last_epoch - 1 or time.monotonic() - drawn >= REDRAW_SECONDS
        _write_log(run_dir, history, ops, not args.no_skip, plot)
        drawn = time.monotonic() if plot else drawn
        print(f"epoch {epoch + 1}: loss {row['train_loss']:.3f}, arch-half top-1 {row['arch_half_top1']:.1f} %, "
              f"entropy {row['entropy']:.3f}, learnable ops {100 * row['learnable_share']:.0f} %, "
              f"{row['seconds']:.0f} s; normal {geno['normal']}", flush=True)

    if last_epoch < args.epochs:  # --stop-after: the search is not finished, so there is no genotype yet
        return dict(files=[], history=history, stopped_after=last_epoch, run_dir=str(run_dir), classes=classes)
    probs = model.probabilities()
    final = {k: v.detach().cpu() for k, v in probs.items()}
    provenance['final_alphas'] = {k: v.tolist() for k, v in final.items()}
    written = []
    name = run_dir.resolve().name
    for i, gamma in enumerate(args.gamma):
        path = run_dir / (GENOTYPE if i == 0 else f'genotype.gamma{gamma:g}.json')
        geno = derive_genotype(final, ops, model.steps, gamma, not args.no_zeroise,
                               name=name + ('' if i == 0 else f'.gamma{gamma:g}'), provenance=provenance)
        validate_genotype_dict(geno, str(path), primitives=ops)
        _atomic_json(path, geno)
        written.append(str(path))
        draw_cell(geno, 'both', run_dir / f'{path.stem}.svg', inter_cell_skip=not args.no_skip)
    return dict(files=written, history=history, run_dir=str(run_dir), classes=classes)


def closing_hint(args, result: Dict[str, Any]) -> str:
    """How to build and train the searched cell, from this run's own arguments (its data, its cell count and
    width, its classes)."""
    import shlex
    data = []
    if args.dataset is not None or args.data:
        data += ['--dataset', args.dataset if args.dataset is not None else args.data]
    if args.data_dir:
        data += ['--data-dir', args.data_dir]
    genotype = result['files'][0]
    train = ['bnas-train', '--model', 'bnas_custom', '--model-arg', f'genotype={genotype}', '--model-arg',
             f'layers={args.cells}', '--model-arg', f'channels={args.channels}', '--model-arg', 'stem=cifar', *data,
             '--output', str(Path(result['run_dir']) / 'train')]
    return (f"build it: timm.create_model('bnas_custom', genotype={genotype!r}, layers={args.cells}, "
            f"channels={args.channels}, stem='cifar', num_classes={result['classes']})\n"
            f"train it (the searched size; the paper trains deeper and wider networks of the cell, e.g. layers=20 "
            f"channels=36): {shlex.join(train)}")


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    result = {}

    def run() -> int:
        result.update(search(args))
        return 0
    code = run_cli('bnas-search', run, args.debug)
    if code:
        return code
    if not result['files']:
        print(f"stopped after epoch {result['stopped_after']} of {args.epochs} (--stop-after): continue with --resume "
              f"(checkpoint in {result['run_dir']})")
        return 0
    print('wrote ' + ', '.join(result['files']))
    print(closing_hint(args, result))
    return 0


if __name__ == '__main__':
    sys.exit(main())
