"""Whether the registered models' weights are published on the Hugging Face Hub (for ``bnas-zoo list``)."""
from __future__ import annotations

import socket
from typing import Dict, Iterable
from urllib.parse import urlparse

__all__ = ['weights_status']

WEIGHTS_FILE = 'model.safetensors'


def _hub_reachable(timeout: float) -> bool:
    from huggingface_hub import constants
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == 'https' else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def weights_status(repo_ids: Iterable[str], timeout: float = 3.0) -> Dict[str, str]:
    """``repo_id -> 'published' | 'not published' | 'unknown (...)'``: asks the Hub whether each repository
    (``ORG/NAME``, or ``ORG/NAME@REVISION`` for that revision) holds ``model.safetensors``; 'unknown' in offline
    mode (``HF_HUB_OFFLINE=1``) or when the Hub cannot be reached (one quick connection attempt, then no further
    traffic)."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub import errors as hf_errors
    repo_ids = list(repo_ids)
    if constants.HF_HUB_OFFLINE:
        return {r: 'unknown (offline mode)' for r in repo_ids}
    if not _hub_reachable(timeout):
        return {r: 'unknown (Hub unreachable)' for r in repo_ids}
    api = HfApi(endpoint=constants.ENDPOINT)
    out = {}
    for repo in repo_ids:
        try:
            name, _, revision = repo.partition('@')
            out[repo] = 'published' if api.file_exists(name, WEIGHTS_FILE, revision=revision or None) else 'not published'
        except (hf_errors.RepositoryNotFoundError, hf_errors.RevisionNotFoundError, hf_errors.GatedRepoError):
            out[repo] = 'not published'
        except Exception as e:  # noqa: BLE001 - any other answer: say so, do not guess
            out[repo] = f'unknown ({type(e).__name__})'
    return out
