"""Shared fixtures of the hpo tests: one small real study database, made once per test session.

It holds four studies of tiny searches (100 samples, 3 epochs), each made the way a user makes
them, so that the results, replay and dashboard tests read what ``hpo.search`` really writes:

- ``tiny``: the book's network with the default sampler and pruner (complete and pruned trials);
- ``bn-dropout``: a search space that fixes BatchNorm and Dropout on, no pruner;
- ``diverged``: learning rates so large that every trial diverges (pruned, reason stored);
- ``pruned``: a pruner that stops every trial after epoch 2, so no trial is complete.

Tests only read it; a test that writes copies it first.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from threadpoolctl import threadpool_limits

from hpo import search
from hpo.config import SearchConfig
from hpo.objective import Objective, load_split
from hpo.storage import open_storage
from hpo.study import create_study

TINY = ["--train-size", "100", "--epochs", "3", "-q", "--jobs", "1"]

BN_DROPOUT_SPACE = """
[use_batchnorm]
choices = [true]

[use_dropout]
choices = [true]

[dropout_ratio]
low = 0.1
high = 0.3
"""


@dataclass(frozen=True)
class StudyDB:
    """A study database: its SQLAlchemy URL and its file."""

    url: str
    path: Path


class PruneAfter(optuna.pruners.BasePruner):
    """Prunes every trial once it has reported ``epoch`` epochs."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.last_step is not None and trial.last_step >= self.epoch


def run_search(url: str, study: str, *args: str) -> None:
    assert search.main(["--storage", url, "--study", study, *TINY, *args]) == 0


def add_pruned_study(url: str, name: str) -> None:
    """A study made by hpo whose trials a pruner stopped after epoch 2."""
    config = SearchConfig(train_size=100, epochs=3, hidden=[20, 20])
    storage = open_storage(url, heartbeat=False)
    try:
        study = create_study(storage, name, config)
        study.sampler = optuna.samplers.RandomSampler(seed=0)
        study.pruner = PruneAfter(2)
        # One BLAS thread, as the search's workers run.
        with threadpool_limits(limits=1):
            study.optimize(Objective(config, load_split(config)), n_trials=2)
    finally:
        storage.engine.dispose()


@pytest.fixture(scope="session")
def studies(tmp_path_factory: pytest.TempPathFactory) -> StudyDB:
    folder = tmp_path_factory.mktemp("studies")
    db = StudyDB(f"sqlite:///{folder / 'hpo.db'}", folder / "hpo.db")
    space = folder / "bn_dropout.toml"
    space.write_text(BN_DROPOUT_SPACE)

    run_search(db.url, "tiny", "--trials", "6")
    run_search(
        db.url, "bn-dropout", "--trials", "3", "--pruner", "none", "--space", str(space),
        "--hidden", "30", "30", "30",
    )  # fmt: skip
    run_search(
        db.url, "diverged", "--trials", "2", "--pruner", "none", "--lr", "5", "10",
        "--batch-size", "10",
    )  # fmt: skip
    add_pruned_study(db.url, "pruned")
    # Everything into the main file (WAL mode), so that copies and checksums see all of it.
    con = sqlite3.connect(db.path)
    try:
        busy, _, _ = con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        con.close()
    assert busy == 0
    return db


def db_checksum(path: Path) -> str:
    """SHA-256 of an SQLite file and its write-ahead log: equal means nothing was written."""
    digest = hashlib.sha256(path.read_bytes())
    wal = path.with_name(path.name + "-wal")
    digest.update(wal.read_bytes() if wal.exists() else b"")
    return digest.hexdigest()


def copy_db(source: Path, target: Path) -> None:
    """A consistent copy of an SQLite database, WAL included (the backup API)."""
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


@pytest.fixture(scope="session")
def server():
    """The session's PostgreSQL server (tests/hpo/pg.py), with a database ``hpo``."""
    driver = sqlalchemy.engine.make_url("postgresql://").get_driver_name()
    pytest.importorskip(driver, reason=f"the PostgreSQL driver {driver} is missing")
    from .pg import started_server

    with started_server() as running:
        yield running
