"""examples/ch06_hyperparameters.ipynb: committed clean, and it runs top to bottom on tiny settings.

The run replaces the notebook's parameters cell (tagged ``parameters``) with a tiny search and
executes every cell in a fresh kernel of this Python (ipykernel's ``python3`` kernel, which
jupyter_client finds in this environment's ``share/jupyter`` or, failing that, in ipykernel itself).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import optuna
import pytest

from hpo import best_params, record

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "ch06_hyperparameters.ipynb"
CELL_TIMEOUT_S = 300  # a cell that hangs fails the test instead of the whole run


def load() -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOK, as_version=4)


def code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def tagged(nb, tag: str) -> list:
    return [c for c in nb.cells if tag in c.metadata.get("tags", [])]


def test_the_committed_notebook_is_valid_and_has_no_outputs():
    nb = load()
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    assert all(c.outputs == [] and c.execution_count is None for c in code_cells(nb))


def test_its_first_code_cell_is_the_one_parameters_cell():
    nb = load()
    assert tagged(nb, "parameters") == [code_cells(nb)[0]]
    names = re.findall(r"^([A-Z_]+) = ", code_cells(nb)[0].source, flags=re.MULTILINE)
    assert names == [
        "TRIALS",
        "STAGE_TRIALS",
        "EPOCHS",
        "TRAIN_SIZE",
        "JOBS",
        "SEED",
        "STORAGE",
        "STUDY",
    ]
    # The default storage's folder exists for a reader who runs it where it lies (cwd examples/).
    (url,) = re.findall(r'^STORAGE = "sqlite:///([^"]+)"', code_cells(nb)[0].source, flags=re.M)
    assert (NOTEBOOK.parent / url).parent.is_dir()


def cell_with(nb, text: str):
    (cell,) = [c for c in code_cells(nb) if text in c.source]
    return cell


def printed(cell) -> str:
    return "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")


def test_the_notebook_runs_on_tiny_settings_and_shows_figures_tables_and_the_test_accuracy(
    tmp_path,
):
    nb = load()
    storage = f"sqlite:///{tmp_path / 'nb.db'}"
    (params,) = tagged(nb, "parameters")
    params.source = "\n".join(
        [
            "TRIALS = 6",
            "STAGE_TRIALS = 4",
            "EPOCHS = 3",
            "TRAIN_SIZE = 100",
            "JOBS = 1",
            "SEED = 0",
            f"STORAGE = {storage!r}",
            'STUDY = "ch06"',
        ]
    )
    nb.cells.append(nbformat.v4.new_code_cell("import sys\nprint(sys.executable)"))

    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(tmp_path)}},  # the kernel's working directory
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, if one fails

    assert printed(nb.cells[-1]).strip() == sys.executable  # this environment's kernel ran it
    assert printed(cell_with(nb, "search_split(")) == (
        "training 80, validation 20, test 4900 (never seen by the search)\n"
    )
    for call in ("best_curves(STORAGE", "param_map(STORAGE", "history(STORAGE"):
        (result,) = [o for o in cell_with(nb, call).outputs if o.output_type == "execute_result"]
        assert result.data["image/png"], call  # the Figure shown inline

    first = optuna.load_study(study_name="ch06", storage=storage)
    child = optuna.load_study(study_name="ch06-s2", storage=storage)
    assert len(first.trials) == 6
    assert len([t for t in child.trials if "seeded_from" not in t.user_attrs]) == 4
    ranked = record.ranked(first.trials)
    book = printed(cell_with(nb, 'print(f"Best-{i}')).splitlines()
    assert len(book) == min(len(ranked), 20) >= 1
    assert book[0] == (
        f"Best-1(val acc:{ranked[0].value:.3g}) | lr:{ranked[0].params['lr']:.3g}, "
        f"weight decay:{ranked[0].params['weight_decay']:.3g}"
    )
    # next_stage says what it narrowed (its plan: old and new ranges), then runs the stage.
    assert "Stage 2 'ch06-s2' from 'ch06'" in printed(cell_with(nb, "next_stage("))
    assert child.user_attrs["parent_study"] == "ch06"
    table = printed(cell_with(nb, "seeded_from")).splitlines()
    assert table[0].split()[:4] == ["stage", "trials", "complete", "best"]
    assert [row.split()[:2] for row in table[1:]] == [["ch06", "6"], ["ch06-s2", "4"]]

    retrain = printed(cell_with(nb, "best_params(")).splitlines()
    assert retrain[0] == str(best_params(storage, "ch06-s2"))
    assert re.fullmatch(r"train acc [01]\.\d{3}, val acc [01]\.\d{3}", retrain[1])
    assert re.fullmatch(
        r"test acc [01]\.\d{3} on 4900 samples the search never saw\n",
        printed(cell_with(nb, "network.accuracy(split.x_test")),
    )
