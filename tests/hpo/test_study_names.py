"""Study names are stored verbatim, whatever they are, but no file derived from one leaves
``studies/``, and a name the storage cannot keep is refused before anything is written."""

from __future__ import annotations

import pytest

from hpo import report, search
from hpo.study import MAX_STUDY_NAME, folder_name

from .conftest import db_checksum

TINY = ["--train-size", "100", "--epochs", "2", "--hidden", "10", "--jobs", "1", "-q"]


@pytest.mark.parametrize(
    ("name", "starts"),
    [
        ("default", "default"),
        ("book-s2", "book-s2"),
        ("../../escape", "_.._escape-"),
        ("", None),
        (".hidden", "hidden-"),
        ("a/b", "a_b-"),
        ("x" * 5000, "x" * 87 + "-"),
    ],
    ids=["plain", "stage", "parent folders", "empty", "dot", "slash", "5,000 characters"],
)
def test_every_study_name_gets_one_safe_folder_name(name, starts):
    made = folder_name(name)

    assert "/" not in made and not made.startswith(".") and 0 < len(made) <= 100
    if starts is not None:
        assert made.startswith(starts)
    assert (made == name) == (starts == name)  # a safe name is kept as it is


def test_names_that_differ_never_share_a_folder():
    names = ["a/b", "a_b", "a:b", "a b", "../a_b", "", "_"]

    assert len({folder_name(n) for n in names}) == len(names)


@pytest.mark.parametrize("name", ["../../escape", "", "x" * 300], ids=["../..", "empty", "long"])
def test_the_report_of_any_study_name_stays_inside_studies(tmp_path, monkeypatch, name):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert search.main(["--storage", url, "--study", name, "--trials", "2", *TINY]) == 0

    assert report.main(["--storage", url, "--study", name, "-q"]) == 0

    (folder,) = (work / "studies").iterdir()
    assert folder.name == folder_name(name) and len(list(folder.glob("*.png"))) == 5
    # Nothing escaped (the database's own -wal/-shm files aside).
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith("s.db")] == ["work"]


def test_a_name_too_long_to_store_is_refused_before_anything_is_written(tmp_path, capsys):
    db = tmp_path / "s.db"
    url = f"sqlite:///{db}"
    assert search.main(["--storage", url, "--trials", "1", *TINY]) == 0
    before = db_checksum(db)
    capsys.readouterr()

    code = search.main(["--storage", url, "--study", "x" * (MAX_STUDY_NAME + 1), *TINY])

    assert code == 2
    assert capsys.readouterr().err == (
        "hpo.search: error: --study: a study name may have at most 512 characters (Optuna's "
        "tables keep no more), but got one of 513.\n"
    )
    assert db_checksum(db) == before
