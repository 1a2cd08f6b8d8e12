"""Resolving files that live on the Hugging Face Hub or on disk, with clear errors.

Every Hub access of drasp goes through here, so offline mode (``HF_HUB_OFFLINE=1``), the cache
and the error messages behave the same for pretrained backbone weights and for drasp models.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from .errors import CheckpointError


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def hub_file(repo_id: str, filename: str, revision: str | None = None) -> Path:
    """Download (or find in the cache) one file of a Hub repository.

    Raises :class:`CheckpointError` with what to do when the Hub cannot be reached and the file
    is not cached, or when the repository, revision or file does not exist.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{repo_id}/{filename}" + (f"@{revision}" if revision else "")
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename, revision=revision))
    except LocalEntryNotFoundError:
        raise CheckpointError(
            f"{where}: not in the local Hugging Face cache and the Hub cannot be reached "
            "(offline, or HF_HUB_OFFLINE=1); download it on a connected machine first, or pass a local path"
        ) from None
    except RepositoryNotFoundError:
        raise CheckpointError(f"{where}: no such Hub repository (or it is private: log in with `hf auth login`)") from None
    except RevisionNotFoundError:
        raise CheckpointError(f"{where}: no such revision in the Hub repository") from None
    except EntryNotFoundError:
        raise CheckpointError(f"{where}: no such file in the Hub repository") from None
    except (HfHubHTTPError, OSError) as e:
        raise CheckpointError(f"{where}: could not be fetched from the Hub: {e}") from None


def resolve_weights(source) -> Path:
    """The local path of a :class:`~drasp_cli.backbones.base.WeightsSource`, checked against
    its ``sha256`` when one is recorded."""
    if source.path:
        path = Path(source.path).expanduser()
        if not path.is_file():
            raise CheckpointError(f"{path}: weights file not found")
    elif source.repo_id and source.filename:
        path = hub_file(source.repo_id, source.filename, source.revision)
    else:
        raise CheckpointError("weights source names neither a local path nor a Hub repo_id + filename")
    if source.sha256 and sha256_of(path) != source.sha256:
        raise CheckpointError(f"{path}: SHA-256 differs from the one the model was made with ({source.sha256[:12]}…)")
    return path
