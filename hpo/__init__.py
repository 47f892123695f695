"""hpo: hyperparameter optimization for the NumPy networks of *Deep Learning from Scratch*.

Training code takes a study's result in one line::

    from hpo import best_params
    params = best_params("sqlite:///studies/hpo.db", study="default")  # {"lr": ..., ...}

and :func:`trial_config` rebuilds any trial's network, optimizer, trainer and data split. A
notebook runs the search itself, as the commands do, and shows the report's figures inline, one
call each (:func:`best_curves`, :func:`param_map`, :func:`history`, :func:`importances`,
:func:`epochs`; all five: :func:`report_figures`)::

    from hpo import best_curves, next_stage, run_search
    study = run_search(trials=100, lr=(1e-6, 1e-2), study="nb")   # -> optuna.Study
    best_curves("sqlite:///studies/hpo.db", "nb")                  # a matplotlib Figure
    stage2 = next_stage("nb", trials=60)

Data flows one way: ``models.datasets`` -> arrays -> the ``hpo`` objective -> ``models.Trainer``
with an ``on_epoch_end(epoch, metrics)`` callback -> ``trial.report`` / ``should_prune``; the
objective writes the trial record (:mod:`hpo.record`), every reader reads it back. ``models``
never imports ``hpo``; commands import library modules, never each other (tests/test_structure.py).

Map of the code, one owner per concept:

models/ (NumPy only; numba for fused and kernels, optional)
    datasets      the MNIST family as arrays, the book's shuffled train/validation/test split
    idx           the IDX files: found or downloaded, SHA-256 checked, parsed
    shared        the IDX data cached as .npy, memory-mapped by every process; ScaledRows:
                  rows of uint8 images as floats per batch
    layers        the book's layers: forward/backward, dW/db
    network       MultiLayerNet (+ BatchNorm, Dropout), the book's loss with weight decay
    optimizers    SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam with the book's defaults
    trainer       Trainer: epochs of mini-batches, per-epoch metrics, on_epoch_end, divergence
    fused         a ReLU network's training step and evaluation in compiled loops, bit for bit
    kernels       those loops (numba): one pass each where NumPy makes several
    serialize     save/load a network with its architecture (.npz, no pickle)

hpo/ library
    config        SearchConfig: every default of a search; a study stores it
    params        the table of searchable parameters: kind, scale, the models keyword each feeds
    space         the search space (Param), TOML files, suggesting a trial's parameters
    checks        a search space checked against everything a trial does, before a study exists
    objective     trial_setup (params -> models keywords), Objective: build, train, report/prune
    record        the stored trial record: attr keys, metric names, curves, outcome, the one
                  ranking of "best", state counts
    study         samplers, pruners, creating a study with its stored config
    pruning       AtSteps: a pruner consulted only where it can decide
    storage       Optuna RDB storage checked before use, SQLite tuned for many writers
    _sqlite_storage   the SQLite storage's plain-SQL path and the Optuna versions it is on for
    _sqlite_reads, _sqlite_writes   the plain-SQL read and write paths of the SQLite storage
    _sqlite_checks    an SQLite file looked at before use: damaged, foreign, writable, how to read
    _server_storage   the storage on a database server: calls that outlast a server restart
    note          the study's Markdown note for optuna-dashboard
    admission     admitting new trials under a lock row in the study's own database
    runner        parallel workers, exactly N finished trials, heartbeat retries
    workers       the local worker processes: forked from the command, or loky's
    cluster       the workers as tasks on a Dask cluster (--cluster), and the run's beat
    lifetime      how a run's processes end: interrupts as Ctrl-C, workers die with the command
    results       reading studies back read-only: best_params, trial_config, load_trial
    narrowing     the next stage's ranges from a stage's best trials (pure)
    edges         the edge rule: past a range's edge the best trials crowd, within hard limits
    stages        staged search: lineage, seeding, the one pipeline (run_stages)
    arguments     the flags search and narrow share, resolved to a config and validated
    progress      what a person watching a run sees: workers, progress bar, summary, resume hint
    steps         the commands' steps: prepare (check everything, write nothing), execute
    library       run_search and next_stage: the same steps from Python, keywords for flags
    figures       the report's five figures, drawn from stages
    study_figures   the five figures of a stored study, one call each (notebooks, the report)
    cli           the one rule for errors and exit codes, flag types, the book's trial lines

hpo/ commands (python -m hpo.<command>: main(argv) -> int)
    search        one study, or --stages K, with a progress bar and the book's summary
    narrow        the next stage from a finished one
    report        the figures and the book's table of a study and its stages
    export        a trial's parameters or full configuration as JSON or TOML
    train         retrain a stored trial and test it once, or replay it exactly
"""

import gc
from typing import Any

# Importing Optuna, SQLAlchemy and NumPy makes many objects and no garbage, and the collector ran
# 171 times over them (52-66 ms). Without it, ``import hpo.search`` takes 0.48 s instead of 0.54 s
# (medians of 12), in every command and every fresh worker process.
_collecting = gc.isenabled()
gc.disable()
try:
    from hpo.objective import TrialSetup
    from hpo.results import best_params, trial_config
finally:
    if _collecting:
        gc.enable()

# Loaded on first use: running a search needs the worker machinery (joblib), which reading
# results (best_params, hpo.report) does not; the figures need matplotlib (half a second on a
# slow core), which the commands and the search's worker processes do not.
_SEARCH = ("next_stage", "run_search")
_FIGURES = ("best_curves", "epochs", "history", "importances", "param_map", "report_figures")

__all__ = ["TrialSetup", "best_params", "trial_config", *_SEARCH, *_FIGURES]


def __getattr__(name: str) -> Any:
    if name in _SEARCH:
        from hpo import library

        return getattr(library, name)
    if name in _FIGURES:
        from hpo import study_figures

        return getattr(study_figures, name)
    raise AttributeError(f"module 'hpo' has no attribute {name!r}")
