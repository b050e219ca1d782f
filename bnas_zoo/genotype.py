"""Genotypes: searched cells stored as JSON, validated by schema and by meaning.

A genotype is a DARTS-style pair of cells (normal and reduction). Node 0 and node 1 are the cell inputs
(the outputs of the cell two back and of the previous cell); node ``2 + k // 2`` is the sum of edges ``k``
and ``k + 1``; each edge is ``[operation, input node]``. The cell output concatenates the ``*_concat`` nodes.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple, Union

import jsonschema

from .errors import GenotypeError
from .operations import OPS

__all__ = [
    'PRIMITIVES', 'OPERATIONS', 'Genotype', 'load_genotype', 'list_genotypes', 'genotype_dir', 'GenotypeSource',
]

#: The BNAS search space (paper Table 3). ``none`` is the Zeroise layer.
PRIMITIVES: Tuple[str, ...] = (
    'none',
    'max_pool_3x3',
    'avg_pool_3x3',
    'bin_dil_conv_3x3',
    'bin_dil_conv_5x5',
    'bin_conv_3x3',
    'bin_conv_5x5',
)

#: Every operation a genotype may use (all that bnas_zoo.operations builds): the search space plus the
#: separable convolutions of the search-space comparison.
OPERATIONS: Tuple[str, ...] = tuple(OPS)

#: bounds of a genotype, checked before anything else: a searched cell has a handful of nodes
MAX_GENOTYPE_BYTES = 1 << 20
MAX_EDGES = 64  # per cell: 32 intermediate nodes

Edge = Tuple[str, int]
GenotypeSource = Union[str, Path, Mapping[str, Any], 'Genotype']


def genotype_dir() -> Path:
    """The folder of the bundled genotype files (shipped inside the wheel as ``bnas_zoo/genotypes``)."""
    return Path(str(resources.files('bnas_zoo.genotypes')))


def _schema() -> Dict[str, Any]:
    return json.loads((genotype_dir() / 'genotype.schema.json').read_text())


def list_genotypes() -> List[str]:
    """Names of the bundled genotypes (usable wherever a genotype is expected)."""
    return sorted(p.stem for p in genotype_dir().glob('*.json') if not p.name.endswith('.schema.json'))


@dataclass(frozen=True)
class Genotype:
    normal: Tuple[Edge, ...]
    normal_concat: Tuple[int, ...]
    reduce: Tuple[Edge, ...]
    reduce_concat: Tuple[int, ...]
    name: str = 'custom'
    description: str = ''
    provenance: Dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def steps(self) -> int:
        """Number of intermediate nodes of a cell."""
        return len(self.normal) // 2

    def cell(self, reduction: bool) -> Tuple[Tuple[Edge, ...], Tuple[int, ...]]:
        return (self.reduce, self.reduce_concat) if reduction else (self.normal, self.normal_concat)

    def to_dict(self) -> Dict[str, Any]:
        """The JSON form (what :func:`load_genotype` reads back)."""
        out: Dict[str, Any] = {'name': self.name}
        if self.description:
            out['description'] = self.description
        out.update(
            normal=[list(e) for e in self.normal],
            normal_concat=list(self.normal_concat),
            reduce=[list(e) for e in self.reduce],
            reduce_concat=list(self.reduce_concat),
        )
        if self.provenance:
            out['provenance'] = dict(self.provenance)
        return out

    def save(self, path: Union[str, Path]) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + '\n')


def _field(path: Sequence[Any]) -> str:
    out = ''
    for p in path:
        out += f'[{p}]' if isinstance(p, int) else (f'.{p}' if out else str(p))
    return out or '(top level)'


def _check_meaning(data: Mapping[str, Any], source: str, primitives: Sequence[str]) -> None:
    steps = None
    for kind in ('normal', 'reduce'):
        edges = data[kind]
        if len(edges) % 2:
            raise GenotypeError(
                f"{source}: field '{kind}': has {len(edges)} edges; expected two edges per node (an even count)")
        if steps is None:
            steps = len(edges) // 2
        elif len(edges) // 2 != steps:
            raise GenotypeError(
                f"{source}: field '{kind}': has {len(edges) // 2} nodes but 'normal' has {steps}; "
                f"expected both cells to have the same number of nodes")
        for k, (op, inp) in enumerate(edges):
            node = 2 + k // 2
            if op not in primitives:
                raise GenotypeError(
                    f"{source}: field '{kind}[{k}][0]': unknown operation {op!r}; "
                    f"expected one of {', '.join(primitives)}")
            if inp >= node:
                raise GenotypeError(
                    f"{source}: field '{kind}[{k}][1]': edge {k} feeds node {node} but reads node {inp}; "
                    f"expected an input index < {node}")
        concat = data[f'{kind}_concat']
        for j, c in enumerate(concat):
            if not 2 <= c < 2 + steps:
                raise GenotypeError(
                    f"{source}: field '{kind}_concat[{j}]': node {c} does not exist; "
                    f"expected an intermediate node index in 2..{steps + 1}")
    if len(data['normal_concat']) != len(data['reduce_concat']):
        raise GenotypeError(
            f"{source}: field 'reduce_concat': concatenates {len(data['reduce_concat'])} nodes but "
            f"'normal_concat' concatenates {len(data['normal_concat'])}; expected the same count "
            f"(the inter-cell skip connection adds cell outputs of equal width)")


def _non_finite(value: Any, where: str, depth: int = 0):
    """(field, value) of the first NaN or infinite number inside ``value``, or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (where, value)
    if depth > 50:
        return (where, 'nested too deeply')
    items = value.items() if isinstance(value, Mapping) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    for key, v in items:
        bad = _non_finite(v, f'{where}[{key}]' if isinstance(key, int) else f'{where}.{key}', depth + 1)
        if bad:
            return bad
    return None


def validate_genotype_dict(
        data: Any,
        source: str = '<dict>',
        primitives: Sequence[str] = OPERATIONS,
) -> Genotype:
    """Validate a genotype in its JSON form (schema, then meaning) and return it as a :class:`Genotype`."""
    if not isinstance(data, Mapping):
        raise GenotypeError(f'{source}: expected a JSON object with normal/reduce cells, got {type(data).__name__}')
    for kind in ('normal', 'reduce'):
        edges = data.get(kind)
        if isinstance(edges, (list, tuple)) and len(edges) > MAX_EDGES:
            raise GenotypeError(f"{source}: field '{kind}': has {len(edges)} edges; expected at most {MAX_EDGES} "
                                f"(two per intermediate node)")
    bad = _non_finite(data.get('provenance'), 'provenance')
    if bad:
        raise GenotypeError(f"{source}: field '{bad[0]}': {bad[1]}; expected a finite number")
    validator = jsonschema.Draft202012Validator(_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is not None:
        raise GenotypeError(f"{source}: field '{_field(error.absolute_path)}': {error.message}")
    _check_meaning(data, source, primitives)
    return Genotype(
        normal=tuple((op, int(i)) for op, i in data['normal']),
        normal_concat=tuple(int(c) for c in data['normal_concat']),
        reduce=tuple((op, int(i)) for op, i in data['reduce']),
        reduce_concat=tuple(int(c) for c in data['reduce_concat']),
        name=str(data.get('name', 'custom')),
        description=str(data.get('description', '')),
        provenance=dict(data.get('provenance', {})),
    )


def _refuse_constant(name: str):
    raise ValueError(f'{name} is not a number JSON allows')


def load_genotype(src: GenotypeSource, primitives: Sequence[str] = OPERATIONS) -> Genotype:
    """Load a genotype from a bundled name (``"bnas_cifar"``), a JSON file path, a dict or a Genotype.

    Raises :class:`~bnas_zoo.errors.GenotypeError` naming the file, the field and what was expected.
    """
    if isinstance(src, Genotype):
        return validate_genotype_dict(src.to_dict(), f'<genotype {src.name}>', primitives)
    if isinstance(src, Mapping):
        return validate_genotype_dict(src, '<dict>', primitives)
    if not isinstance(src, (str, Path)):
        raise GenotypeError(f'expected a genotype name, a JSON path or a dict, got {type(src).__name__}')
    path = Path(src)
    if not path.suffix and not path.exists() and str(src) in list_genotypes():
        path = genotype_dir() / f'{src}.json'
    if not path.is_file():
        raise GenotypeError(
            f'{src}: no such genotype file; expected a JSON path or one of the bundled genotypes: '
            f'{", ".join(list_genotypes())}')
    size = path.stat().st_size
    if size > MAX_GENOTYPE_BYTES:
        raise GenotypeError(f'{path}: {size:,} bytes; expected a genotype JSON of at most {MAX_GENOTYPE_BYTES:,} bytes '
                            f'(a cell has a few dozen edges)')
    try:
        data = json.loads(path.read_text(), parse_constant=_refuse_constant)
    except json.JSONDecodeError as e:
        raise GenotypeError(f'{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})') from None
    except UnicodeDecodeError:
        raise GenotypeError(f'{path}: not a UTF-8 text file; expected genotype JSON') from None
    except RecursionError:
        raise GenotypeError(f'{path}: nested too deeply; expected genotype JSON (lists of [operation, node])') from None
    except ValueError as e:  # NaN / Infinity, or an integer beyond Python's digit limit
        raise GenotypeError(f'{path}: not a valid genotype JSON value ({e}); expected finite numbers and '
                            f'small integers') from None
    return validate_genotype_dict(data, str(path), primitives)
