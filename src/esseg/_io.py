"""Safe file output: atomic writes (a temporary file in the target folder, then ``os.replace``),
strict JSON, output paths checked before the work starts, and clean-up of stale temporary files.

A temporary file of :func:`atomic_write` is named ``.<target name>.<random>.tmp`` next to the
target; :func:`clean_stale_temps` removes such leftovers of a killed process.
"""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Callable

from esseg.errors import EssegError

TEMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary path next to ``path``, then move it into place.

    A reader never sees a half-written file, and a failed ``write`` leaves ``path`` as it was
    (and removes the temporary file). The file gets the usual permissions (``0o666`` minus the
    umask), not ``mkstemp``'s 0600. A write that fails for lack of space raises ``OSError``
    naming ``path`` (also when the writer, like ``torch.save``, reports it as a RuntimeError).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as err:
        if err.filename in (None, tmp):  # name the file the user asked for, not our temporary one
            raise OSError(err.errno, err.strerror or str(err), str(path)) from None
        raise
    except RuntimeError as err:  # torch.save's zip writer: "[enforce fail ...] unexpected pos ..."
        if "inline_container" not in str(err) and "file write failed" not in str(err):
            raise
        raise OSError(errno.EIO, "writing failed (is the disk full or a file size limit set?)", str(path)) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def finite_or_none(value):
    """``value`` with every NaN/inf float (also inside lists, tuples and dicts) replaced by ``None``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def json_dumps(value, **kwargs) -> str:
    """Standard JSON (RFC 8259): non-finite floats become ``null`` instead of ``NaN``/``Infinity``."""
    return json.dumps(finite_or_none(value), allow_nan=False, **kwargs)


def clean_stale_temps(folder: str | Path) -> list[Path]:
    """Delete the temporary files (``.<name>.<random>.tmp``) that a killed :func:`atomic_write` left
    in ``folder``; return them. Call it only where no other process is writing into ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.glob(f".*{TEMP_SUFFIX}") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def _probe_dir(folder: Path, what: str) -> None:
    """Create and delete a file in ``folder`` (the nearest existing one is checked if it is missing)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise EssegError(f"{what} {folder} cannot be created: {existing} is a file, not a folder; choose another path")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".esseg-probe.", suffix=TEMP_SUFFIX, dir=existing)
    except OSError as err:
        reason = err.strerror or str(err)
        raise EssegError(f"{what} {folder} is not writable ({reason} in {existing}); choose another path or fix its permissions") from None
    os.close(fd)
    os.unlink(tmp)


def check_output_dir(path: str | Path, what: str = "output folder") -> Path:
    """Check, before any work, that folder ``path`` can be written (it may not exist yet).

    Raises:
        EssegError: ``path`` is a file, lies under a file, or is not writable (permissions, read-only
            file system).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise EssegError(f"{what} {path} is a file, not a folder; choose a folder path")
    _probe_dir(path, what)
    return path


def check_output_file(path: str | Path, what: str = "output file") -> Path:
    """Check, before any work, that file ``path`` can be written (its folder may not exist yet).

    Raises:
        EssegError: ``path`` is a folder, its folder is a file, or it is not writable.
    """
    path = Path(path)
    if path.is_dir():
        raise EssegError(f"{what} {path} is a folder; give a file path (e.g. {path / 'metrics.json'})")
    _probe_dir(path.parent, f"folder of {what}")
    return path


__all__ = [
    "atomic_write", "atomic_write_bytes", "atomic_write_text", "check_output_dir", "check_output_file",
    "clean_stale_temps", "finite_or_none", "json_dumps",
]
