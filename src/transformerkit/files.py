"""Writing files atomically: the one way every writer in the library puts a file or folder on disk.

Everything is written under a temporary name beside its target and renamed into place only once it
is complete and on disk, so a reader (or a crash, a full disk, Ctrl-C) sees the old file or the new
one, never half of one. A failure removes the temporary and leaves the old file as it was.

- ``atomic_write(path, data)``: one file from a str or bytes.
- ``atomic_path(path)``: one file written by someone else's writer (``torch.save``, ``savefig``).
- ``atomic_files(directory)``: several files replaced together; other files in the folder are kept.
- ``atomic_folder(path)``: a whole folder (a checkpoint, an unpacked asset) replaced at once.

Temporaries are hidden (``.NAME.tmp-XXXX``) and created with the process's umask, like any new file.
"""
from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temp_name(path: Path) -> Path:
    """A fresh hidden name beside ``path``: same folder, so the final rename is atomic."""
    return path.parent / f".{path.name}.tmp-{secrets.token_hex(4)}"


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; on success it replaces ``path``.

    The temporary file already exists (empty); writers that open by name may overwrite it.
    Writers that pick a format from the suffix (matplotlib) must be told the format.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))   # 0o666: the umask decides, as for open()
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, data: str | bytes, encoding: str = "utf-8") -> Path:
    """Write ``data`` (text as ``encoding``, or bytes) to ``path`` atomically; return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode(encoding) if isinstance(data, str) else data)
    return Path(path)


@contextmanager
def atomic_files(directory: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder inside ``directory``; on success each file written there replaces
    the file of that name in ``directory``. Other files in ``directory`` are kept.

    Nothing is replaced before every file is complete, so a failure midway (a full disk while
    writing the weights) leaves all the old files as they were.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(directory / "files")
    tmp.mkdir()
    try:
        yield tmp
        written = [p for p in tmp.iterdir() if p.is_file()]
        for p in written:
            _fsync(p)
        for p in written:
            os.replace(p, directory / p.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_folder(path: str | os.PathLike, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary folder beside ``path`` to fill; on success it takes the place of ``path``.

    An existing ``path`` is moved to ``PATH.old`` for the moment between the two renames and then
    removed; ``recover_folder`` takes it back after a crash in that moment. With ``replace=False``
    an existing ``path`` is kept and the new folder discarded (another process finished the same
    work first).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.with_name(path.name + ".old")
    tmp = temp_name(path)
    tmp.mkdir()
    try:
        yield tmp
        # On disk before the rename publishes them, else a power cut can publish empty files.
        for p in tmp.rglob("*"):
            if p.is_file():
                _fsync(p)
        if replace:
            shutil.rmtree(old, ignore_errors=True)
            if path.exists():
                os.rename(path, old)
        try:
            os.rename(tmp, path)
        except OSError:
            if old.exists() and not path.exists():
                os.rename(old, path)
            elif not replace and path.is_dir():
                return                # another process's complete copy won the race: keep it
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)


def recover_folder(path: str | os.PathLike) -> None:
    """Tidy what a killed ``atomic_folder(path)`` left: remove its temporary folders, and take
    ``PATH.old`` back when a crash came between the two renames. Only for a folder that no other
    process is writing at the same time (a run's checkpoint)."""
    path = Path(path)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    old = path.with_name(path.name + ".old")
    if not path.exists() and old.exists():
        os.rename(old, path)


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())
