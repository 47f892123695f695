"""Full-size data: all 60,000 Fashion-MNIST training images, memory-mapped and shared."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import optuna
import pytest

from hpo import search, train
from hpo.config import SearchConfig
from hpo.runner import _SPLITS, cached_split
from models import idx, trainer
from models.datasets import ScaledRows

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
pytestmark = pytest.mark.skipif(
    any(not (DEBIAN / f"{stem}.gz").is_file() for stem in idx.IDX_FILES),
    reason=f"Debian's dataset-fashion-mnist is not installed ({DEBIAN})",
)


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("HPO_DATA_DIR", raising=False)
    _SPLITS.clear()
    yield
    _SPLITS.clear()


def test_a_worker_opens_the_60000_images_as_shared_memory_maps_without_float_copies():
    split = cached_split(SearchConfig(dataset="fashion-mnist", train_size=60000), None)
    assert (len(split.x_train), len(split.x_val), len(split.x_test)) == (48000, 12000, 10000)
    for rows in (split.x_train, split.x_val, split.x_test):
        assert isinstance(rows, ScaledRows) and isinstance(rows.images, np.memmap)
        assert not rows.images.flags.owndata and rows.images.dtype == np.uint8
    assert split.x_train.images is split.x_val.images  # one mapping of the training pool


def test_search_on_full_fashion_mnist_runs_one_tiny_trial_end_to_end(tmp_path):
    url = f"sqlite:///{tmp_path / 'full.db'}"
    flags = ["--dataset", "fashion-mnist", "--train-size", "60000", "--epochs", "1"]
    flags += ["--hidden", "5", "--dtype", "float32", "--trials", "1", "--jobs", "1", "-q"]
    assert search.main([*flags, "--storage", url, "--study", "full"]) == 0
    (trial,) = optuna.load_study(study_name="full", storage=url).trials
    assert trial.state == optuna.trial.TrialState.COMPLETE and 0.0 < trial.value <= 1.0
    assert len(list((tmp_path / "cache" / "hpo" / "fashion-mnist" / "npy").rglob("*.npy"))) == 4


def test_long_trials_train_in_compiled_loops_shared_by_forked_workers_and_replay_in_numpy(
    tmp_path, monkeypatch, capsys
):
    pytest.importorskip("numba")
    url = f"sqlite:///{tmp_path / 'long.db'}"
    epochs = -(-trainer.COMPILED_FROM_STEPS // 480)  # 480 steps of 100 images an epoch
    flags = ["--dataset", "fashion-mnist", "--train-size", "60000", "--epochs", str(epochs)]
    flags += ["--hidden", "5", "--pruner", "none", "--trials", "2", "--jobs", "2", "-q"]
    monkeypatch.delitem(sys.modules, "models.fused", raising=False)
    assert search.main([*flags, "--storage", url, "--study", "long"]) == 0
    # This process, worker 0, loaded the compiled loops before it forked worker 1.
    assert "models.fused" in sys.modules
    trials = optuna.load_study(study_name="long", storage=url).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2

    # The layers' NumPy reproduces each trial's stored curve to the last bit.
    monkeypatch.setattr(trainer, "COMPILED_FROM_STEPS", 10**9)
    for t in trials:
        capsys.readouterr()
        assert train.main(["--storage", url, "--study", "long", "--trial", str(t.number),
                           "--replay"]) == 0  # fmt: skip
        assert "IDENTICAL" in capsys.readouterr().out
