"""Errors that name what was wrong: the file, the field, what was expected."""

__all__ = ['BnasError', 'GenotypeError', 'CheckpointError', 'ModelConfigError', 'first_line', 'run_cli']


class BnasError(ValueError):
    """Base class of bnas_zoo's input errors (a ValueError, so callers may catch either)."""


class GenotypeError(BnasError):
    """A genotype JSON that is malformed or inconsistent."""


class CheckpointError(BnasError):
    """A checkpoint or weight file that is unreadable, corrupted or belongs to another model."""


class ModelConfigError(BnasError):
    """Network arguments that cannot build a network (unknown stem, too few layers, ...)."""


def first_line(e: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type name when it has none."""
    lines = [line for line in str(e).splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__


def run_cli(prog: str, func, debug: bool = False) -> int:
    """Run ``func()`` for a command line: bad input (a :class:`BnasError`) is one message on stderr and exit
    status 2, anything unexpected one message and status 1; ``debug`` lets the traceback through instead."""
    import sys
    try:
        return func()
    except BnasError as e:
        if debug:
            raise
        print(f'{prog}: error: {e}', file=sys.stderr)
        return 2
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:  # noqa: BLE001 - the last line of defence of a command line: one message, no traceback
        if debug:
            raise
        print(f'{prog}: error: {type(e).__name__}: {first_line(e)} (unexpected; run again with --debug for the '
              f'traceback)', file=sys.stderr)
        return 1
