"""Every command, subcommand and flag of the four command lines explains itself in --help."""
import argparse

import pytest

from bnas_zoo.cli import build_parser as zoo_parser
from bnas_zoo.train.search import build_parser as search_parser
from bnas_zoo.train.train import build_parser as train_parser
from bnas_zoo.train.validate import build_parser as validate_parser


def _undocumented(parser: argparse.ArgumentParser, name: str):
    missing = []
    if not parser.description:
        missing.append(f'{name}: no description')
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, p in action.choices.items():
                missing += _undocumented(p, f'{name} {sub}')
        elif not action.help:
            missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}: no help")
    return missing


@pytest.mark.parametrize('name,build', [('bnas-zoo', zoo_parser), ('bnas-train', train_parser),
                                        ('bnas-validate', validate_parser), ('bnas-search', search_parser)])
def test_every_subcommand_and_flag_has_help(name, build):
    assert _undocumented(build(), name) == []
