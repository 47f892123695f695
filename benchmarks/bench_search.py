"""The search service on the book's workload: the book's procedure against the default search.

Run from the repository root: ``python benchmarks/bench_search.py [--seeds 5] [--trials 100]``
(quick look while developing: ``--seeds 1 --trials 20 --repeats 1``).

For every seed (the ``--seed`` of ``python -m hpo.search``: it draws the 400/100 split, every
trial's weights and batches, and the samplers), on the default workload (mnist-5k, 500 samples ->
400 train / 100 validation, ``MultiLayerNet(784, [100]*6, 10)``, SGD, batch 100, 50 epochs,
``lr ~ LogUniform(1e-6, 1e-2)``, ``weight_decay ~ LogUniform(1e-8, 1e-4)``), it runs:

- **book**: the book's procedure with this code: random sampler, no pruning, 1 job, and the
  book's float64 arithmetic (``--dtype float64``; its other settings are the defaults);
- **plain optuna**: the reference a reader who knows Optuna would write, training with
  ``models`` (benchmarks/plain_optuna.py: ``TPESampler()``, ``MedianPruner()``, a
  ``sqlite:///`` URL, ``study.optimize(objective, n_trials=N)``, one process);
- **default 1 job** and **default 2 jobs**: the default command (``SearchConfig``'s sampler,
  pruner and dtype) with ``--jobs 1`` and ``--jobs 2`` (2 = this machine's cores, the default),
  ``--repeats`` times each (3), alternately (1 job, 2 jobs, 1 job, 2 jobs, ...): the machine's
  speed drifts by a fifth between runs a minute apart (one seed's identical 1-job run took 6.1 to
  8.7 s within three minutes), and a 2-job search differs from run to run. Repeat ``r`` of
  either draws its samplers from stream ``r`` (the seeds the command gives them, plus
  ``r * SAMPLER_STREAM``; repeat 0 is the plain command): a 1-job search is the same search on
  every run of one seed, a 2-job search a new one each run (its workers' timing), and one draw
  is not a typical one. Measured, 1 job, 100 trials: stream 0 trained 871, 816, 1142, 883 and
  1171 epochs on seeds 0-4 (median 883), streams 1-5 on the same seeds 1043 on average (789 to
  1315); the 40 searches of streams 1-5 on seeds 0-4 and 1-3 on seeds 5-9 averaged 995 epochs,
  stream 0 on seeds 0-9 941, and 24 2-job searches of seeds 0-11 1013. With one draw per seed,
  the 2-job speedup was judged against 1-job searches of 883 epochs in median where other draws
  of the same seeds averaged 1043.

Each run is a real command in a subprocess (``python -m hpo.search``, or the plain script) with
its own study in one temporary SQLite file; results are read back from that file with Optuna.
Per run it reports:

- **wall**: seconds for the whole command (interpreter start, data, study, workers, summary);
- **epochs**: epochs trained, the sum of the trials' ``epochs`` user attr;
- **overhead**: for 1-job runs, the share of the trial loop's wall time (``run_study``) that is
  not training: ``1 - train / loop``, where ``train`` is the time inside ``Trainer.train``
  without its epoch callback (``trial.report`` + ``should_prune``), timed in the run itself. For
  a seed's first default 1-job run the trials are also replayed afterwards without storage,
  sampler or threads, each for the epochs it trained, and ``replay`` is
  ``1 - replay time / loop``; that also catches what the run's background threads (heartbeat,
  progress poller) cost the training thread. ``storage`` is the share of the loop spent inside
  ``RDBStorage`` calls on the trial thread (report, should_prune's reads, attrs, ask/tell, the
  admission check);
- **best val**: the best trial's validation accuracy;
- **test**: that winner retrained once with its stored parameters and seed
  (:func:`hpo.objective.trial_setup`), evaluated on the held-out test samples the search never saw
  (4,500 for mnist-5k); ``*`` marks a retrain whose validation accuracy differs from the stored
  value (it should not: trials are deterministic).

Once at the start, in this process: a training step of the book's network (batch 100) in float64
and float32 against its GEMM bound (the same matrix products timed alone: the step's physical
limit, DESIGN.md "Performance").

Alongside, once per seed: the machine's own 2-process ceiling. One fixed training job (the book's
network, 50 epochs, a few times over) runs alone, then as two copies in two processes started at
the same instant, BLAS pinned to one thread, alternately (3 times alone, twice two at once):
``ceiling = 2 * median T1 / median T2``. The 2-job speedup (per seed, the median wall of the
default 1-job runs over that of the 2-job runs) is judged as a fraction of it (DESIGN.md,
"Performance: how we measure"). Medians over seeds; targets from the hpo.search issue sit next to
the results. Not a test: nothing asserts on timings.
"""

from __future__ import annotations

import argparse
import compileall
import dataclasses
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import TrialState
from threadpoolctl import threadpool_limits

from hpo.config import SearchConfig
from hpo.objective import build, load_split, trial_setup

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
CEILING_REPEATS = 4  # trainings per process in the 2-process ceiling job
CEILING_ROUNDS = 2  # alone and two-at-once measurements of the ceiling, alternated
TARGET_MIN_BEST = 0.74
TARGET_BOOK_SPEEDUP = 10.0  # the default command against the book's procedure, wall
STRETCH_BOOK_SPEEDUP = 20.0
TARGET_PLAIN_SPEEDUP = 2.0  # ... and against the plain-Optuna reference
TARGET_STORAGE = 0.10
TARGET_CEILING_FRACTION = 0.9
SAMPLER_STREAM = 7919  # repeat r adds r * this to every sampler seed of a default run


@dataclass
class Run:
    """One ``python -m hpo.search`` run and what the benchmark read back."""

    config: str
    seed: int
    jobs: int
    repeat: int = 0
    wall: float = 0.0
    epochs: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    best_val: float = float("nan")
    test_acc: float = float("nan")
    replay_ok: bool = True
    loop: float = float("nan")  # seconds in run_study (1-job runs, instrumented)
    train: float = float("nan")  # seconds in Trainer.train minus its epoch callback
    callback: float = float("nan")  # seconds in the epoch callback (report + should_prune)
    storage: float = float("nan")  # seconds in RDBStorage calls on the trial thread
    replay: float = float("nan")  # seconds to replay the trials' training alone
    by_method: dict[str, list[float]] = field(default_factory=dict)  # storage [seconds, calls]
    load: tuple[float, float] = (float("nan"), float("nan"))  # 1-min load average, start/end

    @property
    def overhead(self) -> float:
        return 1 - self.train / self.loop

    @property
    def replay_overhead(self) -> float:
        return 1 - self.replay / self.loop

    @property
    def storage_share(self) -> float:
        return self.storage / self.loop


# --- child modes: the instrumented search command, and the ceiling's training job -------------


def _instrumented_search(argv: list[str], out: str, stream: int) -> int:
    """``hpo.search.main(argv)`` with timers around training, its callback and storage calls,
    its samplers drawing from ``stream``."""
    import hpo.progress  # where the command calls run_study
    import hpo.runner  # where workers make their samplers
    import hpo.search
    import hpo.storage  # noqa: F401 - its RDBStorage subclass gets timed too
    from models.trainer import Trainer

    totals = {"loop": 0.0, "train": 0.0, "callback": 0.0, "storage": 0.0}
    trial_thread = threading.get_ident()
    depth = threading.local()

    original_train = Trainer.train

    def train(self):
        callback = self.on_epoch_end
        if callback is not None:

            def timed_callback(epoch, metrics):
                start = time.perf_counter()
                try:
                    return callback(epoch, metrics)
                finally:
                    totals["callback"] += time.perf_counter() - start

            self.on_epoch_end = timed_callback
        start, before = time.perf_counter(), totals["callback"]
        try:
            return original_train(self)
        finally:
            totals["train"] += time.perf_counter() - start - (totals["callback"] - before)

    by_method: dict[str, list[float]] = {}  # "thread: method" -> [seconds, calls]

    def timed_storage(name, method):
        def wrapper(*args, **kwargs):
            # Outermost storage calls only (methods call each other).
            if getattr(depth, "n", 0):
                return method(*args, **kwargs)
            depth.n = 1
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                depth.n = 0
                elapsed = time.perf_counter() - start
                on_trial_thread = threading.get_ident() == trial_thread
                if on_trial_thread:
                    totals["storage"] += elapsed
                key = f"{'trial' if on_trial_thread else 'other'} thread: {name}"
                entry = by_method.setdefault(key, [0.0, 0])
                entry[0] += elapsed
                entry[1] += 1

        return wrapper

    # Every method of RDBStorage and of hpo's subclass, private ones too (the cache layer calls
    # _get_trials etc.); a subclass's method calling super() counts once.
    for cls in (optuna.storages.RDBStorage, *optuna.storages.RDBStorage.__subclasses__()):
        for name, value in list(vars(cls).items()):
            if isinstance(value, types.FunctionType) and not name.startswith("__"):
                setattr(cls, name, timed_storage(name, value))

    make_sampler = hpo.runner.make_sampler
    hpo.runner.make_sampler = lambda name, seed: make_sampler(name, seed + stream * SAMPLER_STREAM)

    original_run_study = hpo.progress.run_study

    def run_study(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original_run_study(*args, **kwargs)
        finally:
            totals["loop"] += time.perf_counter() - start

    Trainer.train = train
    hpo.progress.run_study = run_study
    code = hpo.search.main(argv)
    Path(out).write_text(json.dumps({**totals, "by_method": by_method}))
    # Ends as ``python -m hpo.search`` does, without the collection at exit: a 1-job run would
    # otherwise pay 0.15 s there that the command does not (a 2-job run froze its objects when
    # it forked).
    gc.freeze()
    return code


def _training_job(start_at: float, repeats: int) -> float:
    """Seconds for ``repeats`` fixed 50-epoch trainings of the book's network, from ``start_at``."""
    config = SearchConfig()
    split = load_split(config)
    setup = trial_setup(config, {"lr": 0.01, "weight_decay": 1e-6}, 12345)
    with threadpool_limits(limits=1):
        build(setup, split)[1].train()  # warm up (caches, lazy imports)
        time.sleep(max(0.0, start_at - time.time()))
        start = time.perf_counter()
        for _ in range(repeats):
            build(setup, split)[1].train()
        return time.perf_counter() - start


# --- the parent --------------------------------------------------------------------------------


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # One BLAS thread everywhere (hpo's workers pin it too; this covers interpreter start-up).
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = "1"
    return env


def measure_ceiling() -> tuple[float, float, float]:
    """(T1, T2, ceiling): one training job alone, two at once in two processes, 2 * T1 / T2.

    Alone, two at once, alone, two at once, alone: medians of each, so that a few slow seconds
    of the machine (seen here: a single pair of 2.5 s measurements gave 2.31x) weigh less.
    """

    def launch(n: int) -> list[float]:
        start_at = time.time() + 4.0  # after every process has imported and warmed up
        cmd = [sys.executable, str(HERE), "--training-job", str(start_at)]
        procs = [
            subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=_child_env())
            for _ in range(n)
        ]
        return [float(p.communicate()[0].strip().splitlines()[-1]) for p in procs]

    alone, together = [], []
    for _ in range(CEILING_ROUNDS):
        alone.append(launch(1)[0])
        together.append(max(launch(2)))
    alone.append(launch(1)[0])
    t1, t2 = statistics.median(alone), statistics.median(together)
    return t1, t2, 2 * t1 / t2


def study_name(config: str, seed: int, jobs: int, repeat: int) -> str:
    return f"{config.split()[0]}-seed{seed}-jobs{jobs}-{repeat}"


def run_search(
    config: str,
    seed: int,
    jobs: int,
    repeat: int,
    trials: int,
    search_args: list[str],
    storage: str,
    tmp: Path,
) -> Run:
    study = study_name(config, seed, jobs, repeat)
    argv = [
        *("--trials", str(trials), "--jobs", str(jobs), "--seed", str(seed)),
        *("--storage", storage, "--study", study, "-q", *search_args),
    ]
    out = tmp / f"{study}.json"
    run = Run(config, seed, jobs, repeat, load=(os.getloadavg()[0], float("nan")))
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, str(HERE), "--instrumented-search", str(out), str(repeat), "--", *argv],
        check=True,
        stdout=subprocess.DEVNULL,
        env=_child_env(),
    )
    run.wall = time.perf_counter() - start
    run.load = (run.load[0], os.getloadavg()[0])
    if jobs == 1:
        totals = json.loads(out.read_text())
        run.loop, run.train = totals["loop"], totals["train"]
        run.callback, run.storage = totals["callback"], totals["storage"]
        run.by_method = totals["by_method"]
    read_back(run, optuna.load_study(study_name=study, storage=storage))
    return run


def run_plain(seed: int, trials: int, storage: str) -> Run:
    """The plain-Optuna reference (benchmarks/plain_optuna.py) in a subprocess."""
    study = study_name("plain", seed, 1, 0)
    run = Run("plain optuna", seed, 1, load=(os.getloadavg()[0], float("nan")))
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            str(HERE.parent / "plain_optuna.py"),
            "--storage",
            storage,
            "--study",
            study,
            "--seed",
            str(seed),
            "--trials",
            str(trials),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        env=_child_env(),
    )
    run.wall = time.perf_counter() - start
    run.load = (run.load[0], os.getloadavg()[0])
    trials_ = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    run.epochs = sum(len(t.intermediate_values) for t in trials_)
    run.counts = {s.name.lower(): sum(t.state == s for t in trials_) for s in TrialState}
    complete = [t for t in trials_ if t.state == TrialState.COMPLETE]
    if complete:
        import plain_optuna

        best = max(complete, key=lambda t: t.value)
        run.best_val = best.value
        split = plain_optuna.load_split(seed)
        trainer = plain_optuna.build_trainer(best.params, best.number, split)
        for _ in range(plain_optuna.EPOCHS):
            result = trainer.train()
        run.replay_ok = result.history["val_acc"][-1] == best.value
        run.test_acc = float(trainer.network.accuracy(split.x_test, split.t_test))
    return run


def step_vs_gemm(dtype: str, repeats: int = 300) -> tuple[float, float]:
    """(step ms, its GEMM bound ms): one SGD step of the book's network on a batch of 100, and
    the same matrix products alone (forward x @ W, backward dout @ W.T and x.T @ dout, none for
    the input's gradient), medians of 5 rounds."""
    import numpy as np

    config = dataclasses.replace(SearchConfig(), dtype=dtype)
    split = load_split(config)
    net, trainer = build(trial_setup(config, {"lr": 0.01, "weight_decay": 1e-6}, 1), split)
    x, t = trainer.x_train[:100], trainer.t_train[:100]
    weights = [net.params[f"W{i}"] for i in range(1, 8)]
    acts = [np.ones((100, w.shape[0]), dtype=dtype) for w in weights]
    outs = [np.ones((100, w.shape[1]), dtype=dtype) for w in weights]
    steps, gemms = [], []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeats):
            _, grads = net.loss_and_gradient(x, t)
            trainer.optimizer.update(net.params, grads)
        steps.append((time.perf_counter() - start) / repeats)
        start = time.perf_counter()
        for _ in range(repeats):
            for i, (a, w, d) in enumerate(zip(acts, weights, outs, strict=True)):
                a @ w
                a.T @ d
                if i:
                    d @ w.T
        gemms.append((time.perf_counter() - start) / repeats)
    return 1e3 * statistics.median(steps), 1e3 * statistics.median(gemms)


def _retrain(config: SearchConfig, trial: optuna.trial.FrozenTrial, split, epochs=None):
    setup = trial_setup(config, trial.params, trial.user_attrs["seed"])
    if epochs is not None:
        setup = dataclasses.replace(setup, trainer={**setup.trainer, "epochs": epochs})
    return build(setup, split)


def read_back(run: Run, study: optuna.Study) -> None:
    """Epochs, counts, best trial and its test accuracy, from the study's database."""
    trials = study.get_trials(deepcopy=False)
    run.epochs = sum(t.user_attrs.get("epochs", 0) for t in trials)
    run.counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        return
    best = max(complete, key=lambda t: t.value)
    run.best_val = best.value
    config = SearchConfig.from_dict(study.user_attrs["config"])
    split = load_split(config)
    net, trainer = _retrain(config, best, split)
    result = trainer.train()
    run.replay_ok = result.history["val_acc"][-1] == best.value
    run.test_acc = float(net.accuracy(split.x_test, split.t_test))


def replay(run: Run, study: optuna.Study) -> None:
    """Train every trial of the study again, alone, for the epochs it trained; sum the time."""
    config = SearchConfig.from_dict(study.user_attrs["config"])
    split = load_split(config)
    total = 0.0
    for trial in study.get_trials(deepcopy=False):
        epochs = trial.user_attrs.get("epochs", 0)
        if not epochs or "seed" not in trial.user_attrs:
            continue
        _, trainer = _retrain(config, trial, split, epochs)
        start = time.perf_counter()
        trainer.train()
        total += time.perf_counter() - start
    run.replay = total


# --- output ------------------------------------------------------------------------------------


def _pct(x: float) -> str:
    return "-" if x != x else f"{100 * x:.1f}%"


def _acc(x: float) -> str:
    return "-" if x != x else f"{x:.3f}"


def _median(values) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def print_per_seed(runs: list[Run], ceilings: dict[int, tuple[float, float, float]]) -> None:
    header = (
        f"{'seed':>4} {'configuration':15} {'run':>3} {'wall s':>7} {'epochs':>6} "
        f"{'done/pruned/fail':>16} {'best val':>8} {'test':>6} {'storage':>7} {'overhead':>8} "
        f"{'replay':>7} {'load':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in runs:
        counts = "/".join(str(r.counts.get(k, 0)) for k in ("complete", "pruned", "fail"))
        one = r.jobs == 1
        print(
            f"{r.seed:>4} {r.config:15} {r.repeat + 1:>3} {r.wall:7.1f} {r.epochs:>6} {counts:>16} "
            f"{_acc(r.best_val):>8} {_acc(r.test_acc) + ('' if r.replay_ok else '*'):>6} "
            f"{_pct(r.storage_share) if one else '-':>7} {_pct(r.overhead) if one else '-':>8} "
            f"{_pct(r.replay_overhead):>7} {r.load[0]:4.1f}-{r.load[1]:<4.1f}"
        )
    for seed, (t1, t2, c) in ceilings.items():
        print(f"{seed:>4} 2-process ceiling: {t1:.2f} s alone, {t2:.2f} s two at once: {c:.2f}x")


def print_storage(runs: list[Run], top: int = 8) -> None:
    """Where the default 1-job runs' storage time went, per trial, summed over seeds."""
    rs = [r for r in runs if r.config == "default 1 job" and r.by_method]
    if not rs:
        return
    totals: dict[str, list[float]] = {}
    for r in rs:
        for key, (seconds, calls) in r.by_method.items():
            entry = totals.setdefault(key, [0.0, 0])
            entry[0] += seconds
            entry[1] += calls
    loop = sum(r.loop for r in rs)
    trials = sum(r.counts.get("complete", 0) + r.counts.get("pruned", 0) for r in rs)
    print()
    print(f"Storage calls of the default 1-job runs ({len(rs)} runs, {trials} trials):")
    for key, (seconds, calls) in sorted(totals.items(), key=lambda kv: -kv[1][0])[:top]:
        print(
            f"  {key:44} {1e3 * seconds / trials:6.1f} ms/trial {calls / trials:5.1f} calls/trial "
            f"{_pct(seconds / loop):>6} of the trial loop"
        )


def print_table(
    runs: list[Run],
    ceilings: dict[int, tuple[float, float, float]],
    default: SearchConfig,
    gemm_rows: dict[str, tuple[float, float]],
) -> None:
    by: dict[str, list[Run]] = {}
    for r in runs:
        by.setdefault(r.config, []).append(r)
    print()
    print(
        f"Summary, medians over {len({r.seed for r in runs})} seed(s) and their runs; default = "
        f"{default.sampler} sampler + {default.pruner} pruner"
    )
    header = (
        f"{'configuration':15} {'wall s':>7} {'epochs':>7} {'storage':>7} {'overhead':>8} "
        f"{'best val med':>12} {'best val min':>12} {'test med':>8}"
    )
    print(header)
    print("-" * len(header))
    for name, rs in by.items():
        one = rs[0].jobs == 1
        print(
            f"{name:15} {_median(r.wall for r in rs):7.1f} {_median(r.epochs for r in rs):7.0f} "
            f"{_pct(_median(r.storage_share for r in rs)) if one else '-':>7} "
            f"{_pct(_median(r.overhead for r in rs)) if one else '-':>8} "
            f"{_acc(_median(r.best_val for r in rs)):>12} "
            f"{_acc(min(r.best_val for r in rs)):>12} {_acc(_median(r.test_acc for r in rs)):>8}"
        )

    print()
    print(f"{'target':56} {'result':>20}  met")
    print("-" * 82)

    def line(what: str, result: str, ok: bool | None) -> None:
        print(f"{what:56} {result:>20}  {'-' if ok is None else ('yes' if ok else 'NO')}")

    book, one, two = by.get("book", []), by.get("default 1 job", []), by.get("default 2 jobs", [])
    plain = by.get("plain optuna", [])
    book_wall = {r.seed: r.wall for r in book}
    plain_wall = {r.seed: r.wall for r in plain}
    one_wall, two_wall = _per_seed(one, "wall"), _per_seed(two, "wall")
    for name, rs, walls in (("default 2 jobs", two, two_wall), ("default 1 job", one, one_wall)):
        if not rs:
            continue
        if book:
            # A ratio per seed (the runs ran side by side), then the median.
            x = _median(book_wall[s] / w for s, w in walls.items() if s in book_wall)
            line(
                f"{name}: wall >= {TARGET_BOOK_SPEEDUP:g}x faster than book's",
                f"{x:.1f}x",
                x >= TARGET_BOOK_SPEEDUP,
            )
            line(
                f"{name}: stretch, >= {STRETCH_BOOK_SPEEDUP:g}x faster than book's",
                f"{x:.1f}x",
                x >= STRETCH_BOOK_SPEEDUP,
            )
        if plain:
            x = _median(plain_wall[s] / w for s, w in walls.items() if s in plain_wall)
            line(
                f"{name}: wall >= {TARGET_PLAIN_SPEEDUP:g}x faster than plain optuna's",
                f"{x:.1f}x",
                x >= TARGET_PLAIN_SPEEDUP,
            )
        if book:
            b, d = _median(r.best_val for r in book), _median(r.best_val for r in rs)
            line(f"{name}: best val median >= book's", f"{d:.3f} vs {b:.3f}", d >= b)
        low = min(r.best_val for r in rs)
        line(
            f"{name}: best val >= {TARGET_MIN_BEST} in every seed",
            f"min {low:.3f}",
            low >= TARGET_MIN_BEST,
        )
        if book:
            b, d = _median(r.test_acc for r in book), _median(r.test_acc for r in rs)
            line(f"{name}: winner's test median >= book's", f"{d:.3f} vs {b:.3f}", d >= b)
    if plain:
        line(
            "plain optuna: best val median / min / test median",
            f"{_median(r.best_val for r in plain):.3f}/{min(r.best_val for r in plain):.3f}/"
            f"{_median(r.test_acc for r in plain):.3f}",
            None,
        )
    for dtype, (step, gemm) in gemm_rows.items():
        line(
            f"training step / GEMM bound, {dtype}",
            f"{step:.2f}/{gemm:.2f} ms = {step / gemm:.2f}",
            None,
        )
    for name, rs in (("book", book), ("default 1 job", one)):
        if rs:
            share = _median(r.storage_share for r in rs)
            line(
                f"{name}: storage <= 10% of the trial loop's wall",
                _pct(share),
                share <= TARGET_STORAGE if name != "book" else None,
            )
    if one:
        line(
            "default 1 job: all but training (replayed alone)",
            _pct(_median(r.replay_overhead for r in one)),
            None,
        )
    if ceilings:
        c = _median(x[2] for x in ceilings.values())
        line("machine's 2-process ceiling 2*T1/T2", f"{c:.2f}x", None)
    seeds = one_wall.keys() & two_wall.keys()
    if ceilings and seeds:
        speedup = _median(one_wall[s] / two_wall[s] for s in seeds)
        line(
            f"2 jobs: speedup >= {TARGET_CEILING_FRACTION} x ceiling",
            f"{speedup:.2f}x = {speedup / c:.2f} x ceil",
            speedup / c >= TARGET_CEILING_FRACTION,
        )
        one_rate, two_rate = _per_seed(one, "rate"), _per_seed(two, "rate")
        rate = _median(two_rate[s] / one_rate[s] for s in seeds)
        line("2 jobs: epochs per second / 1 job's", f"{rate:.2f}x", None)


def _per_seed(runs: list[Run], what: str) -> dict[int, float]:
    """Per seed, the median over its repeated runs of ``wall`` or ``rate`` (epochs per second)."""
    values: dict[int, list[float]] = {}
    for r in runs:
        values.setdefault(r.seed, []).append(r.wall if what == "wall" else r.epochs / r.wall)
    return {seed: statistics.median(v) for seed, v in values.items()}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--instrumented-search"]:
        return _instrumented_search(argv[4:], argv[1], int(argv[2]))
    if argv[:1] == ["--training-job"]:
        print(_training_job(float(argv[1]), CEILING_REPEATS))
        return 0

    default = SearchConfig()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5, help="seeds 0 .. N-1 (default 5)")
    p.add_argument("--trials", type=int, default=100, help="trials per search (default 100)")
    p.add_argument(
        "--repeats", type=int, default=3, help="runs of each default configuration (default 3)"
    )
    p.add_argument("--sampler", default=default.sampler, help="try another default sampler")
    p.add_argument("--pruner", default=default.pruner, help="try another default pruner")
    p.add_argument(
        "--configs",
        default="book,plain,1,2",
        help="comma-separated subset of book, plain, 1 (default, 1 job), 2 (default, 2 jobs)",
    )
    args = p.parse_args(argv)
    default = dataclasses.replace(default, sampler=args.sampler, pruner=args.pruner)
    wanted = set(args.configs.split(","))
    default_args = ["--sampler", default.sampler, "--pruner", default.pruner]
    book_args = ["--sampler", "random", "--pruner", "none", "--dtype", "float64"]
    book = [("book", "book", 1, 0, book_args), ("plain", "plain optuna", 1, 0, [])]
    defaults = [
        (key, name, jobs, repeat, default_args)
        for repeat in range(args.repeats)
        for key, name, jobs in (("1", "default 1 job", 1), ("2", "default 2 jobs", 2))
    ]
    plan = [(name, jobs, rep, a) for key, name, jobs, rep, a in book + defaults if key in wanted]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(
        f"bench_search: {args.seeds} seed(s) x {args.trials} trials, default = {default.sampler} "
        f"+ {default.pruner}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    # Every command starts from byte-compiled modules, as after a first run anywhere: where
    # PYTHONDONTWRITEBYTECODE is set (as on the machine of the numbers on record) each would
    # compile hpo's and models' sources again, 0.12 s of its start (import hpo.search: 0.57 s
    # vs 0.46 s, medians of 12).
    for package in ("hpo", "models", "benchmarks"):
        compileall.compile_dir(ROOT / package, quiet=1)
    runs: list[Run] = []
    ceilings: dict[int, tuple[float, float, float]] = {}
    with threadpool_limits(limits=1), tempfile.TemporaryDirectory() as tmp:
        gemm_rows = {dtype: step_vs_gemm(dtype) for dtype in ("float64", "float32")}
        storage = f"sqlite:///{tmp}/bench.db"
        for seed in range(args.seeds):
            for name, jobs, repeat, search_args in plan:
                if name == "plain optuna":
                    run = run_plain(seed, args.trials, storage)
                else:
                    run = run_search(
                        name, seed, jobs, repeat, args.trials, search_args, storage, Path(tmp)
                    )
                if name == "default 1 job" and repeat == 0:
                    study = optuna.load_study(
                        study_name=study_name(name, seed, jobs, repeat), storage=storage
                    )
                    replay(run, study)
                runs.append(run)
                print(
                    f"  seed {seed} {name}: {run.wall:.1f} s, best val {run.best_val:.3f}",
                    flush=True,
                )
            if "2" in wanted:
                ceilings[seed] = measure_ceiling()
                print(f"  seed {seed} 2-process ceiling: {ceilings[seed][2]:.2f}x", flush=True)
    print()
    print_per_seed(runs, ceilings)
    print_storage(runs)
    print_table(runs, ceilings, default, gemm_rows)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
