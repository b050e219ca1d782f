"""The ``bnas-zoo`` command line: list, profile, convert-official, publish, bench, export, draw, demo."""
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
  bnas-zoo profile bnas_custom --genotype cell.json --cells 8 --channels 16 --stem cifar
  bnas-zoo convert-official model_best.pth.tar --model bnas_d --output weights/bnas_d
  bnas-zoo publish weights/bnas_d --repo-id my-org/bnas_d.in1k --dry-run --output publish/bnas_d
  bnas-zoo bench bnas_d --batch-size 1 8 --threads 1 2   # deployed inference vs resnet18, mobilenetv3_small_050
  bnas-zoo export local-dir:weights/bnas_d --format onnx --output bnas_d.onnx   # runs without bnas_zoo
  bnas-zoo draw bnas_cifar --output cells.svg  # the cells of a genotype or model as SVG or PNG
  bnas-zoo timm validate.py --model bnas_mini ...   # one of timm's scripts, with the bnas models registered
  bnas-zoo demo                                # the main job on the embedded default
"""

#: the help of the MODEL argument and of --input-size, shared by the subcommands that build a model
MODEL_HELP = 'bnas_mini, bnas_a..bnas_h, bnas_d_grouped, bnas_custom, local-dir:PATH or hf-hub:ORG/NAME'
INPUT_SIZE_HELP = "square input resolution (default: the model's)"


def _create(name: str, args: argparse.Namespace, pretrained: bool = False):
    from .registry import VARIANTS, create_checked
    kwargs = {'pretrained': True} if pretrained else {}
    if name == 'bnas_custom':
        if not (args.genotype and args.custom_layers and args.channels):
            raise BnasError('bnas_custom needs --genotype, --cells and --channels (and --stem)')
        kwargs.update(genotype=args.genotype, layers=args.custom_layers, channels=args.channels, stem=args.stem)
        if args.num_classes:
            kwargs['num_classes'] = args.num_classes
    elif ':' not in name and name not in VARIANTS:
        raise BnasError(f"unknown model {name!r}; expected one of {', '.join(VARIANTS)}, bnas_custom, "
                        f"local-dir:PATH or hf-hub:ORG/NAME")
    return create_checked(name, **kwargs)


def cmd_list(args: argparse.Namespace) -> int:
    from .genotype import list_genotypes
    from .registry import HUB_MIRROR, VARIANTS, pretrained_hub_id
    sources = {name: pretrained_hub_id(name) for name in VARIANTS}
    to_check = [s for s in sources.values() if s]  # only repositories that pretrained=True would load from
    if args.no_hub:
        status = {s: 'not checked' for s in to_check}
    else:
        from bnas_zoo.hub.status import weights_status
        status = weights_status(to_check) if to_check else {}
    print(f"{'model':<15} {'paper':<10} {'genotype':<14} {'cells':>5} {'C0':>4} {'stem':<9} "
          f"{'pretrained=True loads':<30} weights")
    for name, v in VARIANTS.items():
        source = sources[name]
        print(f'{name:<15} {v.paper_name:<10} {v.genotype:<14} {v.layers:>5} {v.channels:>4} {v.stem:<9} '
              f'{source or "-":<30} {status[source] if source else "not published"}')
    if HUB_MIRROR:
        print(f'pretrained weights come from the mirror BNAS_ZOO_HUB_ORG={HUB_MIRROR}')
    elif not to_check:
        print("no weights are published yet: pretrained=True on these names downloads nothing. Convert the "
              "authors' checkpoints with `bnas-zoo convert-official`, or load published weights with hf-hub:ORG/NAME")
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
    from .registry import VARIANTS
    out = convert_official(args.checkpoint, args.model, args.output)
    print(f'wrote {out / "model.safetensors"} and {out / "config.json"}')
    if VARIANTS[args.model].stem == 'imagenet':
        print("class order: the classifier's rows were moved from the release's order (its ImageNet folders renamed "
              "0..999 and read by torchvision's ImageFolder, which sorts them as strings) to the standard ImageNet-1k "
              "order (sorted synsets, as timm and a synset-named ImageFolder number them)")
    else:
        print("class order: kept (the release trained on torchvision's CIFAR10, the standard CIFAR-10 order: "
              "airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck)")
    print(f'load with: timm.create_model("local-dir:{out}", pretrained=True)  (after import bnas_zoo)')
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
    result = publish(args.model_dir, args.repo_id, revision=args.revision, dry_run=args.dry_run, out=args.output,
                     eval_results=eval_results, recipe=recipe, private=args.private,
                     commit_message=args.commit_message, license=args.license, dataset=args.dataset_name,
                     use_ema=args.use_ema)
    if result.status == 'dry-run':
        print(f'dry run: wrote {", ".join(result.files)} to {result.folder} (nothing uploaded)')
        print(f'check it with: timm.create_model("local-dir:{result.folder}", pretrained=True)')
    elif result.status == 'unchanged':
        print(f'{result.repo_id} already holds these exact files: nothing uploaded')
    else:
        print(f'uploaded {", ".join(result.files)} to {result.repo_id}: {result.commit_url}')
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_model, preprocessing
    if args.input_size is not None and args.input_size < 1:
        raise BnasError(f'--input-size {args.input_size}: expected >= 1')
    hub_or_dir = args.model.startswith(('local-dir:', 'hf-hub:'))
    if hub_or_dir and args.random_weights:
        raise BnasError(f'--random-weights: {args.model} is exported with its own weights; give a registered name '
                        f'(or bnas_custom) to export freshly initialised weights')
    if not hub_or_dir and not (args.pretrained or args.random_weights):
        raise BnasError(f'{args.model}: which weights? --pretrained (its published weights) or --random-weights '
                        f'(freshly initialised, untrained: to try the export); or export trained weights with '
                        f'local-dir:RUN or hf-hub:ORG/NAME')
    model = _create(args.model, args, pretrained=args.pretrained or hub_or_dir)
    size = (model.in_chans, args.input_size, args.input_size) if args.input_size else None
    out = export_model(model, args.format, args.output, input_size=size, opset=args.opset)
    weights = 'freshly initialised, untrained weights (--random-weights)' if args.random_weights else 'its weights'
    print(f'wrote {out} ({out.stat().st_size / 2**20:.1f} MiB; {args.model}, {weights}, eval mode)')
    pre = preprocessing(model, size)
    print(f"input preprocessing: RGB scaled to [0, 1], then per channel (x - mean) / std with mean "
          f"{_floats(pre['mean'])}, std {_floats(pre['std'])}; input {'x'.join(map(str, pre['input_size']))} (C x H x W); "
          f"evaluation resize: {pre['interpolation']}, crop_pct {pre['crop_pct']} (stored in the file: "
          f"{'its metadata' if args.format == 'onnx' else 'preprocessing.json'})")
    load = {'onnx': f'onnxruntime.InferenceSession("{out}").run(None, {{"input": x}})',
            'pt2': f'torch.export.load("{out}").module()(x)',
            'torchscript': f'torch.jit.load("{out}")(x)'}[args.format]
    print(f'run it without bnas_zoo: {load}  (x: a float32 batch N x {model.in_chans} x H x W, '
          f'H and W as exported)')
    return 0


def _floats(values) -> str:
    return '(' + ', '.join(f'{v:.4g}' for v in values) + ')'


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
    from .bench import (bench_layers, bench_model, format_layer_benches, format_network_timings,
                        format_program_profile, popcount_peak, profile_program)
    from .exactness import calibrate_batchnorm, is_uncalibrated
    from .deploy import deploy
    backend = kernels.backend()
    print(f'kernels: {backend}' + (f' ({kernels.cpu_isa()}; this CPU supports {", ".join(kernels.cpu_isa_levels())})'
                                   if backend == 'compiled' else f' ({kernels.build_error()})'), flush=True)
    if args.bf16:
        native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
        print('bfloat16: ' + ('this CPU has bfloat16 instructions' if native else
                              'this CPU has no bfloat16 instructions: emulated in float32, slower'), flush=True)
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
                                     baselines=args.baseline, float_simulated=args.float_sim, fast=fast,
                                     bfloat16=args.bf16)
        rows += timings
        agreements += agree
        print(f'measured {name}', flush=True)
        if args.layers:
            peak = popcount_peak()
            print(f'\n{name}: per binary layer, batch {args.batch_size[0]}, {args.threads[0]} thread(s)')
            print(format_layer_benches(bench_layers(fast, size, batch=args.batch_size[0], threads=args.threads[0],
                                                    repeats=args.repeats, peak=peak)), flush=True)
        if args.profile:
            print(f'\n{name}: where the deployed forward pass spends its time, batch {args.batch_size[0]}, '
                  f'{args.threads[0]} thread(s)')
            if backend == 'compiled':
                print(format_program_profile(*profile_program(fast, size, batch=args.batch_size[0],
                                                               threads=args.threads[0], repeats=args.repeats)),
                      flush=True)
            else:
                print('(needs the compiled kernels)', flush=True)
    print()
    print(format_network_timings(rows, agreements))
    for note in notes:
        print('note: ' + note)
    return 0


def _timm_name(name: str) -> bool:
    import timm
    return bool(timm.list_models(name)) or name.split('.')[0] in timm.list_models()


def cmd_draw(args: argparse.Namespace) -> int:
    from .draw import draw_cell, is_model_name
    if args.search:
        from .search_plots import draw_search
        if args.source:
            raise BnasError(f'give either a GENOTYPE or MODEL to draw, or --search FOLDER; got both '
                            f'({args.source} and --search {args.search})')
        written = draw_search(args.search, args.output)
        print(f'wrote {len(written)} pictures of the search in {args.search}: ' + ', '.join(str(p) for p in written))
        return 0
    if not args.source:
        raise BnasError('expected a GENOTYPE or MODEL to draw (or --search FOLDER)')
    if not args.output:
        raise BnasError('--output FILE.svg or FILE.png is required: the picture to write')
    source = args.source
    if is_model_name(source):
        import torch
        with torch.device('meta'):  # the structure only: no memory for weights, none loaded
            source = _create(args.source, args)
    path = draw_cell(source, args.cell, args.output, width=args.width, height=args.height)
    print(f'wrote {path}')
    return 0


def _add_custom_model_args(p: argparse.ArgumentParser, layers_alias: bool = True) -> None:
    """The flags that build a bnas_custom model; ``layers_alias``: also accept the former ``--layers`` for
    ``--cells`` (hidden; not for bench, whose ``--layers`` is its per-layer report)."""
    p.add_argument('--genotype', help='bnas_custom: genotype JSON path or bundled name (bnas_cifar, bnas_imagenet)')
    p.add_argument('--cells', dest='custom_layers', type=int, metavar='N',
                   help='bnas_custom: number of cells (no default)')
    if layers_alias:
        p.add_argument('--layers', dest='custom_layers', type=int, help=argparse.SUPPRESS)
    p.add_argument('--channels', type=int, metavar='C0', help='bnas_custom: first-cell width C0 (no default)')
    p.add_argument('--stem', default='cifar', choices=['cifar', 'imagenet'],
                   help='bnas_custom: stem type (default: cifar)')
    p.add_argument('--num-classes', type=int, metavar='K',
                   help='bnas_custom: classes (default: 10 with the CIFAR stem, 1000 with the ImageNet stem)')


def _add_output(p: argparse.ArgumentParser, required: bool, **kwargs) -> None:
    """``--output`` (with the former ``--out`` as a hidden alias). argparse cannot require one of two spellings,
    so a required one is checked after parsing (:func:`main`)."""
    p.add_argument('--output', **kwargs)
    p.add_argument('--out', dest='output', help=argparse.SUPPRESS)
    if required:
        p.set_defaults(_required_output=p)


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
        description='Print every registered model (paper name, genotype, cells, first-cell width C0, stem), where '
                    'timm.create_model(NAME, pretrained=True) loads its weights from (a Hugging Face Hub repository '
                    'at the revision this version of bnas_zoo pins, or the BNAS_ZOO_HUB_ORG mirror; "-" when no '
                    'weights are published: nothing is downloaded then) and whether that repository holds them: '
                    '"published", "not published", or "unknown" when offline (HF_HUB_OFFLINE=1) or the Hub cannot '
                    'be reached. Then the bundled genotypes.')
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
    _add_custom_model_args(p)
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser(
        'convert-official', help="convert the BNAS authors' released checkpoint to safetensors + config.json",
        description="Read a checkpoint of the BNAS release (a pickled state dict, or a dict with 'state_dict') "
                    "with torch.load(weights_only=True), map every key to bnas_zoo's, and write "
                    "OUTPUT/model.safetensors and OUTPUT/config.json (load with "
                    "timm.create_model('local-dir:OUTPUT', pretrained=True)). Missing, unexpected or wrong-shaped "
                    "keys are refused with their list. The ImageNet networks' classifier is moved from the "
                    "release's class order (folders renamed 0..999, sorted as strings by torchvision's "
                    "ImageFolder) to the standard ImageNet-1k order (sorted synsets); BNAS-A keeps torchvision's "
                    "CIFAR-10 order, the standard one.")
    p.add_argument('checkpoint', help='the release checkpoint (.pt / .pth.tar)')
    p.add_argument('--model', required=True,
                   help='the network it belongs to: bnas_a or bnas_d..bnas_h (released), or bnas_mini, bnas_b, bnas_c')
    _add_output(p, True, help='output folder (created; required)')
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser(
        'publish', help='publish a model folder to the Hugging Face Hub (weights, exact 1-bit file, config, card)',
        description='Publish MODEL_DIR (model.safetensors + config.json, as written by convert-official, training '
                    'or timm save_for_hf) to the Hub: model.safetensors (latent float weights), '
                    'model-1bit.safetensors (packed sign bits + per-channel scales), config.json (timm format, '
                    'with the genotype) and README.md (model card). The card states only what is known: a '
                    'bnas-train run folder brings its dataset, class count, recipe, command and the measured '
                    'accuracy of its best epoch (summary.json); otherwise the dataset and results are what '
                    '--dataset-name and --eval-results state, and are left out when not given. The repository is '
                    'created if needed; publishing identical files again uploads nothing. The token comes from '
                    'huggingface_hub (HF_TOKEN or `hf auth login`) and is never printed.')
    p.add_argument('model_dir', help='folder with model.safetensors and config.json')
    p.add_argument('--repo-id', required=True, help='ORG/NAME on the Hub')
    p.add_argument('--revision', help='branch to publish to (created if needed; default: main)')
    p.add_argument('--dry-run', action='store_true', help='write the folder to --output, upload nothing')
    _add_output(p, False, help='the folder to write (required with --dry-run; otherwise a copy of what is uploaded)')
    p.add_argument('--use-ema', action='store_true',
                   help="publish the run folder's EMA weights (checkpoint_ema.safetensors, written by bnas-train "
                        "--model-ema: the average at the last checkpointed epoch) instead of its best model.safetensors")
    p.add_argument('--dataset-name', metavar='NAME',
                   help='the dataset the weights were trained on, e.g. a Hub dataset id such as cifar10 or '
                        'imagenet-1k (default: the one a bnas-train run recorded; none otherwise)')
    p.add_argument('--dataset', dest='dataset_name', help=argparse.SUPPRESS)
    p.add_argument('--eval-results', metavar='JSON',
                   help='evaluation results for the card, replacing those of a run folder: a JSON object or list '
                        'of objects with "top1", "top5" (percent), "dataset" (default: --dataset), "split", '
                        '"images", "command" (how they were measured) and "source": "measured" (needs "command") '
                        'or "reported" (a figure of the paper or the authors, with an optional "reference"; '
                        'the default without "command"). Default: the results a bnas-train run recorded; none otherwise')
    p.add_argument('--recipe', help="one paragraph on how the weights were trained (for the card; shown before a "
                                    "run's recipe table; default: none)")
    p.add_argument('--recipe-file', help='the same, from a file')
    p.add_argument('--license', help="licence of the weights, a Hub licence id (default: apache-2.0 for weights "
                                     "trained with bnas_zoo; none for weights converted with convert-official, "
                                     "since the BNAS authors state no licence for theirs)")
    p.add_argument('--private', action='store_true', help='create the repository private (default: public)')
    p.add_argument('--commit-message', help='default: "Upload MODEL weights from DIR (bnas_zoo)"')
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser(
        'bench', help='time deployed (packed-bit) inference against the float networks you would use instead',
        description='For each model, batch size and thread count: the latency and throughput of the deployed '
                    'network (bnas_zoo.deploy, packed-bit kernels) and of each --baseline (timm float networks at '
                    'the same input size, timed in the same loop), the weight bytes each holds, and whether the '
                    'deployed network\'s logits lie within float32\'s own spread of the float64 simulation. Medians of '
                    'interleaved runs: run it on an otherwise idle machine. A model with untrained weights gets '
                    'BatchNorm statistics calibrated on random inputs first (trained networks have them). '
                    '--layers adds a table of every binary layer: its time, BatchNorm-sign-pack included and '
                    'separately, as a fraction of the measured peak of this CPU\'s popcount core, and against '
                    'torch\'s best float conv of the same shape. --profile adds where the deployed forward pass '
                    'spends its time, by kind of instruction.')
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
    p.add_argument('--profile', action='store_true',
                   help='also print where the deployed forward pass spends its time, by kind of instruction of its '
                        'program: binary convs, float convs on signs, float shortcuts and stems, pooling, adds, '
                        'copies, allocation, and the head (at the first batch size and thread count)')
    p.add_argument('--bf16', action='store_true',
                   help='also time the deployed network with its float parts in bfloat16 '
                        '(bnas_zoo.deploy(model, float_dtype=torch.bfloat16): fast on CPUs with bfloat16 '
                        'instructions, AVX512-BF16 or AMX; emulated and slower elsewhere; the binary layers stay '
                        'exact), and print how far its logits are from the float32 deployed network\'s')
    p.add_argument('--input-size', type=int, help=INPUT_SIZE_HELP)
    _add_custom_model_args(p, layers_alias=False)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        'export', help='export a model (eval mode) to ONNX, torch.export (.pt2) or TorchScript: no bnas_zoo needed to run it',
        description='Export MODEL in eval mode with standard operators only (sign, convolution with the fixed '
                    'binarized weights, BatchNorm, pooling), so that the file runs without bnas_zoo: ONNX in '
                    'onnxruntime (or any ONNX runtime; needs pip install "bnas_zoo[onnx]" to export), .pt2 with '
                    'torch.export.load(FILE).module(), TorchScript (traced) with torch.jit.load(FILE). The batch '
                    'dimension is dynamic; the resolution is fixed at --input-size. local-dir: and hf-hub: models '
                    'are exported with their weights; a registered name needs --pretrained (its published weights) '
                    'or --random-weights (freshly initialised). The file holds float weights (sign * scale), not '
                    '1-bit ones; the input normalisation (mean, std, size) is printed and stored in the file.')
    p.add_argument('model', help=MODEL_HELP)
    p.add_argument('--format', required=True, choices=['onnx', 'pt2', 'torchscript'],
                   help='onnx (torch.onnx dynamo exporter, weights inside the file), pt2 (torch.export.save) or torchscript '
                        '(torch.jit.trace + save)')
    _add_output(p, True, metavar='FILE', help='the file to write (its folder is created; required)')
    p.add_argument('--input-size', type=int, help=INPUT_SIZE_HELP)
    weights = p.add_mutually_exclusive_group()
    weights.add_argument('--pretrained', action='store_true',
                         help='a registered name: export its published pretrained weights')
    weights.add_argument('--random-weights', action='store_true',
                         help='a registered name or bnas_custom: export freshly initialised, untrained weights')
    p.add_argument('--opset', type=int, default=18, help='ONNX opset (default: 18)')
    _add_custom_model_args(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        'draw', help='draw the cells of a genotype or model (SVG or PNG), or the pictures of a search folder',
        description='Draw the normal and/or reduction cell of a genotype or a model as a graph, left to right: '
                    'the cell inputs c_{k-2} and c_{k-1}, the intermediate nodes numbered as in the genotype '
                    'JSON, the output c_k concatenating its nodes, one labelled edge per operation. Zeroise '
                    "('none') edges and what they make identically zero are dashed and grey, what no output "
                    'needs is dotted (the network computes neither). A model adds its inter-cell skip (a float '
                    "2x2 convolution in reduction cells) and marks its last cell's float convolutions with a "
                    'double dagger. The same input gives the same file bytes. With --search FOLDER: write again '
                    'the pictures bnas-search writes in its output folder (the architecture weights over the '
                    'epochs, alphas.png; the cells derived after each epoch, cells/epoch_NNN.svg; the cells of '
                    'each genotype JSON in the folder).')
    p.add_argument('source', nargs='?', metavar='GENOTYPE|MODEL',
                   help='a genotype JSON file, a bundled genotype (bnas_cifar, bnas_imagenet), or a model: '
                        + MODEL_HELP)
    p.add_argument('--cell', choices=['normal', 'reduce', 'both'], default='both',
                   help='which cell to draw (default: both, one above the other)')
    p.add_argument('--output', metavar='FILE.svg|FILE.png',
                   help='the picture to write, SVG or PNG by its suffix (its folder is created); with --search: '
                        'the folder to write into (default: the search folder)')
    p.add_argument('--out', dest='output', help=argparse.SUPPRESS)
    p.add_argument('--width', type=int, metavar='PX',
                   help='width in pixels (default: the drawing\'s own for SVG, twice that for PNG); alone, the '
                        'height keeps the proportions')
    p.add_argument('--height', type=int, metavar='PX', help='height in pixels; with --width the drawing is fitted '
                                                             'and centred')
    p.add_argument('--search', metavar='FOLDER', help='the output folder of a finished or interrupted bnas-search')
    _add_custom_model_args(p, layers_alias=False)
    p.set_defaults(func=cmd_draw)

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
    # bnas-zoo [--debug] timm [--debug] SCRIPT ARGS...: every argument after SCRIPT is the script's own
    lead = 0
    while argv[lead:lead + 1] == ['--debug']:
        lead += 1
    if argv[lead:lead + 1] == ['timm']:
        rest = argv[lead + 1:]
        debug = lead > 0 or rest[:1] == ['--debug']
        rest = rest[1:] if rest[:1] == ['--debug'] else rest
        if rest and rest[0] not in ('-h', '--help'):
            from .timm_script import main as timm_main
            return timm_main(rest, debug=debug)
    args = build_parser().parse_args(argv)
    required = getattr(args, '_required_output', None)
    if required is not None and args.output is None:
        required.error('the following arguments are required: --output')
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
