"""Runs that survive a power cut: checkpoint units flushed before they are committed, the previous unit kept
until the new one is durable, --resume from the newest intact unit (saying which epoch), a power cut simulated
at every step of the commit; the settings a resume must keep; the fp16 gradient scaler; bnas-search's run
folder."""
import json
import os
import shutil
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file

import bnas_zoo.train.checkpoint as ckpt
from bnas_zoo.errors import BnasError, CheckpointError
from bnas_zoo.train.data import EMBEDDED_MEAN, EMBEDDED_STD, build_datasets
from bnas_zoo.train.engine import (CHECKPOINT_MANIFEST, CHECKPOINT_WEIGHTS, TrainSetup, load_checkpoint,
                                   make_scheduler, run_training, save_checkpoint)
from bnas_zoo.train.recipes import load_recipe
from bnas_zoo.train.search import main as search_main


def _setup(out, epochs=3, resume=None, stop_after=None, amp=None, **overrides):
    recipe = load_recipe('embedded', dict({'epochs': epochs, 'batch_size': 16, 'lr': 0.003}, **overrides))
    cfg = dict(input_size=(3, 32, 32), mean=EMBEDDED_MEAN, std=EMBEDDED_STD)
    train_ds, eval_ds, classes = build_datasets(recipe, cfg, None, 'embedded')
    torch.manual_seed(0)
    model = timm.create_model('bnas_custom', genotype='bnas_cifar', layers=3, channels=4, num_classes=classes)
    return TrainSetup(model=model, train_ds=torch.utils.data.Subset(train_ds, range(48)),
                      eval_ds=torch.utils.data.Subset(eval_ds, range(16)), recipe=recipe, output=Path(out),
                      model_name='bnas_custom', seed=0, workers=0, resume=resume, progress=False,
                      stop_after=stop_after, amp=amp, export_args=model.architecture_args())


class PowerCut(Exception):
    """The power fails here."""


class Disk:
    """A pessimistic disk: what a power cut leaves of the run folder. Data a file received since it was last
    flushed (``fsync_file``) are torn (the file keeps half of its bytes); names created, renamed or removed in a
    directory since it was last flushed (``fsync_dir``) are undone. Every file-system step of the commit
    (flush, rename, removal) is counted; ``cut_at`` makes step ``cut_at`` fail before it happens."""

    def __init__(self, root: Path, trash: Path, monkeypatch, cut_at=None):
        self.root, self.trash, self.cut_at, self.steps = root, trash, cut_at, 0
        self.files, self.dirs, self.removed = {}, {}, {}
        for d, _, names in os.walk(root):  # what is there now was flushed before
            self._flush_dir(Path(d))
            for n in names:
                self._flush_file(Path(d) / n)
        for name in ('fsync_file', 'fsync_dir', 'rename', 'remove_tree'):
            monkeypatch.setattr(ckpt, name, getattr(self, name))

    def _step(self):
        self.steps += 1
        if self.steps == self.cut_at:
            raise PowerCut

    def _flush_file(self, path):
        self.files[path.stat().st_ino] = path.read_bytes()

    def _flush_dir(self, path):
        self.dirs[path.stat().st_ino] = {p.name: p.stat().st_ino for p in path.iterdir()}

    def fsync_file(self, path):
        self._step()
        self._flush_file(Path(path))

    def fsync_dir(self, path):
        self._step()
        self._flush_dir(Path(path))

    def rename(self, src, dst):
        self._step()
        os.replace(src, dst)

    def remove_tree(self, path):
        self._step()
        path, dest = Path(path), self.trash / str(len(self.removed))
        self.removed[path.stat().st_ino] = dest
        shutil.move(str(path), str(dest))

    def power_cut(self):
        """Turn the folder into what the disk holds after the power returns."""
        self._restore(self.root)

    def _restore(self, d: Path):
        listing = self.dirs.get(d.stat().st_ino, {})
        now = {p.name: p.stat().st_ino for p in d.iterdir()}
        for name, ino in now.items():
            if listing.get(name) == ino:
                continue
            old = [n for n, i in listing.items() if i == ino and n not in now]
            if old:  # a rename that was not flushed: the entry has its old name
                os.replace(d / name, d / old[0])
            elif (d / name).is_dir():  # a creation that was not flushed: gone
                shutil.rmtree(d / name)
            else:
                (d / name).unlink()
        for name, ino in listing.items():  # a removal that was not flushed: back
            if not (d / name).exists() and ino in self.removed:
                shutil.move(str(self.removed[ino]), str(d / name))
        for p in d.iterdir():
            if p.is_dir():
                self._restore(p)
            elif self.files.get(p.stat().st_ino) != p.read_bytes():  # data not flushed: torn
                p.write_bytes(p.read_bytes()[:p.stat().st_size // 2])


@pytest.fixture(scope='module')
def two_epochs(tmp_path_factory):
    """A run folder after 2 of 3 epochs, and the weights of epoch 3 of the same run."""
    root = tmp_path_factory.mktemp('durable')
    run_training(_setup(root / 'run', stop_after=2))
    run_training(_setup(root / 'straight'))
    return root


def _optimizer(setup):
    """The optimizer and scheduler run_training builds for ``setup``."""
    from timm.optim import create_optimizer_v2

    from bnas_zoo.train.engine import param_groups
    r = setup.recipe
    opt = create_optimizer_v2(param_groups(setup.model, r['weight_decay'], r['binary_weight_decay']), opt=r['opt'],
                              lr=r['lr'], weight_decay=r['weight_decay'], momentum=r['momentum'])
    return opt, make_scheduler(opt, r, 3)


def _commit_epoch_3(run: Path, weights):
    """Commit a checkpoint of epoch 3 with ``weights`` into ``run``."""
    setup = _setup(run)
    setup.model.load_state_dict(weights)
    save_checkpoint(run, setup.model, *_optimizer(setup), 2, dict(epoch=3, top1=1.0), [], 'bnas_custom',
                    recipe=setup.recipe)


def _resume_state(run: Path):
    setup = _setup(run)
    return setup.model, load_checkpoint(run, setup.model, *_optimizer(setup), 'bnas_custom')


@pytest.mark.slow
def test_a_power_cut_at_every_step_of_the_commit_loses_at_most_one_epoch(two_epochs, tmp_path, monkeypatch):
    base = two_epochs / 'run'
    third = load_file(ckpt.unit_dir(two_epochs / 'straight', 2) / CHECKPOINT_WEIGHTS)
    second = load_file(ckpt.unit_dir(base, 1) / CHECKPOINT_WEIGHTS)
    steps, resumed = None, []
    k = 1
    while steps is None or k <= steps:
        run = tmp_path / f'cut{k}' / 'run'
        shutil.copytree(base, run)
        (tmp_path / f'trash{k}').mkdir()
        with monkeypatch.context() as m:
            disk = Disk(run, tmp_path / f'trash{k}', m, cut_at=k)
            try:
                _commit_epoch_3(run, third)
                steps = disk.steps  # the whole commit ran: its number of steps
            except PowerCut:
                disk.power_cut()
        model, state = _resume_state(run)
        assert state['epoch'] in (1, 2), k  # epoch 2 or 3 (0-based 1 or 2): at most one epoch lost
        weights = model.state_dict()
        expected = third if state['epoch'] == 2 else second  # the new unit whole, or the previous one
        assert all(torch.equal(weights[n], expected[n]) for n in expected), k
        resumed.append(state['epoch'])
        k += 1
    # 3 file flushes, the unit folder's flush, its rename, the commit flush, the removal of the oldest unit
    assert steps == 7 and resumed[0] == 1 and resumed[-1] == 2  # cuts before and after the commit point
    # the previous unit is kept, older ones go (the commit that ran to its end)
    assert sorted(p.name for p in (tmp_path / f'cut{steps + 1}' / 'run' / 'checkpoints').iterdir()) == [
        'epoch-0002', 'epoch-0003']


def test_resume_falls_back_from_a_damaged_newest_unit_and_says_which_epoch(two_epochs, tmp_path, capsys):
    run = tmp_path / 'run'
    shutil.copytree(two_epochs / 'run', run)
    newest = ckpt.unit_dir(run, 1)
    weights = newest / CHECKPOINT_WEIGHTS
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated (a disk that lied about a flush)
    _, state = _resume_state(run)
    assert state['epoch'] == 0 and 'epoch-0002' in state['skipped'][0] and 'truncated' in state['skipped'][0]
    shutil.rmtree(run)
    shutil.copytree(two_epochs / 'run', run)
    manifest = newest / CHECKPOINT_MANIFEST
    manifest.write_text(manifest.read_text()[:40])  # torn manifest
    _, state = _resume_state(run)
    assert state['epoch'] == 0 and 'not valid JSON' in state['skipped'][0]
    # the run continues from there and ends as the straight run does, printing where it resumed
    run_training(_setup(run, resume=run))
    assert '--resume: resuming after epoch 1' in capsys.readouterr().err
    a = load_file(ckpt.unit_dir(run, 2) / CHECKPOINT_WEIGHTS)
    b = load_file(ckpt.unit_dir(two_epochs / 'straight', 2) / CHECKPOINT_WEIGHTS)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert [r['epoch'] for r in json.loads((run / 'summary.json').read_text())] == [1, 2, 3]
    for unit in (ckpt.unit_dir(run, 0), ckpt.unit_dir(run, 1)):  # both damaged and intact units replaced
        shutil.rmtree(unit, ignore_errors=True)
    with pytest.raises(CheckpointError, match='epoch-0003'):  # the last unit alone, damaged: nothing to resume
        (ckpt.unit_dir(run, 2) / CHECKPOINT_MANIFEST).write_text('{}')
        _resume_state(run)


def test_resume_with_other_epochs_or_settings_is_refused_with_the_reason(two_epochs, tmp_path):
    run = tmp_path / 'run'
    shutil.copytree(two_epochs / 'run', run)
    with pytest.raises(CheckpointError, match=r'started for 3 epochs; this command asks for 5.*resume with '
                                              r'--epochs 3, or train on from its weights in a new run'):
        run_training(_setup(run, epochs=5, resume=run))
    with pytest.raises(CheckpointError, match=r"other settings \(lr 0.003, now 0.01\)"):
        run_training(_setup(run, resume=run, lr=0.01))


def test_the_fp16_gradient_scaler_is_checkpointed(tmp_path):
    out = tmp_path / 'run'
    try:
        run_training(_setup(out, epochs=1, amp='fp16'))
    except RuntimeError as e:  # a CPU without float16 kernels for these ops
        pytest.skip(f'fp16 autocast on this CPU: {e}')
    state = torch.load(ckpt.unit_dir(out, 0) / 'checkpoint_state.pt', weights_only=True)
    assert state['scaler']['scale'] > 0 and '_growth_tracker' in state['scaler']
    with pytest.raises(CheckpointError, match='no fp16 gradient-scaler state'):
        run_training(_setup(tmp_path / 'plain', epochs=1))
        run_training(_setup(tmp_path / 'plain', epochs=1, amp='fp16', resume=tmp_path / 'plain'))


def test_bnas_search_keeps_its_run_folder(tmp_path, capsys):
    base = ['--dataset', 'embedded', '--epochs', '2', '--cells', '3', '--channels', '4', '-b', '8',
            '--train-subset', '32', '--no-progress', '--output', str(tmp_path / 's')]
    assert search_main(base + ['--stop-after', '1']) == 0
    assert (ckpt.unit_dir(tmp_path / 's', 0) / 'search_checkpoint.json').is_file()
    assert search_main(base) == 2  # a folder holding a search: not started over silently
    assert 'already holds a search: continue it with --resume, or start again with --overwrite' in capsys.readouterr().err
    assert search_main(base + ['--epochs', '3', '--resume']) == 2
    assert 'started for 2 epochs; this command asks for 3' in capsys.readouterr().err
    assert search_main(base + ['--resume']) == 0
    out = capsys.readouterr()
    assert 'resuming after epoch 1' in out.err
    assert (tmp_path / 's' / 'genotype.json').is_file() and (tmp_path / 's' / 'genotype.gamma3.json').is_file()
    assert "layers=3, channels=4, stem='cifar', num_classes=10" in out.out  # the hint is this run's
    assert '--dataset embedded' in out.out


def test_an_older_flag_of_bnas_search_names_its_replacement(capsys):
    with pytest.raises(SystemExit):
        search_main(['--dataset', 'embedded', '--out', 'cell.json'])
    assert '--out was replaced by --output DIR' in capsys.readouterr().err
