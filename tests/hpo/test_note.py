"""The study note is stored in optuna-dashboard's layout and reads back as the last note written."""

from __future__ import annotations

import optuna
import pytest

from hpo.note import save_study_note
from hpo.storage import opened_storage

LONG = "".join(f"{i:05d} " for i in range(834))[:5000]  # three 2045-character chunks


def stored_note(study: optuna.Study) -> str:
    """The note as optuna-dashboard's reader joins it: every ``dashboard:note_str:<i>`` in order."""
    attrs = study._storage.get_study_system_attrs(study._study_id)
    chunks = [key for key in attrs if key.startswith("dashboard:note_str:")]
    return "".join(attrs[f"dashboard:note_str:{i}"] for i in range(len(chunks)))


@pytest.fixture(params=["in-memory", "sqlite"])
def study(request, tmp_path):
    if request.param == "in-memory":
        yield optuna.create_study()
        return
    with opened_storage(f"sqlite:///{tmp_path / 'note.db'}") as storage:
        yield optuna.create_study(storage=storage, study_name="note")


@pytest.mark.parametrize(
    "bodies",
    [
        [LONG, "short"],
        [LONG, LONG[:2046], "short"],
        ["short", LONG],
        [LONG, ""],
    ],
    ids=["long-short", "long-two-chunks-short", "short-long", "long-empty"],
)
def test_a_note_reads_back_as_the_last_one_written_whatever_came_before(study, bodies):
    for body in bodies:
        save_study_note(study, body)

    assert stored_note(study) == bodies[-1]
    attrs = study._storage.get_study_system_attrs(study._study_id)
    assert attrs["dashboard:note_ver"] == len(bodies)


def test_optuna_dashboards_own_reader_returns_exactly_the_short_note_after_a_long_one(study):
    optuna_dashboard = pytest.importorskip("optuna_dashboard")
    save_study_note(study, LONG)
    assert optuna_dashboard.get_note(study) == LONG

    save_study_note(study, "short")

    assert optuna_dashboard.get_note(study) == "short"
    attrs = study._storage.get_study_system_attrs(study._study_id)
    note = optuna_dashboard._note.get_note_from_system_attrs(attrs, None)
    assert note == {"version": 2, "body": "short"}


def test_the_note_written_here_equals_the_one_optuna_dashboard_writes(study):
    optuna_dashboard = pytest.importorskip("optuna_dashboard")
    theirs = optuna.create_study()
    for body in (LONG, "short"):
        save_study_note(study, body)
        optuna_dashboard.save_note(theirs, body)

    def note_attrs(s: optuna.Study) -> dict:
        attrs = s._storage.get_study_system_attrs(s._study_id)
        return {key: value for key, value in attrs.items() if key.startswith("dashboard:note")}

    assert note_attrs(study) == note_attrs(theirs)
