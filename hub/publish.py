"""Publishing a bnas_zoo model folder to the Hugging Face Hub, and loading the 1-bit file back.

A model folder (``convert-official``'s output, a training run, timm's ``save_for_hf``) holds
``model.safetensors`` and ``config.json``. Publishing writes, then uploads through huggingface_hub:

- ``model.safetensors``: the latent float weights;
- ``model-1bit.safetensors``: the exact deployable form (see :mod:`bnas_zoo.packing`);
- ``config.json``: timm's format, whose ``model_args`` carry the architecture and the genotype itself;
- ``README.md``: the model card.

Tokens come from huggingface_hub's usual sources (``HF_TOKEN``, ``huggingface-cli login``) or the ``token``
argument, and are never printed. Publishing the same files twice uploads nothing the second time.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError
from huggingface_hub.utils import HFValidationError, validate_repo_id

from bnas_zoo.errors import BnasError, CheckpointError, ModelConfigError, first_line
from bnas_zoo.files import output_folder
from bnas_zoo.packing import load_1bit, save_1bit
from bnas_zoo.profile import profile_model

from .card import build_model_card

__all__ = ['PublishResult', 'build_publish_folder', 'publish', 'load_model_folder', 'load_1bit_from_hub',
           'PUBLISHED_FILES']

PUBLISHED_FILES = ('model.safetensors', 'model-1bit.safetensors', 'config.json', 'README.md')
EVAL_KEYS = {'dataset', 'split', 'top1', 'top5', 'command'}


@dataclass
class PublishResult:
    repo_id: str
    folder: Optional[Path]
    status: str                      # 'dry-run', 'uploaded' or 'unchanged'
    commit_url: Optional[str] = None
    files: List[str] = field(default_factory=list)


def load_model_folder(model_dir: Union[str, Path]):
    """Build the model of a folder (config.json + model.safetensors), with clear errors."""
    import bnas_zoo  # noqa: F401  (registers the architectures)
    from bnas_zoo.registry import create_checked, read_model_folder
    model_dir = Path(model_dir)
    config = read_model_folder(model_dir)
    arch = config['architecture']
    try:
        model = create_checked(f'local-dir:{model_dir}', pretrained=True)
    except ModelConfigError as e:
        raise CheckpointError(f'{model_dir}: cannot build {arch}: {e}') from None
    return model.eval(), config


def _dataset_of(model) -> str:
    return 'cifar10' if model.stem_type == 'cifar' else 'imagenet-1k'


def _check_eval_results(eval_results: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    if eval_results is None:
        return None
    if not isinstance(eval_results, dict):
        raise BnasError(f'eval results: a JSON {type(eval_results).__name__}; expected an object with '
                        f"{', '.join(sorted(EVAL_KEYS))}")
    unknown = set(eval_results) - EVAL_KEYS
    if unknown:
        raise BnasError(f"eval results: unknown field(s) {', '.join(sorted(unknown))}; expected {', '.join(sorted(EVAL_KEYS))}")
    for key in ('top1', 'top5'):
        if key in eval_results and not isinstance(eval_results[key], (int, float)):
            raise BnasError(f"eval results: field '{key}' is {eval_results[key]!r}; expected a number (percent)")
    return eval_results


def build_publish_folder(
        model_dir: Union[str, Path],
        out_dir: Union[str, Path],
        repo_id: str,
        eval_results: Optional[Dict[str, Any]] = None,
        recipe: Optional[str] = None,
        license: str = 'apache-2.0',
) -> Path:
    """Write exactly the folder that :func:`publish` uploads (the files of :data:`PUBLISHED_FILES`)."""
    from timm.models import save_for_hf

    eval_results = _check_eval_results(eval_results)
    model, source_config = load_model_folder(model_dir)
    out_dir = output_folder(out_dir, '--out')
    save_for_hf(model, str(out_dir), model_args=model.architecture_args(), safe_serialization=True)
    config = json.loads((out_dir / 'config.json').read_text())
    save_1bit(model, out_dir / 'model-1bit.safetensors', config=config)
    card = build_model_card(
        repo_id, config['architecture'], profile_model(model, name=config['architecture']), _dataset_of(model),
        eval_results=eval_results, recipe=recipe or source_config.get('bnas_recipe'), license=license,
        float_bytes=(out_dir / 'model.safetensors').stat().st_size,
        bit_bytes=(out_dir / 'model-1bit.safetensors').stat().st_size)
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
        eval_results: Optional[Dict[str, Any]] = None,
        recipe: Optional[str] = None,
        private: bool = False,
        token: Optional[str] = None,
        commit_message: Optional[str] = None,
        license: str = 'apache-2.0',
) -> PublishResult:
    """Publish a model folder to ``repo_id`` (created if needed); ``dry_run`` only writes ``out``."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise BnasError(f'--repo-id {repo_id!r}: {e}') from None
    if '/' not in repo_id:
        raise BnasError(f'--repo-id {repo_id!r}: expected ORG/NAME')
    if dry_run:
        if out is None:
            raise BnasError('--dry-run needs --out DIR (the folder that would be uploaded)')
        folder = build_publish_folder(model_dir, out, repo_id, eval_results, recipe, license)
        return PublishResult(repo_id, folder, 'dry-run', files=sorted(p.name for p in folder.iterdir()))
    with tempfile.TemporaryDirectory(prefix='bnas_publish_') as tmp:
        folder = build_publish_folder(model_dir, Path(tmp) / 'upload', repo_id, eval_results, recipe, license)
        if out is not None:
            output_folder(out, '--out')
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
    """Download ``model-1bit.safetensors`` of ``repo_id`` and rebuild the model from it alone."""
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
