"""Training speed of the book's network against its matrix-product (GEMM) bound.

Run from the repository root: ``python benchmarks/bench_train.py``.

What it measures, for ``MultiLayerNet(784, [100] * 6, 10)`` (ReLU, He init), SGD, batch 100, in
float64 and float32, with BLAS pinned to one thread:

- **iteration**: one training step, ``net.loss_and_gradient(x, t)`` plus ``optimizer.update``,
  on batches cut beforehand (median over repeats of the mean over a block of steps); shown again
  with weight decay, which every trial of the search has (its cost does not depend on lambda);
- **trial**: a whole 50-epoch ``Trainer.train()`` on 400 training / 100 validation samples with
  evaluation after every epoch (median over runs); "shuffle" is the default sampling, and
  "replacement" (the book's ``np.random.choice`` batches) is shown for reference;
- **GEMM bound**: the same matrix products with the same shapes, memory layouts and dtype, timed in
  the same process between the runs above: ``x @ W`` forward for every layer, ``x.T @ dout`` for
  every ``dW``, and ``dout @ W.T`` for every layer but the first (whose input gradient the network
  skips). For a trial: 200 iterations' products plus 50 evaluation forward passes over the 400
  training and the 100 validation samples.

The ratio ``time / GEMM bound`` is what to compare (DESIGN.md, "Performance: how we measure"):
absolute times on shared machines vary from run to run, ratios measured side by side much less.
Times are CPU time of this process (``time.process_time``): with one BLAS thread that is the
compute time, and unlike wall time it leaves out the time the process waits for a core while
other jobs run on the machine (cache and core sharing still show, hence medians).
Everything else a step does (activations, softmax, bias and optimizer updates, Python) is the
overhead above 1.0x. Data: the embedded ``mnist-5k`` split when ``models.datasets`` can load it,
else random data of the same shapes (the timings do not depend on the values).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

try:
    import models
except ImportError:  # not pip-installed: run from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import models

from threadpoolctl import threadpool_limits

SIZES = [784, *[100] * 6, 10]
BATCH = 100
N_TRAIN, N_VAL = 400, 100
EPOCHS = 50
ITERS_PER_BLOCK = 100  # steps timed together in one iteration measurement
ITER_REPEATS = 15
TRIAL_RUNS = 7
WEIGHT_DECAY = 1e-6
TARGET_ITERATION = 1.3
TARGET_TRIAL = 1.5


def load_data() -> tuple[str, tuple[np.ndarray, ...]]:
    """400 training and 100 validation samples: real MNIST if available, else random."""
    try:
        from models.datasets import load_dataset, search_split

        split = search_split(load_dataset("mnist-5k"), 500, 0.2, np.random.default_rng(0))
        return "mnist-5k", (split.x_train, split.t_train, split.x_val, split.t_val)
    except Exception as error:  # any failure (missing file or package): use random data
        print(f"(mnist-5k unavailable: {error}; using random data)")
    rng = np.random.default_rng(0)
    return "random", (
        rng.random((N_TRAIN, SIZES[0])),
        rng.integers(0, SIZES[-1], N_TRAIN),
        rng.random((N_VAL, SIZES[0])),
        rng.integers(0, SIZES[-1], N_VAL),
    )


def build(dtype: type, seed: int = 0, weight_decay: float = 0.0) -> models.MultiLayerNet:
    return models.MultiLayerNet(
        SIZES[0], SIZES[1:-1], SIZES[-1], weight_decay_lambda=weight_decay, rng=seed, dtype=dtype
    )


class GemmBound:
    """The matrix products of the network's steps, on arrays of the same shapes and layouts."""

    def __init__(self, dtype: type) -> None:
        rng = np.random.default_rng(1)
        self.weights = [
            rng.standard_normal((a, b)).astype(dtype)
            for a, b in zip(SIZES[:-1], SIZES[1:], strict=True)
        ]
        self.train_inputs = [rng.standard_normal((BATCH, a)).astype(dtype) for a in SIZES[:-1]]
        self.douts = [rng.standard_normal((BATCH, b)).astype(dtype) for b in SIZES[1:]]
        self.eval_inputs = {
            n: [rng.standard_normal((n, a)).astype(dtype) for a in SIZES[:-1]]
            for n in (N_TRAIN, N_VAL)
        }

    def step(self) -> None:
        for x, w in zip(self.train_inputs, self.weights, strict=True):
            x @ w  # forward
        for x, dout in zip(self.train_inputs, self.douts, strict=True):
            x.T @ dout  # dW
        for dout, w in zip(self.douts[1:], self.weights[1:], strict=True):
            dout @ w.T  # dx, skipped for the first layer

    def forward(self, n: int) -> None:
        for x, w in zip(self.eval_inputs[n], self.weights, strict=True):
            x @ w

    def trial(self) -> None:
        for _ in range(EPOCHS * N_TRAIN // BATCH):
            self.step()
        for _ in range(EPOCHS):
            self.forward(N_VAL)
            self.forward(N_TRAIN)


def timed(fn: Callable[[], object]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def bench_iteration(
    dtype: type, data: tuple[np.ndarray, ...], weight_decay: float = 0.0
) -> tuple[float, float]:
    """Median seconds per training step and per the step's GEMMs, measured alternately."""
    x_train, t_train = np.asarray(data[0], dtype=dtype), data[1]
    batches = [(x_train[i : i + BATCH], t_train[i : i + BATCH]) for i in range(0, N_TRAIN, BATCH)]
    net = build(dtype, weight_decay=weight_decay)
    optimizer = models.SGD(lr=0.01)
    bound = GemmBound(dtype)

    def steps() -> None:
        for k in range(ITERS_PER_BLOCK):
            x, t = batches[k % len(batches)]
            _, grads = net.loss_and_gradient(x, t)
            optimizer.update(net.params, grads)

    def gemms() -> None:
        for _ in range(ITERS_PER_BLOCK):
            bound.step()

    steps(), gemms()  # warm-up
    step_times, gemm_times = [], []
    for _ in range(ITER_REPEATS):
        step_times.append(timed(steps) / ITERS_PER_BLOCK)
        gemm_times.append(timed(gemms) / ITERS_PER_BLOCK)
    return statistics.median(step_times), statistics.median(gemm_times)


def bench_trial(dtype: type, data: tuple[np.ndarray, ...], sampling: str) -> tuple[float, float]:
    """Median seconds per 50-epoch trial and per the trial's GEMMs, measured alternately."""
    bound = GemmBound(dtype)

    def trial(seed: int) -> None:
        optimizer = models.SGD(lr=0.01)
        trainer = models.Trainer(
            build(dtype, seed),
            optimizer,
            *data,
            epochs=EPOCHS,
            batch_size=BATCH,
            sampling=sampling,
            rng=seed,
        )
        result = trainer.train()
        assert result.epochs_run == EPOCHS, result.reason

    trial(0), bound.trial()  # warm-up
    trial_times, gemm_times = [], []
    for run in range(TRIAL_RUNS):
        trial_times.append(timed(lambda: trial(run)))  # noqa: B023 - called at once
        gemm_times.append(timed(bound.trial))
    return statistics.median(trial_times), statistics.median(gemm_times)


def main() -> int:
    source, data = load_data()
    rows = []
    with threadpool_limits(1):
        for dtype in (np.float64, np.float32):
            name = np.dtype(dtype).name
            step, gemm = bench_iteration(dtype, data)
            rows.append((name, "iteration", step * 1e3, gemm * 1e3, TARGET_ITERATION))
            step, gemm = bench_iteration(dtype, data, WEIGHT_DECAY)
            rows.append((name, "iteration, weight decay", step * 1e3, gemm * 1e3, None))
            for sampling in ("shuffle", "replacement"):
                trial, gemm = bench_trial(dtype, data, sampling)
                target = TARGET_TRIAL if sampling == "shuffle" else None
                rows.append((name, f"trial ({sampling})", trial * 1e3, gemm * 1e3, target))

    print(
        f"MultiLayerNet(784, [100]*6, 10), ReLU, He, SGD, batch {BATCH}; data: {source}; "
        f"1 BLAS thread; trial = {EPOCHS} epochs on {N_TRAIN}/{N_VAL} samples; CPU time, medians"
    )
    header = (
        f"{'dtype':8} {'measure':22} {'time ms':>10} {'GEMM ms':>10} {'ratio':>7} {'target':>8}"
    )
    print(header)
    print("-" * len(header))
    for name, what, t, g, target in rows:
        goal = f"<= {target:.1f}x" if target else "-"
        print(f"{name:8} {what:22} {t:10.3f} {g:10.3f} {t / g:6.2f}x {goal:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
