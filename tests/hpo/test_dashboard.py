"""optuna-dashboard and the optuna CLI read our databases.

The dashboard runs for real: in-process through its WSGI app (``optuna_dashboard.wsgi``) with a
small WSGI client, and served on 127.0.0.1 to headless Chromium. The optuna CLI runs as a
subprocess. One test runs a two-worker search while the dashboard keeps reading the same file.
"""

from __future__ import annotations

import json
import shutil
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.util import setup_testing_defaults

import optuna
import pytest

from hpo import best_params
from hpo.config import SearchConfig
from hpo.note import save_study_note, study_note

from .conftest import StudyDB, db_checksum, run_search

optuna_dashboard = pytest.importorskip("optuna_dashboard")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def get(app, path: str, query: str = "") -> tuple[int, bytes]:
    """Status and body of a GET request to a WSGI app."""
    environ: dict = {}
    setup_testing_defaults(environ)
    # Browsers always send Accept-Encoding, and the dashboard's static route needs it.
    environ.update(
        REQUEST_METHOD="GET", PATH_INFO=path, QUERY_STRING=query, HTTP_ACCEPT_ENCODING="gzip"
    )
    status: list[int] = []

    def start_response(line: str, headers: list, exc_info=None):
        status.append(int(line.split()[0]))
        return lambda data: None

    chunks = app(environ, start_response)
    try:
        body = b"".join(chunks)
    finally:
        if hasattr(chunks, "close"):
            chunks.close()
    return status[0], body


def get_json(app, path: str) -> dict:
    status, body = get(app, path)
    assert status == 200, (path, body[:300])
    return json.loads(body)


def study_ids(app) -> dict[str, int]:
    return {
        s["study_name"]: s["study_id"] for s in get_json(app, "/api/studies")["study_summaries"]
    }


def attrs(serialized: list[dict]) -> dict[str, str]:
    return {a["key"]: a["value"] for a in serialized}


@pytest.fixture(scope="module")
def app(studies: StudyDB):
    # A URL, as `optuna-dashboard sqlite:///...` gets it: the dashboard opens the file itself.
    return optuna_dashboard.wsgi(studies.url)


def test_the_dashboard_lists_every_study_with_its_direction(app):
    summaries = get_json(app, "/api/studies")["study_summaries"]

    assert {s["study_name"] for s in summaries} == {"tiny", "bn-dropout", "diverged", "pruned"}
    assert all(s["directions"] == ["maximize"] for s in summaries)


def test_the_dashboard_shows_each_trials_params_per_epoch_values_and_curves(app, studies):
    detail = get_json(app, f"/api/studies/{study_ids(app)['bn-dropout']}")

    assert detail["objective_names"] == ["val_acc"]
    assert detail["has_intermediate_values"] is True
    study = optuna.load_study(study_name="bn-dropout", storage=studies.url)
    stored = {t.number: t for t in study.trials}
    assert len(detail["trials"]) == len(stored) == 3
    for trial in detail["trials"]:
        own = stored[trial["number"]]
        params = {p["name"]: p["param_external_value"] for p in trial["params"]}
        assert params == {k: str(v) for k, v in own.params.items()}
        values = {v["step"]: v["value"] for v in trial["intermediate_values"]}
        assert values == own.intermediate_values
        assert list(values) == [1, 2, 3]
        user_attrs = attrs(trial["user_attrs"])
        assert {"seed", "epochs", "train_acc", "train_loss", "val_loss"} <= set(user_attrs)
        assert json.loads(user_attrs["train_loss"]) == own.user_attrs["train_loss"]
    assert [t["number"] for t in detail["best_trials"]] == [study.best_trial.number]


def test_the_dashboard_shows_why_a_trial_diverged(app, studies):
    detail = get_json(app, f"/api/studies/{study_ids(app)['diverged']}")

    stored = optuna.load_study(study_name="diverged", storage=studies.url).trials
    for trial, own in zip(detail["trials"], stored, strict=True):
        assert trial["state"] == "Pruned"
        diverged = json.loads(attrs(trial["user_attrs"])["diverged"])
        assert diverged == own.user_attrs["diverged"]
        assert "loss became" in diverged["reason"]


def test_the_study_note_summarises_the_configuration(app):
    detail = get_json(app, f"/api/studies/{study_ids(app)['bn-dropout']}")
    note = detail["note"]["body"]
    user_attrs = attrs(detail["user_attrs"])

    assert note.startswith("## bn-dropout\n")
    assert "`mnist-5k`: 100 samples, 80 train / 20 validation" in note
    assert "784 - 30 x 3 - 10" in note
    assert "3 epochs" in note
    assert "- `use_batchnorm`: one of `True`" in note
    assert "- `dropout_ratio`: [0.1, 0.3], linear" in note
    assert json.loads(user_attrs["config"])["space"]["use_dropout"] == {"choices": [True]}


def test_the_note_written_without_importing_optuna_dashboard_reads_back_the_same(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'n.db'}", study_name="n")
    body = study_note("n", SearchConfig()) + "x" * 5000  # longer than one attr chunk
    save_study_note(study, body)
    save_study_note(study, body + "y")  # a second note replaces the first

    assert optuna_dashboard.get_note(study) == body + "y"


def test_the_importances_endpoint_ranks_the_searched_params(app, studies):
    response = get_json(app, f"/api/studies/{study_ids(app)['bn-dropout']}/param_importances")

    (importances,) = response["param_importances"]
    assert {i["name"] for i in importances} == set(best_params(studies.url, "bn-dropout"))
    assert all(0 <= i["importance"] <= 1 for i in importances)


def test_the_dashboard_page_and_its_script_are_served(app):
    status, page = get(app, "/dashboard")
    assert status == 200
    assert b'src="/static/bundle.js"' in page
    status, _ = get(app, "/static/bundle.js")
    assert status == 200


def test_reading_through_the_dashboard_leaves_the_database_unchanged(app, studies):
    before = db_checksum(studies.path)
    for study_id in study_ids(app).values():
        get_json(app, f"/api/studies/{study_id}")
        get(app, f"/api/studies/{study_id}/param_importances")
    assert db_checksum(studies.path) == before


# The optuna CLI


def optuna_cli(*args: str) -> str:
    script = Path(sys.executable).with_name("optuna")
    command = [str(script)] if script.exists() else [shutil.which("optuna") or "optuna"]
    done = subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_optuna_cli_lists_our_studies_and_agrees_on_the_best_trial(studies):
    listed = json.loads(optuna_cli("studies", "--storage", studies.url, "-f", "json"))
    assert {s["name"] for s in listed} == {"tiny", "bn-dropout", "diverged", "pruned"}

    for name in ("tiny", "bn-dropout"):
        best = json.loads(
            optuna_cli("best-trial", "--study-name", name, "--storage", studies.url, "-f", "json")
        )
        assert best["params"] == best_params(studies.url, name)
        assert best["state"] == "COMPLETE"
        stored = optuna.load_study(study_name=name, storage=studies.url).best_trial
        assert (best["number"], best["value"]) == (stored.number, {"val_acc": stored.value})


# A search and the dashboard on one SQLite file at once


def test_a_search_running_while_the_dashboard_reads_its_file_finishes_without_lock_errors(
    tmp_path,
):
    url = f"sqlite:///{tmp_path / 'live.db'}"
    # The study exists first, as when a user opens the dashboard on a running search.
    experiment = ["--train-size", "500", "--epochs", "10", "--pruner", "none"]
    run_search(url, "live", "--trials", "1", *experiment)
    stderr = tmp_path / "search.err"
    with open(stderr, "w") as err:
        search = subprocess.Popen(
            [
                sys.executable, "-m", "hpo.search", "--storage", url, "--study", "live",
                "--trials", "10", "--jobs", "2", *experiment, "-q",
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )  # fmt: skip
    app = optuna_dashboard.wsgi(url)
    study_id = study_ids(app)["live"]
    read_at: list[datetime] = []  # when each round of dashboard reads finished
    try:
        while len(read_at) < 10_000:
            # The study page's API calls; every one of them reads the database (the trial list
            # through the dashboard's 2-second cache).
            get_json(app, "/api/studies")
            get_json(app, f"/api/studies/{study_id}")
            get_json(app, f"/api/studies/{study_id}/param_importances")
            read_at.append(datetime.now())
            try:
                search.wait(timeout=0.05)
                break
            except subprocess.TimeoutExpired:
                continue
    finally:
        if search.poll() is None:
            search.kill()
        search.wait(timeout=60)

    errors = stderr.read_text()
    assert search.returncode == 0, errors
    assert "database is locked" not in errors
    assert "OperationalError" not in errors
    # A new dashboard (no cache) sees exactly the requested trials, all finished.
    detail = get_json(optuna_dashboard.wsgi(url), f"/api/studies/{study_id}")
    assert [t["state"] for t in detail["trials"]] == ["Complete"] * 11
    # And the dashboard did read while the workers were writing trials.
    trials = optuna.load_study(study_name="live", storage=url).trials[1:]
    first = min(t.datetime_start for t in trials)
    last = max(t.datetime_complete for t in trials)
    assert any(first <= t <= last for t in read_at)


# A browser renders the dashboard


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args) -> None:
        pass


@contextmanager
def serve(app) -> Iterator[str]:
    """Serve a WSGI app on 127.0.0.1 at a free port until the block ends; yields its base URL."""
    server = make_server(
        "127.0.0.1", 0, app, server_class=_ThreadingServer, handler_class=_QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    """Headless Chromium with the flags a machine without outside network needs."""
    flags = [
        "--headless",
        "--no-sandbox",  # tests run as root in containers
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
    ]
    return subprocess.run(
        [CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_headless_chromium_renders_the_dashboard_page_of_a_study(app, studies, tmp_path):
    study_id = study_ids(app)["bn-dropout"]
    with serve(app) as base:
        done = chromium(
            "--virtual-time-budget=15000",
            "--dump-dom",
            f"{base}/dashboard/studies/{study_id}",
            profile=tmp_path / "profile",
        )
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    # Rendered by the JavaScript app from the API, not in the served HTML.
    assert f"bn-dropout (id={study_id})" in dom
    assert "val_acc" in dom
    assert "Hyperparameter Importance" in dom
