"""What ``hpo.storage.check_storage`` asks of an SQLite file before anything is written: that it
can be read, is sound and is Optuna's, and, for a command that writes, that SQLite will be able
to write the file and its ``-wal``/``-shm`` (or ``-journal``) files beside it.

Every refusal is a one-line ValueError. The file is only looked at: through a connection that
cannot write (``connect_read_only``), and permissions with ``os.access``, which answers for the
user running the command (root passes every permission check).
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from pathlib import Path

from hpo._sqlite_storage import connect_read_only

SQLITE_HEADER = b"SQLite format 3\x00"


def check_sqlite_file(path: Path, *, create: bool, make_folder: bool, shown_url: str) -> bool:
    """Refuses ``path`` unless it can be an Optuna storage, without changing anything.

    Args:
        path: The database file.
        create: The command writes: a missing file may be created, and the file (if any) and
            its folder must be writable.
        shown_url: The storage URL as messages show it (password masked).
        make_folder: A missing folder is made by the command (the default ``studies/``); its
            nearest existing parent must then be writable.

    Returns:
        Whether there is a database to read (a non-empty file).

    Raises:
        ValueError: If the path is a folder or cannot be looked at, the file is missing (and
            ``create`` is False), its folder is missing, it or its folder is not writable (and
            ``create`` is True), it is not an SQLite database, it is damaged, or it is a
            database of something other than Optuna.
    """
    shown = repr(str(path))
    exists = _exists(path, shown)
    if exists and path.is_dir():
        raise ValueError(f"Storage file {shown} is a folder, not an SQLite database file.")
    if not exists:
        if not create:
            raise ValueError(f"Storage {shown_url} does not exist.")
        folder = path.parent
        if not folder.is_dir():
            if not make_folder:
                raise ValueError(f"Storage folder {str(folder)!r} does not exist.")
            folder = _existing_parent(folder)
        _check_writable_folder(folder, path)
        return False
    if not os.access(path, os.R_OK):
        raise ValueError(f"Storage file {shown} is not readable by this user.")
    if create:
        check_writable(path)
    if path.stat().st_size == 0:
        return False
    with open(path, "rb") as f:
        header = f.read(len(SQLITE_HEADER))
    if header != SQLITE_HEADER:
        raise ValueError(f"Storage file {shown} is not an SQLite database.")
    tables, damage = _look(path, shown)
    if damage is not None:
        raise ValueError(
            f"Storage file {shown} is damaged (SQLite's quick_check: {damage}); restore it from "
            "a copy."
        )
    if tables and "studies" not in tables:
        raise ValueError(
            f"Storage file {shown} is a database of something else "
            f"(tables {sorted(tables)[:5]}), not an Optuna storage."
        )
    return bool(tables)


def check_writable(path: Path) -> None:
    """Refuses a database file (existing or not) that SQLite could not write for this user.

    Raises:
        ValueError: If the file or its folder is not writable.
    """
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(
            f"Storage file {str(path)!r} is read-only for this user, and this command writes to it."
        )
    _check_writable_folder(path.parent, path)


def _exists(path: Path, shown: str) -> bool:
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as e:  # a folder on the way that may not be searched, ...
        raise ValueError(f"Storage file {shown} cannot be looked at: {e.strerror}.") from e
    return True


def _existing_parent(folder: Path) -> Path:
    """The nearest folder above ``folder`` (itself missing) that exists."""
    for parent in folder.absolute().parents:
        if parent.is_dir():
            return parent
    return Path("/")


def _check_writable_folder(folder: Path, path: Path) -> None:
    # SQLite creates -wal and -shm (WAL mode) or -journal files beside the database.
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(
            f"Storage folder {str(folder)!r} is not writable by this user, and this command "
            f"writes {path.name} and its -wal/-shm files there."
        )


def _look(path: Path, shown: str) -> tuple[set[str], str | None]:
    """The file's tables, and the first problem SQLite's quick_check finds (None if sound).

    ``quick_check`` reads every page (about 2 ms for a 100-trial study of 0.8 MB), so a damaged
    page in the middle is found here rather than by a trial's write, halfway through a search.
    """
    try:
        with closing(connect_read_only(path)) as con:
            tables = {
                row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            problems = [row[0] for row in con.execute("PRAGMA quick_check(1)")]
    except sqlite3.DatabaseError as e:
        raise ValueError(f"Storage file {shown} is not a readable SQLite database: {e}.") from e
    if problems == ["ok"]:
        return tables, None
    # The first problem, on one line: "*** in database main ***\nPage 2: ..." -> "Page 2: ...".
    lines = [line for line in "\n".join(problems).splitlines() if not line.startswith("***")]
    return tables, "; ".join(lines[:1]) or "no answer"
