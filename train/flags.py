"""Command-line flags that bnas-train, bnas-validate and bnas-search share: one name and one meaning each."""
from __future__ import annotations

import argparse
from typing import Optional

from bnas_zoo.errors import BnasError

__all__ = ['AMP_DTYPES', 'add_model_flags', 'add_data_flags', 'add_amp_flags', 'add_workers_flag', 'add_run_flags',
           'amp_of', 'data_of']

#: --amp-dtype (timm's spelling) -> --amp
AMP_DTYPES = {'bfloat16': 'bf16', 'float16': 'fp16', 'bf16': 'bf16', 'fp16': 'fp16'}


def add_model_flags(p: argparse.ArgumentParser) -> None:
    """--model (required: no default network) and --pretrained."""
    p.add_argument('--model', required=True,
                   help='the network: bnas_mini, bnas_a..bnas_h, bnas_d_grouped, bnas_custom (bnas-train: with '
                        '--model-arg), local-dir:PATH or hf-hub:ORG/NAME (required: no default)')
    p.add_argument('--pretrained', action='store_true',
                   help='load the pretrained weights of a registry name (default: off: fresh weights; local-dir: '
                        'and hf-hub: always load theirs)')


def add_data_flags(p: argparse.ArgumentParser) -> None:
    """--dataset, --data-dir (and the hidden --data of older versions): the same in the three commands."""
    p.add_argument('--dataset', default=None, metavar='SPEC',
                   help="the data source, as in timm's train.py: omitted or '' reads the image folder tree of "
                        "--data-dir; 'embedded' the handwritten digits shipped with scikit-learn (nothing "
                        "downloaded); torch/cifar10, torch/cifar100, torch/mnist ... the files torchvision stores in "
                        "--data-dir (e.g. DIR/cifar-10-batches-py); hfds/NAME, wds/NAME ... through "
                        "timm.data.create_dataset (default: the image folder of --data-dir)")
    p.add_argument('--data', choices=['embedded', 'folder'], help=argparse.SUPPRESS)  # older spelling of --dataset
    p.add_argument('--data-dir', metavar='DIR',
                   help='root of the data: an image folder tree DIR/train/<class>/<image> and DIR/val/<class>/<image> '
                        '(val may be named validation or test; images of any size and mode), or the folder of a '
                        '--dataset torch/... (default: none)')


def add_amp_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument('--amp', nargs='?', const='auto', choices=['bf16', 'fp16', 'auto'],
                   help='automatic mixed precision: bf16 or fp16 (fp16 with a gradient scaler, checkpointed); --amp '
                        'alone: bf16, or the --amp-dtype (default: float32, no AMP)')
    p.add_argument('--amp-dtype', choices=sorted(AMP_DTYPES), help="timm's spelling: bfloat16 or float16; implies "
                                                                   "--amp (default: none)")


def amp_of(args: argparse.Namespace) -> Optional[str]:
    """'bf16', 'fp16' or None from --amp / --amp-dtype."""
    dtype = AMP_DTYPES.get(args.amp_dtype) if args.amp_dtype else None
    if args.amp in ('bf16', 'fp16'):
        if dtype and dtype != args.amp:
            raise BnasError(f'--amp {args.amp} and --amp-dtype {args.amp_dtype} disagree; give one of them')
        return args.amp
    if args.amp == 'auto' or dtype:
        return dtype or 'bf16'
    return None


def data_of(args: argparse.Namespace) -> Optional[str]:
    """--dataset, or the older --data (embedded / folder)."""
    if args.data and args.dataset is not None:
        raise BnasError('--data is the older spelling of --dataset: give --dataset alone')
    return args.dataset if args.dataset is not None else ('embedded' if args.data == 'embedded' else None)


def add_workers_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument('-j', '--workers', type=int, default=None,
                   help='data-loading processes (default: none for --dataset embedded, whose images are in memory; else '
                        'sized to the machine: on a GPU up to 8, on the CPU one per 4 cores, none below 4 cores; 0 '
                        'loads in the main process). Results do not depend on it')


def add_run_flags(p: argparse.ArgumentParser, kind: str, stop_note: str = '') -> None:
    """--resume, --overwrite and --stop-after of a run folder (--output) holding a ``kind`` ('run', 'search')."""
    p.add_argument('--resume', action='store_true',
                   help=f'continue the {kind} in --output exactly, from its newest intact checkpoint (default: off)')
    p.add_argument('--overwrite', action='store_true',
                   help=f'start again in an --output that already holds a {kind} (default: such an --output is '
                        f'refused)')
    p.add_argument('--stop-after', type=int, metavar='N',
                   help=f'stop after N epochs of this invocation (time-boxed jobs){stop_note}; continue later with '
                        f'--resume (default: run to the end)')
