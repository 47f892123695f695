"""Beyond one machine: full-size data, large studies, many workers.

Prints four tables:

1. memory (peak RSS and PSS, from /proc/<pid>/smaps_rollup; PSS counts shared pages fairly) of
   ``python -m hpo.search --dataset fashion-mnist --train-size 60000`` with 1, 2 and 3 local
   jobs, per process and in total, next to an idle interpreter that imported the same modules;
2. one epoch on the 48,000 training images: its updates, and its evaluation (12,000 validation +
   48,000 training images), each as a ratio to the GEMM bound measured in the same run (the
   GEMMs of the same shapes and dtype, timed alone, one BLAS thread), interleaved in pieces of
   a few tenths of a second so that other jobs' changing load weighs on both alike; in compiled
   loops (``models.fused``, the Trainer's default for runs this long) and in the layers' NumPy;
3. large studies (complete and pruned trials with 50 intermediate values each, written in bulk:
   the rows Optuna's ``add_trials`` writes, checked on a small study): one more trial's ask /
   report x50 / tell, the TPE sampler's first suggest of a new trial, optuna-dashboard's
   ``/api/studies/<id>`` (in-process WSGI) and ``hpo.best_params``, medians, on SQLite and (if
   a server can be started) PostgreSQL;
4. many workers (16, 32, 64 processes, each running ``hpo.runner.work`` on one run's plan, as
   every worker of a run does, with 1-epoch trials on 60 images): finished trials per second,
   whether the run finished exactly its trials, errors, the connections held, CPU per trial, the
   admission lock's wait and share of the time, on SQLite and PostgreSQL.

    python benchmarks/bench_scale.py [--quick] [--tables 3,4]

PostgreSQL is a throwaway server of its own on 127.0.0.1 (tests/hpo/pg.py); without PostgreSQL's
programs its columns say why they are missing. Not a test: it prints what it measured.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import optuna
import sqlalchemy
from optuna.distributions import FloatDistribution, distribution_to_json
from optuna.trial import FrozenTrial, TrialState, create_trial
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.hpo.pg: the test suite's throwaway PostgreSQL server

from hpo import best_params, runner  # noqa: E402
from hpo.admission import AdmissionLock  # noqa: E402
from hpo.config import SearchConfig  # noqa: E402
from hpo.record import run_trials  # noqa: E402
from hpo.runner import RunPlan, work  # noqa: E402
from hpo.storage import open_storage  # noqa: E402
from hpo.study import create_study, make_sampler  # noqa: E402
from models import MultiLayerNet, Trainer, get_optimizer  # noqa: E402
from models.datasets import load_dataset, search_split  # noqa: E402
from models.network import EVAL_BATCH  # noqa: E402
from models.trainer import COMPILED_FROM_STEPS  # noqa: E402

MB = 1 << 20
PATHS = {"numpy": False, "compiled": True}  # Trainer(compiled=...)


# --- 1. memory -----------------------------------------------------------------------------------


def smaps(pid: int) -> tuple[int, int, int] | None:
    """(RSS, PSS, anonymous) in bytes of a process, or None if it is gone. Anonymous memory is
    the process's own (heap, Python objects, arrays): unlike PSS, it does not depend on how many
    other processes on the machine map the same libraries."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    kb = {line.split(":")[0]: int(line.split()[1]) for line in text.splitlines()[1:]}
    return kb["Rss"] * 1024, kb["Pss"] * 1024, kb["Anonymous"] * 1024


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo += children.get(found[-1], [])
    return found


def role(pid: int, root: int) -> str:
    if pid == root:
        return "command (worker 0)"
    with contextlib.suppress(OSError):
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        if "resource_tracker" in cmd:
            return f"{'loky' if 'loky' in cmd else 'multiprocessing'} resource tracker"
    return "worker (forked)"


# Past COMPILED_FROM_STEPS steps per trial (480 a epoch), so that the trials train in compiled loops
# as full-size searches do.
EPOCHS = -(-COMPILED_FROM_STEPS // 480)


def memory_of_search(jobs: int, hidden: list[str], env: dict, folder: Path) -> dict:
    """Peak RSS/PSS per process and peak total PSS of one search command, sampled every 0.1 s."""
    db = folder / f"mem{jobs}.db"
    command = [sys.executable, "-m", "hpo.search", "--dataset", "fashion-mnist", "--train-size",
               "60000", "--epochs", str(EPOCHS), "--trials", str(jobs), "--jobs", str(jobs),
               "--dtype", "float32", "--hidden", *hidden, "--storage", f"sqlite:///{db}",
               "-q"]  # fmt: skip
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peaks: dict[int, tuple[int, int, str]] = {}
    total = 0
    while proc.poll() is None:
        now = 0
        for pid in descendants(proc.pid):
            m = smaps(pid)
            if m is None:
                continue
            rss, pss, anon = m
            old = peaks.get(pid, (0, 0, 0, role(pid, proc.pid)))
            peaks[pid] = (max(old[0], rss), max(old[1], pss), max(old[2], anon), old[3])
            now += pss
        total = max(total, now)
        time.sleep(0.1)
    if proc.returncode != 0:
        raise RuntimeError(f"search failed: {proc.stderr.read().decode()[-2000:]}")
    return {"processes": sorted(peaks.values(), key=lambda p: p[3]), "total_pss": total}


def idle_interpreter(env: dict) -> tuple[int, int, int]:
    code = (
        "import hpo.search, hpo.runner, hpo.objective, optuna, sqlalchemy, pathlib;"
        "from models import fused; fused.load('float32');"
        "t = pathlib.Path('/proc/self/smaps_rollup').read_text().splitlines()[1:];"
        "kb = {l.split(':')[0]: int(l.split()[1]) for l in t};"
        "print(kb['Rss'], kb['Pss'], kb['Anonymous'])"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, timeout=120).stdout.split()  # fmt: skip
    return int(out[0]) * 1024, int(out[1]) * 1024, int(out[2]) * 1024


def table_memory(quick: bool, env: dict, folder: Path) -> None:
    hidden = ["100"] * (2 if quick else 6)
    print(
        f"\n1. Memory: hpo.search, full Fashion-MNIST (48,000 train + 12,000 validation),"
        f" {EPOCHS} epochs (compiled loops), float32, hidden {' '.join(hidden)}; peaks sampled"
        " every 0.1 s"
    )
    load_dataset("fashion-mnist", shared=True)  # the .npy cache, written once beforehand
    rss0, pss0, anon0 = idle_interpreter(env)
    print(
        f"   idle interpreter, hpo's imports, compiled loops: RSS {rss0 / MB:6.1f} MB"
        f"  PSS {pss0 / MB:6.1f} MB  anonymous {anon0 / MB:6.1f} MB"
    )
    print(
        f"   (the 48,000 training images as float32, per process, were {48000 * 784 * 4 / MB:.0f}"
        " MB; as shared uint8 they are 36 MB for all processes)"
    )
    totals, trackers = {}, 0
    # Three jobs too: the third shows what one more worker costs once a run has several (with
    # loky's fresh processes, the second one also brought two resource trackers).
    for jobs in (1, 2, 3):
        got = memory_of_search(jobs, hidden, env, folder)
        totals[jobs] = got["total_pss"]
        for rss, pss, anon, what in got["processes"]:
            print(
                f"   --jobs {jobs}  {what:22s} RSS {rss / MB:6.1f} MB  PSS {pss / MB:6.1f} MB"
                f"  anonymous {anon / MB:6.1f} MB"
            )
            trackers += pss if jobs == 2 and "tracker" in what else 0
        print(
            f"   --jobs {jobs}  total PSS (peak, all processes at once) {totals[jobs] / MB:6.1f} MB"
        )
    print(
        f"   added by the second worker: {(totals[2] - totals[1]) / MB:.1f} MB PSS, of which the"
        f" resource trackers {trackers / MB:.1f} MB (an idle interpreter alone: {pss0 / MB:.1f} MB)"
    )
    print(f"   added by the third worker: {(totals[3] - totals[2]) / MB:.1f} MB PSS")


# --- 2. epoch time vs the GEMM bound -------------------------------------------------------------


def gemm_operands(sizes: list[int], rows: int, backward: bool, dtype) -> list[tuple]:
    """The operands of every ``a @ b`` of one step, laid out as the network's: forward x @ W;
    backward dW = x.T @ dout and dx = dout @ W.T (none for the input layer: nobody needs it)."""
    rng = np.random.default_rng(0)
    ops = []
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:], strict=False)):
        x, w = rng.random((rows, n_in), dtype=dtype), rng.random((n_in, n_out), dtype=dtype)
        ops.append((x, w))
        if backward:
            dout = rng.random((rows, n_out), dtype=dtype)
            ops.append((x.T, dout))
            if i:
                ops.append((dout, w.T))
    return ops


def time_gemms(ops: list[tuple], count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        for a, b in ops:
            a @ b
    return time.perf_counter() - start


def interleaved_updates(trainer: Trainer, ops: list[tuple], block: int) -> tuple[float, float]:
    """An epoch's steps as ``Trainer.train`` runs them (``Trainer._train_step``: take the batch,
    loss and gradient, update; in compiled loops or the layers' NumPy, as the trainer chose),
    timed ``block`` steps at a time, each block followed by the GEMMs of as many steps: other
    jobs' load changes within a second here, and both sides then see the same."""
    t = trainer.t_train
    batches = trainer._batches()
    steps = gemms = 0.0
    for i in range(0, len(batches), block):
        start = time.perf_counter()
        for idx in batches[i : i + block]:
            loss, _ = trainer._train_step(idx, t.take(idx, axis=0))
            if not np.isfinite(loss):
                raise RuntimeError(f"the benchmark's training diverged ({loss=})")
        steps += time.perf_counter() - start
        gemms += time_gemms(ops, len(batches[i : i + block]))
    return steps, gemms


def interleaved_evaluation(trainer: Trainer, split, ops: list[tuple]) -> tuple[float, float]:
    """The trainer's evaluation (``Trainer._evaluate``) of the validation set, then of the
    training set in four parts (12,000 images each, EVAL_BATCH per pass), each call followed by
    the GEMMs of its forward passes."""
    parts = [(split.x_val, split.t_val)]
    quarter = len(split.x_train) // 4
    parts += [(split.x_train[i : i + quarter], split.t_train[i : i + quarter])
              for i in range(0, len(split.x_train), quarter)]  # fmt: skip
    passes = gemms = 0.0
    for x, t in parts:
        start = time.perf_counter()
        trainer._evaluate(x, t)
        passes += time.perf_counter() - start
        gemms += time_gemms(ops, -(-len(x) // EVAL_BATCH))
    return passes, gemms


def table_epoch(quick: bool) -> None:
    repeats = 2 if quick else 5
    dtypes = ("float32",) if quick else ("float32", "float64")
    hidden = [100] * 6
    print(
        f"\n2. One epoch on 48,000 Fashion-MNIST training images, MultiLayerNet(784, {hidden}, 10),"
        f" SGD, batch 100, 1 BLAS thread; medians of {repeats}, 48 steps (or one evaluate call)"
        " then its GEMM bound; the two paths take turns"
    )
    print(
        "   dtype    path      updates  GEMM bound  ratio   evaluation  GEMM bound  ratio"
        "   epoch ratio"
    )
    sizes = [784, *hidden, 10]
    for dtype in dtypes:
        split = search_split(load_dataset("fashion-mnist", dtype=dtype, shared=True), 60000, 0.2, 0)
        train_ops = gemm_operands(sizes, 100, True, dtype)
        eval_ops = gemm_operands(sizes, EVAL_BATCH, False, dtype)
        rows = {path: {k: [] for k in ("up", "b_up", "ev", "b_ev")} for path in PATHS}
        for r in range(repeats):
            for path, compiled in PATHS.items():
                net = MultiLayerNet(784, hidden, 10, rng=0, dtype=dtype)
                trainer = Trainer(net, get_optimizer("sgd", lr=0.01), split.x_train, split.t_train,
                                  split.x_val, split.t_val, epochs=1, rng=r,
                                  compiled=compiled)  # fmt: skip
                if r == 0:  # numba's start and the loading of its cached code, not timed
                    trainer._train_step(np.arange(100), split.t_train[:100])
                    trainer._evaluate(split.x_val[:100], split.t_val[:100])
                updates, bound = interleaved_updates(trainer, train_ops, 48)
                rows[path]["up"].append(updates)
                rows[path]["b_up"].append(bound)
                passes, bound = interleaved_evaluation(trainer, split, eval_ops)
                rows[path]["ev"].append(passes)
                rows[path]["b_ev"].append(bound)
        for path, row in rows.items():
            m = {k: statistics.median(v) for k, v in row.items()}
            up = statistics.median(a / b for a, b in zip(row["up"], row["b_up"], strict=True))
            ev = statistics.median(a / b for a, b in zip(row["ev"], row["b_ev"], strict=True))
            epoch = statistics.median(
                (u + e) / (bu + be)
                for u, e, bu, be in zip(row["up"], row["ev"], row["b_up"], row["b_ev"], strict=True)
            )
            print(
                f"   {dtype}  {path:8s}  {m['up']:6.2f} s   {m['b_up']:6.2f} s  {up:5.2f}x"
                f"     {m['ev']:6.2f} s   {m['b_ev']:6.2f} s  {ev:5.2f}x      {epoch:5.2f}x"
            )
    print(
        "   updates = the epoch's steps (forward, backward, SGD); evaluation = 12,000 validation +"
        f" 48,000 training images, {EVAL_BATCH:,} per pass; epoch = both against both bounds;"
        " compiled = models.fused (the default for runs this long), numpy = the layers;"
        " ratio = median of the repeats' ratios"
    )


# --- 3. large studies ----------------------------------------------------------------------------

DISTS = {"lr": FloatDistribution(1e-6, 1e-2, log=True),
         "weight_decay": FloatDistribution(1e-8, 1e-4, log=True)}  # fmt: skip


def made_trials(n: int, rng: np.random.Generator) -> list[FrozenTrial]:
    """``n`` finished trials, a third pruned, each with 50 intermediate values (or fewer)."""
    trials = []
    for i in range(n):
        pruned = i % 3 == 2
        steps = int(rng.integers(1, 50)) if pruned else 50
        curve = np.sort(rng.random(steps))
        params = {"lr": float(10 ** rng.uniform(-6, -2)),
                  "weight_decay": float(10 ** rng.uniform(-8, -4))}  # fmt: skip
        trials.append(create_trial(
            state=TrialState.PRUNED if pruned else TrialState.COMPLETE,
            value=None if pruned else float(curve[-1]), params=params, distributions=DISTS,
            intermediate_values={s + 1: float(v) for s, v in enumerate(curve)},
        ))  # fmt: skip
    return trials


def bulk_add(storage: optuna.storages.RDBStorage, study_id: int, trials: list[FrozenTrial]) -> None:
    """The rows ``study.add_trials(trials)`` writes, in one transaction of multi-row inserts:
    5,000 trials through the storage API took 37 ms each on SQLite and 85 ms on PostgreSQL.
    ``stored_rows`` compares both ways on a small study before the table is filled."""
    from optuna.storages._rdb import models

    m = models
    with storage.engine.begin() as con:
        first = con.execute(sqlalchemy.select(sqlalchemy.func.count()).where(
            m.TrialModel.study_id == study_id)).scalar()  # fmt: skip
        rows = []
        for number, t in enumerate(trials, start=first):
            # The model's own setters turn times into the naive UTC that Optuna stores.
            dated = m.TrialModel(datetime_start=t.datetime_start,
                                 datetime_complete=t.datetime_complete)  # fmt: skip
            rows.append({"number": number, "study_id": study_id, "state": t.state,
                         "datetime_start": dated._datetime_start_utc,
                         "datetime_complete": dated._datetime_complete_utc})  # fmt: skip
        con.execute(sqlalchemy.insert(m.TrialModel), rows)
        ids = dict(con.execute(sqlalchemy.select(m.TrialModel.number, m.TrialModel.trial_id).where(
            m.TrialModel.study_id == study_id, m.TrialModel.number >= first)).all())  # fmt: skip
        values, params, steps = [], [], []
        for number, t in enumerate(trials, start=first):
            tid = ids[number]
            if t.value is not None:
                v, kind = m.TrialValueModel.value_to_stored_repr(t.value)
                values.append({"trial_id": tid, "objective": 0, "value": v, "value_type": kind})
            for name, value in t.params.items():
                dist = t.distributions[name]
                params.append({"trial_id": tid, "param_name": name,
                               "param_value": dist.to_internal_repr(value),
                               "distribution_json": distribution_to_json(dist)})  # fmt: skip
            for step, value in t.intermediate_values.items():
                v, kind = m.TrialIntermediateValueModel.intermediate_value_to_stored_repr(value)
                steps.append({"trial_id": tid, "step": step, "intermediate_value": v,
                              "intermediate_value_type": kind})  # fmt: skip
        for model, table in ((m.TrialValueModel, values), (m.TrialParamModel, params),
                             (m.TrialIntermediateValueModel, steps)):  # fmt: skip
            if table:
                con.execute(sqlalchemy.insert(model), table)


def stored_rows(storage: optuna.storages.RDBStorage, study_id: int) -> dict[str, list[tuple]]:
    """Every row of a study's trials, table by table, row and study ids left out, trial ids
    replaced by trial numbers."""
    found = {}
    tables = ("trials", "trial_values", "trial_params", "trial_intermediate_values",
              "trial_user_attributes", "trial_system_attributes", "trial_heartbeats")  # fmt: skip
    with storage.engine.connect() as con:
        query = f"SELECT trial_id, number FROM trials WHERE study_id = {int(study_id)}"
        number = dict(con.exec_driver_sql(query).all())
        for table in tables:
            result = con.exec_driver_sql(f"SELECT * FROM {table}")
            keys = list(result.keys())
            rows = []
            for row in result.all():
                d = dict(zip(keys, row, strict=True))
                if d["trial_id"] not in number:
                    continue  # another study's
                d["trial_id"] = number[d["trial_id"]]
                d.pop(keys[0] if table != "trials" else "study_id")  # the row's own id
                rows.append(tuple(sorted((k, str(v)) for k, v in d.items())))
            found[table] = sorted(rows)
    return found


def check_bulk_add(storage: optuna.storages.RDBStorage) -> str:
    """Whether ``bulk_add`` stores exactly the rows of Optuna's ``add_trials``, on 30 trials."""
    trials = made_trials(30, np.random.default_rng(1))
    both = []
    for add in ("api", "bulk"):
        study = create_study(storage, f"fill-{add}-{uuid.uuid4().hex[:8]}", SearchConfig())
        if add == "api":
            study.add_trials(trials)
        else:
            bulk_add(storage, study._study_id, trials)
        both.append(stored_rows(storage, study._study_id))
    count = sum(len(rows) for rows in both[0].values())
    if both[0] != both[1]:
        raise AssertionError(f"bulk_add's rows differ from add_trials' ({count} rows)")
    return f"the same {count} rows as study.add_trials, 30 trials"


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def study_latencies(url: str, sizes: list[int], repeats: int) -> tuple[dict, str]:
    """The latencies at each size, and what ``check_bulk_add`` found."""
    import optuna_dashboard

    from tests.hpo.test_dashboard import get  # the dashboard driven in-process, as the tests do

    storage = open_storage(url, heartbeat=False)
    checked = check_bulk_add(storage)
    study = create_study(storage, f"large-{uuid.uuid4().hex[:8]}", SearchConfig())
    rng, have, out = np.random.default_rng(0), 0, {}
    for size in sizes:
        bulk_add(storage, study._study_id, made_trials(size - have, rng))
        have = size
        row = {}

        def one_more():
            trial = study.ask()
            for step in range(1, 51):
                trial.report(0.5, step)
            study.tell(trial, 0.5)

        row["storage"] = timed(one_more, repeats)
        have += repeats
        tpe = make_sampler("tpe", 0)

        def first_suggest():
            trial = optuna.Trial(study, storage.create_new_trial(study._study_id))
            study.sampler = tpe  # noqa: B023 (called in the loop)
            start = time.perf_counter()
            trial.suggest_float("lr", 1e-6, 1e-2, log=True)
            row.setdefault("_s", []).append(time.perf_counter() - start)  # noqa: B023
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)

        for _ in range(repeats):
            first_suggest()
        row["sampler"] = statistics.median(row.pop("_s"))
        path = f"/api/studies/{study._study_id}"
        # A new app: one that served the smaller study would serve its cached trials (for 2 to
        # 10 s). Its first request reads the trials and builds its caches, the next ones reuse
        # them (the dashboard reads the trials again after 10 s, from 500 trials on).
        app = optuna_dashboard.wsgi(storage)
        start = time.perf_counter()
        get(app, path)
        row["first request"] = time.perf_counter() - start
        row["dashboard"] = timed(lambda: get(app, path), repeats)  # noqa: B023
        row["best_params"] = timed(lambda: best_params(url, study.study_name), repeats)
        out[size] = row
    storage.engine.dispose()
    return out, checked


def table_large(quick: bool, urls: dict[str, str | None], reasons: dict[str, str]) -> None:
    sizes = [100, 300] if quick else [100, 1000, 5000]
    repeats = 3 if quick else 5
    print(
        f"\n3. Large studies (2/3 complete, 1/3 pruned, 50 intermediate values each), median of "
        f"{repeats}; xK = the time's ratio to the row before, for K times the trials"
    )
    cols = ("storage", "sampler", "first request", "dashboard", "best_params")
    print("   storage     trials   " + "  ".join(f"{c:>13s}" for c in cols))
    for name, url in urls.items():
        if url is None:
            print(f"   {name:10s}  skipped: {reasons[name]}")
            continue
        rows, checked = study_latencies(url, sizes, repeats)
        print(f"   {name:10s} filled in bulk: {checked}")
        for size, row in rows.items():
            cells = "  ".join(f"{row[c] * 1000:10.1f} ms" for c in cols)
            print(f"   {name:10s} {size:6d}   {cells}")
        for small, large in zip(sizes, sizes[1:], strict=False):
            ratios = "  ".join(f"{rows[large][c] / rows[small][c]:11.2f}x " for c in cols)
            print(f"   {name:10s} x{large // small:<2d} {large:5d}  {ratios}")
    print(
        "   storage = ask + 50 x report + tell of one more trial; sampler = TPE's first suggest "
        "of a new trial;\n   first request, dashboard = GET /api/studies/<id> of a new"
        " dashboard app, its first (reads the trials) and its next ones (the trials it cached)"
    )


# --- 4. many workers -----------------------------------------------------------------------------

TINY = SearchConfig(train_size=60, epochs=1, hidden=[5], sampler="random", pruner="none")


class TimedLock(AdmissionLock):
    """The admission lock, timing how long a worker waits for it and holds it, and counting
    the tries to take it."""

    waited = held_for = 0.0
    tries = 0

    def _try_to_take(self, value: str) -> bool:
        TimedLock.tries += 1
        return super()._try_to_take(value)

    @contextlib.contextmanager
    def held(self):
        start = time.perf_counter()
        with super().held():
            got = time.perf_counter()
            TimedLock.waited += got - start
            try:
                yield
            finally:
                TimedLock.held_for += time.perf_counter() - got


def simulated_worker(plan: RunPlan, worker: int, ready, go, out) -> None:
    """One worker process, as a run's workers run it: ``hpo.runner.work(plan, worker)``. Before
    the clock starts it runs one trial of a run of its own: data loaded, code paths warm, as in
    a worker that has run for a while."""
    runner.AdmissionLock = TimedLock  # the one the workers' loop makes, timed
    error, warm_up = "", f"warm-up-{plan.run_id}-{worker}"
    try:
        work(dataclasses.replace(plan, n_trials=1, run_id=warm_up), worker)
    except Exception as e:  # shown in the table: a failing storage is a result here
        error = runner.storage_reason(e)[-70:]  # the database's own words: the cause is last
    TimedLock.waited = TimedLock.held_for = 0.0
    TimedLock.tries = 0
    ready.put(worker)
    go.wait()
    cpu = time.process_time()
    try:
        if not error:
            work(plan, worker)
    except Exception as e:
        error = runner.storage_reason(e)[-70:]  # the database's own words: the cause is last
    out.put((error, time.process_time() - cpu, TimedLock.waited, TimedLock.held_for,
             TimedLock.tries))  # fmt: skip


def connections(name: str, url: str, server, pids: list[int]) -> int:
    if name == "postgresql":
        import sqlalchemy

        engine = sqlalchemy.create_engine(server.url(database="postgres"))
        try:
            with engine.connect() as con:
                q = "SELECT count(*) FROM pg_stat_activity WHERE datname = 'hpo'"
                return int(con.exec_driver_sql(q).scalar())
        finally:
            engine.dispose()
    db, count = url.removeprefix("sqlite:///"), 0
    for pid in pids:  # one fd on the file per connection (its -wal and -shm files aside)
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    count += os.readlink(fd) == db
    return count


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4], sum(fields)  # idle and iowait are not busy


def many_workers(name: str, url: str, server, workers: int, trials: int) -> dict:
    """``workers`` processes run ``trials`` trials of one run; what the run and they measured."""
    import multiprocessing

    storage = open_storage(url, heartbeat=False)
    study = create_study(storage, f"many-{workers}-{uuid.uuid4().hex[:6]}", TINY)
    storage.engine.dispose()
    plan = RunPlan(TINY.to_dict(), url, study.study_name, trials, time.time() + 3600, None,
                   uuid.uuid4().hex)  # fmt: skip
    ctx = multiprocessing.get_context("forkserver")  # fresh processes, as on many hosts, fast
    ctx.set_forkserver_preload(["hpo.runner", "hpo.objective", "optuna", "sqlalchemy"])
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=simulated_worker, args=(plan, i, ready, go, out), daemon=True)
             for i in range(workers)]  # fmt: skip
    for proc in procs:
        proc.start()
    for _ in procs:
        ready.get(timeout=600)
    busy0, total0 = cpu_ticks()
    start = time.perf_counter()
    go.set()
    held, results = 0, []
    while len(results) < workers:
        held = max(held, connections(name, url, server, [p.pid for p in procs]))
        with contextlib.suppress(queue.Empty):
            while len(results) < workers:
                results.append(out.get(timeout=0.5))
        if len(results) < workers and not any(p.is_alive() for p in procs) and out.empty():
            results += [("a worker process died", 0.0, 0.0, 0.0, 0)] * (workers - len(results))
    elapsed = time.perf_counter() - start
    busy1, total1 = cpu_ticks()
    for proc in procs:
        proc.join(timeout=60)
    own = run_trials(optuna.load_study(study_name=study.study_name, storage=url).trials,
                     plan.run_id)  # fmt: skip
    states = Counter(t.state for t in own)
    done = states[TrialState.COMPLETE] + states[TrialState.PRUNED]
    errors = [r[0] for r in results if r[0]]
    return {
        "done": done, "exact": done == trials and not states[TrialState.RUNNING],
        "rate": done / elapsed, "held": held, "errors": len(errors),
        "first": errors[0] if errors else "", "cpu": sum(r[1] for r in results) / max(done, 1),
        "wait": sum(r[2] for r in results) / max(done, 1),
        "lock": sum(r[3] for r in results) / elapsed,
        "tries": sum(r[4] for r in results) / max(done, 1),
        "busy": (busy1 - busy0) / max(total1 - total0, 1),
    }  # fmt: skip


def table_many(quick: bool, urls: dict, server, reasons: dict[str, str]) -> None:
    counts = [4, 16] if quick else [16, 32, 64]
    per_worker = 5 if quick else 10
    print(
        f"\n4. Many workers: processes, each running hpo.runner.work on one run's plan (trials: 1"
        f" epoch on 48 images, hidden 5, random sampler), {per_worker} trials per worker, timed"
        " after a first trial each"
    )
    print("   storage     workers  trials  exact  trials/s  connections  errors  client CPU"
          "  lock wait  tries  lock held  machine busy")  # fmt: skip
    for name, url in urls.items():
        if url is None:
            print(f"   {name:10s}  skipped: {reasons[name]}")
            continue
        for n in counts:
            r = many_workers(name, url, server, n, n * per_worker)
            print(
                f"   {name:10s} {n:7d}  {r['done']:6d}  {'yes' if r['exact'] else 'NO':>5s}"
                f"  {r['rate']:8.1f}  {r['held']:11d}  {r['errors']:6d}  {r['cpu'] * 1000:7.1f} ms"
                f"  {r['wait'] * 1000:6.1f} ms  {r['tries']:5.1f}  {r['lock'] * 100:7.0f} %"
                f"  {r['busy'] * 100:10.0f} %"
                f"  {r['first']}"
            )
    print(
        "   exact: the run finished exactly the trials asked, none of its own left running;"
        " connections: the most seen at once\n   (PostgreSQL: pg_stat_activity on the database;"
        " SQLite: fds on the file across the worker processes); client CPU, lock wait, tries\n"
        "   (to take the admission lock): per finished trial, all workers; lock held: its share of"
        " the run's wall time;\n   machine busy: all CPUs, this machine (the database server,"
        " and other users, included)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, to check it works")
    parser.add_argument("--tables", default="1,2,3,4", help="the tables to print, e.g. 3,4")
    args = parser.parse_args()
    tables = {int(t) for t in args.tables.split(",")}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp, contextlib.ExitStack() as stack:
        folder = Path(tmp)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(folder / "cache")}
        os.environ["XDG_CACHE_HOME"] = env["XDG_CACHE_HOME"]
        urls: dict[str, str | None] = {"sqlite": f"sqlite:///{folder / 'scale.db'}"}
        reasons: dict[str, str] = {}
        server = None
        from tests.hpo import pg

        if not tables & {3, 4}:
            urls["postgresql"], reasons["postgresql"] = None, "not used by the tables asked for"
        elif pg.pg_bin() is None:
            urls["postgresql"], reasons["postgresql"] = None, "no PostgreSQL programs (initdb)"
        else:
            server = stack.enter_context(pg.started_server())
            urls["postgresql"] = server.url()
        if 1 in tables:
            table_memory(args.quick, env, folder)
        if 2 in tables:
            with threadpool_limits(limits=1):
                table_epoch(args.quick)
        if 3 in tables:
            table_large(args.quick, urls, reasons)
        if 4 in tables:
            urls["sqlite"] = f"sqlite:///{folder / 'many.db'}"
            table_many(args.quick, urls, server, reasons)


if __name__ == "__main__":
    main()
