"""The ``bnas-zoo`` command line: list, profile, convert-official, publish, bench, export, demo."""
from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

from .bench import DEFAULT_BASELINES
from .errors import BnasError, run_cli

EPILOG = """examples:
  bnas-zoo list
  bnas-zoo profile bnas_d                      # per-layer table and totals
  bnas-zoo profile bnas_custom --genotype cell.json --layers 8 --channels 16 --stem cifar
  bnas-zoo convert-official model_best.pth.tar --model bnas_d --out weights/bnas_d
  bnas-zoo publish weights/bnas_d --repo-id my-org/bnas_d.in1k --dry-run --out publish/bnas_d
  bnas-zoo bench bnas_d --batch-size 1 8 --threads 1 2    # deployed inference vs resnet18, mobilenetv3_small_050
  bnas-zoo export local-dir:weights/bnas_d --format onnx --out bnas_d.onnx   # runs without bnas_zoo
  bnas-zoo demo                                # the main job on the embedded default
"""

#: the help of the MODEL argument and of --input-size, shared by the subcommands that build a model
MODEL_HELP = 'bnas_mini, bnas_a..bnas_h, bnas_custom, local-dir:PATH or hf-hub:ORG/NAME'
INPUT_SIZE_HELP = "square input resolution (default: the model's)"


def _create(name: str, args: argparse.Namespace, pretrained: bool = False):
    from .registry import VARIANTS, create_checked
    kwargs = {'pretrained': True} if pretrained else {}
    if name == 'bnas_custom':
        if not (args.genotype and args.custom_layers and args.channels):
            raise BnasError('bnas_custom needs --genotype, --layers (bench: --cells) and --channels (and --stem)')
        kwargs.update(genotype=args.genotype, layers=args.custom_layers, channels=args.channels, stem=args.stem)
        if args.num_classes:
            kwargs['num_classes'] = args.num_classes
    elif ':' not in name and name not in VARIANTS:
        raise BnasError(f"unknown model {name!r}; expected one of {', '.join(VARIANTS)}, bnas_custom, "
                        f"local-dir:PATH or hf-hub:ORG/NAME")
    return create_checked(name, **kwargs)


def cmd_list(args: argparse.Namespace) -> int:
    from .genotype import list_genotypes
    from .registry import VARIANTS, hub_repo_id
    repos = {name: hub_repo_id(name) for name in VARIANTS}
    if args.no_hub:
        status = {r: 'not checked' for r in repos.values()}
    else:
        from bnas_zoo.hub.status import weights_status
        status = weights_status(repos.values())
    print(f"{'model':<15} {'paper':<10} {'genotype':<14} {'layers':>6} {'C0':>4} {'stem':<9} {'hf_hub_id':<28} weights")
    for name, v in VARIANTS.items():
        print(f'{name:<15} {v.paper_name:<10} {v.genotype:<14} {v.layers:>6} {v.channels:>4} {v.stem:<9} '
              f'{repos[name]:<28} {status[repos[name]]}')
    print(f"bundled genotypes: {', '.join(list_genotypes())}")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from .profile import format_profile, format_summary, profile_model
    model = _create(args.model, args)
    input_size = None
    if args.input_size:
        input_size = (model.in_chans, args.input_size, args.input_size)
    p = profile_model(model, input_size=input_size, name=args.model)
    if args.json:
        print(json.dumps(p.as_dict(), indent=2))
    else:
        print(format_summary(p) if args.summary else format_profile(p))
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from .convert import convert_official
    out = convert_official(args.checkpoint, args.model, args.out)
    print(f'wrote {out / "model.safetensors"} and {out / "config.json"}')
    print(f'load with: timm.create_model("local-dir:{out}")  (after import bnas_zoo)')
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from bnas_zoo.hub import publish
    eval_results = None
    if args.eval_results:
        try:
            with open(args.eval_results) as f:
                eval_results = json.load(f)
        except OSError as e:
            raise BnasError(f'--eval-results {args.eval_results}: cannot read it ({e.strerror})') from None
        except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise BnasError(f'--eval-results {args.eval_results}: not valid JSON ({e})') from None
    recipe = args.recipe
    if args.recipe_file:
        try:
            with open(args.recipe_file) as f:
                recipe = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise BnasError(f'--recipe-file {args.recipe_file}: cannot read it ({e})') from None
    result = publish(args.model_dir, args.repo_id, revision=args.revision, dry_run=args.dry_run, out=args.out,
                     eval_results=eval_results, recipe=recipe, private=args.private,
                     commit_message=args.commit_message, license=args.license, dataset=args.dataset)
    if result.status == 'dry-run':
        print(f'dry run: wrote {", ".join(result.files)} to {result.folder} (nothing uploaded)')
        print(f'check it with: timm.create_model("local-dir:{result.folder}", pretrained=True)')
    elif result.status == 'unchanged':
        print(f'{result.repo_id} already holds these exact files: nothing uploaded')
    else:
        print(f'uploaded {", ".join(result.files)} to {result.repo_id}: {result.commit_url}')
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_model
    if args.input_size is not None and args.input_size < 1:
        raise BnasError(f'--input-size {args.input_size}: expected >= 1')
    hub_or_dir = args.model.startswith(('local-dir:', 'hf-hub:'))
    model = _create(args.model, args, pretrained=args.pretrained or hub_or_dir)
    size = (model.in_chans, args.input_size, args.input_size) if args.input_size else None
    out = export_model(model, args.format, args.out, input_size=size, opset=args.opset)
    weights = 'its weights' if args.pretrained or hub_or_dir else 'freshly initialised weights (no --pretrained)'
    print(f'wrote {out} ({out.stat().st_size / 2**20:.1f} MiB; {args.model}, {weights}, eval mode)')
    load = {'onnx': f'onnxruntime.InferenceSession("{out}").run(None, {{"input": x}})',
            'pt2': f'torch.export.load("{out}").module()(x)',
            'torchscript': f'torch.jit.load("{out}")(x)'}[args.format]
    print(f'run it without bnas_zoo: {load}  (x: a float32 batch N x {model.in_chans} x H x W, '
          f'H and W as exported)')
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    import timm
    import torch
    from timm.models import save_for_hf

    from bnas_zoo.hub import build_publish_folder

    from .packing import load_1bit
    from .profile import format_summary, profile_model
    from .registry import VARIANTS
    print("bnas_zoo demo\n\n1. The cost profile of every registered model (true figures and the paper's convention)\n")
    for name in VARIANTS:
        print(format_summary(profile_model(timm.create_model(name), name=name)))
        print()

    print('2. Publish -> reload, on bnas_mini (freshly initialised weights: a demonstration of the files, '
          'not a trained model)\n')
    torch.manual_seed(0)
    model = timm.create_model('bnas_mini').eval()
    with tempfile.TemporaryDirectory(prefix='bnas_demo_') as tmp:
        run = Path(tmp) / 'run'
        save_for_hf(model, str(run), model_args=model.architecture_args(), safe_serialization=True)
        folder = build_publish_folder(run, Path(tmp) / 'publish', 'bnas-zoo-demo/bnas_mini.demo')
        for f in sorted(folder.iterdir()):
            print(f'   {f.name:<24} {f.stat().st_size:>12,} bytes')
        x = torch.randn(8, 3, 32, 32)
        expected = model(x)
        reloaded = timm.create_model(f'local-dir:{folder}', pretrained=True).eval()
        one_bit = load_1bit(folder / 'model-1bit.safetensors').eval()
        print(f'   reloaded through timm local-dir: outputs identical = {torch.equal(reloaded(x), expected)}')
        print(f'   rebuilt from model-1bit.safetensors alone: outputs identical = {torch.equal(one_bit(x), expected)}')
        ratio = (folder / 'model.safetensors').stat().st_size / (folder / 'model-1bit.safetensors').stat().st_size
        print(f'   the 1-bit file is {ratio:.2f}x smaller than the float file')
        print('   publish for real with: bnas-zoo publish RUN_DIR --repo-id ORG/NAME')
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from . import kernels
    from .bench import bench_layers, bench_model, format_layer_benches, format_network_timings, popcount_peak
    from .exactness import calibrate_batchnorm, is_uncalibrated
    from .deploy import deploy
    backend = kernels.backend()
    print(f'kernels: {backend}' + (f' ({kernels.cpu_isa()}; this CPU supports {", ".join(kernels.cpu_isa_levels())})'
                                   if backend == 'compiled' else f' ({kernels.build_error()})'), flush=True)
    for b in args.baseline:
        if b.split(':')[0] not in ('hf-hub', 'local-dir') and not _timm_name(b):
            raise BnasError(f'--baseline {b}: not a timm model name (see timm.list_models())')
    rows, agreements, notes = [], [], []
    for name in args.models:
        hub_or_dir = name.startswith(('local-dir:', 'hf-hub:'))
        model = _create(name, args, pretrained=hub_or_dir).eval()  # a folder or Hub model with its weights
        size = (model.in_chans, args.input_size, args.input_size) if args.input_size else \
            tuple(model.pretrained_cfg.get('input_size', (3, 224, 224)))
        if is_uncalibrated(model):  # fresh weights: BatchNorm statistics as training would leave them
            calibrate_batchnorm(model, [torch.randn(8, *size, generator=torch.Generator().manual_seed(i))
                                        for i in range(2)])
            notes.append(f'{name}: untrained weights; BatchNorm statistics calibrated on random inputs (a fresh '
                         f'network\'s identity BatchNorms would send exact zeros to every sign, which trained '
                         f'networks do not)')
        fast = deploy(model)  # once per model, for every measurement
        timings, agree = bench_model(model, name, args.batch_size, args.threads, args.repeats, size,
                                     baselines=args.baseline, float_simulated=args.float_sim, fast=fast)
        rows += timings
        agreements.append(agree)
        print(f'measured {name}', flush=True)
        if args.layers:
            peak = popcount_peak()
            print(f'\n{name}: per binary layer, batch {args.batch_size[0]}, {args.threads[0]} thread(s)')
            print(format_layer_benches(bench_layers(fast, size, batch=args.batch_size[0], threads=args.threads[0],
                                                    repeats=args.repeats, peak=peak)), flush=True)
    print()
    print(format_network_timings(rows, agreements))
    for note in notes:
        print('note: ' + note)
    return 0


def _timm_name(name: str) -> bool:
    import timm
    return bool(timm.list_models(name)) or name.split('.')[0] in timm.list_models()


def _add_custom_model_args(p: argparse.ArgumentParser, cells_flag: str) -> None:
    """The flags that build a bnas_custom model (``cells_flag``: the number of cells, read as
    ``args.custom_layers``)."""
    p.add_argument('--genotype', help='bnas_custom: genotype JSON path or bundled name')
    p.add_argument(cells_flag, dest='custom_layers', type=int, help='bnas_custom: number of cells')
    p.add_argument('--channels', type=int, help='bnas_custom: first-cell width C0')
    p.add_argument('--stem', default='cifar', choices=['cifar', 'imagenet'], help='bnas_custom: stem type')
    p.add_argument('--num-classes', type=int, help='bnas_custom: classes')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='bnas-zoo', description='bnas_zoo: searched binary (XNOR) networks as timm models.',
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--debug', action='store_true', help='on an error, show the Python traceback too')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND', required=True)
    add_parser = sub.add_parser

    def add_sub(*a, **kw):  # every command also takes --debug after its name
        p = add_parser(*a, **kw)
        p.add_argument('--debug', action='store_true', default=argparse.SUPPRESS,
                       help='on an error, show the Python traceback too')
        return p
    sub.add_parser = add_sub

    p = sub.add_parser(
        'list', help='list the registered models, whether their weights are published, the bundled genotypes',
        description='Print every registered model (paper name, genotype, cells, first-cell width C0, stem), its '
                    'Hugging Face Hub repository and whether that repository holds weights: "published", "not '
                    'published", or "unknown" when offline (HF_HUB_OFFLINE=1) or the Hub cannot be reached. '
                    'Then the bundled genotypes.')
    p.add_argument('--no-hub', action='store_true', help='do not ask the Hub whether the weights are published')
    p.set_defaults(func=cmd_list)

    p = sub.add_parser(
        'profile', help='cost summary of a model: precision, params at 1/32 bits, memory, binary/FP MACs, FLOPs',
        description='Print a larq-style profile: per layer its precision, parameters at 1 and 32 bits, memory, '
                    'binary and full-precision multiply-adds; then totals (FLOPs = FP MACs + binary MACs / 64, '
                    'memory, memory saving and theoretical speed-up against the same network in float), '
                    'both for the network as given and in the paper\'s convention.')
    p.add_argument('model', help=MODEL_HELP)
    p.add_argument('--input-size', type=int, help=INPUT_SIZE_HELP)
    p.add_argument('--summary', action='store_true', help='print only the totals')
    p.add_argument('--json', action='store_true', help='print the profile as JSON')
    _add_custom_model_args(p, '--layers')
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser(
        'convert-official', help="convert the BNAS authors' released checkpoint to safetensors + config.json",
        description="Read a checkpoint of the BNAS release (a pickled state dict, or a dict with 'state_dict') "
                    "with torch.load(weights_only=True), map every key to bnas_zoo's, and write "
                    "OUT/model.safetensors and OUT/config.json (load with timm.create_model('local-dir:OUT')). "
                    "Missing, unexpected or wrong-shaped keys are refused with their list.")
    p.add_argument('checkpoint', help='the release checkpoint (.pt / .pth.tar)')
    p.add_argument('--model', required=True, help='the network it belongs to: bnas_mini, bnas_a..bnas_h')
    p.add_argument('--out', required=True, help='output folder')
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser(
        'publish', help='publish a model folder to the Hugging Face Hub (weights, exact 1-bit file, config, card)',
        description='Publish MODEL_DIR (model.safetensors + config.json, as written by convert-official, training '
                    'or timm save_for_hf) to the Hub: model.safetensors (latent float weights), '
                    'model-1bit.safetensors (packed sign bits + per-channel scales), config.json (timm format, '
                    'with the genotype) and README.md (model card). The card states only what is known: a '
                    'bnas-train run folder brings its dataset, class count, recipe, command and the measured '
                    'accuracy of its best epoch (summary.json); otherwise the dataset and results are what '
                    '--dataset and --eval-results state, and are left out when not given. The repository is '
                    'created if needed; publishing identical files again uploads nothing. The token comes from '
                    'huggingface_hub (HF_TOKEN or `huggingface-cli login`) and is never printed.')
    p.add_argument('model_dir', help='folder with model.safetensors and config.json')
    p.add_argument('--repo-id', required=True, help='ORG/NAME on the Hub')
    p.add_argument('--revision', help='branch to publish to (created if needed; default: main)')
    p.add_argument('--dry-run', action='store_true', help='write the folder to --out, upload nothing')
    p.add_argument('--out', help='with --dry-run: where to write the folder (also a copy of what is uploaded)')
    p.add_argument('--dataset', metavar='NAME',
                   help='the dataset the weights were trained on, e.g. a Hub dataset id such as cifar10 or '
                        'imagenet-1k (default: the one a bnas-train run recorded; none otherwise)')
    p.add_argument('--eval-results', metavar='JSON',
                   help='evaluation results for the card, replacing those of a run folder: a JSON object or list '
                        'of objects with "top1", "top5" (percent), "dataset" (default: --dataset), "split", '
                        '"images", "command" (how they were measured) and "source": "measured" (needs "command") '
                        'or "reported" (a figure of the paper or the authors, with an optional "reference"; '
                        'the default without "command")')
    p.add_argument('--recipe', help="one paragraph on how the weights were trained (for the card; shown before a "
                                    "run's recipe table)")
    p.add_argument('--recipe-file', help='the same, from a file')
    p.add_argument('--license', default='apache-2.0', help='license of the weights (default: apache-2.0)')
    p.add_argument('--private', action='store_true', help='create the repository private')
    p.add_argument('--commit-message', help='default: "Upload MODEL weights from DIR (bnas_zoo)"')
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser(
        'bench', help='time deployed (packed-bit) inference against the float networks you would use instead',
        description='For each model, batch size and thread count: the latency and throughput of the deployed '
                    'network (bnas_zoo.deploy, packed-bit kernels) and of each --baseline (timm float networks at '
                    'the same input size, timed in the same loop), and the weight bytes each holds. Medians of '
                    'interleaved runs: run it on an otherwise idle machine. A model with untrained weights gets '
                    'BatchNorm statistics calibrated on random inputs first (trained networks have them). '
                    '--layers adds a table of every binary layer: its time, BatchNorm-sign-pack included and '
                    'separately, as a fraction of the measured peak of this CPU\'s popcount core, and against '
                    'torch\'s best float conv of the same shape.')
    p.add_argument('models', nargs='+', metavar='MODEL', help=MODEL_HELP)
    p.add_argument('--baseline', nargs='*', default=list(DEFAULT_BASELINES), metavar='NAME',
                   help='timm models to time in the same loop (default: %(default)s; none: --baseline with no name)')
    p.add_argument('--batch-size', '-b', type=int, nargs='+', default=[1], metavar='N',
                   help='batch sizes (default: 1)')
    p.add_argument('--threads', type=int, nargs='+', default=[2], help='torch intra-op threads (default: 2)')
    p.add_argument('--repeats', type=int, default=10, help='timed runs per measurement (default: 10)')
    p.add_argument('--float-sim', action='store_true',
                   help='also time the float-simulated network (the model as trained, in eval mode)')
    p.add_argument('--layers', action='store_true',
                   help='also print the per-layer table (at the first batch size and thread count)')
    p.add_argument('--input-size', type=int, help=INPUT_SIZE_HELP)
    _add_custom_model_args(p, '--cells')
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        'export', help='export a model (eval mode) to ONNX, torch.export (.pt2) or TorchScript: no bnas_zoo needed to run it',
        description='Export MODEL in eval mode with standard operators only (sign, convolution with the fixed '
                    'binarized weights, BatchNorm, pooling), so that the file runs without bnas_zoo: ONNX in '
                    'onnxruntime (or any ONNX runtime; needs pip install "bnas_zoo[onnx]" to export), .pt2 with '
                    'torch.export.load(FILE).module(), TorchScript (traced) with torch.jit.load(FILE). The batch '
                    'dimension is dynamic; the resolution is fixed at --input-size. local-dir: and hf-hub: models '
                    'are exported with their weights; a registered name with --pretrained only.')
    p.add_argument('model', help=MODEL_HELP)
    p.add_argument('--format', required=True, choices=['onnx', 'pt2', 'torchscript'],
                   help='onnx (torch.onnx dynamo exporter, weights inside the file), pt2 (torch.export.save) or torchscript '
                        '(torch.jit.trace + save)')
    p.add_argument('--out', required=True, metavar='FILE', help='the file to write (its folder is created)')
    p.add_argument('--input-size', type=int, help=INPUT_SIZE_HELP)
    p.add_argument('--pretrained', action='store_true',
                   help="a registered name: load its pretrained weights from the Hub (default: fresh weights)")
    p.add_argument('--opset', type=int, default=18, help='ONNX opset (default: 18)')
    _add_custom_model_args(p, '--layers')
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        'timm', help="run one of timm's scripts (train.py, validate.py, benchmark.py, inference.py) on bnas models",
        description="bnas-zoo timm SCRIPT.py ARGS...: import bnas_zoo (registering the bnas models), then run "
                    "timm's SCRIPT.py with ARGS as `python SCRIPT.py ARGS` would. The scripts come from timm's "
                    "repository (they are not installed with timm).")
    p.add_argument('script', help="path of timm's train.py, validate.py, benchmark.py or inference.py")
    p.add_argument('args', nargs=argparse.REMAINDER, help="the script's own arguments")

    p = sub.add_parser('demo', help='the main job on the embedded default: profile every registered model, '
                                    'then publish -> reload bnas_mini (dry run, no network)',
                       description='Print the cost profile of every registered model (true figures and the '
                                   "paper's convention), then build the published folder of a freshly initialised "
                                   'bnas_mini in a temporary directory (a dry run: nothing is uploaded), reload it '
                                   'through timm local-dir: and from its 1-bit file alone, and check that the '
                                   'outputs are identical.')
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ['timm'] and argv[1:2] not in (['-h'], ['--help']):  # every later argument is the script's
        from .timm_script import main as timm_main
        return timm_main(argv[1:])
    args = build_parser().parse_args(argv)
    return run_cli('bnas-zoo', lambda: _run(args), args.debug)


def _run(args: argparse.Namespace) -> int:
    try:
        return args.func(args)
    except RuntimeError as e:
        if str(e).startswith('Unknown model'):
            raise BnasError(str(e)) from None
        raise


if __name__ == '__main__':
    sys.exit(main())
