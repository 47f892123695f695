"""python -m hpo.search on a real PostgreSQL server: what a parallel run stores, resume,
best_params, and storages that cannot be opened. The server is a throwaway one, started for this
module in a temporary folder, listening on 127.0.0.1 only, and stopped when the module ends."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from hpo import best_params, search
from hpo.config import SearchConfig
from hpo.record import FINISHED, RUN_ATTR

# The driver of postgresql:// URLs: psycopg2 under SQLAlchemy 2.0, psycopg (3) from 2.1 on.
DRIVER = sqlalchemy.engine.make_url("postgresql://").get_driver_name()
pytest.importorskip(
    DRIVER, reason=f"the PostgreSQL driver {DRIVER} is missing: pip install -e .[dev]"
)

TINY = ["--train-size", "100", "--epochs", "3", "--hidden", "20", "20", "--jobs", "1"]
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


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    """A PostgreSQL server of its own, with a database ``hpo``, stopped after the module."""
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
        # -w: pg_ctl polls until the server accepts connections, for at most -t seconds.
        pg("pg_ctl", "start", "-D", str(data), "-l", str(log), "-o", options, "-w",
           "-t", str(START_TIMEOUT_S))  # fmt: skip
        try:
            Server(port).execute(
                "postgres",
                f"CREATE ROLE hpo LOGIN PASSWORD '{PASSWORD}'",
                "CREATE DATABASE hpo OWNER hpo",
            )
            yield Server(port)
        finally:
            pg("pg_ctl", "stop", "-D", str(data), "-m", "immediate", "-w")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def states(url: str, name: str) -> Counter:
    study = optuna.load_study(study_name=name, storage=url)
    return Counter(t.state for t in study.get_trials(deepcopy=False))


def finished(counts: Counter) -> int:
    return counts[TrialState.COMPLETE] + counts[TrialState.PRUNED]


@pytest.fixture(scope="module")
def parallel(server: Server) -> str:
    """The URL of a study ``default`` made by two workers with six trials."""
    url = server.url()
    assert search.main(["--storage", url, *TINY, "--trials", "6", "--jobs", "2", "-q"]) == 0
    return url


def test_two_workers_store_exactly_six_finished_trials_with_their_curves(parallel):
    study = optuna.load_study(study_name="default", storage=parallel)
    trials = study.get_trials(deepcopy=False)

    counts = Counter(t.state for t in trials)
    assert finished(counts) == 6 and counts[TrialState.COMPLETE] >= 1
    assert counts[TrialState.RUNNING] == counts[TrialState.WAITING] == 0
    config = SearchConfig.from_dict(study.user_attrs["config"])
    assert (config.train_size, config.epochs, config.hidden) == (100, 3, [20, 20])
    storage = optuna.storages.RDBStorage(parallel)
    note = storage.get_study_system_attrs(storage.get_study_id_from_name("default"))
    storage.engine.dispose()
    assert note["dashboard:note_str:0"].startswith("## default\n")  # optuna-dashboard's note
    for t in trials:
        assert set(t.params) == {"lr", "weight_decay"}
        epochs = t.user_attrs["epochs"]
        assert sorted(t.intermediate_values) == list(range(1, epochs + 1))
        assert len(t.user_attrs["train_acc"]) == len(t.user_attrs["val_loss"]) == epochs
        if t.state == TrialState.COMPLETE:
            assert t.value == t.intermediate_values[3]
    assert len({t.params["lr"] for t in trials}) == 6


def test_best_params_agree_with_optunas_best_trial(parallel):
    expected = optuna.load_study(study_name="default", storage=parallel).best_trial.params

    assert best_params(parallel, "default") == expected


def test_a_rerun_resumes_the_study_and_adds_exactly_the_requested_trials(server):
    url = server.url()
    args = ["--storage", url, "--study", "resumed", "-q"]
    assert search.main([*args, *TINY, "--trials", "3", "--seed", "7"]) == 0
    assert search.main([*args, "--trials", "2", "--jobs", "2"]) == 0

    counts = states(url, "resumed")
    assert finished(counts) == 5
    assert counts[TrialState.RUNNING] == counts[TrialState.WAITING] == 0
    study = optuna.load_study(study_name="resumed", storage=url)
    config = SearchConfig.from_dict(study.user_attrs["config"])
    assert (config.seed, config.epochs, config.train_size) == (7, 3, 100)


@pytest.mark.parametrize(
    ("user", "database", "port", "mentions"),
    [
        (f"hpo:wrong-{PASSWORD}", "hpo", None, "password authentication failed"),
        (f"hpo:{PASSWORD}", "nosuchdb", None, 'database "nosuchdb" does not exist'),
        (f"hpo:{PASSWORD}", "hpo", "free", "Connection refused"),
    ],
    ids=["wrong password", "unknown database", "nothing listens"],
)
def test_a_server_that_refuses_exits_2_with_one_line_and_no_password(
    server, capsys, user, database, port, mentions
):
    port = free_port() if port == "free" else server.port
    url = f"postgresql://{user}@127.0.0.1:{port}/{database}"

    assert search.main(["--storage", url, *TINY, "--trials", "1", "-q"]) == 2

    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert mentions in err
    assert f"postgresql://hpo:***@127.0.0.1:{port}/{database}" in err
    assert PASSWORD not in err


def test_a_missing_driver_is_named_with_the_extra_that_installs_it(monkeypatch, capsys):
    for module in ("psycopg", "psycopg2"):
        monkeypatch.setitem(sys.modules, module, None)  # import fails

    code = search.main(["--storage", f"postgresql://hpo:{PASSWORD}@127.0.0.1:1/hpo", "-q"])

    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and PASSWORD not in err
    assert f"driver '{DRIVER}'" in err and "pip install -e '.[postgresql]'" in err


@pytest.mark.parametrize(
    ("tables", "args", "mentions"),
    [
        (["CREATE TABLE songs (title text)"], ["--trials", "1"], "not an Optuna storage"),
        ([], ["--trials", "1", "--lr", "1e-2", "1e-6"], "--lr"),
    ],
    ids=["a database of something else", "bad input on an empty database"],
)
def test_a_refused_run_creates_no_table(server, capsys, tables, args, mentions):
    server.execute("postgres", "DROP DATABASE IF EXISTS other", "CREATE DATABASE other")
    server.execute("other", *tables)
    before = server.tables("other")

    assert search.main(["--storage", server.url(database="other"), *TINY, "-q", *args]) == 2

    err = capsys.readouterr().err
    assert err.count("\n") == 1 and mentions in err
    assert server.tables("other") == before


def test_best_params_of_an_empty_database_is_an_error_that_creates_no_table(server):
    server.execute("postgres", "DROP DATABASE IF EXISTS empty", "CREATE DATABASE empty")

    with pytest.raises(ValueError, match="holds no studies"):
        best_params(server.url(database="empty"), "default")
    assert server.tables("empty") == set()


# Commands on separate hosts: separate processes, each with a TMPDIR and HOME of its own, so
# that nothing but the database can coordinate them.


def start_host(tmp_path: Path, host: str, url: str, *args: str) -> subprocess.Popen:
    home = tmp_path / host
    (home / "tmp").mkdir(parents=True)
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(home / "tmp")}
    command = [sys.executable, "-m", "hpo.search", "--storage", url, "-q", *TINY, *args]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def wait_all(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert "Traceback" not in err


def finished_by_run(url: str, name: str) -> list[int]:
    study = optuna.load_study(study_name=name, storage=url)
    runs = Counter(t.system_attrs.get(RUN_ATTR) for t in study.trials if t.state in FINISHED)
    return sorted(runs.values())


def test_commands_on_two_hosts_on_one_study_each_add_exactly_their_trials(server, tmp_path):
    url = server.url()
    wait_all([start_host(tmp_path, "first", url, "--study", "hosts", "--trials", "2")])

    wait_all(
        [
            start_host(tmp_path, host, url, "--study", "hosts", "--trials", "7", "--jobs", "2")
            for host in ("a", "b")
        ]
    )

    assert finished_by_run(url, "hosts") == [2, 7, 7]
    counts = states(url, "hosts")
    assert counts[TrialState.RUNNING] == counts[TrialState.WAITING] == 0


@pytest.mark.parametrize("where", ["a new database", "a new study"])
def test_commands_started_at_once_on_a_server_all_work(server, tmp_path, where):
    database = "fresh" if where == "a new database" else "hpo"
    if where == "a new database":
        server.execute("postgres", "DROP DATABASE IF EXISTS fresh", "CREATE DATABASE fresh")
    url = server.url(database=database)

    wait_all(
        [
            start_host(tmp_path, f"host{i}", url, "--study", "raced", "--trials", "2")
            for i in range(3)
        ]
    )

    assert finished_by_run(url, "raced") == [2, 2, 2]
