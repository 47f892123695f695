"""Staged search against one-shot search, on the book's workload.

Run from the repository root: ``python benchmarks/bench_stages.py [--seeds 5] [--trials 60]``
(quick look while developing: ``--seeds 1 --trials 20``). Per seed about 6N trials of up to 50
epochs, two worker processes at a time.

For every seed (the ``--seed`` of ``python -m hpo.search``: it draws the 400/100 split, every
trial's weights and batches, and the samplers), on the default workload (mnist-5k, 500 samples ->
400 train / 100 validation, ``MultiLayerNet(784, [100]*6, 10)``, SGD, batch 100, 50 epochs,
``lr ~ LogUniform(1e-6, 1e-2)``, ``weight_decay ~ LogUniform(1e-8, 1e-4)``), three arms, each the
real command in a subprocess with ``--jobs 2``, each in its own SQLite file:

- **staged**: ``--stages 2 --trials N``: N random trials (stage 1, the book's sampler), then N
  trials of TPE in the ranges narrowed from stage 1's top 10% (stage 2, seeded with stage 1's
  trials inside them; past an edge those top trials crowd, by the edge rule of
  hpo/narrowing.py); the default pruner in both stages. Each stage alone is shown on its own row
  ("stage 1 only", "stage 2 only", no extra run);
- **random 2N**: the book's procedure: random sampler, no pruning, 2N trials in the book's ranges;
- **tpe 2N**: the default search: TPE and the default pruner, 2N trials in the book's ranges.

Per arm: trials it ran (seeded copies not counted), epochs trained, wall seconds of the command,
the best validation accuracy, and the held-out **test** accuracy of that winner retrained once
from its stored parameters and seed (:func:`hpo.objective.trial_setup`), on the 4,500 samples the
search never saw; ``*`` marks a retrain whose validation accuracy differs from the stored one
(trials are deterministic, so it should not). Targets: the staged best is at least random-2N's
in every seed (the staged-search issue), and the stage-2 winner's test accuracy is at least
0.84 in median over the seeds (the edge-rule issue: past the book's lr edge of 1e-2). Not a
test: nothing asserts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState
from threadpoolctl import threadpool_limits

from hpo.config import SearchConfig
from hpo.objective import build, load_split, trial_setup
from hpo.study import stored_config

ROOT = Path(__file__).resolve().parents[1]
JOBS = 2
TARGET_STAGE2_TEST = 0.84
PRUNER = SearchConfig().pruner


@dataclass
class Arm:
    """One arm of one seed, and what was read back from its database."""

    seed: int
    name: str
    sampler: str
    pruner: str
    trials: int = 0
    epochs: int = 0
    wall: float = float("nan")
    best: FrozenTrial | None = None
    config: SearchConfig | None = None
    test: float = float("nan")
    replay_differs: bool = False
    ranges: dict | None = None  # stage 2 only: the stored narrowing's ranges


def search(url: str, argv: list[str]) -> float:
    """Run ``python -m hpo.search`` with ``argv``; its wall seconds."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "hpo.search", "--storage", url, "--jobs", str(JOBS), "-q", *argv],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def own_trials(url: str, names: list[str]) -> tuple[list[FrozenTrial], SearchConfig]:
    """The trials the studies ran themselves (seeded copies skipped), and the last config."""
    trials, config = [], None
    for name in names:
        study = optuna.load_study(study_name=name, storage=url)
        trials += [t for t in study.get_trials() if "seeded_from" not in t.user_attrs]
        config = stored_config(study)
    return trials, config


def fill(arm: Arm, trials: list[FrozenTrial], config: SearchConfig) -> None:
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    complete = [t for t in finished if t.state == TrialState.COMPLETE]
    arm.trials = len(finished)
    arm.epochs = sum(int(t.user_attrs.get("epochs", 0)) for t in trials)
    arm.best = max(complete, key=lambda t: (t.value, -t.number), default=None)
    arm.config = config


def retrain(arm: Arm, split) -> None:
    """Train the arm's winner once more from its stored parameters and seed; test it."""
    if arm.best is None:
        return
    setup = trial_setup(arm.config, arm.best.params, int(arm.best.user_attrs["seed"]))
    with threadpool_limits(limits=1):
        net, trainer = build(setup, split)
        result = trainer.train()
    arm.replay_differs = result.history["val_acc"][-1] != arm.best.value
    arm.test = float(net.accuracy(split.x_test, split.t_test))


def run_seed(seed: int, n: int, folder: Path) -> list[Arm]:
    common = ["--seed", str(seed)]
    staged = Arm(seed, f"staged {n}+{n}", "random, tpe", PRUNER)
    first = Arm(seed, "  stage 1 only", "random", PRUNER)
    second = Arm(seed, "  stage 2 only", "tpe", PRUNER)
    random = Arm(seed, f"random {2 * n}", "random", "none")
    tpe = Arm(seed, f"tpe {2 * n}", "tpe", PRUNER)

    url = f"sqlite:///{folder}/staged-{seed}.db"
    staged.wall = search(url, [*common, "--study", "staged", "--stages", "2", "--trials", str(n)])
    fill(staged, *own_trials(url, ["staged-s1", "staged-s2"]))
    fill(first, *own_trials(url, ["staged-s1"]))
    fill(second, *own_trials(url, ["staged-s2"]))
    first.wall = second.wall = float("nan")
    ranges = optuna.load_study(study_name="staged-s2", storage=url).user_attrs["narrowing"]
    second.ranges = ranges["ranges"]

    url = f"sqlite:///{folder}/random-{seed}.db"
    argv = ["--study", "random", "--sampler", "random", "--pruner", "none", "--trials", str(2 * n)]
    random.wall = search(url, [*common, *argv])
    fill(random, *own_trials(url, ["random"]))

    url = f"sqlite:///{folder}/tpe-{seed}.db"
    argv = ["--study", "tpe", "--sampler", "tpe", "--pruner", PRUNER, "--trials", str(2 * n)]
    tpe.wall = search(url, [*common, *argv])
    fill(tpe, *own_trials(url, ["tpe"]))

    arms = [staged, first, second, random, tpe]
    split = load_split(arms[0].config)
    for arm in arms:
        retrain(arm, split)
    return arms


def fmt(x: float, spec: str) -> str:
    return "-" if x != x else format(x, spec)


def table(arms: list[Arm]) -> list[str]:
    header = ("seed", "arm", "sampler", "pruner", "trials", "epochs", "wall s", "best val", "test")
    rows = [header]
    for a in arms:
        best = "-" if a.best is None else f"{a.best.value:.2f}"
        rows.append(
            (
                str(a.seed),
                a.name,
                a.sampler,
                a.pruner,
                str(a.trials),
                str(a.epochs),
                fmt(a.wall, ".0f"),
                best,
                fmt(a.test, ".4f") + ("*" if a.replay_differs else ""),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0 .. SEEDS-1")
    parser.add_argument("--trials", type=int, default=60, help="trials per stage (N)")
    args = parser.parse_args()
    load = os.getloadavg()
    arms: list[Arm] = []
    with tempfile.TemporaryDirectory(prefix="bench-stages-") as folder:
        for seed in range(args.seeds):
            arms += run_seed(seed, args.trials, Path(folder))
            print(f"seed {seed} done", file=sys.stderr, flush=True)
    n = args.trials
    print(
        f"Staged search vs one-shot search: mnist-5k, 400/100 split, 50 epochs, {JOBS} jobs each; "
        f"load average at start {load[0]:.1f}"
    )
    for line in table(arms):
        print(line)
    verdicts = []
    for seed in range(args.seeds):
        by_name = {a.name: a for a in arms if a.seed == seed}
        staged, random = by_name[f"staged {n}+{n}"], by_name[f"random {2 * n}"]
        ok = staged.best is not None and (
            random.best is None or staged.best.value >= random.best.value
        )
        verdicts.append(ok)
        print(
            f"seed {seed}: staged best {staged.best.value:.2f} vs random-{2 * n} "
            f"{random.best.value:.2f}: {'met' if ok else 'MISSED'}"
        )
    print(
        f"Target (staged best >= random-{2 * n} best in every seed): "
        f"{'met' if all(verdicts) else 'missed'} in {sum(verdicts)} of {len(verdicts)} seeds."
    )
    seconds = [a for a in arms if a.name == "  stage 2 only"]
    for a in seconds:
        moved = {
            name: f"{r['new'][0]:.3g} .. {r['new'][1]:.3g}"
            + (f" (moved past the {r['moved']['edge']} edge)" if "moved" in r else "")
            for name, r in (a.ranges or {}).items()
            if "new" in r
        }
        print(f"seed {a.seed}: stage 2 ranges " + "; ".join(f"{k} {v}" for k, v in moved.items()))
    tests = [a.test for a in seconds if a.test == a.test]
    median = statistics.median(tests) if tests else float("nan")
    print(
        f"Target (stage-2 winner's test accuracy >= {TARGET_STAGE2_TEST} in median): "
        f"{median:.4f}: {'met' if median >= TARGET_STAGE2_TEST else 'MISSED'}"
        f" (per seed {', '.join(f'{t:.4f}' for t in tests)})."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
