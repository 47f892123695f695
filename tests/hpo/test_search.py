"""python -m hpo.search: what a run stores, exact trial counts, pruning, divergence, resume,
bad input, and surviving killed and interrupted workers. Tiny data, temporary SQLite files."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from contextlib import closing
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from hpo import search
from hpo.cli import best_lines, trial_line
from hpo.config import SearchConfig
from hpo.record import RUN_ATTR
from hpo.runner import _end_orphans, run_study
from hpo.storage import GRACE_PERIOD_S, open_storage
from hpo.study import create_study

TINY = ["--train-size", "100", "--epochs", "3", "--hidden", "20", "20", "--jobs", "1"]


def run(db: Path, *args: str) -> int:
    return search.main(["--storage", f"sqlite:///{db}", "-q", *TINY, *args])


def load(db: Path, name: str = "default") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{db}")


def states(study: optuna.Study) -> Counter:
    return Counter(t.state for t in study.get_trials(deepcopy=False))


def studies(db: Path) -> list[str]:
    return [s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{db}")]


def test_a_run_stores_log_scale_params_per_epoch_values_and_curves(tmp_path):
    db = tmp_path / "s.db"
    assert run(db, "--trials", "4", "--pruner", "none", "--sampler", "random") == 0

    study = load(db)
    assert states(study) == {TrialState.COMPLETE: 4}
    config = SearchConfig.from_dict(study.user_attrs["config"])
    assert (config.train_size, config.epochs, config.hidden) == (100, 3, [20, 20])
    for t in study.trials:
        for name, (low, high) in {"lr": (1e-6, 1e-2), "weight_decay": (1e-8, 1e-4)}.items():
            dist = t.distributions[name]
            assert (dist.low, dist.high, dist.log) == (low, high, True)
            assert low <= t.params[name] <= high
        assert sorted(t.intermediate_values) == [1, 2, 3]
        assert t.value == t.intermediate_values[3]
        assert len(t.user_attrs["train_acc"]) == 3
        assert len(t.user_attrs["train_loss"]) == len(t.user_attrs["val_loss"]) == 3
        assert t.user_attrs["epochs"] == 3
        assert isinstance(t.user_attrs["seed"], int)


def test_two_workers_finish_exactly_the_requested_number_of_trials(tmp_path):
    db = tmp_path / "s.db"
    assert run(db, "--trials", "7", "--jobs", "2") == 0

    counts = states(load(db))
    assert counts[TrialState.COMPLETE] + counts[TrialState.PRUNED] == 7
    assert counts[TrialState.RUNNING] == counts[TrialState.WAITING] == 0


def test_workers_use_different_sampler_seeds(tmp_path):
    db = tmp_path / "s.db"
    assert run(db, "--trials", "6", "--jobs", "2", "--sampler", "random", "--pruner", "none") == 0

    lrs = [t.params["lr"] for t in load(db).trials]
    assert len(set(lrs)) == len(lrs)


def make_study(db: Path, config: SearchConfig) -> optuna.Study:
    return create_study(open_storage(f"sqlite:///{db}"), "default", config)


@pytest.mark.parametrize(("pruner", "n_good"), [("percentile", 5), ("median", 5), ("sha", 3)])
def test_the_pruner_stops_a_hopeless_trial_early(tmp_path, pruner, n_good):
    db = tmp_path / "s.db"
    config = SearchConfig(
        train_size=300, epochs=20, hidden=[50, 50], sampler="random", pruner=pruner
    )
    study = make_study(db, config)
    for _ in range(n_good):
        study.enqueue_trial({"lr": 1e-2, "weight_decay": 1e-8})
    study.enqueue_trial({"lr": 1e-6, "weight_decay": 1e-8})

    run_study(study, config, f"sqlite:///{db}", n_trials=n_good + 1)

    hopeless = load(db).trials[n_good]
    assert hopeless.state == TrialState.PRUNED
    assert hopeless.user_attrs["epochs"] < config.epochs
    assert len(hopeless.user_attrs["train_acc"]) == hopeless.user_attrs["epochs"]


def test_a_diverging_trial_ends_pruned_with_its_reason_and_never_as_best(tmp_path):
    db = tmp_path / "s.db"
    # Steps of 1e20 make float32 weights whose squared norm overflows: the loss becomes inf.
    assert (
        run(db, "--trials", "2", "--pruner", "none", "--dtype", "float32", "--lr", "1e20", "1e30")
        == 0
    )

    study = load(db)
    assert states(study) == {TrialState.PRUNED: 2}
    for t in study.trials:
        assert t.value is None
        assert t.user_attrs["diverged"]["epoch"] == 1
        assert "became" in t.user_attrs["diverged"]["reason"]
    assert best_lines(study.trials, 5) == []


def test_a_rerun_resumes_the_study_with_its_stored_configuration(tmp_path):
    db = tmp_path / "s.db"
    assert run(db, "--trials", "3", "--seed", "7") == 0
    assert search.main(["--storage", f"sqlite:///{db}", "-q", "--trials", "2"]) == 0

    study = load(db)
    counts = states(study)
    assert counts[TrialState.COMPLETE] + counts[TrialState.PRUNED] == 5
    config = SearchConfig.from_dict(study.user_attrs["config"])
    assert (config.seed, config.epochs, config.train_size) == (7, 3, 100)
    assert len({t.params["lr"] for t in study.trials}) == 5


def test_a_resumed_study_may_switch_to_bayesian_sampling(tmp_path):
    db = tmp_path / "s.db"
    assert run(db, "--trials", "3", "--sampler", "random") == 0
    assert run(db, "--trials", "2", "--sampler", "tpe") == 0

    config = SearchConfig.from_dict(load(db).user_attrs["config"])
    assert config.sampler == "tpe"


@pytest.fixture(scope="module")
def stored_db(tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("stored") / "s.db"
    assert run(db, "--trials", "2") == 0
    return db


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


BAD_INPUT = [
    # (arguments, what the one-line message must mention)
    (["--trials", "0"], "--trials"),
    (["--trials", "-3"], "--trials"),
    (["--trials", "abc"], "--trials"),
    (["--jobs", "0"], "--jobs"),
    (["--lr", "1e-2", "1e-6"], "--lr"),
    (["--lr", "0", "1"], "--lr"),
    (["--weight-decay", "1e-4", "1e-8"], "--weight-decay"),
    (["--val-rate", "1.5"], "--val-rate"),
    (["--sampler", "annealing"], "--sampler"),
    (["--pruner", "eager"], "--pruner"),
    (["--dataset", "cifar"], "--dataset"),
    (["--train-size", "6000"], "--train-size: `train_size <= 5000`"),
    (["--study", "default", "--epochs", "5"], "epochs"),  # contradicts the stored study
    (["--hidden", "100", "0"], "--hidden"),
    (["--timeout", "-1"], "--timeout"),
    (["--space", "{tmp}/missing.toml"], "missing.toml"),
    (["--space", "{syntax}"], "not valid TOML"),
    (["--space", "{unknown}"], "Unknown search parameter 'learning_rate'"),
    (["--space", "{badrange}"], "low < high"),
]


@pytest.mark.parametrize(("args", "mentions"), BAD_INPUT)
def test_bad_input_exits_2_with_one_line_and_leaves_the_database_untouched(
    stored_db, tmp_path, capsys, args, mentions
):
    files = {
        "{tmp}": str(tmp_path),
        "{syntax}": write(tmp_path, "syntax.toml", "[lr\nlow = 1"),
        "{unknown}": write(tmp_path, "unknown.toml", "[learning_rate]\nlow = 1e-3\nhigh = 1e-1\n"),
        "{badrange}": write(tmp_path, "range.toml", "[lr]\nlow = 1e-1\nhigh = 1e-3\nlog = true\n"),
    }
    args = [files.get(a, a.replace("{tmp}", str(tmp_path))) for a in args]
    before = stored_db.read_bytes()
    capsys.readouterr()

    if "--study" not in args:
        args = ["--study", "fresh", *args]  # so that the check itself, not a conflict, speaks

    with pytest.raises(SystemExit) as exit_info:
        sys.exit(search.main(["--storage", f"sqlite:///{stored_db}", "-q", *TINY, *args]))

    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert mentions in err
    assert stored_db.read_bytes() == before


def test_bad_input_with_two_jobs_leaves_no_worker_process_behind(stored_db, capsys):
    # The workers start before the input is checked, to be ready sooner.
    args = ["--storage", f"sqlite:///{stored_db}", "-q", "--jobs", "2", "--lr", "1e-2", "1e-6"]
    assert search.main(args) == 2
    assert "--lr" in capsys.readouterr().err
    assert worker_pids(os.getpid()) == []


@pytest.mark.parametrize(
    ("storage", "mentions"),
    [
        ("sqlite:///{tmp}/no/such/folder/s.db", "does not exist"),
        ("sqlite:///{tmp}/notes.txt", "not an SQLite database"),
        ("sqlite:///{tmp}/other.db", "not an Optuna storage"),
        ("not a url", "not a database URL"),
        # No server listens on port 1; the password never shows.
        ("postgresql://u:secret@127.0.0.1:1/db", "postgresql://u:***@127.0.0.1:1/db"),
    ],
)
def test_a_storage_that_cannot_be_opened_exits_2_and_is_left_as_it_was(
    tmp_path, capsys, storage, mentions
):
    (tmp_path / "notes.txt").write_text("my notes\n")
    con = sqlite3.connect(tmp_path / "other.db")
    con.execute("CREATE TABLE music (title TEXT)")
    con.commit()
    con.close()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    code = search.main(["--storage", storage.replace("{tmp}", str(tmp_path)), "-q", *TINY])

    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and mentions in err and "secret" not in err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_sampler_whose_package_is_missing_names_the_extra(monkeypatch, capsys, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    assert run(tmp_path / "s.db", "--sampler", "gp") == 2
    assert "pip install -e '.[gp]'" in capsys.readouterr().err
    assert not (tmp_path / "s.db").exists()


def test_the_books_lines_show_val_acc_and_params():
    trial = optuna.trial.create_trial(
        params={"lr": 0.0097, "weight_decay": 6.5e-08},
        distributions={
            "lr": optuna.distributions.FloatDistribution(1e-6, 1e-2, log=True),
            "weight_decay": optuna.distributions.FloatDistribution(1e-8, 1e-4, log=True),
        },
        value=0.81,
    )
    assert trial_line(trial) == "val acc:0.81 | lr:0.0097, weight decay:6.5e-08"
    assert best_lines([trial], 5) == ["Best-1(val acc:0.81) | lr:0.0097, weight decay:6.5e-08"]


# End to end, as a user runs it: a separate process, killed or interrupted mid-trial.

SLOW = ["--train-size", "300", "--epochs", "60", "--pruner", "none", "--sampler", "random"]


def start_search(db: Path, *args: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "hpo.search", "--storage", f"sqlite:///{db}", "-q", *args]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def wait_for_running_trial(db: Path, timeout: float = 60.0, count: int = 1) -> None:
    """Wait until ``count`` trials are RUNNING at once."""
    # Read-only SQL, so that polling cannot race the search creating its tables.
    query = "SELECT COUNT(*) FROM trials WHERE state = 'RUNNING'"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
                if con.execute(query).fetchone()[0] >= count:
                    return
        except sqlite3.OperationalError:  # no file or no tables yet
            pass
        time.sleep(0.2)
    raise AssertionError(f"fewer than {count} trial(s) started")


def worker_pids(parent: int) -> list[int]:
    """The worker processes of the command ``parent``: its children forked from it, which run
    its command line, or loky's (where it cannot fork)."""
    out = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True)
    command = Path(f"/proc/{parent}/cmdline").read_bytes()
    cmdlines = {int(p): Path(f"/proc/{p}/cmdline").read_bytes() for p in out.stdout.split()}
    return [p for p, cmd in cmdlines.items() if cmd == command or b"LokyProcess" in cmd]


def test_a_killed_workers_trial_is_failed_and_retried_and_the_count_stays_exact(tmp_path):
    db = tmp_path / "s.db"
    proc = start_search(db, "--trials", "6", "--jobs", "2", *SLOW)
    wait_for_running_trial(db, count=2)  # the worker process has a trial too: kill it mid-trial
    workers = worker_pids(proc.pid)
    assert workers, "no worker processes found"

    os.kill(workers[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=180)

    assert proc.returncode == 0, err
    trials = load(db).trials
    counts = Counter(t.state for t in trials)
    assert counts[TrialState.COMPLETE] + counts[TrialState.PRUNED] == 6
    assert counts[TrialState.RUNNING] == counts[TrialState.WAITING] == 0
    assert counts[TrialState.FAIL] >= 1
    retried = [t for t in trials if "failed_trial" in t.system_attrs]
    assert retried and all(t.state.is_finished() for t in retried)


@pytest.mark.parametrize("to", ["group", "command"])
def test_ctrl_c_stops_the_workers_fails_their_trials_and_a_rerun_resumes(tmp_path, to):
    # Ctrl-C in a terminal signals the whole process group; `kill -INT` the command alone.
    db = tmp_path / "s.db"
    proc = start_search(db, "--trials", "20", "--jobs", "2", *SLOW)
    wait_for_running_trial(db, count=2)

    (os.killpg if to == "group" else os.kill)(proc.pid, signal.SIGINT)
    start = time.monotonic()
    _, err = proc.communicate(timeout=60)

    assert proc.returncode == 130
    # Sooner than a heartbeat goes stale: the run fails its own workers' trials itself.
    assert time.monotonic() - start < GRACE_PERIOD_S
    assert err.startswith("Interrupted after ") and "--trials" in err
    counts = states(load(db))
    assert counts[TrialState.RUNNING] == counts[TrialState.WAITING] == 0
    assert counts[TrialState.FAIL] >= 1
    finished = counts[TrialState.COMPLETE] + counts[TrialState.PRUNED]
    assert finished < 20

    rerun = start_search(db, "--trials", "2", "--jobs", "2")
    _, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    counts = states(load(db))
    assert counts[TrialState.COMPLETE] + counts[TrialState.PRUNED] == finished + 2
    assert counts[TrialState.RUNNING] == counts[TrialState.WAITING] == 0


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")  # ask() outside optimize
def test_a_runs_orphaned_trials_are_failed_and_retried_and_other_runs_trials_left_alone(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = optuna.create_study(storage=storage, study_name="s")
    ours, theirs = study.ask({"lr": FloatDistribution(1e-6, 1e-2, log=True)}), study.ask()
    for trial, run_id in ((ours, "ours"), (theirs, "theirs")):
        storage.set_trial_system_attr(trial._trial_id, RUN_ATTR, run_id)

    _end_orphans(study, "ours", retry=True)

    by_number = {t.number: t for t in study.get_trials()}
    assert by_number[ours.number].state == TrialState.FAIL
    assert by_number[theirs.number].state == TrialState.RUNNING
    (retry,) = [t for t in by_number.values() if t.state == TrialState.WAITING]
    assert retry.params == ours.params and retry.system_attrs["failed_trial"] == ours.number

    _end_orphans(study, "theirs", retry=False)
    assert states(study) == Counter({TrialState.FAIL: 2, TrialState.WAITING: 1})


@pytest.mark.parametrize("args", [["--jobs", "2"], ["--stages", "2"]], ids=["2 jobs", "stages"])
def test_when_the_command_ends_the_db_file_alone_holds_the_run(tmp_path, args):
    db = tmp_path / "s.db"
    proc = start_search(db, "--trials", "3", *TINY, *args)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert [p.name for p in tmp_path.iterdir()] == ["s.db"]  # no -wal or -shm file left
    # immutable=1 reads the file alone, as a copy of it would be read.
    with closing(sqlite3.connect(f"file:{db}?immutable=1", uri=True)) as con:
        stored = con.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
    complete = sum(states(load(db, name))[TrialState.COMPLETE] for name in studies(db))
    assert stored == complete >= 3
