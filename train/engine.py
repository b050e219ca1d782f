"""The training loop: timm's optimizer, scheduler, loss and metrics, the XNOR latent projection, atomic
checkpoints with exact resume, distributed data parallel, per-epoch summaries and curves."""
from __future__ import annotations

import json
import math
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from safetensors.torch import load_file, save_file
from timm.loss import LabelSmoothingCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import AverageMeter, ModelEmaV3, NativeScaler, accuracy, dispatch_clip_grad
from tqdm import tqdm

from bnas_zoo.binary import attach_latent_projection, binary_param_names
from bnas_zoo.errors import BnasError, CheckpointError, first_line
from bnas_zoo.exactness import recomputed_batchnorm_statistics
from bnas_zoo.files import atomic_write, fsync_dir, fsync_file, give_default_mode, rename

from .checkpoint import clear_checkpoints, read_checkpoint_unit, write_checkpoint_unit
from .loader import default_workers, make_loader, set_epoch, to_device

__all__ = ['TrainSetup', 'param_groups', 'run_training', 'evaluate', 'save_checkpoint', 'load_checkpoint',
           'autocast', 'rng_state', 'set_rng_state', 'write_checkpoint_unit', 'read_checkpoint_unit',
           'check_state_dict_fits', 'check_same_settings', 'resume_notice', 'recalibrate_batchnorm', 'make_scheduler',
           'CHECKPOINT_MANIFEST', 'seed_everything', 'curves_title']

CHECKPOINT_WEIGHTS = 'checkpoint.safetensors'
CHECKPOINT_STATE = 'checkpoint_state.pt'
CHECKPOINT_EMA = 'checkpoint_ema.safetensors'
CHECKPOINT_MANIFEST = 'checkpoint.json'  # written last: names the files of one checkpoint, its epoch, checksums


@dataclass
class TrainSetup:
    model: nn.Module
    train_ds: Any
    eval_ds: Any
    recipe: Dict[str, Any]
    output: Path
    model_name: str
    device: torch.device = torch.device('cpu')
    seed: int = 0
    workers: Optional[int] = None      # data-loading processes; None: sized to the machine (loader.default_workers)
    amp: Optional[str] = None          # None, 'bf16' or 'fp16'
    channels_last: bool = False
    compile: bool = False
    head_epochs: int = 0               # train only the classifier for the first N epochs
    resume: Optional[Path] = None
    stop_after: Optional[int] = None   # stop after N epochs of this invocation (continue with resume)
    ema_decay: Optional[float] = None  # keep an exponential moving average of the weights (timm ModelEmaV3)
    progress: bool = True
    export_args: Dict[str, Any] = field(default_factory=dict)
    run_info: Dict[str, Any] = field(default_factory=dict)  # the run's facts, recorded in config.json (bnas_run)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _rank() -> int:
    return dist.get_rank() if _distributed() else 0


def _world() -> int:
    return dist.get_world_size() if _distributed() else 1


def param_groups(model: nn.Module, weight_decay: float, binary_weight_decay: bool) -> List[Dict[str, Any]]:
    """Weight decay on conv/linear weights only: not on biases and BatchNorm, and not on the latent binary
    weights unless the recipe asks for it (``binary_weight_decay``)."""
    binary = binary_param_names(model)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith('.bias') or (name in binary and not binary_weight_decay):
            no_decay.append(p)
        else:
            decay.append(p)
    return [dict(params=no_decay, weight_decay=0.0), dict(params=decay, weight_decay=weight_decay)]


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and every GPU), Python's and numpy's generators."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def rng_state() -> Dict[str, Any]:
    """The state of every generator a run draws from: torch's (CPU, and each GPU's once used), Python's, numpy's."""
    np_state = np.random.get_state()
    state = dict(torch=torch.get_rng_state(), python=random.getstate(),
                 numpy=[np_state[0], np_state[1].tolist(), *np_state[2:]])
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state['torch'])
    if state.get('cuda') is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])
    py = state['python']
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state['numpy']
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))


def save_checkpoint(output: Path, model: nn.Module, optimizer, scheduler, epoch: int, best: Dict[str, Any],
                    history: List[Dict[str, Any]], model_name: str, ema: Optional[nn.Module] = None, scaler=None,
                    recipe: Optional[Dict[str, Any]] = None) -> Path:
    """Weights (safetensors), their EMA and the training state (optimizer, scheduler, fp16 gradient scaler,
    RNG, recipe, history), written as one durable unit (:func:`write_checkpoint_unit`); returns its folder."""
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    writers = {CHECKPOINT_WEIGHTS: lambda p: save_file(state, str(p), metadata={'model': model_name})}
    if ema is not None:
        ema_state = {k: v.contiguous() for k, v in ema.state_dict().items()}
        writers[CHECKPOINT_EMA] = lambda p: save_file(ema_state, str(p), metadata={'model': model_name})
    payload = dict(epoch=epoch, model=model_name, optimizer=optimizer.state_dict(), optimizer_type=type(optimizer).__name__,
                   scheduler=scheduler.state_dict(), rng=rng_state(), best=best, history=history)
    if scaler is not None:
        payload['scaler'] = scaler.state_dict()
    if recipe is not None:
        payload['recipe'] = {k: v for k, v in recipe.items() if k != 'description'}
    writers[CHECKPOINT_STATE] = lambda p: torch.save(payload, p)
    return write_checkpoint_unit(output, CHECKPOINT_MANIFEST, writers, epoch, model=model_name)


def check_state_dict_fits(tensors: Dict[str, torch.Tensor], model: nn.Module, source: str) -> None:
    """A CheckpointError naming the missing, unexpected and wrong-shaped tensors, when there are any."""
    ours = model.state_dict()
    missing = [k for k in ours if k not in tensors]
    unexpected = [k for k in tensors if k not in ours]
    shapes = [f'{k} {list(tensors[k].shape)} (expected {list(ours[k].shape)})' for k in ours
              if k in tensors and tensors[k].shape != ours[k].shape]
    if missing or unexpected or shapes:
        raise CheckpointError(f'{source}: the weights do not fit the model (other channels, layers or genotype?): '
                              f'missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {shapes[:3]}')
    for k, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f'{source}: tensor {k} holds NaN or infinite values')


_STATE_TYPES = dict(epoch=int, model=str, optimizer=dict, scheduler=dict, rng=dict, best=dict, history=list)


def _check_optimizer_state(saved: Dict[str, Any], optimizer, source: str, saved_type: Optional[str]) -> None:
    ours = optimizer.state_dict()['param_groups']
    groups = saved.get('param_groups')
    if saved_type is not None and saved_type != type(optimizer).__name__:
        raise CheckpointError(f'{source}: the run used the optimizer {saved_type}, not {type(optimizer).__name__}; '
                              f'resume with the same --opt')
    if not isinstance(groups, list) or not isinstance(saved.get('state'), dict) or len(groups) != len(ours) or any(
            not isinstance(g, dict) or set(g) != set(o) or len(g.get('params', ())) != len(o['params'])
            for g, o in zip(groups, ours)):
        raise CheckpointError(f'{source}: the saved optimizer state does not fit this optimizer '
                              f'({type(optimizer).__name__}): another --opt, or other parameters; resume with the '
                              f'settings of the run')


def check_same_settings(saved: Dict[str, Any], current: Dict[str, Any], source: str, restart: str) -> None:
    """A CheckpointError when a resumed run's settings differ from those it was started with (resuming exactly
    needs the same), naming them; another number of epochs gets its own reason (the schedule is fitted to the
    run's length). ``restart`` says how to train on under other settings instead."""
    if saved.get('epochs') != current.get('epochs'):
        raise CheckpointError(
            f"{source}: the run was started for {saved.get('epochs')} epochs; this command asks for "
            f"{current.get('epochs')}. Its learning-rate schedule (warm-up, decay to the final rate) is fitted to "
            f"{saved.get('epochs')} epochs and the epochs done followed it, so it cannot be stretched exactly: resume "
            f"with --epochs {saved.get('epochs')}, or {restart}")
    changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    if changed:
        raise CheckpointError(f"{source}: the run was started with other settings ("
                              + ', '.join(f'{k} {saved.get(k)!r}, now {current.get(k)!r}' for k in changed[:6])
                              + f'); resume with the settings of the run, or {restart}')


def load_checkpoint(path: Path, model: nn.Module, optimizer, scheduler, model_name: str,
                    ema: Optional[nn.Module] = None, scaler=None, recipe: Optional[Dict[str, Any]] = None,
                    ) -> Dict[str, Any]:
    """Restore weights, optimizer, scheduler, gradient scaler and RNG state from the newest intact checkpoint
    unit of the run folder ``path``; returns the state (epoch, best, history), with ``unit`` (the folder read)
    and ``skipped`` (the damaged newer units, with their reasons).

    Everything is checked before anything is restored: the checkpoint unit (manifest, checksums), the state's
    fields, the recipe it was started with (``recipe``, when given), the weights' names and shapes, the
    optimizer's kind; a CheckpointError names what does not fit."""
    path = Path(path)
    run = path if path.is_dir() else path.parent
    info = read_checkpoint_unit(run, CHECKPOINT_MANIFEST)
    folder = info['unit']
    state_file = folder / CHECKPOINT_STATE
    try:
        state = torch.load(state_file, map_location='cpu', weights_only=True)
        tensors = load_file(str(folder / CHECKPOINT_WEIGHTS))
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same error for the user
        raise CheckpointError(f'--resume {folder}: unreadable checkpoint ({first_line(e)})') from None
    if not isinstance(state, dict):
        raise CheckpointError(f'--resume {state_file}: a {type(state).__name__}; expected the training state (a dict)')
    for key, kind in _STATE_TYPES.items():
        if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool):
            raise CheckpointError(f"--resume {state_file}: field {key!r} is {type(state.get(key)).__name__}; "
                                  f"expected {kind.__name__}")
    if state['model'] != model_name:
        raise CheckpointError(f"--resume {folder}: a checkpoint of {state.get('model')!r}, not of {model_name!r}")
    if state['epoch'] != info['epoch']:
        raise CheckpointError(f"--resume {folder}: {CHECKPOINT_STATE} is of epoch {state['epoch'] + 1} but "
                              f"{CHECKPOINT_MANIFEST} names epoch {info['epoch'] + 1}")
    rows = state['history']
    row_keys = {'epoch', 'train_loss', 'train_top1', 'eval_loss', 'eval_top1'}
    if not all(isinstance(h, dict) and set(h) == set(rows[0]) and row_keys <= set(h) and isinstance(h['epoch'], int)
               and all(isinstance(h[k], (int, float)) for k in row_keys) for h in rows) or not (
            isinstance(state['best'].get('top1'), (int, float)) and isinstance(state['best'].get('epoch'), int)):
        raise CheckpointError(f"--resume {state_file}: fields 'history' / 'best' are not the run's per-epoch rows")
    check_state_dict_fits(tensors, model, f'--resume {folder / CHECKPOINT_WEIGHTS}')
    ema_tensors = None
    if ema is not None:
        if CHECKPOINT_EMA not in info['files']:
            raise CheckpointError(f'--resume {folder}: the run kept no EMA weights; resume without --model-ema')
        try:
            ema_tensors = load_file(str(folder / CHECKPOINT_EMA))
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f'--resume {folder / CHECKPOINT_EMA}: unreadable ({first_line(e)})') from None
        check_state_dict_fits(ema_tensors, ema, f'--resume {folder / CHECKPOINT_EMA}')
    _check_optimizer_state(state['optimizer'], optimizer, f'--resume {state_file}', state.get('optimizer_type'))
    if recipe is not None and isinstance(state.get('recipe'), dict):
        check_same_settings(state['recipe'], {k: v for k, v in recipe.items() if k != 'description'},
                            f'--resume {run}', f'train on from its weights in a new run (--model local-dir:{run} '
                            f'--output NEW_FOLDER --epochs N)')
    if scaler is not None and not isinstance(state.get('scaler'), dict):
        raise CheckpointError(f'--resume {state_file}: the run kept no fp16 gradient-scaler state (it was not an '
                              f'--amp fp16 run, or an older version wrote it); resume with the run\'s --amp')

    def restore() -> None:
        model.load_state_dict(tensors)
        if ema_tensors is not None:
            ema.load_state_dict(ema_tensors)
        optimizer.load_state_dict(state['optimizer'])
        scheduler.load_state_dict(state['scheduler'])
        if scaler is not None:
            scaler.load_state_dict(state['scaler'])
    restore_or_refuse(state_file, restore, state['rng'])
    return dict(state, unit=folder, skipped=info['skipped'])


def restore_or_refuse(state_file: Path, restore: Callable[[], None], rng: Dict[str, Any]) -> None:
    """Run ``restore()`` (the load_state_dict calls of a resume), then restore the RNG state; a state whose
    fields have the right types but do not load is a CheckpointError naming ``state_file``."""
    try:
        restore()
        set_rng_state(rng)
    except Exception as e:  # noqa: BLE001 - a field of the right type but wrong content
        raise CheckpointError(f'--resume {state_file}: the optimizer, scheduler or RNG state does not load '
                              f'({type(e).__name__}: {first_line(e)})') from None


def resume_notice(state: Dict[str, Any], what: str) -> str:
    """The line a resume prints: the epoch it continues from, the unit read, and any damaged newer unit
    skipped (with its reason)."""
    lines = [f"{what}: skipped a damaged checkpoint: {reason}" for reason in state.get('skipped', [])]
    lines.append(f"{what}: resuming after epoch {state['epoch'] + 1} (checkpoint {state['unit']})")
    return '\n'.join(lines)


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, criterion: Optional[nn.Module] = None,
             amp: Optional[str] = None, channels_last: bool = False, progress: bool = False) -> Dict[str, float]:
    """Loss, top-1 and top-5 (percent) of ``model`` over ``loader``, reduced over processes."""
    model.eval()
    criterion = criterion or nn.CrossEntropyLoss()
    totals = torch.zeros(4, dtype=torch.float64)  # loss sum, top1 hits, top5 hits, count
    amp_ctx = autocast(device, amp)
    for x, y in tqdm(loader, desc='eval', disable=not progress, leave=False):
        x, y = to_device(x, device, channels_last), to_device(y, device)
        with amp_ctx:
            out = model(x)
        out = out.float()
        k = min(5, out.shape[1])
        top1, topk = accuracy(out, y, topk=(1, k))
        n = y.shape[0]
        totals += torch.tensor([criterion(out, y).item() * n, top1.item() * n / 100, topk.item() * n / 100, n],
                               dtype=torch.float64)
    if _distributed():
        dist.all_reduce(totals)
    loss, h1, h5, n = totals.tolist()
    return dict(loss=loss / max(n, 1), top1=100 * h1 / max(n, 1), top5=100 * h5 / max(n, 1))


def autocast(device: torch.device, amp: Optional[str]):
    if not amp:
        return nullcontext()
    dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}[amp]
    return torch.autocast(device_type=device.type, dtype=dtype)


def _curves_figure(history: List[Dict[str, Any]], title: str):
    """The figure of curves.png: accuracy and loss per epoch (integer ticks), the head-only epochs shaded."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    epochs = [h['epoch'] for h in history]
    head = [h['epoch'] for h in history if h.get('head_only')]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [h['train_top1'] for h in history], 'o-', label='train')
    ax1.plot(epochs, [h['eval_top1'] for h in history], 's-', label='validation')
    ax1.set(xlabel='epoch', ylabel='top-1 accuracy (%)', title='accuracy')
    ax2.plot(epochs, [h['train_loss'] for h in history], 'o-', label='train')
    ax2.plot(epochs, [h['eval_loss'] for h in history], 's-', label='validation')
    ax2.set(xlabel='epoch', ylabel='loss', title='loss')
    for ax in (ax1, ax2):
        if head:  # the classifier alone was trained in these epochs
            ax.axvspan(min(head) - 0.5, max(head) + 0.5, color='tab:gray', alpha=0.2, label='head only')
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f'{title}\ntrain far above validation: overfitting; both low and close: underfitting', fontsize=10)
    fig.tight_layout()
    return fig


def _plot(history: List[Dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib.pyplot as plt
    fig = _curves_figure(history, title)
    atomic_write(path, lambda p: fig.savefig(p, format='png', dpi=100, metadata={'Title': title}))
    plt.close(fig)


def curves_title(s: 'TrainSetup') -> str:
    """What curves.png is of: the model, the data and the recipe of this run."""
    info = s.run_info
    model = info.get('model') or s.model_name
    if model != s.model_name:
        model = f'{model} ({s.model_name})'
    data = info.get('dataset') or 'the given data'
    recipe = info.get('recipe_name')
    return f'{model} on {data}' + (f', recipe {recipe}' if recipe else '')


def _write_summaries(output: Path, history: List[Dict[str, Any]]) -> None:
    atomic_write(output / 'summary.json', lambda p: p.write_text(json.dumps(history, indent=2)))
    keys = list(history[0].keys())
    lines = [','.join(keys)] + [','.join(f'{h[k]:.6g}' if isinstance(h[k], float) else str(h[k]) for k in keys)
                                for h in history]
    atomic_write(output / 'summary.csv', lambda p: p.write_text('\n'.join(lines) + '\n'))


def _save_best(model: nn.Module, s: TrainSetup, epoch: int) -> None:
    """model.safetensors + config.json in timm's format (local-dir:RUN loads them), each replaced atomically.
    config.json also records the run's facts and the epoch of these weights (``bnas_run``, read by publishing)."""
    from timm.models._hub import save_config_for_hf
    tmp = s.output / '.best.tmp'
    tmp.mkdir(parents=True, exist_ok=True)
    model_config = dict(bnas_run=dict(s.run_info, epoch=epoch)) if s.run_info else None
    # timm's save_for_hf, with the tensors made contiguous (a channels-last model's are not; safetensors
    # stores contiguous tensors only)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / 'model.safetensors'))
    save_config_for_hf(model, tmp / 'config.json', model_config=model_config, model_args=s.export_args)
    for name in ('model.safetensors', 'config.json'):
        give_default_mode(tmp / name)  # safetensors writes 0600: the run's weights are for others too
        fsync_file(tmp / name)
        rename(tmp / name, s.output / name)
    fsync_dir(s.output)
    tmp.rmdir()


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, loader, images: int, device: torch.device, channels_last: bool = False,
                          amp: Optional[str] = None) -> int:
    """Recompute every BatchNorm's running statistics as the plain average over the first batches of
    ``loader`` (about ``images`` images) with the model's current weights; returns the images used.

    The running averages kept during an epoch mix the statistics of every step's weights; a binary network's
    activations change scale quickly while its weights (and the XNOR scale alpha) move, so those averages lag
    behind the final weights and the evaluation (which uses them) lags behind the training. Training-mode
    forward passes without gradients; the momentum of each BatchNorm is put back afterwards; under
    torch.distributed the statistics are averaged over the processes."""
    seen = 0
    with recomputed_batchnorm_statistics(model) as norms:
        if not norms:
            return 0
        for x, _ in loader:
            with autocast(device, amp):
                model(to_device(x, device, channels_last))
            seen += x.shape[0]
            if seen >= images:  # (at least one batch)
                break
    if _distributed():
        for m in norms:
            for t in (m.running_mean, m.running_var):
                dist.all_reduce(t)
                t.div_(_world())
    return seen


#: why a binary network's training diverges, and what to change (the message of a NaN or infinite loss)
DIVERGENCE = ('At a high SGD rate from the first steps, the latent binary weights jump to their clamp (the XNOR '
              'gradient is scaled by the kernel size times the input channels, as in the released training), the '
              'XNOR scale alpha grows many times within a few steps, and the classifier receives features that '
              'explode with it. Use a warm-up (--warmup-epochs, a fraction of an epoch is fine), a lower --lr, or '
              'the short recipe (Adam: --recipe short)')


def make_scheduler(optimizer, r: Dict[str, Any], updates_per_epoch: int):
    """timm's scheduler for the recipe, stepped at every update (so that a warm-up or a cycle of a fraction of
    an epoch keeps its shape: a short run of a long recipe is the same curve, compressed)."""
    cycle = r.get('sched_cycle_epochs')
    scheduler, _ = create_scheduler_v2(
        optimizer, sched=r['sched'], num_epochs=cycle or r['epochs'], min_lr=r['min_lr'],
        warmup_lr=r['warmup_lr'], warmup_epochs=r['warmup_epochs'], cycle_decay=r['cycle_decay'],
        cycle_limit=max(1, round(r['epochs'] / cycle)) if cycle else 1, step_on_epochs=False,
        updates_per_epoch=updates_per_epoch)
    return scheduler


def run_training(s: TrainSetup) -> Dict[str, Any]:
    """Train ``s.model`` with ``s.recipe``; write the run folder. Returns the best epoch's metrics."""
    r = s.recipe
    device = s.device
    torch.manual_seed(s.seed + _rank())
    random.seed(s.seed)
    np.random.seed(s.seed)
    model = s.model.to(device)
    if s.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if hasattr(model, 'set_drop_path'):
        model.set_drop_path(r['drop_path'])
    per_process = max(1, r['batch_size'] // _world())
    if len(s.train_ds) // _world() < per_process:  # the incomplete last batch is dropped: an epoch of no step
        raise BnasError(f"the training set holds {len(s.train_ds)} images, fewer than the batch size "
                        f"{r['batch_size']}: an epoch would train nothing; lower the batch size")
    workers = s.workers if s.workers is not None else default_workers(device, s.train_ds)
    train_loader = make_loader(s.train_ds, per_process, s.seed, True, True, workers, device)
    eval_loader = make_loader(s.eval_ds, per_process, s.seed, False, False, workers, device)
    optimizer = create_optimizer_v2(
        param_groups(model, r['weight_decay'], r['binary_weight_decay']), opt=r['opt'], lr=r['lr'],
        weight_decay=r['weight_decay'], momentum=r['momentum'])
    attach_latent_projection(optimizer, model)
    updates_per_epoch = len(train_loader)
    scheduler = make_scheduler(optimizer, r, updates_per_epoch)
    criterion = LabelSmoothingCrossEntropy(r['label_smoothing']) if r['label_smoothing'] > 0 else nn.CrossEntropyLoss()
    scaler = NativeScaler(device=device.type) if s.amp == 'fp16' else None

    ema = ModelEmaV3(model, decay=s.ema_decay) if s.ema_decay else None
    start_epoch, best, history = 0, dict(epoch=-1, top1=-1.0), []
    if s.resume:
        state = load_checkpoint(s.resume, model, optimizer, scheduler, s.model_name, ema.module if ema else None,
                                scaler, r)
        start_epoch, best, history = state['epoch'] + 1, state['best'], state['history']
        if _rank() == 0:
            print(resume_notice(state, '--resume'), file=sys.stderr, flush=True)
            if history:  # a run killed while writing them: the checkpoint's history repairs them
                _write_summaries(s.output, history)
                _plot(history, s.output / 'curves.png', curves_title(s))
    elif _rank() == 0:  # a run started (again) here: no unit of another run may be resumed later
        clear_checkpoints(s.output, CHECKPOINT_MANIFEST, [CHECKPOINT_WEIGHTS, CHECKPOINT_STATE, CHECKPOINT_EMA])

    train_model = model
    if _distributed():
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == 'cuda' else None)
    if s.compile:
        train_model = torch.compile(train_model)
    classifier = model.get_classifier()
    last_epoch = r['epochs'] if not s.stop_after else min(r['epochs'], start_epoch + s.stop_after)
    for epoch in range(start_epoch, last_epoch):
        head_only = epoch < s.head_epochs
        for p in model.parameters():
            p.requires_grad_(not head_only)
        for p in classifier.parameters():
            p.requires_grad_(True)
        train_model.train()
        if head_only:  # a frozen body: its BatchNorm statistics stay as they are too
            model.eval()
            classifier.train()
        lr = optimizer.param_groups[0]['lr']  # the rate of this epoch's first step
        loss_m, top1_m = AverageMeter(), AverageMeter()
        t0, seen = time.perf_counter(), 0
        bar = tqdm(set_epoch(train_loader, epoch), desc=f'epoch {epoch + 1}/{r["epochs"]}',
                   disable=not s.progress or _rank() != 0)
        for step, (x, y) in enumerate(bar):
            x, y = to_device(x, device, s.channels_last), to_device(y, device)
            with autocast(device, s.amp):
                out = train_model(x)
                loss = criterion(out, y)
            if not math.isfinite(loss.item()):
                raise BnasError(f'epoch {epoch + 1}, step {step + 1}: the loss is {loss.item()}: the training '
                                f'diverged and this epoch was not saved. {DIVERGENCE}')
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler(loss, optimizer, clip_grad=r['grad_clip'], parameters=model.parameters())
            else:
                loss.backward()
                if r['grad_clip']:
                    dispatch_clip_grad(model.parameters(), r['grad_clip'])
                optimizer.step()
            scheduler.step_update(epoch * updates_per_epoch + step + 1)
            if ema is not None:
                ema.update(model)
            n = y.shape[0]
            seen += n * _world()
            loss_m.update(loss.item(), n)
            top1_m.update(accuracy(out.detach().float(), y, topk=(1,))[0].item(), n)
            bar.set_postfix(loss=f'{loss_m.avg:.3f}', top1=f'{top1_m.avg:.1f}',
                            img_s=f'{seen / (time.perf_counter() - t0):.0f}')
        images_per_s = seen / (time.perf_counter() - t0)
        for name, p in model.named_parameters():
            if not bool(torch.isfinite(p).all()):
                raise BnasError(f'epoch {epoch + 1}: parameter {name} is no longer finite (NaN or infinite): the '
                                f'training diverged and this epoch was not saved. {DIVERGENCE}')
        if r['bn_recalibration'] and not head_only:  # running statistics of this epoch's final weights
            images = min(r['bn_recalibration'], len(s.train_ds) // 4)  # at most a quarter of an epoch's forwards
            recalibrate_batchnorm(model, set_epoch(train_loader, epoch), images, device, s.channels_last, s.amp)
        metrics = evaluate(model, set_epoch(eval_loader, 0), device, amp=s.amp, channels_last=s.channels_last)
        row = dict(epoch=epoch + 1, lr=lr, train_loss=loss_m.avg, train_top1=top1_m.avg,
                   eval_loss=metrics['loss'], eval_top1=metrics['top1'], eval_top5=metrics['top5'],
                   images_per_s=images_per_s, head_only=head_only)
        if ema is not None:
            row['eval_ema_top1'] = evaluate(ema.module, set_epoch(eval_loader, 0), device, amp=s.amp,
                                            channels_last=s.channels_last)['top1']
        history.append(row)
        if _rank() == 0:
            improved = metrics['top1'] > best['top1']
            if improved:
                best = dict(epoch=epoch + 1, top1=metrics['top1'], top5=metrics['top5'])
                _save_best(model, s, epoch + 1)
            save_checkpoint(s.output, model, optimizer, scheduler, epoch, best, history, s.model_name,
                            ema.module if ema else None, scaler, r)
            _write_summaries(s.output, history)
            _plot(history, s.output / 'curves.png', curves_title(s))
            print(f"epoch {epoch + 1}: train loss {row['train_loss']:.4f} top-1 {row['train_top1']:.2f} | "
                  f"eval loss {row['eval_loss']:.4f} top-1 {row['eval_top1']:.2f} top-5 {row['eval_top5']:.2f} | "
                  f"{row['images_per_s']:.0f} img/s" + (' | best' if improved else ''), flush=True)
    return best
