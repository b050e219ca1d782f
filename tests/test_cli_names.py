"""One name per concept across the four command lines (bnas-zoo, bnas-train, bnas-validate, bnas-search), every
flag's help stating its meaning and default, and `--debug` wherever `bnas-zoo timm` is asked for it.

The agreed names: the output path `--output` (`--out` / `--run-dir` only as hidden aliases), the number of cells
`--cells` (bnas-zoo bench keeps `--layers` for its per-layer report), the evaluation split `--val-split`
(bnas-validate also `--split`, timm's name) and `--train-split`, the batch `--batch-size` / `-b`, `--resume` a
plain flag, the data source `--dataset` (as timm's train.py) and the card's dataset name `--dataset-name`, and
timm train.py's names as aliases in bnas-train."""
import argparse

import pytest

from bnas_zoo.cli import MODEL_HELP, build_parser as zoo_parser
from bnas_zoo.cli import main as zoo_main
from bnas_zoo.errors import BnasError


def _parsers(parser: argparse.ArgumentParser, name: str):
    """(name, parser) of a command and of each of its subcommands."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, p in action.choices.items():
                yield from _parsers(p, f'{name} {sub}')


def _visible(parser: argparse.ArgumentParser) -> dict:
    """option string -> action, for the options that --help shows."""
    return {s: a for a in parser._actions if a.help is not argparse.SUPPRESS for s in a.option_strings}


def _hidden(parser: argparse.ArgumentParser) -> dict:
    return {s: a for a in parser._actions if a.help is argparse.SUPPRESS for s in a.option_strings}


def _texts(parser: argparse.ArgumentParser, name: str):
    for cmd, p in _parsers(parser, name):
        yield cmd, p.description or ''
        yield cmd, p.epilog or ''
        for a in p._actions:
            if a.help and a.help is not argparse.SUPPRESS:
                yield f"{cmd} {'/'.join(a.option_strings) or a.dest}", a.help


def _check_common(parser: argparse.ArgumentParser, name: str) -> list:
    """What holds for every command line: no retired spellings shown, defaults stated, users' words only."""
    problems = []
    for cmd, p in _parsers(parser, name):
        shown = _visible(p)
        for retired in ('--out', '--run-dir', '--batch'):
            if retired in shown:
                problems.append(f'{cmd}: shows {retired}; the agreed name is '
                                f"{ {'--out': '--output', '--run-dir': '--output', '--batch': '--batch-size'}[retired]}")
        if '--layers' in shown and cmd != 'bnas-zoo bench':
            problems.append(f'{cmd}: shows --layers; the number of cells is --cells')
        if '--split' in shown and cmd != 'bnas-validate':
            problems.append(f'{cmd}: shows --split; the evaluation split is --val-split')
        if '--resume' in shown and shown['--resume'].nargs != 0:
            problems.append(f'{cmd}: --resume takes a value; it is a plain flag (the run in --output)')
        if '--batch-size' in shown and '-b' not in shown:
            problems.append(f'{cmd}: --batch-size without its alias -b')
        for a in p._actions:
            if (a.help and a.help is not argparse.SUPPRESS and a.option_strings and a.default not in (None, False, [])
                    and a.default is not argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)
                    and 'default' not in a.help):
                problems.append(f"{cmd} {a.option_strings[0]}: its help does not state its default ({a.default!r})")
    for where, text in _texts(parser, name):
        for internal in ('spec §', '§', 'issue ', 'huggingface-cli'):
            if internal in text:
                problems.append(f'{where}: says {internal!r}')
    return problems


def test_one_name_per_concept_bnas_zoo():
    parser = zoo_parser()
    assert _check_common(parser, 'bnas-zoo') == []
    sub = dict(_parsers(parser, 'bnas-zoo'))
    for cmd in ('convert-official', 'publish', 'export'):
        assert '--output' in _visible(sub[f'bnas-zoo {cmd}']) and '--out' in _hidden(sub[f'bnas-zoo {cmd}']), cmd
    for cmd in ('profile', 'bench', 'export'):
        assert '--cells' in _visible(sub[f'bnas-zoo {cmd}']), cmd
    bench = _visible(sub['bnas-zoo bench'])
    assert bench['--layers'].nargs == 0  # the per-layer report, not a number of cells
    assert '--batch-size' in bench and '-b' in bench
    publish = _visible(sub['bnas-zoo publish'])
    assert '--dataset-name' in publish and '--dataset' not in publish
    assert publish['--license'].default is None  # no licence claimed for weights whose authors stated none
    assert 'bnas_d_grouped' in MODEL_HELP
    # the hidden aliases mean exactly what the agreed names mean
    a = parser.parse_args(['convert-official', 'x.pt', '--model', 'bnas_a', '--out', 'o'])
    b = parser.parse_args(['convert-official', 'x.pt', '--model', 'bnas_a', '--output', 'o'])
    assert a.output == b.output == 'o'
    a = parser.parse_args(['bench', 'bnas_a', '--batch', '1', '8'])
    b = parser.parse_args(['bench', 'bnas_a', '-b', '1', '8'])
    assert a.batch_size == b.batch_size == [1, 8]
    a = parser.parse_args(['profile', 'bnas_custom', '--layers', '3'])
    assert a.custom_layers == parser.parse_args(['profile', 'bnas_custom', '--cells', '3']).custom_layers == 3


def test_one_name_per_concept_train_clis():
    """bnas-train, bnas-validate and bnas-search against the agreed names. Deliberately not xfailed: this test
    fails for as long as those three command lines do not carry the agreed names yet, and lists what is missing."""
    from bnas_zoo.train.search import build_parser as search_parser
    from bnas_zoo.train.train import build_parser as train_parser
    from bnas_zoo.train.validate import build_parser as validate_parser
    problems = []
    for name, build in (('bnas-train', train_parser), ('bnas-validate', validate_parser),
                        ('bnas-search', search_parser)):
        problems += _check_common(build(), name)
    train, validate, search = _visible(train_parser()), _visible(validate_parser()), _visible(search_parser())
    expected = {
        'bnas-train': (train, ['--output', '--val-split', '--train-split', '--batch-size', '-b', '--resume',
                               '--dataset', '--dataset-name', '--data-dir', '--smoothing', '--clip-grad', '--drop',
                               '--model-ema-decay', '--amp-dtype', '--lr-cycle-decay']),
        'bnas-validate': (validate, ['--val-split', '--split', '--batch-size', '-b', '--data-dir', '--use-ema']),
        'bnas-search': (search, ['--output', '--cells', '--batch-size', '-b', '--resume', '--data-dir']),
    }
    for name, (shown, flags) in expected.items():
        problems += [f'{name}: no {flag}' for flag in flags if flag not in shown]
    if '--dataset' in train and train['--dataset'].metavar == 'NAME':
        problems.append('bnas-train: --dataset is the dataset name; it is the data source (timm), the name is '
                        '--dataset-name')
    assert problems == []


def test_debug_reaches_bnas_zoo_timm(tmp_path, capsys):
    script = tmp_path / 'script.py'
    script.write_text('import sys\nprint("args", sys.argv[1:])\n')
    for argv in (['--debug', 'timm', str(script), 'a'], ['timm', '--debug', str(script), 'a'],
                 ['timm', str(script), 'a']):
        assert zoo_main(argv) == 0, argv
        assert "args ['a']" in capsys.readouterr().out  # --debug is bnas-zoo's, never the script's
    # --debug lets the error's traceback through; without it, one message and exit status 2
    missing = str(tmp_path / 'missing.py')
    for argv in (['--debug', 'timm', missing], ['timm', '--debug', missing]):
        with pytest.raises(BnasError, match='no such file'):
            zoo_main(argv)
    assert zoo_main(['timm', missing]) == 2
    assert 'no such file' in capsys.readouterr().err
