"""The command lines of bnas-train, bnas-validate and bnas-search: one name per concept (timm's names accepted
too), every flag's help says its default, --model is required, older spellings say what replaced them."""
import argparse

import pytest

from bnas_zoo.train.flags import amp_of
from bnas_zoo.train.search import build_parser as search_parser
from bnas_zoo.train.train import build_parser as train_parser
from bnas_zoo.train.validate import build_parser as validate_parser

PARSERS = {'bnas-train': train_parser, 'bnas-validate': validate_parser, 'bnas-search': search_parser}


def _options(parser):
    return {s for a in parser._actions for s in a.option_strings}


@pytest.mark.parametrize('name, flags', [
    ('bnas-train', ['--output', '--resume', '--dataset', '--data-dir', '--dataset-name', '--val-split',
                    '--train-split', '--batch-size', '-b', '--workers', '-j', '--smoothing', '--clip-grad', '--drop',
                    '--model-ema-decay', '--amp-dtype', '--lr-cycle-decay', '--train-subset']),
    ('bnas-validate', ['--dataset', '--data-dir', '--val-split', '--split', '--batch-size', '-b', '--workers',
                       '--amp-dtype']),
    ('bnas-search', ['--output', '--resume', '--overwrite', '--cells', '--dataset', '--data-dir', '--batch-size', '-b',
                     '--workers', '--amp-dtype', '--train-subset']),
])
def test_the_agreed_names(name, flags):
    assert set(flags) <= _options(PARSERS[name]())


@pytest.mark.parametrize('name', sorted(PARSERS))
def test_every_flag_says_its_default(name):
    missing = [a.option_strings[0] for a in PARSERS[name]()._actions
               if a.option_strings and a.help not in (None, argparse.SUPPRESS) and a.dest != 'help'
               and 'default' not in a.help and 'required' not in a.help]
    assert missing == []


def test_model_is_required_and_resume_is_a_flag(capsys):
    with pytest.raises(SystemExit):
        train_parser().parse_args(['--dataset', 'embedded', '--output', 'x'])
    assert '--model' in capsys.readouterr().err
    args = train_parser().parse_args(['--model', 'bnas_mini', '--output', 'x', '--resume', '--smoothing', '0.1',
                                      '--clip-grad', '5', '--drop', '0.2', '-b', '32', '--lr-cycle-decay', '0.5'])
    assert args.resume is True and (args.override_label_smoothing, args.override_grad_clip, args.override_drop_rate,
                                    args.override_batch_size, args.override_cycle_decay) == ('0.1', '5', '0.2', '32', '0.5')
    assert validate_parser().parse_args(['--model', 'm', '--split', 'test']).val_split == 'test'
    assert search_parser().parse_args(['--output', 'x', '--layers', '5']).cells == 5  # the older name of --cells


def test_amp_spellings():
    p = train_parser()

    def amp(*extra):
        return amp_of(p.parse_args(['--model', 'm', '--output', 'x', *extra]))
    assert amp() is None and amp('--amp') == 'bf16' and amp('--amp', 'fp16') == 'fp16'
    assert amp('--amp-dtype', 'float16') == 'fp16' and amp('--amp', '--amp-dtype', 'bfloat16') == 'bf16'
    with pytest.raises(Exception, match='disagree'):
        amp('--amp', 'bf16', '--amp-dtype', 'float16')
