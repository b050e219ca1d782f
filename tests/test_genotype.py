import json

import pytest

from bnas_zoo.errors import GenotypeError
from bnas_zoo.genotype import PRIMITIVES, Genotype, genotype_dir, list_genotypes, load_genotype


def test_bundled_genotypes_are_the_released_cells():
    assert list_genotypes() == ['bnas_cifar', 'bnas_imagenet']
    cifar = load_genotype('bnas_cifar')
    assert cifar.normal[:4] == (('none', 1), ('bin_dil_conv_3x3', 0), ('bin_conv_3x3', 1), ('none', 2))
    assert cifar.reduce[0] == ('max_pool_3x3', 0)
    assert cifar.provenance['gamma'] == 1 and cifar.provenance['searched_on'] == 'CIFAR-10'
    imagenet = load_genotype('bnas_imagenet')
    assert imagenet.provenance['gamma'] == 3
    assert all(op != 'none' for op, _ in imagenet.normal + imagenet.reduce)
    assert imagenet.normal[-1] == ('bin_conv_3x3', 0) and imagenet.reduce[-1] == ('bin_dil_conv_3x3', 4)


def test_round_trip_through_dict_and_file(tmp_path):
    g = load_genotype('bnas_imagenet')
    assert load_genotype(g.to_dict()) == g
    path = tmp_path / 'cell.json'
    g.save(path)
    assert load_genotype(path) == g
    assert load_genotype(str(path)).provenance == g.provenance


def test_genotypes_ship_with_the_package():
    files = {p.name for p in genotype_dir().iterdir()}
    assert {'bnas_cifar.json', 'bnas_imagenet.json', 'genotype.schema.json'} <= files


def _write(tmp_path, data, name='bad.json'):
    path = tmp_path / name
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def _valid():
    return load_genotype('bnas_cifar').to_dict()


@pytest.mark.parametrize('mutate, field, expected', [
    (lambda d: d['normal'][3].__setitem__(0, 'conv_7x7'), "normal[3][0]", 'unknown operation'),
    (lambda d: d['normal'][4].__setitem__(1, 4), "normal[4][1]", 'expected an input index < 4'),
    (lambda d: d['reduce'].pop(), "reduce", 'two edges per node'),
    (lambda d: d['normal_concat'].append(6), "normal_concat[4]", 'expected an intermediate node index'),
    (lambda d: d['normal_concat'].__setitem__(0, 1), "normal_concat[0]", 'minimum'),
    (lambda d: d.pop('reduce'), "(top level)", "'reduce' is a required property"),
    (lambda d: d['normal'].__setitem__(0, ['none']), "normal[0]", 'too short'),
    (lambda d: d['normal'].__setitem__(0, ['none', 'one']), "normal[0][1]", "not of type 'integer'"),
    (lambda d: d.__setitem__('colour', 'red'), "(top level)", 'Additional properties'),
    (lambda d: d['reduce_concat'].pop(), "reduce_concat", "same count"),
])
def test_invalid_genotypes_name_file_field_and_expectation(tmp_path, mutate, field, expected):
    data = _valid()
    mutate(data)
    path = _write(tmp_path, data)
    with pytest.raises(GenotypeError) as e:
        load_genotype(path)
    msg = str(e.value)
    assert str(path) in msg
    assert f"'{field}" in msg
    assert expected in msg


def test_not_json_and_missing_file(tmp_path):
    path = _write(tmp_path, '{"normal": [', 'broken.json')
    with pytest.raises(GenotypeError, match=r'broken\.json: not valid JSON \(line 1'):
        load_genotype(path)
    with pytest.raises(GenotypeError, match='no such genotype file.*bnas_cifar'):
        load_genotype(tmp_path / 'missing.json')
    with pytest.raises(GenotypeError, match=r'list\.json: expected a JSON object'):
        load_genotype(_write(tmp_path, [1, 2], 'list.json'))
    with pytest.raises(GenotypeError, match='expected a genotype name, a JSON path or a dict'):
        load_genotype([1, 2])


def test_dict_source_is_named_in_errors():
    data = _valid()
    data['normal'][0][0] = 'sep_conv_3x3'
    with pytest.raises(GenotypeError, match=r"<dict>: field 'normal\[0\]\[0\]'"):
        load_genotype(data)
    # a caller with a larger search space may allow more operations
    g = load_genotype(data, primitives=PRIMITIVES + ('sep_conv_3x3',))
    assert isinstance(g, Genotype) and g.normal[0] == ('sep_conv_3x3', 1)
