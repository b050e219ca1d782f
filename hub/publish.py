"""Publishing a bnas_zoo model folder to the Hugging Face Hub, and loading the 1-bit file back.

A model folder (``convert-official``'s output, a training run, timm's ``save_for_hf``) holds
``model.safetensors`` and ``config.json``. Publishing writes, then uploads through huggingface_hub:

- ``model.safetensors``: the latent float weights;
- ``model-1bit.safetensors``: the exact deployable form (see :mod:`bnas_zoo.packing`);
- ``config.json``: timm's format, whose ``model_args`` carry the architecture and the genotype itself;
- ``README.md``: the model card;
- ``cell_normal.png``, ``cell_reduce.png``: pictures of the network's cells (``bnas-zoo draw``), shown in the card.

The card states only facts of the folder: the dataset and the evaluation that a ``bnas-train`` run recorded
(``config.json``'s ``bnas_run`` and the run's ``summary.json``), what the publisher states (``dataset``,
``eval_results``, ``recipe``), and nothing where nothing is known.

Tokens come from huggingface_hub's usual sources (``HF_TOKEN``, ``hf auth login``) or the ``token``
argument, and are never printed. Publishing the same files twice uploads nothing the second time.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError
from huggingface_hub.utils import HFValidationError, validate_repo_id

from bnas_zoo.draw import draw_cell
from bnas_zoo.errors import BnasError, CheckpointError, ModelConfigError, first_line
from bnas_zoo.files import output_folder
from bnas_zoo.packing import load_1bit, save_1bit
from bnas_zoo.profile import profile_model

from .card import build_model_card

__all__ = ['PublishResult', 'build_publish_folder', 'publish', 'load_model_folder', 'load_1bit_from_hub',
           'run_evaluation', 'PUBLISHED_FILES', 'CELL_PICTURES']

#: the cell pictures of the card (relative links the Hub renders), by cell
CELL_PICTURES = {'normal': 'cell_normal.png', 'reduce': 'cell_reduce.png'}
PUBLISHED_FILES = ('model.safetensors', 'model-1bit.safetensors', 'config.json', 'README.md',
                   *CELL_PICTURES.values())
EVAL_KEYS = {'dataset', 'split', 'top1', 'top5', 'images', 'command', 'source', 'reference'}
EVAL_SOURCES = ('measured', 'reported')


@dataclass
class PublishResult:
    repo_id: str
    folder: Optional[Path]
    status: str                      # 'dry-run', 'uploaded' or 'unchanged'
    commit_url: Optional[str] = None
    files: List[str] = field(default_factory=list)


def load_model_folder(model_dir: Union[str, Path], use_ema: bool = False):
    """The model of a folder (config.json + model.safetensors) in eval mode and its config, with clear errors.
    ``use_ema``: with the EMA weights of a bnas-train run folder (``checkpoint_ema.safetensors``) instead."""
    import bnas_zoo  # noqa: F401  (registers the architectures)
    from bnas_zoo.registry import create_checked, read_model_folder
    model_dir = Path(model_dir)
    config = read_model_folder(model_dir)
    arch = config['architecture']
    try:
        model = create_checked(f'local-dir:{model_dir}', pretrained=True)
    except ModelConfigError as e:
        raise CheckpointError(f'{model_dir}: cannot build {arch}: {e}') from None
    if use_ema:
        from safetensors.torch import load_file

        from bnas_zoo.registry import check_weights
        path = ema_weights_file(model_dir)
        state = load_file(str(path))
        check_weights(state, model.state_dict(), str(path))
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise CheckpointError(f'{path}: does not fit {arch}: {first_line(e)}') from None
    return model.eval(), config


def ema_weights_file(run_dir: Union[str, Path]) -> Path:
    """The EMA weights of a bnas-train run folder trained with ``--model-ema``: the ``checkpoint_ema.safetensors``
    of its newest intact checkpoint (``checkpoints/epoch-NNNN/``, checked against its ``checkpoint.json``), or a
    :class:`CheckpointError`."""
    from bnas_zoo.train.checkpoint import has_checkpoint
    from bnas_zoo.train.engine import CHECKPOINT_EMA, CHECKPOINT_MANIFEST, read_checkpoint_unit
    run_dir = Path(run_dir)
    if not has_checkpoint(run_dir, CHECKPOINT_MANIFEST):
        raise CheckpointError(f'{run_dir}: no checkpoint, so no EMA weights ({CHECKPOINT_EMA}); they are kept by a '
                              f'bnas-train run with --model-ema. Without --use-ema, its model.safetensors is used')
    info = read_checkpoint_unit(run_dir, CHECKPOINT_MANIFEST, '--use-ema')
    if CHECKPOINT_EMA not in info['files']:
        raise CheckpointError(f"{info['unit'] / CHECKPOINT_MANIFEST}: its checkpoint holds no {CHECKPOINT_EMA}; the "
                              f'run kept no EMA weights (train with --model-ema)')
    return info['unit'] / CHECKPOINT_EMA


def _ema_epoch(run_dir: Path) -> int:
    """The epoch (counted from 1, as summary.json) of the EMA weights checkpointed in ``run_dir``."""
    from bnas_zoo.train.engine import CHECKPOINT_MANIFEST, read_checkpoint_unit
    return read_checkpoint_unit(run_dir, CHECKPOINT_MANIFEST, '--use-ema')['epoch'] + 1


def _check_eval_results(eval_results: Union[None, Dict[str, Any], Sequence[Dict[str, Any]]],
                        dataset: Optional[str]) -> Optional[List[Dict[str, Any]]]:
    """The publisher's results (one dict or a list of them), checked; each gets its dataset and its source
    ('measured' needs the command that measured it; figures of the paper or the authors are 'reported')."""
    if eval_results is None:
        return None
    items = [eval_results] if isinstance(eval_results, dict) else eval_results
    if not isinstance(items, (list, tuple)) or not items:
        raise BnasError(f'eval results: expected an object or a non-empty list of objects; got {eval_results!r}')
    checked = []
    for i, r in enumerate(items):
        where = 'eval results' if isinstance(eval_results, dict) else f'eval results [{i}]'
        if not isinstance(r, dict):
            raise BnasError(f'{where}: expected an object with fields {", ".join(sorted(EVAL_KEYS))}; got {r!r}')
        unknown = set(r) - EVAL_KEYS
        if unknown:
            raise BnasError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}; expected {', '.join(sorted(EVAL_KEYS))}")
        for key in ('top1', 'top5'):
            value = r.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not 0 <= value <= 100):
                raise BnasError(f"{where}: field '{key}' is {value!r}; expected a number from 0 to 100 (percent)")
        if r.get('top1') is None and r.get('top5') is None:
            raise BnasError(f"{where}: no 'top1' or 'top5'")
        images = r.get('images')
        if images is not None and (isinstance(images, bool) or not isinstance(images, int) or images <= 0):
            raise BnasError(f"{where}: field 'images' is {images!r}; expected the number of evaluated images")
        for key in ('dataset', 'split', 'command', 'reference'):
            if r.get(key) is not None and not (isinstance(r[key], str) and r[key].strip()):
                raise BnasError(f"{where}: field '{key}' is {r[key]!r}; expected a non-empty string")
        source = r.get('source') or ('measured' if r.get('command') else 'reported')
        if source not in EVAL_SOURCES:
            raise BnasError(f"{where}: field 'source' is {source!r}; expected 'measured' (by the command given) "
                            f"or 'reported' (a figure of the paper or the authors)")
        if source == 'measured' and not r.get('command'):
            raise BnasError(f"{where}: a measured result needs the 'command' that measured it; figures stated by "
                            f"the paper or the authors are \"source\": \"reported\"")
        ds = r.get('dataset') or dataset
        if not ds:
            raise BnasError(f"{where}: no dataset: give its 'dataset' field, or --dataset NAME")
        checked.append(dict(r, dataset=ds, source=source))
    return checked


def _run_record(model_dir: Path, config: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    run = config.get('bnas_run')
    if run is not None and not isinstance(run, dict):
        raise CheckpointError(f"{model_dir / 'config.json'}: field 'bnas_run' is {run!r}; expected the record of a "
                              f"bnas-train run (an object)")
    return run


def run_evaluation(model_dir: Union[str, Path], run: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The evaluation of a run folder's weights: the row of ``summary.json`` for the epoch recorded with them
    (``run['epoch']``), with the run's dataset, evaluation split and size, and command. ``None`` when the folder
    holds no ``summary.json`` or the run recorded no epoch. For the EMA weights (``run['weights'] == 'ema'``):
    the EMA's top-1 of that epoch (the run measures no top-5 of its EMA)."""
    path = Path(model_dir) / 'summary.json'
    epoch = run.get('epoch')
    if not path.is_file() or epoch is None:
        return None
    expected = 'the list of epochs that bnas-train writes (epoch, eval_top1, eval_top5, ...)'
    try:
        history = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f'{path}: not valid JSON ({e.msg}, line {e.lineno}); expected {expected}') from None
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f'{path}: unreadable ({e}); expected {expected}') from None
    if not isinstance(history, list) or not all(
            isinstance(h, dict) and isinstance(h.get('epoch'), int)
            and isinstance(h.get('eval_top1'), (int, float)) and isinstance(h.get('eval_top5'), (int, float))
            for h in history):
        raise CheckpointError(f'{path}: not a training summary; expected {expected}')
    rows = [h for h in history if h['epoch'] == epoch]
    if not rows:
        raise CheckpointError(f"{path}: no epoch {epoch}, the epoch of the weights in {Path(model_dir) / 'config.json'}; "
                              f"the summary and the weights belong to different runs")
    row = rows[-1]
    ema = run.get('weights') == 'ema'
    if ema and not isinstance(row.get('eval_ema_top1'), (int, float)):
        raise CheckpointError(f'{path}: epoch {epoch} has no eval_ema_top1; expected the summary of a run trained '
                              f'with --model-ema')
    return dict(dataset=run.get('dataset'), dataset_name=run.get('dataset_name'), split=run.get('eval_split'),
                images=run.get('eval_images'), top1=row['eval_ema_top1'] if ema else row['eval_top1'],
                top5=None if ema else row['eval_top5'], command=run.get('command'), source='measured',
                epoch=epoch, epochs=len(history), weights=run.get('weights'))


def build_publish_folder(
        model_dir: Union[str, Path],
        out_dir: Union[str, Path],
        repo_id: str,
        eval_results: Union[None, Dict[str, Any], Sequence[Dict[str, Any]]] = None,
        recipe: Optional[str] = None,
        license: Optional[str] = None,
        dataset: Optional[str] = None,
        use_ema: bool = False,
) -> Path:
    """Write exactly the folder that :func:`publish` uploads (the files of :data:`PUBLISHED_FILES`) to
    ``out_dir`` and return it; the arguments are those of :func:`publish`.

    The card's dataset is ``dataset`` if given, else the one a bnas-train run recorded, else none. Its
    evaluation is ``eval_results`` if given, else the run's own (best epoch, from ``summary.json``), else none.
    """
    from timm.models import save_for_hf

    if dataset is not None and not (isinstance(dataset, str) and dataset.strip()):
        raise BnasError(f'--dataset-name {dataset!r}: expected a dataset name, e.g. a Hub dataset id such as cifar10')
    model_dir = Path(model_dir)
    model, source_config = load_model_folder(model_dir, use_ema=use_ema)
    run = _run_record(model_dir, source_config)
    if use_ema:
        if not run:
            raise CheckpointError(f"{model_dir / 'config.json'}: not the config of a bnas-train run (no 'bnas_run'); "
                                  f"--use-ema publishes the EMA weights of a run folder")
        run = dict(run, epoch=_ema_epoch(model_dir), weights='ema')
    converted_from = source_config.get('bnas_converted_from')
    if license is None:  # the authors of converted weights stated no licence: none is claimed for them
        license = None if converted_from else 'apache-2.0'
    card_dataset = dataset or (run or {}).get('dataset')
    dataset_name = (run or {}).get('dataset_name') if card_dataset == (run or {}).get('dataset') else None
    if run and dataset and dataset != run.get('dataset'):  # the publisher's name for the run's data
        run = dict(run, dataset=dataset, dataset_name=None)
    eval_results = _check_eval_results(eval_results, card_dataset)
    if eval_results is None and run:
        own = run_evaluation(model_dir, run)
        if own is not None and card_dataset:  # results on an unnamed dataset cannot be stated
            own.update(dataset=card_dataset, dataset_name=dataset_name)
            eval_results = [own]
    if eval_results:
        for r in eval_results:  # the words for the card's own dataset, where a result is on it
            if r['dataset'] == card_dataset and dataset_name:
                r.setdefault('dataset_name', dataset_name)
    out_dir = output_folder(out_dir, '--output')
    save_for_hf(model, str(out_dir), model_args=model.architecture_args(), safe_serialization=True)
    config = json.loads((out_dir / 'config.json').read_text())
    save_1bit(model, out_dir / 'model-1bit.safetensors', config=config)
    for kind, name in CELL_PICTURES.items():
        draw_cell(model, kind, out_dir / name)
    card = build_model_card(
        repo_id, config['architecture'], profile_model(model, name=config['architecture']), card_dataset,
        eval_results=eval_results, recipe=recipe or source_config.get('bnas_recipe'), license=license,
        float_bytes=(out_dir / 'model.safetensors').stat().st_size,
        bit_bytes=(out_dir / 'model-1bit.safetensors').stat().st_size,
        num_classes=model.num_classes, dataset_name=dataset_name, run=run, converted_from=converted_from,
        cell_pictures=CELL_PICTURES)
    card.save(str(out_dir / 'README.md'))
    return out_dir


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b'blob %d\0' % len(data) + data).hexdigest()


def _unchanged(api: HfApi, repo_id: str, revision: Optional[str], folder: Path) -> bool:
    """Whether the repository already holds exactly these files (LFS sha256 or git blob sha1)."""
    try:
        infos = {i.path: i for i in api.get_paths_info(repo_id, list(PUBLISHED_FILES), revision=revision)}
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError):
        return False
    for name in PUBLISHED_FILES:
        info = infos.get(name)
        if info is None:
            return False
        data = (folder / name).read_bytes()
        lfs = getattr(info, 'lfs', None)
        if lfs is not None:
            if lfs.sha256 != hashlib.sha256(data).hexdigest():
                return False
        elif getattr(info, 'blob_id', None) != _git_blob_sha1(data):
            return False
    return True


def publish(
        model_dir: Union[str, Path],
        repo_id: str,
        revision: Optional[str] = None,
        dry_run: bool = False,
        out: Optional[Union[str, Path]] = None,
        eval_results: Union[None, Dict[str, Any], Sequence[Dict[str, Any]]] = None,
        recipe: Optional[str] = None,
        private: bool = False,
        token: Optional[str] = None,
        commit_message: Optional[str] = None,
        license: Optional[str] = None,
        dataset: Optional[str] = None,
        use_ema: bool = False,
) -> PublishResult:
    """Publish the model folder ``model_dir`` to the Hugging Face Hub repository ``repo_id``.

    Args:
        model_dir: a folder with ``model.safetensors`` and ``config.json`` (from ``convert-official``,
            ``bnas-train`` or timm's ``save_for_hf``).
        repo_id: ``ORG/NAME``; created if needed (``private`` makes a new one private).
        revision: the branch to publish to (created if needed; default main).
        dry_run: write the folder to ``out`` and upload nothing (``out`` is then required); otherwise ``out``,
            if given, receives a copy of what is uploaded.
        eval_results: results for the card, replacing a run's own: one dict or a list of dicts with ``top1``,
            ``top5`` (percent), ``dataset``, ``split``, ``images``, ``command`` and ``source`` ('measured' needs
            the ``command``; 'reported' for the paper's or the authors' figures, with ``reference``).
        recipe: one paragraph on how the weights were trained, for the card.
        token: a Hugging Face token (default: huggingface_hub's, from ``HF_TOKEN`` or ``hf auth login``); never
            printed.
        commit_message: default "Upload ARCH weights from DIR (bnas_zoo)".
        license: a Hub licence id for the weights. Default: ``apache-2.0`` for weights trained with bnas_zoo, none
            for weights converted from the authors' release (they state no licence).
        dataset: the training dataset's name for the card (default: the one a bnas-train run recorded).
        use_ema: publish the EMA weights of a bnas-train run folder (``checkpoint_ema.safetensors``, written
            with ``--model-ema``) and their measured top-1, instead of its best ``model.safetensors``.

    Needs the network unless ``dry_run``. Publishing files that the repository already holds uploads nothing
    (status 'unchanged'). Raises :class:`~bnas_zoo.errors.BnasError` for bad arguments, an unreadable folder or
    a failed upload (nothing half-uploaded is reported as done). Returns a :class:`PublishResult`.
    """
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise BnasError(f'--repo-id {repo_id!r}: {e}') from None
    if '/' not in repo_id:
        raise BnasError(f'--repo-id {repo_id!r}: expected ORG/NAME')
    if dry_run:
        if out is None:
            raise BnasError('--dry-run needs --output DIR (the folder that would be uploaded)')
        folder = build_publish_folder(model_dir, out, repo_id, eval_results, recipe, license, dataset, use_ema)
        return PublishResult(repo_id, folder, 'dry-run', files=sorted(p.name for p in folder.iterdir()))
    with tempfile.TemporaryDirectory(prefix='bnas_publish_') as tmp:
        folder = build_publish_folder(model_dir, Path(tmp) / 'upload', repo_id, eval_results, recipe, license,
                                      dataset, use_ema)
        if out is not None:
            output_folder(out, '--output')
            shutil.copytree(folder, out, dirs_exist_ok=True)
        api = HfApi(token=token)
        try:
            api.create_repo(repo_id, repo_type='model', private=private, exist_ok=True)
            if revision:
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            if _unchanged(api, repo_id, revision, folder):
                return PublishResult(repo_id, None, 'unchanged', files=list(PUBLISHED_FILES))
            arch = json.loads((folder / 'config.json').read_text())['architecture']
            info = api.upload_folder(
                repo_id=repo_id, folder_path=str(folder), revision=revision,
                allow_patterns=list(PUBLISHED_FILES),
                commit_message=commit_message or f'Upload {arch} weights from {Path(model_dir).resolve().name} (bnas_zoo)')
        except HfHubHTTPError as e:
            # the message of huggingface_hub's errors never holds the token
            raise BnasError(f'publishing to {repo_id} failed: {str(e).splitlines()[0]}') from None
        except (OSError, ConnectionError) + _network_errors() as e:
            raise BnasError(f'publishing to {repo_id} failed: the Hugging Face Hub could not be reached '
                            f'({type(e).__name__}: {first_line(e)}); nothing was uploaded') from None
        return PublishResult(repo_id, None, 'uploaded', commit_url=str(getattr(info, 'commit_url', info)),
                             files=list(PUBLISHED_FILES))


def load_1bit_from_hub(repo_id: str, revision: Optional[str] = None, cache_dir: Optional[Union[str, Path]] = None,
                       **create_kwargs):
    """Download ``model-1bit.safetensors`` of the Hub repository ``repo_id`` (``ORG/NAME``; ``revision``: a
    branch, tag or commit, default main; ``cache_dir``: huggingface_hub's cache, default its own) and rebuild
    the model from that file alone, with :func:`bnas_zoo.load_1bit` (``create_kwargs`` go to it: ``deploy=True``
    for the fast packed-bit network, ``num_classes`` etc.). The result is for inference only (see
    :func:`bnas_zoo.load_1bit`); for training or fine-tuning load the float weights with
    ``timm.create_model('hf-hub:ORG/NAME', pretrained=True)``. Raises :class:`~bnas_zoo.errors.CheckpointError`
    when the file cannot be downloaded (offline, no such repository or revision) or is not a valid 1-bit file.
    """
    try:
        path = hf_hub_download(repo_id, 'model-1bit.safetensors', revision=revision, cache_dir=cache_dir)
    except (HfHubHTTPError, HFValidationError, OSError, ConnectionError) + _network_errors() as e:
        raise CheckpointError(f'{repo_id}: model-1bit.safetensors could not be downloaded from the Hugging Face Hub '
                              f'({type(e).__name__}: {first_line(e)})') from None
    return load_1bit(path, **create_kwargs)


def _network_errors() -> tuple:
    """The transport errors of the HTTP client huggingface_hub uses (httpx or requests)."""
    errors = []
    for module, name in (('httpx', 'HTTPError'), ('requests', 'RequestException')):
        try:
            errors.append(getattr(__import__(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)
