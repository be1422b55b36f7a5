"""Writing a file atomically: into a temporary file beside it, flushed to disk, then renamed over it.

A reader, or a run killed mid-write, sees either the previous file or the complete new one, never a part.
The temporary file lies in the target's folder, since a rename is atomic only within one file system, under
a hidden name that no other writer picks (`.<name>.<random hex>.tmp`), and it is removed when writing fails.
The writer creates it, so it gets the permissions of any file opened there.
"""

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_write_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write to, e.g. by safetensors' `save_file(tensors, temporary)`.

    When the block ends without error, the temporary file is flushed to disk (fsync) and renamed over `path`;
    when it raises, the temporary file is removed and `path` is left as it was. The folder must exist.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        yield temporary
        with open(temporary, "rb") as file:
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_bytes_atomically(path: str | os.PathLike, data: bytes) -> None:
    """Replace `path` by a file holding `data`, atomically (see `atomic_write_path`)."""
    with atomic_write_path(path) as temporary:
        temporary.write_bytes(data)


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    """Replace `path` by a UTF-8 file holding `text`, atomically."""
    write_bytes_atomically(path, text.encode("utf-8"))


def write_json_atomically(path: str | os.PathLike, payload: Any) -> None:
    """Replace `path` by `payload` as JSON (indent 2, keys in their order, a final newline), atomically."""
    write_text_atomically(path, json.dumps(payload, indent=2) + "\n")


def replace_directory(complete: str | os.PathLike, final: str | os.PathLike) -> None:
    """Rename the finished folder `complete` to `final`, replacing any previous `final`.

    The old folder is first renamed aside (under a hidden name no other writer picks) and deleted after, so at
    every instant `final` is either the old folder or the complete new one. Both must be on one file system.
    """
    complete, final = Path(complete), Path(final)
    previous = final.with_name(f".{final.name}.previous-{uuid.uuid4().hex}")
    if final.exists():
        os.replace(final, previous)
    os.replace(complete, final)
    shutil.rmtree(previous, ignore_errors=True)


__all__ = [
    "atomic_write_path",
    "replace_directory",
    "write_bytes_atomically",
    "write_json_atomically",
    "write_text_atomically",
]
