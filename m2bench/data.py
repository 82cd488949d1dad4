"""Where data lives and how its identity is checked.

Tasks read from three places: the hub (through ``datasets``; online, or offline from the HF cache),
a user's ``--data-dir``, or the small real sample bundled in ``tasks/data/<name>`` (``--sample``).
Every load reports provenance (source, revision or sha256) that the run logs as tags.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from m2bench.errors import DataError

SAMPLE_ROOT = Path(__file__).resolve().parent.parent / "tasks" / "data"


def data_root() -> Path | None:
    """``$M2BENCH_DATA`` if set: a folder searched for task data before the hub."""
    root = os.environ.get("M2BENCH_DATA")
    return Path(root) if root else None


def dir_source(path: str | Path) -> str:
    """The ``data_source`` tag of local data: ``dir:<path>``, relative to the repository when the
    files are inside it (so records of bundled data do not carry one machine's checkout path)."""
    resolved = Path(path).resolve()
    root = SAMPLE_ROOT.parent.parent
    try:
        return f"dir:{resolved.relative_to(root)}"
    except ValueError:
        return f"dir:{resolved}"


def sample_dir(name: str) -> Path:
    """Folder of a bundled sample, ``tasks/data/<name>``."""
    return SAMPLE_ROOT / name


def sha256(path: Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_files(folder: Path, expected: tuple[tuple[str, str], ...]) -> str:
    """Check each ``(file, sha256)`` of ``expected`` in ``folder``; return a combined digest.

    Raises:
        DataError: a file is missing or its checksum differs.
    """
    combined = hashlib.sha256()
    for name, digest in expected:
        path = folder / name
        if not path.is_file():
            raise DataError(
                f"sample file {path} is missing; restore it with `git checkout -- {path}`"
            )
        actual = sha256(path)
        if actual != digest:
            raise DataError(
                f"sample file {path} has sha256 {actual[:12]}..., expected {digest[:12]}...; "
                f"restore it with `git checkout -- {path}`"
            )
        combined.update(f"{name}:{digest}\n".encode())
    return combined.hexdigest()


def files_digest(paths: list[Path]) -> str:
    """One sha256 over the names and contents of ``paths`` (the identity of a local data set)."""
    combined = hashlib.sha256()
    for p in sorted(paths):
        combined.update(f"{p.name}:{sha256(p)}\n".encode())
    return combined.hexdigest()


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """Forbid hub access inside the block (``HF_DATASETS_OFFLINE``/``HF_HUB_OFFLINE``)."""
    keys = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def is_offline() -> bool:
    """Whether hub access is switched off in this process."""
    return any(
        os.environ.get(k, "0") not in ("0", "", "false")
        for k in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
    )


def hub_commit(repo: str, revision: str, *, repo_type: str = "dataset") -> str | None:
    """The commit sha that ``revision`` of hub ``repo`` resolves to (``None`` offline)."""
    if is_offline():
        return None
    try:
        from huggingface_hub import HfApi

        return HfApi().repo_info(repo, revision=revision, repo_type=repo_type).sha
    except Exception:  # offline, gated or rate-limited: callers log a fingerprint instead
        return None
