"""A throwaway PostgreSQL server for the tests: started in a temporary folder, listening on
127.0.0.1 only, stopped when its block ends (the session fixture ``server`` in conftest.py)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy

PASSWORD = "right-pw-4711"  # of the role "hpo"; host connections as "postgres" need none
START_TIMEOUT_S = 30


def pg_bin() -> Path | None:
    """The folder of the newest PostgreSQL server programs: Debian's layout, else the PATH."""
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if found:
        return Path(max(found, key=lambda p: int(Path(p).parts[-3]))).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (the moment it is returned)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Server:
    port: int
    # Stops the server (pg_ctl stop -m fast) and, with start=True, starts it again: a restart.
    control: Callable[[str], None] | None = None

    def stop(self) -> None:
        assert self.control is not None
        self.control("stop")

    def start(self) -> None:
        assert self.control is not None
        self.control("start")

    def url(self, user: str = "postgres", database: str = "hpo") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def execute(self, database: str, *statements: str) -> None:
        """Runs SQL statements as the superuser, each in its own transaction."""
        engine = sqlalchemy.create_engine(self.url(database=database), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as con:
                for statement in statements:
                    con.exec_driver_sql(statement)
        finally:
            engine.dispose()

    def tables(self, database: str) -> set[str]:
        engine = sqlalchemy.create_engine(self.url(database=database))
        try:
            return set(sqlalchemy.inspect(engine).get_table_names())
        finally:
            engine.dispose()


@contextmanager
def started_server() -> Iterator[Server]:
    """A PostgreSQL server of its own, with a database ``hpo``, stopped when the block ends."""
    bin_dir = pg_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server here (initdb not found); Debian: apt install postgresql")
    # PostgreSQL refuses to run as root: as root, run its programs as the user postgres, in a
    # folder of /tmp (pytest's temporary folders are private to root).
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    folder = Path(tempfile.mkdtemp(prefix="hpo-pg-"))
    data, log = folder / "data", folder / "server.log"
    if as_user:
        shutil.chown(folder, "postgres", "postgres")

    def pg(program: str, *args: str) -> None:
        command = [*as_user, str(bin_dir / program), *args]
        done = subprocess.run(
            command, cwd=folder, capture_output=True, text=True, timeout=START_TIMEOUT_S
        )
        if done.returncode != 0:
            server_log = log.read_text() if log.exists() else ""
            raise RuntimeError(f"{program} failed:\n{done.stdout}{done.stderr}{server_log}")

    port = free_port()
    try:
        pg("initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
        # Password checks for the role hpo, so that a wrong password is refused.
        (data / "pg_hba.conf").write_text(
            "local all all trust\n"
            "host all postgres 127.0.0.1/32 trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
        )
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={folder}"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )

        def control(action: str) -> None:
            if action == "stop":
                pg("pg_ctl", "stop", "-D", str(data), "-m", "fast", "-w")
                return
            # -w: pg_ctl polls until the server accepts connections, for at most -t seconds.
            pg("pg_ctl", "start", "-D", str(data), "-l", str(log), "-o", options, "-w",
               "-t", str(START_TIMEOUT_S))  # fmt: skip

        control("start")
        try:
            Server(port).execute(
                "postgres",
                f"CREATE ROLE hpo LOGIN PASSWORD '{PASSWORD}'",
                "CREATE DATABASE hpo OWNER hpo",
            )
            yield Server(port, control)
        finally:
            if (data / "postmaster.pid").exists():  # a test may have left it stopped
                pg("pg_ctl", "stop", "-D", str(data), "-m", "immediate", "-w")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
