"""Many workers on one SQLite file while optuna-dashboard reads it: lock errors and throughput.

For 2, 4 and 8 worker processes, runs ``python -m hpo.search`` with short trials (so that the
storage, not the arithmetic, is under pressure) on a fresh SQLite file while a thread serves the
real optuna-dashboard WSGI app in-process and requests its study and trial endpoints in a loop.
Prints one table: trials, dashboard requests, failed requests, "database is locked" errors seen in
the search's output or the dashboard's answers, exact-count check, and wall time.

    python benchmarks/bench_storage.py [--trials 300] [--jobs 2 4 8]

Not a test: it prints what it measured.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import optuna
import optuna_dashboard
from optuna.trial import TrialState

from hpo.storage import open_storage


def call(app, path: str) -> tuple[int, bytes]:
    """One GET request to a WSGI app, without a server."""
    status: list[str] = []
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "0",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": io.StringIO(),
        "wsgi.url_scheme": "http",
    }
    body = b"".join(app(environ, lambda s, h, e=None: status.append(s)))
    return int(status[0].split()[0]), body


def read_dashboard(url: str, stop: threading.Event, stats: Counter) -> None:
    """Request the dashboard's study list and study detail until ``stop`` is set."""
    app = optuna_dashboard.wsgi(open_storage(url, heartbeat=False))
    while not stop.is_set():
        for path in ("/api/studies", "/api/studies/1"):
            try:
                code, body = call(app, path)
            except Exception as e:  # counted and shown: a reader error is a result here
                stats["errors"] += 1
                stats["locked"] += "database is locked" in str(e)
                continue
            stats["requests"] += 1
            stats["errors"] += code >= 500
            stats["locked"] += b"database is locked" in body
        time.sleep(0.05)


def run(jobs: int, trials: int, folder: Path) -> dict:
    db = folder / f"jobs{jobs}.db"
    url = f"sqlite:///{db}"
    command = [
        sys.executable,
        "-m",
        "hpo.search",
        "--storage",
        url,
        "--study",
        "stress",
        "-q",
        "--trials",
        str(trials),
        "--jobs",
        str(jobs),
        "--epochs",
        "5",
        "--train-size",
        "200",
        "--hidden",
        "50",
        "50",
        "--pruner",
        "median",
        "--sampler",
        "random",
    ]
    stop, stats = threading.Event(), Counter()
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not db.exists() and proc.poll() is None:
        time.sleep(0.1)
    time.sleep(1.0)  # let the parent create the study before the dashboard opens the file
    reader = threading.Thread(target=read_dashboard, args=(url, stop, stats))
    reader.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    stop.set()
    reader.join()
    study = optuna.load_study(study_name="stress", storage=url)
    counts = Counter(t.state for t in study.get_trials(deepcopy=False))
    return {
        "jobs": jobs,
        "exit": proc.returncode,
        "finished": counts[TrialState.COMPLETE] + counts[TrialState.PRUNED],
        "failed": counts[TrialState.FAIL],
        "locked": stats["locked"] + err.count("database is locked"),
        "requests": stats["requests"],
        "req_errors": stats["errors"],
        "wall": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--jobs", type=int, nargs="+", default=[2, 4, 8])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for jobs in args.jobs:
            rows.append(run(jobs, args.trials, Path(tmp)))
    print(f"\n{args.trials} trials of 5 epochs per run; the dashboard reads during each run")
    print(
        f"{'jobs':>4} {'exit':>4} {'finished':>8} {'exact':>5} {'failed':>6} {'locked':>6} "
        f"{'dash req':>8} {'req err':>7} {'wall s':>7} {'trials/s':>8}"
    )
    for r in rows:
        exact = "yes" if r["finished"] == args.trials else "NO"
        print(
            f"{r['jobs']:>4} {r['exit']:>4} {r['finished']:>8} {exact:>5} {r['failed']:>6} "
            f"{r['locked']:>6} {r['requests']:>8} {r['req_errors']:>7} {r['wall']:>7.1f} "
            f"{r['finished'] / r['wall']:>8.1f}"
        )


if __name__ == "__main__":
    main()
