"""How srjax writes: outputs checked against the inputs and what exists, an exclusive
lock per output, replacement by rename only, and interrupts deferred across saves.

Nothing srjax did not write is ever deleted or replaced, and an output under its
final name is either the old complete one or the new complete one: a new output is
built under ``.NAME.partial``; the old one is renamed aside to ``.NAME.replaced``
before the new one is renamed into place, and only then deleted.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

from srjax.errors import SrjaxError


def absolute(path: str | Path) -> Path:
    """``path`` made absolute with ``.`` and ``..`` resolved, so every output has a real name."""
    text = str(path)
    text = text[len("file://"):] if text.startswith("file://") else text
    return Path(os.path.abspath(os.path.expanduser(text)))


def sibling(path: Path, tag: str) -> Path:
    return path.with_name(f".{path.name}.{tag}")


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def replace(new: Path, path: Path) -> None:
    """Move ``new`` onto ``path``; an old ``path`` is renamed aside first, never deleted in place."""
    aside = sibling(path, "replaced")
    remove(aside)
    if path.exists() or path.is_symlink():
        os.replace(path, aside)
    os.replace(new, path)
    remove(aside)


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary sibling of ``path`` (file or directory); it replaces ``path`` only on success."""
    path = absolute(path)
    tmp = sibling(path, "partial")
    remove(tmp)
    try:
        yield tmp
        with deferred_interrupts():
            replace(tmp, path)
    finally:
        remove(tmp)


# Where an output srjax wrote says so: an OME-Zarr's attributes, a quantify or sample directory's summary.
SIGNED_FILES = (".zattrs", "summary.json")


def written_by_srjax(path: Path) -> bool:
    """Whether ``path`` is an output srjax wrote (one of its ``SIGNED_FILES`` says so)."""
    for name in SIGNED_FILES:
        try:
            attributes = json.loads((path / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(attributes, dict) and isinstance(attributes.get("srjax"), dict) \
                and "written_by" in attributes["srjax"]:
            return True
    return False


def _inside(path: Path, other: Path) -> bool:
    return path == other or other in path.parents


def check_disjoint(out: Path, inputs: dict[str, Path | None], what: str = "--out") -> None:
    """Refuse an output that is, is inside or contains one of the ``inputs``."""
    real = absolute(out).resolve()
    for name, path in inputs.items():
        if path is None:
            continue
        source = absolute(path).resolve()
        if _inside(real, source) or _inside(source, real):
            relation = "is" if real == source else "is inside" if _inside(real, source) else "contains"
            raise SrjaxError(f"{what} {out} {relation} the {name} {path}; choose an output path outside it")


def check_output(out: Path, inputs: dict[str, Path | None], overwrite: bool = False, what: str = "--out") -> None:
    """Refuse an output that overlaps an input (``check_disjoint``), or that would replace
    something srjax did not write (or anything at all without ``overwrite``)."""
    check_disjoint(out, inputs, what)
    if not (out.exists() or out.is_symlink()):
        return
    if not written_by_srjax(out):
        raise SrjaxError(f"{what} {out} already exists and was not written by srjax; srjax will not replace it: "
                         "choose another path, or move it away yourself")
    if not overwrite:
        raise SrjaxError(f"{what} {out} already exists; pass --overwrite to replace it once the new one is complete")


def check_parent_writable(out: Path, what: str = "--out") -> None:
    """Refuse early when ``out`` cannot be created: a parent that is a file, or not writable."""
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise SrjaxError(f"{what} {out} cannot be created: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SrjaxError(f"{what} {out} cannot be created: {parent} is not writable")


@contextlib.contextmanager
def exclusive(lock_path: Path, what: str):
    """Hold an exclusive lock on ``lock_path`` for the block, or refuse at once, naming the holder.

    The lock is ``flock`` on the file, so the kernel releases it when its holder dies,
    however it dies; the file is removed on the way out.
    """
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise SrjaxError(f"cannot create {lock_path}: {err.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 1024, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise SrjaxError(f"{what} is in use by {holder}; wait for it to finish, or choose another output") from None
        try:
            same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:  # the previous holder removed it after we opened it
            same = False
        if same:
            break
        os.close(fd)
    command = " ".join(["srjax", *sys.argv[1:]]) if sys.argv and sys.argv[0].endswith(("srjax", "cli.py")) else "srjax"
    os.ftruncate(fd, 0)
    os.pwrite(fd, (f"process {os.getpid()} on {socket.gethostname()} ({command}), "
                   f"since {time.strftime('%Y-%m-%d %H:%M:%S')}\n").encode(), 0)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path)
        os.close(fd)


@contextlib.contextmanager
def claim_output(out: Path, inputs: dict, overwrite: bool = False):
    """Check an output path (``check_output``), make its parent and hold its lock for the block."""
    check_output(out, inputs, overwrite)
    check_parent_writable(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SrjaxError(f"{out} cannot be created: {err.strerror}") from None
    with exclusive(sibling(out, "lock"), str(out)):
        yield


_interrupted = []  # set once Ctrl-C or SIGTERM arrives; long loops check it between steps


def interrupt(number=None, frame=None) -> None:
    """The CLI's SIGINT/SIGTERM handler: remember the interrupt, and stop here.

    Some library code (threads, iterators) can swallow the KeyboardInterrupt raised
    here; ``check_interrupt`` between steps raises it again where nothing can."""
    _interrupted.append(number)
    raise KeyboardInterrupt


def check_interrupt() -> None:
    if _interrupted:
        raise KeyboardInterrupt


@contextlib.contextmanager
def deferred_interrupts():
    """Hold Ctrl-C (and SIGTERM) back until the block is done: a save or a rename is never cut short.

    Outside the main thread signals cannot be handled, and the block runs as it is.
    """
    try:
        previous = {sig: signal.signal(sig, lambda number, frame: _interrupted.append(number))
                    for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        check_interrupt()


def plain_json(value):
    """``value`` with every non-finite float as None and numpy scalars as Python ones: valid JSON."""
    if isinstance(value, dict):
        return {str(key): plain_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(item) for item in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, payload) -> None:
    """Write ``payload`` as JSON (strictly valid: NaN and Inf become null), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(plain_json(payload), indent=2, allow_nan=False) + "\n")
