"""Storages that cannot be used: every command refuses them in one line with exit code 2 and
changes nothing; storages that can only be read are read by every command that only reads, and
leave nothing beside them.

The read-only cases need a user who cannot write: root passes every permission check. As root,
those commands run as ``nobody`` with only CAP_DAC_READ_SEARCH (it reads everything, root's
Python under /root included, and writes nowhere the permission bits forbid), via setpriv.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hpo import best_params, narrow, report, search, trial_config
from hpo import export as export_cli
from hpo import train as train_cli

from .conftest import copy_db, db_checksum
from .pg import PASSWORD

TINY = ["--train-size", "100", "--epochs", "3", "-q"]
NOBODY = 65534
AS_NOBODY = [
    "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
    "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search", "--",
]  # fmt: skip
LIBRARY = """
import sys
from hpo import {function}
try:
    {function}({url!r}, "tiny")
except ValueError as e:
    print(f"ValueError: {{e}}", file=sys.stderr)
    sys.exit(2)
"""


def argv(command: str, url: str, out: Path) -> list[str]:
    """The command line of ``command`` on study ``tiny`` of ``url``."""
    return {
        "search": ["--storage", url, "--study", "tiny", "--trials", "1", "--jobs", "1", *TINY],
        "narrow": ["--storage", url, "--study", "tiny", "-q"],
        "report": ["--storage", url, "--study", "tiny", "--out", str(out), "-q"],
        "export": ["--storage", url, "--study", "tiny"],
        "train": ["--storage", url, "--study", "tiny", "-q"],
    }[command]


MAINS = {
    "search": search.main,
    "narrow": narrow.main,
    "report": report.main,
    "export": export_cli.main,
    "train": train_cli.main,
}
LIBRARY_FUNCTIONS = {"best_params": best_params, "trial_config": trial_config}
COMMANDS = [*MAINS, *LIBRARY_FUNCTIONS]
WRITERS = {"search", "narrow"}


def _cannot_switch_user() -> str | None:
    if os.geteuid() != 0:
        return None  # a user, not root: permission bits apply to us already
    if shutil.which("setpriv") is None:
        return "running as root, and setpriv (util-linux) is missing to run as nobody"
    done = subprocess.run([*AS_NOBODY, sys.executable, "-c", "import hpo"], capture_output=True)
    if done.returncode != 0:
        return f"running as root, and nobody cannot run {sys.executable}: {done.stderr[-200:]!r}"
    return None


@dataclass
class Case:
    """A storage in a folder of its own, and what each command does with it."""

    url: str
    folder: Path
    db: Path | None  # the file whose bytes must not change
    other_user: bool  # run as a user who cannot write (needs a subprocess as root)
    cwd: Path


def _wal_copy(source: Path, target: Path) -> None:
    copy_db(source, target)
    with sqlite3.connect(target) as con:
        assert con.execute("PRAGMA journal_mode=WAL").fetchone() == ("wal",)
    con.close()
    assert target.read_bytes()[18:20] == b"\x02\x02"  # WAL mode, as stored in the file
    assert not Path(f"{target}-wal").exists()


def make_case(name: str, source: Path, folder: Path) -> Case:
    db = folder / "hpo.db"
    url = f"sqlite:///{db}"
    if name == "a folder":
        db.mkdir()
        return Case(url, folder, None, False, folder)
    if name == "a damaged page in the middle":
        copy_db(source, db)
        with sqlite3.connect(db) as con:
            size = con.execute("PRAGMA page_size").fetchone()[0]
            assert con.execute("PRAGMA page_count").fetchone()[0] > 4
        con.close()
        with open(db, "r+b") as f:
            f.seek(size)  # page 2
            f.write(b"\0" * size)
        return Case(url, folder, db, False, folder)
    if name == "a file that is not SQLite":
        db.write_bytes(b"title,artist\n" * 500)
        return Case(url, folder, db, False, folder)
    if name == "a read-only file":
        _wal_copy(source, db)
        db.chmod(0o444)
        folder.chmod(0o777)  # the folder writable: only the file is not
        return Case(url, folder, db, True, folder)
    if name == "a new file in a read-only folder":
        folder.chmod(0o555)
        return Case(f"sqlite:///{folder / 'new.db'}", folder, None, True, folder)
    if name == "the default storage in a read-only working folder":
        folder.chmod(0o555)
        return Case("sqlite:///studies/hpo.db", folder, None, True, folder)
    if name == "a WAL database in a read-only folder":
        _wal_copy(source, db)
        db.chmod(0o444)
        folder.chmod(0o555)
        return Case(url, folder, db, True, folder)
    if name == "a copied .db alone":
        _wal_copy(source, db)
        return Case(url, folder, db, False, folder)
    raise AssertionError(name)


NOT_THERE = "does not exist"
# case -> (what every command does: exit code and message, or per command)
EXPECTED: dict[str, dict[str, tuple[int, str]]] = {
    "a folder": dict.fromkeys(COMMANDS, (2, "is a folder, not an SQLite database file")),
    "a damaged page in the middle": dict.fromkeys(
        COMMANDS, (2, "is damaged (SQLite's quick_check: Page 2: ")
    ),
    "a file that is not SQLite": dict.fromkeys(COMMANDS, (2, "is not an SQLite database")),
    "a read-only file": {
        **dict.fromkeys(COMMANDS, (0, "")),
        **dict.fromkeys(WRITERS, (2, "is read-only for this user, and this command writes")),
    },
    "a new file in a read-only folder": {
        **dict.fromkeys(COMMANDS, (2, NOT_THERE)),
        "search": (2, "is not writable by this user, and this command writes new.db"),
    },
    "the default storage in a read-only working folder": {
        **dict.fromkeys(COMMANDS, (2, NOT_THERE)),
        "search": (2, "is not writable by this user, and this command writes hpo.db"),
    },
    "a WAL database in a read-only folder": {
        **dict.fromkeys(COMMANDS, (0, "")),
        **dict.fromkeys(WRITERS, (2, "is read-only for this user, and this command writes")),
    },
    "a copied .db alone": dict.fromkeys([c for c in COMMANDS if c not in WRITERS], (0, "")),
}
CASES = [(case, command) for case, commands in EXPECTED.items() for command in commands]


@pytest.fixture
def folder() -> Iterator[Path]:
    """A folder of /tmp that another user can reach (pytest's own are private to us)."""
    path = Path(tempfile.mkdtemp(prefix="hpo-storage-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        path.chmod(0o755)
        shutil.rmtree(path, ignore_errors=True)


def run_in_process(command: str, case: Case, out: Path, capsys) -> tuple[int, str]:
    if command in LIBRARY_FUNCTIONS:
        try:
            LIBRARY_FUNCTIONS[command](case.url, "tiny")
        except ValueError as e:
            return 2, f"ValueError: {e}\n"
        return 0, ""
    code = MAINS[command](argv(command, case.url, out))
    return code, capsys.readouterr().err


def run_as_other_user(command: str, case: Case, out: Path) -> tuple[int, str]:
    if command in LIBRARY_FUNCTIONS:
        line = ["-c", LIBRARY.format(function=command, url=case.url)]
    else:
        line = ["-m", f"hpo.{command}", *argv(command, case.url, out)]
    mpl = out / "mpl"
    mpl.mkdir(exist_ok=True)
    mpl.chmod(0o777)
    env = {**os.environ, "MPLCONFIGDIR": str(mpl)}
    wrapper = AS_NOBODY if os.geteuid() == 0 else []
    done = subprocess.run(
        [*wrapper, sys.executable, *line],
        cwd=case.cwd, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return done.returncode, done.stderr


@pytest.mark.parametrize(("case_name", "command"), CASES, ids=[f"{c}-{m}" for c, m in CASES])
def test_a_storage_is_refused_in_one_line_or_read_and_left_as_it_was(
    studies, folder, monkeypatch, capsys, case_name, command
):
    case = make_case(case_name, studies.path, folder)
    if case.other_user and (reason := _cannot_switch_user()) is not None:
        pytest.skip(reason)
    before_files = sorted(os.listdir(folder))
    before_sum = db_checksum(case.db) if case.db is not None and case.db.is_file() else None
    out = Path(tempfile.mkdtemp(prefix="hpo-out-"))
    out.chmod(0o777)
    monkeypatch.chdir(case.cwd)
    try:
        if case.other_user:
            code, err = run_as_other_user(command, case, out)
        else:
            code, err = run_in_process(command, case, out, capsys)
    finally:
        shutil.rmtree(out, ignore_errors=True)

    expected_code, mentions = EXPECTED[case_name][command]
    assert "Traceback" not in err, err
    assert code == expected_code, err
    if expected_code == 2:
        assert err.count("\n") == 1 and err.endswith("\n"), err
        assert mentions in err
    else:
        assert err == ""
    assert sorted(os.listdir(folder)) == before_files
    if before_sum is not None:
        assert db_checksum(case.db) == before_sum


# Passwords, wherever a URL carries them, are never printed.

# The fixture `server` is the session's PostgreSQL server (conftest.py).


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u@host/db?password=secret", "postgresql://u@host/db?password=***"),
        ("postgresql://u:secret@host/db", "postgresql://u:***@host/db"),
        (
            "postgresql://u@host/db?sslmode=require&PassWord=secret&pwd=secret&passwd=secret",
            "postgresql://u@host/db?PassWord=***&passwd=***&pwd=***&sslmode=require",
        ),
        ("not a url u:secret@host?password=secret&a=1", "not a url u:***@host?password=***&a=1"),
    ],
)
def test_display_url_masks_the_password_of_the_userinfo_and_of_the_query(url, shown):
    from hpo.storage import display_url

    assert display_url(url) == shown


@pytest.mark.parametrize(
    ("key", "mentions"),
    [
        ("password", "password authentication failed"),
        ("PASSWORD", 'invalid connection option "PASSWORD"'),  # libpq's keys are lower case
        ("pwd", 'invalid connection option "pwd"'),
    ],
)
def test_a_wrong_password_given_as_query_parameter_is_one_line_without_it(
    server, capsys, key, mentions
):
    wrong = f"wrong-{PASSWORD}"
    url = f"postgresql://hpo@127.0.0.1:{server.port}/hpo?{key}={wrong}"

    assert search.main(["--storage", url, *TINY, "--trials", "1"]) == 2

    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert mentions in err
    assert wrong not in err and PASSWORD not in err
    assert f"?{key}=***" in err
