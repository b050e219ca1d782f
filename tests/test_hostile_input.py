"""Hostile input (issue #10): every bad file or argument is the project's own error naming the file and field,
nothing is silently accepted, a killed run loses nothing; a seeded fuzz test per file format."""
import copy
import hashlib
import json
import os
import random
import stat

import numpy as np
import pytest
import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import bnas_zoo
from bnas_zoo import BnasError, CheckpointError, GenotypeError, load_1bit, load_genotype, save_1bit
from bnas_zoo.cli import main as zoo_main
from bnas_zoo.files import atomic_write
from bnas_zoo.hub import load_model_folder
from bnas_zoo.packing import read_1bit
from bnas_zoo.train.checkpoint import unit_dir
from bnas_zoo.train.engine import (
    CHECKPOINT_MANIFEST, CHECKPOINT_STATE, TrainSetup, load_checkpoint, read_checkpoint_unit, run_training,
    write_checkpoint_unit,
)
from bnas_zoo.train.search import main as search_main
from bnas_zoo.train.train import main as train_main
from bnas_zoo.train.validate import main as validate_main

GENOTYPE = json.loads((bnas_zoo.genotype.genotype_dir() / 'bnas_cifar.json').read_text())


def tiny(channels=4, num_classes=10):
    torch.manual_seed(0)
    return timm.create_model('bnas_custom', genotype='bnas_cifar', layers=3, channels=channels,
                             num_classes=num_classes).eval()


# ---------------------------------------------------------------------------------------------- 1-bit files
@pytest.fixture(scope='module')
def one_bit(tmp_path_factory):
    model = tiny()
    path = tmp_path_factory.mktemp('onebit') / 'model-1bit.safetensors'
    save_1bit(model, path, config=dict(architecture='bnas_custom', num_classes=10, model_args=model.architecture_args()))
    with safe_open(str(path), framework='pt') as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        info = json.loads(f.metadata()['bnas_zoo'])
    return model, path, tensors, info


def _write(path, tensors, info):
    meta = info if isinstance(info, str) else json.dumps(info)
    save_file(tensors, str(path), metadata={'bnas_zoo': meta})
    return path


def _first_binary(info):
    return sorted(info['binary_shapes'])[0]


def _set(info, key, value):
    info = copy.deepcopy(info)
    info[key] = value
    return info


def _cfg(info, **changes):
    info = copy.deepcopy(info)
    for k, v in changes.items():
        if v is None:
            info['config'].pop(k, None)
        else:
            info['config'][k] = v
    return info


ONE_BIT_CASES = {
    # name: (mutate(tensors, info) -> (tensors, info), words the message must hold)
    'metadata a list': (lambda t, i: (t, json.dumps([i])), 'bnas_zoo'),
    'metadata a string': (lambda t, i: (t, json.dumps('1bit-v1')), 'bnas_zoo'),
    'binary_shapes missing': (lambda t, i: (t, {k: v for k, v in i.items() if k != 'binary_shapes'}), 'binary_shapes'),
    'binary_shapes a list': (lambda t, i: (t, _set(i, 'binary_shapes', list(i['binary_shapes']))), 'binary_shapes'),
    'binary_shapes wrong shape': (
        lambda t, i: (t, _set(i, 'binary_shapes', dict(i['binary_shapes'], **{_first_binary(i): [3, 3]}))),
        'binary_shapes'),
    'binary_shapes wrong size': (
        lambda t, i: (t, _set(i, 'binary_shapes', dict(i['binary_shapes'], **{_first_binary(i): [999, 9, 3, 3]}))),
        '.bits'),
    'binary_shapes extra key': (
        lambda t, i: (t, _set(i, 'binary_shapes', dict(i['binary_shapes'], **{'cells.0.x.weight': [4, 4, 1, 1]}))),
        'cells.0.x.weight.bits is missing'),
    'binary_shapes names a float tensor': (
        lambda t, i: (t, _set(i, 'binary_shapes', dict(i['binary_shapes'], **{'stem.conv.weight': [12, 3, 3, 3]}))),
        'stem.conv.weight is not a packed weight'),
    'config a list': (lambda t, i: (t, _set(i, 'config', [i['config']])), "'config'"),
    'architecture missing': (lambda t, i: (t, _cfg(i, architecture=None)), "'architecture'"),
    'architecture resnet18': (lambda t, i: (t, _cfg(i, architecture='resnet18')), "'architecture' is 'resnet18'"),
    'architecture unknown': (lambda t, i: (t, _cfg(i, architecture='bnas_zz')), "'architecture' is 'bnas_zz'"),
    'architecture hf-hub': (lambda t, i: (t, _cfg(i, architecture='hf-hub:evil/x')), "'hf-hub:evil/x'"),
    'architecture local-dir': (lambda t, i: (t, _cfg(i, architecture='local-dir:/tmp')), "'local-dir:/tmp'"),
    'unknown model_arg': (lambda t, i: (t, _cfg(i, model_args=dict(i['config']['model_args'], bogus=1))), 'bogus'),
    'bits int8': (lambda t, i: ({k: (v.to(torch.int8) if k.endswith('.bits') else v) for k, v in t.items()}, i),
                  'expected uint8'),
    'bits float32': (lambda t, i: ({k: (v.float() if k.endswith('.bits') else v) for k, v in t.items()}, i),
                     'expected uint8'),
    'bits missing': (lambda t, i: ({k: v for k, v in t.items() if k != _first_binary(i) + '.bits'}, i), 'missing'),
    'bits truncated': (lambda t, i: (dict(t, **{_first_binary(i) + '.bits': t[_first_binary(i) + '.bits'][:-1]}), i),
                       '.bits'),
    'extra packed tensor': (lambda t, i: (dict(t, **{'cells.0.nothing.weight.bits': torch.zeros(1, dtype=torch.uint8)}),
                                          i), 'cells.0.nothing.weight.bits'),
    'zeros out of range': (lambda t, i: (dict(t, **{_first_binary(i) + '.zeros': torch.tensor([10 ** 9])}), i),
                           '.zeros holds indices outside'),
    'zeros -1': (lambda t, i: (dict(t, **{_first_binary(i) + '.zeros': torch.tensor([-1])}), i),
                 '.zeros holds indices outside'),
    'zeros int32': (lambda t, i: (dict(t, **{_first_binary(i) + '.zeros': torch.tensor([0], dtype=torch.int32)}), i),
                    'expected int64'),
    'alpha NaN': (lambda t, i: (dict(t, **{_first_binary(i) + '.alpha': torch.full_like(t[_first_binary(i) + '.alpha'],
                                                                                         float('nan'))}), i),
                  '.alpha holds NaN'),
    'alpha float64': (lambda t, i: (dict(t, **{_first_binary(i) + '.alpha': t[_first_binary(i) + '.alpha'].double()}), i),
                      'expected float32'),
    'bn weight Inf': (lambda t, i: (dict(t, **{'stem.bn.weight': torch.full_like(t['stem.bn.weight'], float('inf'))}), i),
                      'stem.bn.weight holds NaN'),
    'fp conv named binary': (  # a full-precision conv declared binary would be rebuilt as sign * alpha
        lambda t, i: (_repack_as_binary(t, 'stem.conv.weight'),
                      _set(i, 'binary_shapes', dict(i['binary_shapes'], **{'stem.conv.weight': [12, 3, 3, 3]}))),
        'names other convs'),
}


def _repack_as_binary(tensors, key):
    tensors = dict(tensors)
    w = tensors.pop(key)
    tensors[key + '.bits'] = torch.from_numpy(np.packbits((w.flatten() > 0).numpy()))
    tensors[key + '.alpha'] = w.abs().amax(dim=(1, 2, 3)).float()
    return tensors


@pytest.mark.parametrize('case', list(ONE_BIT_CASES))
def test_tampered_1bit_file_is_a_checkpoint_error_naming_file_and_field(one_bit, tmp_path, case, monkeypatch):
    _, _, tensors, info = one_bit
    mutate, words = ONE_BIT_CASES[case]
    path = _write(tmp_path / 'bad-1bit.safetensors', *mutate(dict(tensors), copy.deepcopy(info)))
    monkeypatch.setattr('huggingface_hub.hf_hub_download', _no_network)
    with pytest.raises(CheckpointError) as e:
        load_1bit(path)
    assert str(path) in str(e.value) and words in str(e.value), str(e.value)


def _no_network(*args, **kwargs):
    raise AssertionError('a local file triggered a download')


def test_read_1bit_returns_the_checked_parts_and_load_1bit_is_exact(one_bit):
    model, path, _, info = one_bit
    tensors, shapes, config = read_1bit(path)
    assert set(shapes) == set(info['binary_shapes']) and config['architecture'] == 'bnas_custom'
    assert all(isinstance(s, tuple) for s in shapes.values())
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(load_1bit(path).eval()(x), model(x))


def _mutate_json(value, rng, depth=0):
    """A random structural change somewhere inside a JSON value (a few hostile kinds of values)."""
    hostile = [None, [], {}, 'x', -1, 0, 10 ** 12, float('nan'), True, 1.5, 'hf-hub:evil/x', [[1]], {'a': 1}]
    if isinstance(value, dict) and value and (depth == 0 or rng.random() < 0.8):
        key = rng.choice(sorted(value, key=str))
        action = rng.random()
        if action < 0.2:
            value.pop(key)
        elif action < 0.5:
            value[key] = rng.choice(hostile)
        else:
            value[key] = _mutate_json(value[key], rng, depth + 1)
        return value
    if isinstance(value, list) and value and rng.random() < 0.8:
        i = rng.randrange(len(value))
        action = rng.random()
        if action < 0.2:
            value.pop(i)
        elif action < 0.3:
            value.append(copy.deepcopy(value[i]))
        elif action < 0.6:
            value[i] = rng.choice(hostile)
        else:
            value[i] = _mutate_json(value[i], rng, depth + 1)
        return value
    return rng.choice(hostile)


def _mutate_tensors(tensors, rng):
    tensors = dict(tensors)
    key = rng.choice(sorted(tensors))
    t = tensors[key]
    action = rng.randrange(6)
    if action == 0:
        tensors.pop(key)
    elif action == 1:
        tensors[key] = t.flatten()[:max(0, t.numel() - rng.randrange(1, 3))].clone()
    elif action == 2:
        tensors[key] = t.to(rng.choice([torch.int8, torch.float32, torch.float64, torch.int64, torch.uint8]))
    elif action == 3 and t.is_floating_point() and t.numel():
        t = t.clone()
        t.view(-1)[rng.randrange(t.numel())] = rng.choice([float('nan'), float('inf'), 1e30])
        tensors[key] = t
    elif action == 4 and t.numel():
        t = t.clone()
        t.view(-1)[rng.randrange(t.numel())] = rng.choice([-1, 0, 255, 10 ** 6]) if not t.is_floating_point() else 0
        tensors[key] = t
    else:
        tensors[key + rng.choice(['.bits', '.zeros', '', '.alpha'])] = torch.zeros(3, dtype=torch.int64)
    return tensors


def test_fuzz_1bit_files(one_bit, tmp_path, monkeypatch):
    """Seeded: 300 mutations of the metadata, the tensors or the bytes; only CheckpointError (or a model) results."""
    monkeypatch.setattr('huggingface_hub.hf_hub_download', _no_network)
    _, path, tensors, info = one_bit
    raw = path.read_bytes()
    rng = random.Random(10)
    outcomes = {'refused': 0, 'loaded': 0}
    for i in range(300):
        target = tmp_path / f'f{i % 4}.safetensors'
        kind = i % 3
        if kind == 0:
            _write(target, tensors, _mutate_json(copy.deepcopy(info), rng))
        elif kind == 1:
            _write(target, _mutate_tensors(tensors, rng), info)
        else:
            data = bytearray(raw)
            for _ in range(rng.randrange(1, 4)):
                pos = rng.randrange(min(len(data), 4000))  # mostly the header and metadata
                data[pos] = rng.randrange(256)
            target.write_bytes(bytes(data[:len(data) - rng.choice([0, 0, 1, 100])]))
        try:
            load_1bit(target)
            outcomes['loaded'] += 1
        except CheckpointError:
            outcomes['refused'] += 1
    assert outcomes['refused'] > 200


# ------------------------------------------------------------------------------------- weights and folders
@pytest.fixture()
def folder(tmp_path):
    from timm.models import save_for_hf
    model = tiny()
    save_for_hf(model, str(tmp_path / 'm'), model_args=model.architecture_args(), safe_serialization=True)
    return tmp_path / 'm'


def _edit_weights(folder, key, fn):
    state = load_file(str(folder / 'model.safetensors'))
    state[key] = fn(state[key])
    save_file(state, str(folder / 'model.safetensors'))


@pytest.mark.parametrize('edit, accepted', [
    (lambda t: t.masked_fill(torch.ones_like(t, dtype=torch.bool), float('nan')), False),
    (lambda t: torch.full_like(t, float('inf')), False),
    (lambda t: t.to(torch.int8), False),
    (lambda t: t.half(), True),
    (lambda t: t.bfloat16(), True)])
def test_model_folder_weights_must_be_finite_floats(folder, edit, accepted):
    _edit_weights(folder, 'stem.conv.weight', edit)
    if accepted:
        timm.create_model(f'local-dir:{folder}', pretrained=True)
        return
    with pytest.raises(CheckpointError, match=r'model\.safetensors.*stem\.conv\.weight'):
        timm.create_model(f'local-dir:{folder}', pretrained=True)


CONFIG_CASES = {
    'missing': (None, 'no config.json'),
    'corrupt': ('{"architecture": "bnas_custom", ', 'not valid JSON'),
    'no architecture': ({'model_args': {}}, "'architecture' is None"),
    'a list': ([1, 2], 'JSON list'),
    'no model_args': ({'architecture': 'bnas_custom', 'num_classes': 10}, "'model_args' lacks genotype"),
    'model_args a list': ({'architecture': 'bnas_custom', 'model_args': [1]}, "'model_args' is a list"),
    'hf-hub architecture': ({'architecture': 'hf-hub:evil/x'}, "'architecture' is 'hf-hub:evil/x'"),
}


def _write_config(folder, content):
    if content is None:
        (folder / 'config.json').unlink()
    else:
        (folder / 'config.json').write_text(content if isinstance(content, str) else json.dumps(content))


@pytest.mark.parametrize('case', list(CONFIG_CASES))
def test_bad_config_json_is_one_message_from_every_cli(folder, tmp_path, case, capsys):
    content, words = CONFIG_CASES[case]
    _write_config(folder, content)
    with pytest.raises(CheckpointError, match='config.json'):
        load_model_folder(folder)
    for run in (lambda: validate_main(['--model', f'local-dir:{folder}', '--data', 'embedded']),
                lambda: zoo_main(['profile', f'local-dir:{folder}']),
                lambda: zoo_main(['publish', str(folder), '--repo-id', 'o/n', '--dry-run', '--out', str(tmp_path / 'p')])):
        assert run() == 2
        err = capsys.readouterr().err
        assert words in err and 'Traceback' not in err and len(err.strip().splitlines()) == 1, err


def test_fuzz_model_folders(folder):
    """Seeded: 120 mutations of config.json or model.safetensors; only bnas_zoo errors (or a model) result."""
    config = json.loads((folder / 'config.json').read_text())
    weights = load_file(str(folder / 'model.safetensors'))
    rng = random.Random(20)
    refused = 0
    for i in range(120):
        if i % 2:
            (folder / 'config.json').write_text(json.dumps(_mutate_json(copy.deepcopy(config), rng)))
            save_file(weights, str(folder / 'model.safetensors'))
        else:
            (folder / 'config.json').write_text(json.dumps(config))
            save_file(_mutate_tensors(weights, rng), str(folder / 'model.safetensors'))
        try:
            load_model_folder(folder)
        except BnasError:
            refused += 1
    assert refused > 60


def _release_checkpoint(tmp_path, edit=None, model=None):
    state = (model or tiny()).state_dict()  # bnas_zoo's own key names pass the release renaming unchanged
    if edit:
        edit(state)
    path = tmp_path / 'release.pth'
    torch.save(state, path)
    return path


@pytest.mark.parametrize('edit, words', [
    (lambda s: s.__setitem__('stem.conv.weight', torch.full_like(s['stem.conv.weight'], float('nan'))), 'NaN'),
    (lambda s: s.__setitem__('stem.conv.weight', s['stem.conv.weight'].to(torch.int8)), 'is int8'),
    (lambda s: s.__setitem__(7, torch.zeros(1)), 'key 7 is a int')])
def test_convert_refuses_bad_release_weights(tmp_path, edit, words):
    from bnas_zoo.convert import convert_release_state_dict, load_release_checkpoint
    path = _release_checkpoint(tmp_path, edit)
    with pytest.raises(CheckpointError, match=words):
        convert_release_state_dict(load_release_checkpoint(path), tiny(), str(path))


def test_convert_official_out_must_be_a_writable_folder(tmp_path, capsys):
    ckpt = _release_checkpoint(tmp_path, model=timm.create_model('bnas_mini'))
    a_file = tmp_path / 'a_file'
    a_file.write_text('x')
    for out, words in ((a_file, 'is not a folder'), (a_file / 'sub', 'cannot write there'),
                       ('/proc/forbidden/out', 'cannot write there')):
        assert zoo_main(['convert-official', str(ckpt), '--model', 'bnas_mini', '--out', str(out)]) == 2
        err = capsys.readouterr().err
        assert words in err and 'Traceback' not in err, err


def test_publish_without_network_says_nothing_was_uploaded(folder, capsys):
    # the suite runs with HF_HUB_OFFLINE=1: the Hub cannot be reached
    assert zoo_main(['publish', str(folder), '--repo-id', 'someone/bnas-test']) == 2
    err = capsys.readouterr().err
    assert 'could not be reached' in err and 'nothing was uploaded' in err and 'Traceback' not in err


def test_load_1bit_from_hub_without_network_is_a_checkpoint_error():
    from bnas_zoo.hub import load_1bit_from_hub
    with pytest.raises(CheckpointError, match='could not be downloaded'):
        load_1bit_from_hub('someone/not-cached-anywhere')


# ------------------------------------------------------------------------------------------------ genotypes
def _genotype_file(tmp_path, text):
    path = tmp_path / 'g.json'
    path.write_text(text)
    return path


@pytest.mark.parametrize('text, words', [
    ('[' * 100000, 'nested too deeply'),
    (json.dumps(GENOTYPE).replace('"normal": [', '"normal": [["none", ' + '9' * 5000 + '], ', 1), 'digits'),
    (json.dumps(dict(GENOTYPE, provenance={'gamma': float('nan')})), 'NaN'),
    (json.dumps(dict(GENOTYPE, provenance={'gamma': float('inf')})), 'Infinity'),
    (json.dumps(dict(GENOTYPE, normal=GENOTYPE['normal'] * 100)), 'at most 64'),
    (json.dumps(dict(GENOTYPE, normal=GENOTYPE['normal'] * 20000)), 'bytes'),
])
def test_hostile_genotype_files(tmp_path, text, words, capsys):
    path = _genotype_file(tmp_path, text)
    with pytest.raises(GenotypeError, match=words) as e:
        load_genotype(path)
    assert str(path) in str(e.value)
    assert zoo_main(['profile', 'bnas_custom', '--genotype', str(path), '--layers', '3', '--channels', '4']) == 2
    err = capsys.readouterr().err
    assert words in err and 'Traceback' not in err


def test_non_finite_provenance_in_a_dict_genotype():
    with pytest.raises(GenotypeError, match=r"'provenance\.gamma': nan"):
        load_genotype(dict(GENOTYPE, provenance={'gamma': float('nan')}))
    with pytest.raises(GenotypeError, match=r"'provenance\.final_alphas\.normal\[1\]'"):
        load_genotype(dict(GENOTYPE, provenance={'final_alphas': {'normal': [0.5, float('inf')]}}))


def test_a_network_whose_output_ignores_its_input_is_refused():
    all_none = dict(GENOTYPE, normal=[['none', k % 2] for k in range(8)], reduce=[['none', k % 2] for k in range(8)])
    with pytest.raises(GenotypeError, match="passes through Zeroise"):
        timm.create_model('bnas_custom', genotype=all_none, layers=3, channels=4)
    normal_none = dict(GENOTYPE, normal=[['none', k % 2] for k in range(8)])
    with pytest.raises(GenotypeError, match='layers=8'):  # cells 0 and 1 output zeros: all after them too
        timm.create_model('bnas_custom', genotype=normal_none, layers=8, channels=4)
    model = timm.create_model('bnas_custom', genotype=normal_none, layers=3, channels=4).eval()
    assert not torch.equal(model(torch.randn(1, 3, 32, 32)), model(torch.randn(1, 3, 32, 32)))  # still a function of x


def test_fuzz_genotype_json(tmp_path):
    """Seeded: 400 mutations (structure and text); only GenotypeError (or a genotype) results."""
    rng = random.Random(30)
    refused = 0
    path = tmp_path / 'g.json'
    text = json.dumps(GENOTYPE)
    for i in range(400):
        if i % 2:
            path.write_text(json.dumps(_mutate_json(copy.deepcopy(GENOTYPE), rng)))
        else:
            chars = list(text)
            for _ in range(rng.randrange(1, 4)):
                chars[rng.randrange(len(chars))] = rng.choice('[]{}",:0123456789-eE.nN ')
            path.write_text(''.join(chars))
        try:
            load_genotype(path)
        except GenotypeError:
            refused += 1
    assert refused > 250


# ----------------------------------------------------------------------------------------- training runs
def _setup(tmp_path, epochs=1, channels=4, resume=None, opt='adam', stop_after=None):
    from bnas_zoo.train.data import EMBEDDED_MEAN, EMBEDDED_STD, build_datasets
    from bnas_zoo.train.recipes import load_recipe
    recipe = load_recipe('embedded', {'epochs': epochs, 'batch_size': 16, 'opt': opt})
    cfg = dict(input_size=(3, 32, 32), mean=EMBEDDED_MEAN, std=EMBEDDED_STD)
    train_ds, eval_ds, classes = build_datasets(recipe, cfg, None, 'embedded')
    model = tiny(channels=channels, num_classes=classes)
    return TrainSetup(model=model, train_ds=torch.utils.data.Subset(train_ds, range(32)),
                      eval_ds=torch.utils.data.Subset(eval_ds, range(16)), recipe=recipe, output=tmp_path,
                      model_name='bnas_custom', resume=resume, progress=False, stop_after=stop_after,
                      export_args=model.architecture_args())


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
    """A finished one-epoch run of a tiny network (Adam)."""
    out = tmp_path_factory.mktemp('run')
    run_training(_setup(out))
    return out


def test_checkpoint_is_one_unit_a_kill_at_any_point_keeps_a_consistent_pair(tmp_path):
    def unit(epoch, fail=None):
        write_checkpoint_unit(tmp_path, 'unit.json', {
            'a.bin': lambda p: p.write_text(f'a{epoch}'),
            'b.bin': lambda p: (_ for _ in ()).throw(KeyboardInterrupt) if fail == 'b' else p.write_text(f'b{epoch}'),
        }, epoch)
    unit(0)
    with pytest.raises(KeyboardInterrupt):  # killed while writing the second file: the first checkpoint stays
        unit(1, fail='b')
    info = read_checkpoint_unit(tmp_path, 'unit.json')
    assert info['epoch'] == 0 and (info['unit'] / 'a.bin').read_text() == 'a0' and not info['skipped']
    unit(1)  # the half-written unit left by the kill is replaced
    info = read_checkpoint_unit(tmp_path, 'unit.json')
    assert info['epoch'] == 1 and (info['unit'] / 'a.bin').read_text() == 'a1'
    assert (info['unit'] / 'b.bin').read_text() == 'b1'
    (info['unit'] / 'b.bin').write_text('b0')  # a file of another epoch in the newest unit: the previous one is used
    info = read_checkpoint_unit(tmp_path, 'unit.json')
    assert info['epoch'] == 0 and 'b.bin is not the file of the epoch-2 checkpoint' in info['skipped'][0]
    # an older version's run folder (one unit in the folder itself), killed between its manifest and its renames
    legacy = tmp_path / 'legacy'
    legacy.mkdir()
    for name in ('a', 'b'):
        (legacy / f'{name}.bin').write_text(f'{name}0')
        (legacy / f'{name}.bin.new').write_text(f'{name}1')
    digest = {f'{n}.bin': hashlib.sha256(f'{n}1'.encode()).hexdigest() for n in 'ab'}
    (legacy / 'unit.json').write_text(json.dumps(dict(epoch=1, files=digest)))
    assert read_checkpoint_unit(legacy, 'unit.json')['epoch'] == 1  # the renames are finished
    assert (legacy / 'a.bin').read_text() == 'a1' and (legacy / 'b.bin').read_text() == 'b1'
    (legacy / 'b.bin').write_text('b0')
    with pytest.raises(CheckpointError, match='b.bin is not the file of the epoch-2 checkpoint'):
        read_checkpoint_unit(legacy, 'unit.json')


def _rewrite_state(run, payload):
    """Replace the state file and its checksum in the manifest (a consistent but hostile checkpoint)."""
    folder = unit_dir(run, 0)
    if payload is None:
        (folder / CHECKPOINT_STATE).write_bytes(b'')
    else:
        torch.save(payload, folder / CHECKPOINT_STATE)
    manifest = json.loads((folder / CHECKPOINT_MANIFEST).read_text())
    manifest['files'][CHECKPOINT_STATE] = hashlib.sha256((folder / CHECKPOINT_STATE).read_bytes()).hexdigest()
    (folder / CHECKPOINT_MANIFEST).write_text(json.dumps(manifest))


def _copy_run(run_dir, tmp_path):
    import shutil
    shutil.copytree(run_dir, tmp_path / 'run')
    return tmp_path / 'run'


def _state(run_dir):
    return torch.load(unit_dir(run_dir, 0) / CHECKPOINT_STATE, weights_only=True)


@pytest.mark.parametrize('case, words', [
    ('zero bytes', 'unreadable checkpoint'),
    ('a list', 'a list; expected the training state'),
    ('no optimizer', "field 'optimizer' is NoneType"),
    ('other epoch', 'names epoch 1'),
    ('unmatched checksum', 'is not the file of the epoch-1 checkpoint'),
    ('no manifest', 'no checkpoint.json'),
    ('other channels', 'do not fit the model'),
    ('sgd on an adam run', 'the run used the optimizer Adam'),
    ('sgd on an old adam run', 'does not fit this optimizer'),
])
def test_resume_refuses_bad_state_before_training(run_dir, tmp_path, case, words):
    run = _copy_run(run_dir, tmp_path)
    state = _state(run)
    channels, opt = 4, 'adam'
    if case == 'zero bytes':
        _rewrite_state(run, None)
    elif case == 'a list':
        _rewrite_state(run, [state])
    elif case == 'no optimizer':
        _rewrite_state(run, {k: v for k, v in state.items() if k != 'optimizer'})
    elif case == 'other epoch':
        _rewrite_state(run, dict(state, epoch=5))
    elif case == 'unmatched checksum':
        torch.save(dict(state, epoch=1), unit_dir(run, 0) / CHECKPOINT_STATE)
    elif case == 'no manifest':
        (unit_dir(run, 0) / CHECKPOINT_MANIFEST).unlink()
    elif case == 'other channels':
        channels = 6
    else:
        opt = 'sgd'
        if case == 'sgd on an old adam run':
            _rewrite_state(run, {k: v for k, v in state.items() if k != 'optimizer_type'})
    with pytest.raises(CheckpointError, match=words):
        run_training(_setup(run, epochs=2, channels=channels, opt=opt, resume=run))
    assert _state(run_dir)['epoch'] == 0 and len(json.loads((run / 'summary.json').read_text())) == 1


def test_resume_repairs_the_summaries_of_the_last_epoch(run_dir, tmp_path):
    run = _copy_run(run_dir, tmp_path)
    (run / 'summary.json').write_text('[]')  # killed while the last epoch's summary was written
    (run / 'summary.csv').unlink()
    (run / 'curves.png').unlink()
    run_training(_setup(run, epochs=1, resume=run))  # nothing left to train
    assert [r['epoch'] for r in json.loads((run / 'summary.json').read_text())] == [1]
    assert (run / 'summary.csv').read_text().count('\n') == 2 and (run / 'curves.png').stat().st_size > 0


def test_non_finite_weights_stop_the_run_before_anything_is_written(tmp_path):
    setup = _setup(tmp_path)
    setup.model.register_parameter('unused', torch.nn.Parameter(torch.tensor([float('nan')])))
    with pytest.raises(BnasError, match='parameter unused is no longer finite'):
        run_training(setup)
    assert not (tmp_path / 'checkpoints').exists() and not (tmp_path / 'model.safetensors').exists()


def test_fuzz_resume_state(run_dir, tmp_path):
    """Seeded: 150 mutations of the training state (kept consistent with the manifest) or of the files' bytes;
    load_checkpoint gives only CheckpointError (or a restored state)."""
    run = _copy_run(run_dir, tmp_path)
    state = _state(run)
    unit = unit_dir(run, 0)
    files = {name: (unit / name).read_bytes() for name in (CHECKPOINT_STATE, 'checkpoint.safetensors')}
    manifest = (unit / CHECKPOINT_MANIFEST).read_text()
    setup = _setup(run)
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2
    optimizer = create_optimizer_v2(setup.model, opt='adam', lr=0.001)
    rng = random.Random(40)
    refused = 0
    for i in range(150):
        for name, data in files.items():
            (unit / name).write_bytes(data)
        (unit / CHECKPOINT_MANIFEST).write_text(manifest)
        if i % 3:
            payload = copy.deepcopy(state)
            key = rng.choice(sorted(payload))
            if rng.random() < 0.5:
                payload[key] = _mutate_json(payload[key], rng) if isinstance(payload[key], (dict, list)) else \
                    rng.choice([None, [], {}, 'x', -1, 1.5])
            else:
                payload.pop(key)
            _rewrite_state(run, payload)
        else:
            name = rng.choice(sorted(files))
            data = bytearray(files[name])
            data[rng.randrange(len(data))] ^= 0xFF
            (unit / name).write_bytes(bytes(data))
        scheduler, _ = create_scheduler_v2(optimizer, sched='cosine', num_epochs=2, step_on_epochs=False,
                                           updates_per_epoch=2)
        try:
            load_checkpoint(run, setup.model, optimizer, scheduler, 'bnas_custom')
        except CheckpointError:
            refused += 1
    assert refused > 60


# ------------------------------------------------------------------------------------- command lines
TRAIN = ['--model', 'bnas_custom', '--model-arg', 'genotype=bnas_cifar', '--model-arg', 'layers=3',
         '--model-arg', 'channels=4', '--data', 'embedded', '--no-progress', '--epochs', '1']


@pytest.mark.parametrize('extra, words', [
    (['--train-subset', '-5'], '--train-subset -5'),
    (['--lr', '.nan'], "recipe key 'lr' is nan"),
    (['--lr', '-1'], 'lr must be positive'),
    (['--momentum', '.inf'], "recipe key 'momentum' is inf"),
    (['--momentum', 'inf'], "recipe key 'momentum' is 'inf'"),
    (['--model-arg', 'bogus=1'], "unknown model argument 'bogus'"),
    (['--model-arg', 'layers=[1'], 'not a YAML scalar'),
    (['--model-arg', 'layers=x'], 'layers='),
])
def test_bad_train_arguments(tmp_path, extra, words, capsys):
    assert train_main(TRAIN + extra + ['--output', str(tmp_path / 'o')]) == 2
    err = capsys.readouterr().err
    assert words in err and 'Traceback' not in err, err
    assert not (tmp_path / 'o' / 'checkpoints').exists()


SEARCH = ['--data', 'embedded', '--epochs', '1', '--layers', '3', '--channels', '4', '--no-progress',
          '--batch-size', '16', '--train-subset', '64']


@pytest.mark.parametrize('extra', [['--lr', '-1'], ['--arch-lr', '-1'], ['--weight-decay', '-1'], ['--lr', 'nan'],
                                   ['--arch-lr', 'inf'], ['--min-lr', '-1'], ['--train-subset', '0']])
def test_bad_search_arguments(tmp_path, extra, capsys):
    assert search_main(SEARCH + extra + ['--output', str(tmp_path / 'c')]) == 2
    err = capsys.readouterr().err
    assert extra[0] in err and 'Traceback' not in err, err
    assert not (tmp_path / 'c' / 'genotype.json').exists()


def test_a_diverging_search_stops_and_writes_no_genotype(tmp_path, capsys, monkeypatch):
    import bnas_zoo.derive
    monkeypatch.setattr(bnas_zoo.derive, 'diversity_regularizer', lambda *a: torch.tensor(float('nan')))
    assert search_main(SEARCH + ['--output', str(tmp_path / 'c')]) == 2
    err = capsys.readouterr().err
    assert 'no longer finite' in err and not (tmp_path / 'c' / 'genotype.json').exists()


def test_unexpected_errors_are_one_message_and_debug_shows_the_traceback(monkeypatch, capsys):
    assert zoo_main(['profile', 'bnas_zz']) == 2
    assert 'unknown model' in capsys.readouterr().err
    with pytest.raises(BnasError):
        zoo_main(['profile', 'bnas_zz', '--debug'])
    with pytest.raises(BnasError):
        zoo_main(['--debug', 'profile', 'bnas_zz'])
    monkeypatch.setattr('bnas_zoo.profile.profile_model', lambda *a, **k: {}['boom'])
    assert zoo_main(['profile', 'bnas_mini']) == 1
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'KeyError' in err and '--debug' in err and 'Traceback' not in err
    with pytest.raises(KeyError):
        zoo_main(['profile', 'bnas_mini', '--debug'])
    for main in (train_main, validate_main, search_main):
        with pytest.raises(SystemExit):
            main(['--help'])
        assert '--debug' in capsys.readouterr().out


def test_atomic_write_honours_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / 'a', lambda p: p.write_text('x'))
        os.umask(0o077)
        atomic_write(tmp_path / 'b', lambda p: p.write_text('x'))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / 'a').stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / 'b').stat().st_mode) == 0o600


def test_validate_checkpoint_with_nan_weights_and_bad_publish_inputs(folder, tmp_path, capsys):
    _edit_weights(folder, 'classifier.weight', lambda t: torch.full_like(t, float('nan')))
    model_args = ['--model', 'bnas_custom']  # bnas_custom cannot be built from the command line without a genotype
    assert validate_main(model_args + ['--checkpoint', str(folder / 'model.safetensors'), '--data', 'embedded']) == 2
    assert 'Traceback' not in capsys.readouterr().err
    assert validate_main(['--model', 'bnas_mini', '--checkpoint', str(folder / 'model.safetensors'),
                          '--data', 'embedded']) == 2
    err = capsys.readouterr().err
    assert 'classifier.weight holds NaN' in err, err
    _edit_weights(folder, 'classifier.weight', torch.zeros_like)  # finite again: now the publish inputs are at fault
    results = tmp_path / 'results.json'
    results.write_text('[1, 2]')
    for extra in (['--eval-results', str(results)], ['--recipe-file', str(tmp_path / 'missing.txt')]):
        assert zoo_main(['publish', str(folder), '--repo-id', 'o/n', '--dry-run', '--out', str(tmp_path / 'p')]
                        + extra) == 2
        err = capsys.readouterr().err
        assert extra[0] in err or 'eval results' in err, err
