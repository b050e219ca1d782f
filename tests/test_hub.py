"""Hub publishing and loading, without network: a dry-run folder, a Hugging Face cache laid out on disk
(HF_HUB_OFFLINE=1, set in conftest), and huggingface_hub's upload calls captured."""
import hashlib
import json
import os
import shlex
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import timm
import torch
import yaml
from huggingface_hub import HfApi, ModelCard
from safetensors import safe_open

import bnas_zoo
from bnas_zoo.cli import main
from bnas_zoo.convert import convert_official
from bnas_zoo.errors import BnasError, CheckpointError
from bnas_zoo.hub import PUBLISHED_FILES, build_publish_folder, load_1bit_from_hub, publish
from bnas_zoo.packing import load_1bit, save_1bit, theoretical_1bit_bytes
from bnas_zoo.train.train import main as train_main
from conftest import load_layout
from release_net import synthetic_release_state_dict


def _converted(tmp_path, name='bnas_mini'):
    ckpt = tmp_path / f'{name}.pt'
    torch.save(synthetic_release_state_dict(load_layout(name)), ckpt)
    return convert_official(ckpt, name, tmp_path / f'{name}_weights')


def _lay_out_cache(cache: Path, repo_id: str, folder: Path, ref: str = 'main', commit: str = None) -> str:
    """A Hugging Face cache holding ``folder`` as one snapshot of ``repo_id`` (models--ORG--NAME layout)."""
    commit = commit or hashlib.sha1(repo_id.encode() + ref.encode()).hexdigest()
    repo = cache / ('models--' + repo_id.replace('/', '--'))
    (repo / 'refs').mkdir(parents=True, exist_ok=True)
    (repo / 'refs' / ref).write_text(commit)
    snap = repo / 'snapshots' / commit
    snap.mkdir(parents=True, exist_ok=True)
    for f in folder.iterdir():
        shutil.copy(f, snap / f.name)
    return commit


@pytest.fixture(scope='module')
def mini_folder(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('mini')
    src = _converted(tmp)
    out = build_publish_folder(src, tmp / 'publish', 'test-org/bnas_mini.cifar10', dataset='cifar10',
                               eval_results=dict(split='test', top1=90.12, command='bnas-validate'))
    return src, out


def test_offline_mode_is_on():
    from huggingface_hub import constants
    assert constants.HF_HUB_OFFLINE


def test_dry_run_folder_contents(mini_folder):
    src, out = mini_folder
    assert sorted(p.name for p in out.iterdir()) == sorted(PUBLISHED_FILES)
    config = json.loads((out / 'config.json').read_text())
    assert config['architecture'] == 'bnas_mini'
    args = config['model_args']
    assert args['genotype']['normal'][1] == ['bin_dil_conv_3x3', 0] and args['layers'] == 10 and args['channels'] == 24
    card = (out / 'README.md').read_text()
    header = card.split('---')[1]
    for needle in ('library_name: timm', 'image-classification', 'binary-neural-network',
                   '- cifar10', 'accuracy', 'value: 90.12'):
        assert needle in header, needle
    # converted weights: the authors stated no licence, so none is claimed for them
    assert 'license:' not in header and "No licence is stated for these weights (the BNAS authors' release" in card
    for needle in ("paper's convention", 'true (this network)', '| cifar10 | test |  | 90.12 |  | measured |',
                   '`bnas-validate`', '@article{kim2021bnasv2', 'Intended use', 'convert-official` from `bnas_mini.pt`'):
        assert needle in card, needle


def test_local_dir_and_1bit_round_trip_bit_identical(mini_folder):
    src, out = mini_folder
    x = torch.randn(4, 3, 32, 32)
    source = timm.create_model(f'local-dir:{src}', pretrained=True).eval()
    published = timm.create_model(f'local-dir:{out}', pretrained=True).eval()
    bit = load_1bit(out / 'model-1bit.safetensors').eval()
    expected = source(x)
    assert torch.equal(published(x), expected)
    assert torch.equal(bit(x), expected)
    assert all(m.deployed for m in bnas_zoo.binary_convs(bit))


def test_hub_cache_loading_paths(mini_folder, tmp_path):
    src, out = mini_folder
    cache = tmp_path / 'hf-cache'
    x = torch.randn(2, 3, 32, 32)
    expected = timm.create_model(f'local-dir:{src}', pretrained=True).eval()(x)
    # a registered name at a pinned revision (how published weights will be registered: hf_hub_id ORG/NAME@COMMIT)
    commit = _lay_out_cache(cache, 'bnas-zoo/bnas_mini.cifar10', out, ref='v0')
    m = timm.create_model('bnas_mini', pretrained=True, cache_dir=cache,
                          pretrained_cfg_overlay=dict(hf_hub_id=f'bnas-zoo/bnas_mini.cifar10@{commit}')).eval()
    assert torch.equal(m(x), expected)
    # hf-hub: ids, main and a pinned revision (a branch and a commit)
    _lay_out_cache(cache, 'test-org/bnas_mini.cifar10', out)
    commit = _lay_out_cache(cache, 'test-org/bnas_mini.cifar10', out, ref='v1')
    for name in ('hf-hub:test-org/bnas_mini.cifar10', 'hf-hub:test-org/bnas_mini.cifar10@v1',
                 f'hf-hub:test-org/bnas_mini.cifar10@{commit}'):
        m = timm.create_model(name, pretrained=True, cache_dir=cache).eval()
        assert torch.equal(m(x), expected), name
    # fine-tuning head and in_chans adaptation
    m = timm.create_model('hf-hub:test-org/bnas_mini.cifar10', pretrained=True, num_classes=3, cache_dir=cache)
    assert m.get_classifier().out_features == 3
    m = timm.create_model('hf-hub:test-org/bnas_mini.cifar10', pretrained=True, in_chans=1, cache_dir=cache)
    assert m(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    # the 1-bit file through the cache
    assert torch.equal(load_1bit_from_hub('test-org/bnas_mini.cifar10', cache_dir=cache).eval()(x), expected)
    # ... deployed straight from the packed bits: the same as deploying the hf-hub: or local-dir: model
    fast = load_1bit_from_hub('test-org/bnas_mini.cifar10', cache_dir=cache, deploy=True)
    with torch.no_grad():
        deployed = bnas_zoo.deploy(timm.create_model('hf-hub:test-org/bnas_mini.cifar10', pretrained=True,
                                                     cache_dir=cache))(x)
        assert torch.equal(fast(x), deployed)
        assert torch.equal(bnas_zoo.deploy(timm.create_model(f'local-dir:{src}', pretrained=True))(x), deployed)
    # a revision that is not there
    with pytest.raises(Exception):
        timm.create_model('hf-hub:test-org/bnas_mini.cifar10@nope', pretrained=True, cache_dir=cache)


def test_registered_names_load_from_a_mirror(mini_folder, tmp_path):
    """BNAS_ZOO_HUB_ORG=ORG (read at import): pretrained=True on a registered name loads ORG/NAME.TAG."""
    import subprocess
    import sys
    src, out = mini_folder
    _lay_out_cache(tmp_path / 'cache', 'test-org/bnas_mini.cifar10', out)
    x = torch.randn(2, 3, 32, 32)
    torch.save(x, tmp_path / 'x.pt')
    code = ("import timm, torch, bnas_zoo; assert timm.list_pretrained('bnas_mini*') == ['bnas_mini.cifar10']; "
            f"m = timm.create_model('bnas_mini', pretrained=True).eval(); x = torch.load({str(tmp_path / 'x.pt')!r}); "
            f"torch.save(m(x).detach(), {str(tmp_path / 'y.pt')!r})")
    env = dict(os.environ, BNAS_ZOO_HUB_ORG='test-org', HF_HUB_OFFLINE='1', HF_HUB_CACHE=str(tmp_path / 'cache'))
    proc = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    expected = timm.create_model(f'local-dir:{src}', pretrained=True).eval()(x)
    assert torch.equal(torch.load(tmp_path / 'y.pt'), expected)


def test_custom_genotype_model_rebuilds_from_the_hub(tmp_path):
    from timm.models import save_for_hf
    genotype = bnas_zoo.load_genotype('bnas_imagenet').to_dict()
    genotype['normal'][7] = ['avg_pool_3x3', 4]
    genotype['name'] = 'my_cell'
    model = timm.create_model('bnas_custom', genotype=genotype, layers=4, channels=8, stem='cifar', num_classes=7).eval()
    save_for_hf(model, str(tmp_path / 'run'), model_args=model.architecture_args(), safe_serialization=True)
    out = build_publish_folder(tmp_path / 'run', tmp_path / 'pub', 'me/my-cell')
    cache = tmp_path / 'cache'
    _lay_out_cache(cache, 'me/my-cell', out)
    loaded = timm.create_model('hf-hub:me/my-cell', pretrained=True, cache_dir=cache).eval()
    assert loaded.genotype.normal[7] == ('avg_pool_3x3', 4) and loaded.num_classes == 7
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(loaded(x), model(x))
    assert torch.equal(load_1bit(out / 'model-1bit.safetensors').eval()(x), model(x))


def test_1bit_zero_signs_and_size(tmp_path):
    model = timm.create_model('bnas_mini').eval()
    conv = model.cells[0].ops['2'].conv
    with torch.no_grad():
        conv.weight[0, :, 1, 1] = 0.25   # constant over input channels: centred to exactly 0, sign 0
        conv.weight[3, :, 0, 0] = -0.5
    x = torch.randn(2, 3, 32, 32)
    expected = model(x)
    path = save_1bit(model, tmp_path / 'm.safetensors', config={'architecture': 'bnas_mini', 'num_classes': 10})
    with safe_open(str(path), framework='pt') as f:
        zeros = f.get_tensor('cells.0.ops.2.conv.weight.zeros')
        assert zeros.numel() >= 2 * 24
        assert f.get_tensor('cells.0.ops.2.conv.weight.bits').dtype == torch.uint8
    rebuilt = load_1bit(path).eval()
    assert torch.equal(rebuilt(x), expected)
    size = path.stat().st_size
    assert abs(size / theoretical_1bit_bytes(model) - 1) < 0.05


def test_1bit_round_trip_without_config(tmp_path):
    """save_1bit(model, path) alone: the model knows its architecture and arguments, and the file rebuilds it."""
    genotype = bnas_zoo.load_genotype('bnas_cifar').to_dict()
    genotype['normal'][0] = ['bin_conv_5x5', 0]
    custom = timm.create_model('bnas_custom', genotype=genotype, layers=4, channels=8, stem='cifar',
                               num_classes=7).eval()
    x = torch.randn(2, 3, 32, 32)
    for model in (custom, timm.create_model('bnas_mini').eval()):
        path = bnas_zoo.save_1bit(model, tmp_path / 'm.safetensors')
        with torch.no_grad():
            assert torch.equal(bnas_zoo.load_1bit(path, deploy=True)(x), bnas_zoo.deploy(model)(x))
            rebuilt = bnas_zoo.load_1bit(path)
            assert torch.equal(rebuilt(x), model(x))
        assert rebuilt.num_classes == model.num_classes and rebuilt.genotype == model.genotype
    with pytest.raises(BnasError, match='not a bnas network'):
        bnas_zoo.save_1bit(torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1)), tmp_path / 'x.safetensors')


def test_a_model_from_a_1bit_file_is_for_inference_only(tmp_path):
    """Its binary convs hold sign * alpha, not latent weights: training must not turn them into float convs."""
    model = timm.create_model('bnas_mini').eval()
    path = bnas_zoo.save_1bit(model, tmp_path / 'm.safetensors')
    rebuilt = bnas_zoo.load_1bit(path)
    assert not rebuilt.training  # returned ready for inference
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    rebuilt.train()
    with torch.no_grad():
        rebuilt(x)  # a training-mode pass without gradients (e.g. BatchNorm statistics) is fine
    with pytest.raises(RuntimeError, match='inference only'):
        torch.nn.functional.cross_entropy(rebuilt(x), y).backward()
    # frozen binary convs: the rest (here the classifier) trains, the binary weights stay exactly as loaded
    before = {n: m.weight.clone() for n, m in rebuilt.named_modules() if getattr(m, 'deployed', False)}
    for m in bnas_zoo.binary_convs(rebuilt):
        m.weight.requires_grad_(False)
    opt = torch.optim.SGD([p for p in rebuilt.parameters() if p.requires_grad], lr=0.1)
    torch.nn.functional.cross_entropy(rebuilt(x), y).backward()
    opt.step()
    assert all(torch.equal(m.weight, before[n]) for n, m in rebuilt.named_modules() if n in before)


@pytest.mark.parametrize('name, ratio', [('bnas_mini', 2.48), ('bnas_d', 4.96)])
def test_1bit_file_sizes(tmp_path, name, ratio):
    from safetensors.torch import save_file
    model = timm.create_model(name)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / 'f.safetensors'))
    path = save_1bit(model, tmp_path / 'b.safetensors', config={'architecture': name})
    size = path.stat().st_size
    assert abs(size / theoretical_1bit_bytes(model) - 1) < 0.05
    assert (tmp_path / 'f.safetensors').stat().st_size / size == pytest.approx(ratio, rel=0.03)


def test_bad_files(tmp_path, mini_folder):
    src, out = mini_folder
    trunc = tmp_path / 'trunc.safetensors'
    trunc.write_bytes((out / 'model-1bit.safetensors').read_bytes()[:500])
    with pytest.raises(CheckpointError, match='trunc.safetensors: not a readable safetensors file'):
        load_1bit(trunc)
    with pytest.raises(CheckpointError, match='not a bnas_zoo 1-bit file'):
        load_1bit(out / 'model.safetensors')
    with pytest.raises(CheckpointError, match='no config.json'):
        build_publish_folder(tmp_path, tmp_path / 'x', 'a/b')
    bad = tmp_path / 'bad'
    shutil.copytree(src, bad)
    (bad / 'model.safetensors').write_bytes(b'garbage')
    with pytest.raises(CheckpointError, match=r'bnas_mini: the pretrained weights from file .*bad.*model.safetensors'):
        build_publish_folder(bad, tmp_path / 'y', 'a/b')
    with pytest.raises(BnasError, match="field 'top1'"):
        build_publish_folder(src, tmp_path / 'z', 'a/b', eval_results={'top1': 'high'})
    with pytest.raises(BnasError, match='unknown field'):
        build_publish_folder(src, tmp_path / 'z', 'a/b', eval_results={'acc': 1})
    with pytest.raises(BnasError, match="--repo-id 'no-slash'"):
        publish(src, 'no-slash', dry_run=True, out=tmp_path / 'w')


class _FakeHub:
    """Captures what huggingface_hub would upload; answers get_paths_info from what was uploaded."""

    def __init__(self):
        self.repos, self.branches, self.commits = [], [], []
        self.files = {}

    def install(self, monkeypatch):
        monkeypatch.setattr(HfApi, 'create_repo', lambda api, repo_id, **kw: self.repos.append((repo_id, kw)))
        monkeypatch.setattr(HfApi, 'create_branch', lambda api, repo_id, branch, **kw: self.branches.append(branch))
        monkeypatch.setattr(HfApi, 'get_paths_info', lambda api, *a, **kw: self.get_paths_info(api, *a, **kw))
        monkeypatch.setattr(HfApi, 'upload_folder', lambda api, *a, **kw: self.upload_folder(api, *a, **kw))

    def get_paths_info(self, api, repo_id, paths, revision=None, **kw):
        out = []
        for p in paths:
            data = self.files.get((repo_id, revision, p))
            if data is None:
                continue
            if p.endswith('.safetensors'):
                out.append(SimpleNamespace(path=p, lfs=SimpleNamespace(sha256=hashlib.sha256(data).hexdigest()), blob_id=None))
            else:
                out.append(SimpleNamespace(path=p, lfs=None,
                                           blob_id=hashlib.sha1(b'blob %d\0' % len(data) + data).hexdigest()))
        return out

    def upload_folder(self, api, repo_id, folder_path, revision=None, commit_message=None, allow_patterns=None, **kw):
        names = sorted(p.name for p in Path(folder_path).iterdir())
        for n in names:
            self.files[(repo_id, revision, n)] = (Path(folder_path) / n).read_bytes()
        self.commits.append(dict(repo_id=repo_id, revision=revision, message=commit_message, files=names,
                                 token=api.token))
        return SimpleNamespace(commit_url=f'https://hub.invalid/{repo_id}/commit/{len(self.commits)}')


def test_publish_uploads_then_is_idempotent(mini_folder, tmp_path, monkeypatch, capsys):
    src, _ = mini_folder
    hub = _FakeHub()
    hub.install(monkeypatch)
    monkeypatch.setenv('HF_TOKEN', 'hf_SECRETtoken0123456789')
    assert main(['publish', str(src), '--repo-id', 'test-org/bnas_mini.cifar10', '--revision', 'v1',
                 '--out', str(tmp_path / 'copy')]) == 0
    first = capsys.readouterr()
    assert len(hub.commits) == 1 and hub.commits[0]['files'] == sorted(PUBLISHED_FILES)
    assert hub.commits[0]['revision'] == 'v1' and hub.branches == ['v1']
    assert 'bnas_mini' in hub.commits[0]['message'] and src.name in hub.commits[0]['message']
    assert hub.repos[0][0] == 'test-org/bnas_mini.cifar10' and hub.repos[0][1]['exist_ok']
    # what was uploaded loads through an on-disk cache, bit-identical
    uploaded = tmp_path / 'uploaded'
    uploaded.mkdir()
    for (_, _, name), data in hub.files.items():
        (uploaded / name).write_bytes(data)
    _lay_out_cache(tmp_path / 'cache', 'test-org/bnas_mini.cifar10', uploaded, ref='v1')
    x = torch.randn(2, 3, 32, 32)
    loaded = timm.create_model('hf-hub:test-org/bnas_mini.cifar10@v1', pretrained=True, cache_dir=tmp_path / 'cache')
    source = timm.create_model(f'local-dir:{src}', pretrained=True)
    assert torch.equal(loaded.eval()(x), source.eval()(x))
    # the same weights again: nothing uploaded
    assert main(['publish', str(src), '--repo-id', 'test-org/bnas_mini.cifar10', '--revision', 'v1']) == 0
    second = capsys.readouterr()
    assert len(hub.commits) == 1 and 'nothing uploaded' in second.out
    for text in (first.out, first.err, second.out, second.err):
        assert 'hf_SECRET' not in text


def test_demo_main_job(capsys):
    assert main(['demo']) == 0
    out = capsys.readouterr().out
    for name in bnas_zoo.VARIANTS:
        assert f'{name}  input' in out
    assert 'reloaded through timm local-dir: outputs identical = True' in out
    assert 'rebuilt from model-1bit.safetensors alone: outputs identical = True' in out


def test_imagenet_variant_through_the_hub_cache(tmp_path):
    src = _converted(tmp_path, 'bnas_d')
    out = build_publish_folder(src, tmp_path / 'pub', 'test-org/bnas_d.in1k')
    cache = tmp_path / 'cache'
    _lay_out_cache(cache, 'test-org/bnas_d.in1k', out)
    x = torch.randn(1, 3, 64, 64)
    expected = timm.create_model(f'local-dir:{src}', pretrained=True).eval()(x)
    loaded = timm.create_model('hf-hub:test-org/bnas_d.in1k', pretrained=True, cache_dir=cache).eval()
    assert torch.equal(loaded(x), expected)
    assert loaded.pretrained_cfg['crop_pct'] == 0.875 and loaded.pretrained_cfg['input_size'] == (3, 224, 224)



# ---- model cards: only the facts of the folder being published ----

TINY_MODEL = ['--model', 'bnas_custom', '--model-arg', 'genotype=bnas_cifar', '--model-arg', 'layers=3',
              '--model-arg', 'channels=8', '--model-arg', 'stem=cifar', '--no-progress']


def _png_tree(root: Path, classes=3, per_class=4):
    """A tiny ImageFolder tree of generated PNGs: root/train/<class>/*.png and root/val/<class>/*.png."""
    from PIL import Image
    for split in ('train', 'val'):
        for c in range(classes):
            d = root / split / f'class{c}'
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.new('RGB', (36, 36), (80 * c, 20 * i, 255 - 80 * c)).save(d / f'{i}.png')
    return root


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """Two short bnas-train runs of a CIFAR-stem model: the embedded digits and an ImageFolder tree named
    'shapes'. Returns {kind: (run folder, argv of the run)}."""
    tmp = tmp_path_factory.mktemp('runs')
    digits = tmp / 'digits'
    digits_argv = TINY_MODEL + ['--data', 'embedded', '--epochs', '1', '--train-subset', '32', '--output', str(digits)]
    assert train_main(digits_argv) == 0
    data = _png_tree(tmp / 'shapes')
    shapes = tmp / 'shapes_run'
    shapes_argv = TINY_MODEL + ['--data-dir', str(data), '--recipe', 'cifar10', '--epochs', '2', '--batch-size', '4',
                                '--output', str(shapes)]
    assert train_main(shapes_argv) == 0
    return dict(embedded=(digits, digits_argv), folder=(shapes, shapes_argv))


def _best_epoch(run: Path) -> dict:
    history = json.loads((run / 'summary.json').read_text())
    return max(history, key=lambda h: h['eval_top1'])  # the first best, as training keeps it


def _load_card(folder: Path):
    """The card as huggingface_hub parses it, with its metadata round trip checked."""
    path = folder / 'README.md'
    card = ModelCard.load(path)
    header = yaml.safe_load(path.read_text().split('---')[1])
    assert card.data.to_dict() == header  # what huggingface_hub reads back is what was written
    assert ModelCard(str(card)).data.to_dict() == header
    return card, path.read_text()


def test_card_of_an_embedded_run(runs, tmp_path, capsys):
    run, argv = runs['embedded']
    assert main(['publish', str(run), '--repo-id', 'someone/bnas_mini-digits', '--dry-run',
                 '--out', str(tmp_path / 'pub')]) == 0
    card, text = _load_card(tmp_path / 'pub')
    best = _best_epoch(run)
    assert card.data.datasets == ['sklearn-digits'] and card.data.license == 'apache-2.0'  # trained with bnas_zoo
    assert sorted((r.metric_name, r.metric_value) for r in card.data.eval_results) == [
        ('top-1 accuracy', best['eval_top1']), ('top-5 accuracy', best['eval_top5'])]
    for r in card.data.eval_results:
        assert (r.task_type, r.dataset_type, r.dataset_split, r.source_name) == (
            'image-classification', 'sklearn-digits', 'test', None)
    # the card text: the same figures, the split's size, and the command
    command = 'bnas-train ' + shlex.join(argv)
    assert (f"| test | 360 | {best['eval_top1']:.2f} | {best['eval_top5']:.2f} | "
            f"measured (best epoch, 1 of 1) | `{command}` |") in text
    assert f'```bash\n{command}\n```' in text
    for row in ('| recipe | `embedded` |', '| epochs | 1 |', '| learning rate | 0.002 |', '| classes | 10 |',
                "| training data | scikit-learn's handwritten digits, upsampled to 32x32 (train split, 32 images) |",
                f"| published weights | epoch {best['epoch']} (the best evaluated) |"):
        assert row in text, row
    assert 'num_classes=<your classes>' in text and 'num_classes=10' not in text
    assert 'load_1bit_from_hub("someone/bnas_mini-digits", deploy=True)' in text
    assert 'cifar10' not in text and 'imagenet-1k' not in text  # no dataset guessed from the CIFAR stem
    # --eval-results replaces the run's own results
    (tmp_path / 'eval.json').write_text(json.dumps(dict(split='test', top1=12.5, images=360, command='bnas-validate x')))
    out = build_publish_folder(run, tmp_path / 'pub2', 'someone/bnas_mini-digits',
                               eval_results=json.loads((tmp_path / 'eval.json').read_text()))
    card, text = _load_card(out)
    assert [(r.metric_name, r.metric_value, r.dataset_type) for r in card.data.eval_results] == [
        ('top-1 accuracy', 12.5, 'sklearn-digits')]
    assert f"{best['eval_top1']:.2f}" not in text.split('## Evaluation')[1].split('## Training')[0]


def test_card_of_an_image_folder_run(runs, tmp_path):
    run, argv = runs['folder']
    card, text = _load_card(build_publish_folder(run, tmp_path / 'pub', 'someone/shapes'))
    best = _best_epoch(run)
    assert card.data.datasets == ['shapes']  # the ImageFolder's name
    assert sorted((r.metric_name, r.metric_value, r.dataset_type, r.dataset_split) for r in card.data.eval_results) == [
        ('top-1 accuracy', best['eval_top1'], 'shapes', 'val'), ('top-5 accuracy', best['eval_top5'], 'shapes', 'val')]
    assert f"| shapes | val | 12 | {best['eval_top1']:.2f} | {best['eval_top5']:.2f} | measured (best epoch, {best['epoch']} of 2) |" in text
    assert f"| published weights | epoch {best['epoch']} (the best evaluated) |" in text
    assert 'The classifier has 3 outputs' in text and '(3 classes, shapes)' in text
    assert '| training data | shapes (train split, 12 images) |' in text and '| recipe | `cifar10` |' in text
    assert f"```bash\nbnas-train {shlex.join(argv)}\n```" in text
    assert 'cifar10' not in card.data.to_dict()['datasets']
    # the publisher names the dataset: the metadata and the run's own results follow
    card, text = _load_card(build_publish_folder(run, tmp_path / 'pub2', 'someone/shapes', dataset='my-org/shapes-v2'))
    assert card.data.datasets == ['my-org/shapes-v2']
    assert {r.dataset_type for r in card.data.eval_results} == {'my-org/shapes-v2'}
    assert {r.metric_value for r in card.data.eval_results} == {best['eval_top1'], best['eval_top5']}
    assert '| training data | my-org/shapes-v2 (train split, 12 images) |' in text and 'shapes (' not in text


def test_bnas_train_records_the_dataset_name(tmp_path):
    from bnas_zoo.train.data import build_datasets, data_facts
    from bnas_zoo.train.recipes import load_recipe
    data = _png_tree(tmp_path / 'folder_name', classes=2, per_class=3)
    cfg = dict(input_size=(3, 32, 32), mean=(0.5,) * 3, std=(0.5,) * 3)
    train_ds, eval_ds, classes = build_datasets(load_recipe('cifar10'), cfg, str(data), 'folder')
    facts = data_facts('folder', str(data), 'oxford-iiit-pet', train_ds, eval_ds, classes)
    assert (facts['dataset'], facts['num_classes'], facts['eval_split'], facts['eval_images']) == (
        'oxford-iiit-pet', 2, 'val', 6)
    assert data_facts('folder', str(data), None, train_ds, eval_ds, classes)['dataset'] == 'folder_name'
    with pytest.raises(BnasError, match='--dataset embedded always trains on the embedded digits'):
        data_facts('embedded', None, 'cifar10', train_ds, eval_ds, 10)


def test_card_says_nothing_it_does_not_know(tmp_path):
    from timm.models import save_for_hf
    model = timm.create_model('bnas_mini')  # a CIFAR-stem model of unknown training data
    save_for_hf(model, str(tmp_path / 'folder'), model_args=model.architecture_args(), safe_serialization=True)
    card, text = _load_card(build_publish_folder(tmp_path / 'folder', tmp_path / 'pub', 'someone/mini'))
    header = text.split('---')[1]
    assert card.data.datasets is None and card.data.eval_results is None
    assert 'datasets' not in header and 'model-index' not in header
    assert 'cifar' not in text.lower() and 'imagenet' not in text.lower()
    assert 'No evaluation results were given' in text and 'Not recorded for these weights.' in text
    assert 'The classifier has 10 outputs' in text and 'Trained' not in text
    # results without a dataset cannot be placed anywhere
    with pytest.raises(BnasError, match="no dataset: give its 'dataset' field, or --dataset NAME"):
        build_publish_folder(tmp_path / 'folder', tmp_path / 'pub2', 'someone/mini', eval_results={'top1': 50.0})


def test_converted_weights_reported_and_measured_results(mini_folder, tmp_path, capsys):
    src, _ = mini_folder
    eval_file = tmp_path / 'eval.json'
    eval_file.write_text(json.dumps([
        dict(split='test', top1=94.1, reference='BNAS v2 paper, Table 5'),  # no command: reported
        dict(split='test', top1=93.9, top5=99.8, images=10000, command='bnas-validate --model local-dir:w')]))
    assert main(['publish', str(src), '--repo-id', 'someone/bnas_mini.cifar10', '--dataset-name', 'cifar10',
                 '--eval-results', str(eval_file), '--dry-run', '--output', str(tmp_path / 'pub'),
                 '--license', 'cc-by-4.0']) == 0
    card, text = _load_card(tmp_path / 'pub')
    assert card.data.datasets == ['cifar10'] and card.data.license == 'cc-by-4.0'  # the licence the publisher gives
    got = sorted((r.metric_name, r.metric_value, r.dataset_split) for r in card.data.eval_results)
    assert got == [('top-1 accuracy', 93.9, 'test'), ('top-1 accuracy (reported)', 94.1, 'test'),
                   ('top-5 accuracy', 99.8, 'test')]
    assert '| cifar10 | test |  | 94.10 |  | reported (BNAS v2 paper, Table 5) |  |' in text
    assert '| cifar10 | test | 10,000 | 93.90 | 99.80 | measured | `bnas-validate --model local-dir:w` |' in text
    assert '*reported*: a figure stated by the paper or the authors' in text
    assert 'Not trained with bnas_zoo: converted with `bnas-zoo convert-official` from `bnas_mini.pt`' in text


def test_bad_run_folders_and_results_are_refused(runs, tmp_path, capsys):
    run, _ = runs['embedded']

    def publish_code(folder, *extra):
        code = main(['publish', str(folder), '--repo-id', 'a/b', '--dry-run', '--out', str(tmp_path / 'out'), *extra])
        return code, capsys.readouterr().err

    bad = tmp_path / 'bad'
    bad.mkdir()
    for name in ('model.safetensors', 'config.json'):
        shutil.copy(run / name, bad / name)
    (bad / 'summary.json').write_text('[{"epoch": 1, "eval_top1": 5')
    code, err = publish_code(bad)
    assert code == 2 and 'summary.json: not valid JSON' in err
    (bad / 'summary.json').write_text('{"top1": 5}')
    code, err = publish_code(bad)
    assert code == 2 and 'summary.json: not a training summary' in err
    (bad / 'summary.json').write_text(json.dumps([dict(epoch=7, eval_top1=1.0, eval_top5=2.0)]))
    code, err = publish_code(bad)
    assert code == 2 and 'no epoch' in err and 'belong to different runs' in err
    # without its summary, a run folder still names its dataset but claims no result
    (bad / 'summary.json').unlink()
    card, _ = _load_card(build_publish_folder(bad, tmp_path / 'pub', 'a/b'))
    assert card.data.datasets == ['sklearn-digits'] and card.data.eval_results is None
    for results, message in (({'top1': 50, 'source': 'measured'}, "measured result needs the 'command'"),
                             ({'top1': 50, 'source': 'paper'}, "field 'source' is 'paper'"),
                             ({'top1': 150, 'command': 'x'}, "field 'top1' is 150"),
                             ({'split': 'test'}, "no 'top1' or 'top5'"),
                             ([], 'expected an object or a non-empty list'),
                             ([{'top1': 1, 'images': 'all', 'command': 'x'}], r"eval results \[0\]: field 'images'")):
        (tmp_path / 'e.json').write_text(json.dumps(results))
        code, err = publish_code(run, '--eval-results', str(tmp_path / 'e.json'))
        assert code == 2 and message.replace('\\', '') in err, (results, err)
    code, err = publish_code(run, '--eval-results', str(tmp_path / 'missing.json'))
    assert code == 2 and 'missing.json: cannot read it' in err


def test_the_recorded_command_reproduces_the_run_from_scratch():
    from bnas_zoo.train.train import reproduce_command
    base = ['--model', 'bnas_mini', '--data-dir', 'my data', '--epochs', '5']
    assert reproduce_command(base) == "bnas-train --model bnas_mini --data-dir 'my data' --epochs 5"
    for extra in (['--resume'], ['--stop-after', '2'], ['--stop-after=2'], ['--overwrite']):  # --resume: a flag
        assert reproduce_command(extra + base) == reproduce_command(base + extra) == reproduce_command(base), extra
    assert reproduce_command(['--resume', '--epochs', '5']) == 'bnas-train --epochs 5'
