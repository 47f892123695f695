"""The edge rule: top trials crowding a range's edge move the next stage's range past it."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from hpo.edges import EDGE_LIMITS, crowding
from hpo.narrowing import crowded_edges, format_ranges, narrow_space
from hpo.space import DEFAULT_SPACE, Param

LR = FloatDistribution(1e-6, 1e-2, log=True)
WD = FloatDistribution(1e-8, 1e-4, log=True)


def study_trials(top_lrs, rest_lr=1e-4, wd=1e-6, n_rest=90):
    """100 complete trials: the 10 best at ``top_lrs``, the rest worse at ``rest_lr``."""
    values = [0.9 - 0.01 * i for i in range(len(top_lrs))] + [0.1] * n_rest
    lrs = list(top_lrs) + [rest_lr] * n_rest
    return [
        create_trial(
            state=TrialState.COMPLETE,
            value=v,
            params={"lr": lr, "weight_decay": wd},
            distributions={"lr": LR, "weight_decay": WD},
        )
        for v, lr in zip(values, lrs, strict=True)
    ]


# In log10: the range is -6 .. -2; its top tenth is above -2.4 (lr 3.98e-3), its bottom tenth
# below -5.6 (lr 2.51e-6).
HIGH = [9e-3, 8e-3, 7e-3, 6e-3, 5e-3, 9.5e-3, 8.5e-3, 4.5e-3, 1e-3, 2e-3]  # 8 of 10 high
LOW = [1e-6, 1.2e-6, 1.5e-6, 2e-6, 1.1e-6, 1.3e-6, 2.4e-6, 5e-6, 1e-5, 1.8e-6]  # 8 of 10 low
MIDDLE = [1e-4, 2e-4, 3e-4, 1.5e-4, 9e-5, 1.2e-4, 8e-5, 2.5e-4, 4e-3, 2.6e-6]  # 1 high, 1 low


def test_top_trials_at_the_high_edge_are_named_with_the_flag_that_widens_the_range():
    (line,) = crowded_edges(study_trials(HIGH), DEFAULT_SPACE)
    assert line == (
        "lr: 8 of the top 10 trials lie in the top tenth of its range (1e-06 .. 0.01); "
        "widen it with --lr 1e-06 0.1."
    )


def test_the_next_stage_moves_past_the_high_edge_and_records_the_rule_and_the_edge():
    result = narrow_space(DEFAULT_SPACE, study_trials(HIGH))
    lr = result.space["lr"]
    # The low end narrows as always (the top trials' 1e-3 less a margin of 0.4 decades) ...
    assert lr.low == pytest.approx(3.98e-4, rel=1e-2) and lr.low <= 1e-3
    # ... the high end moves a quarter of the 4 decades past 1e-2.
    assert lr.high == pytest.approx(0.1)
    stored = result.to_dict()
    assert stored["ranges"]["lr"]["moved"] == {
        "edge": "high",
        "crowded": [8, 10],
        "from": 1e-2,
        "to": pytest.approx(0.1),
    }
    assert "outer 0.1" in stored["edge_rule"] and "0.25" in stored["edge_rule"]
    assert "moved" not in stored["ranges"]["weight_decay"]  # every top trial has wd 1e-6
    assert any("at the high edge: moved past it" in row for row in format_ranges(result, "b"))


def test_top_trials_at_the_low_edge_move_the_low_end_down():
    (line,) = crowded_edges(study_trials(LOW, rest_lr=1e-3), DEFAULT_SPACE)
    assert "8 of the top 10 trials lie in the bottom tenth" in line
    assert line.endswith("widen it with --lr 1e-07 0.01.")
    lr = narrow_space(DEFAULT_SPACE, study_trials(LOW, rest_lr=1e-3)).space["lr"]
    assert lr.low == pytest.approx(1e-7) and lr.high < 1e-4


def test_top_trials_in_the_middle_neither_move_nor_speak():
    trials = study_trials(MIDDLE)
    assert crowded_edges(trials, DEFAULT_SPACE) == []
    result = narrow_space(DEFAULT_SPACE, trials)
    assert DEFAULT_SPACE["lr"].low <= result.space["lr"].low < result.space["lr"].high <= 1e-2
    assert "moved" not in result.ranges["lr"]


def test_a_categorical_parameter_has_no_edge_and_keeps_its_choices():
    space = {"optimizer": Param(choices=("sgd", "adam", "momentum"))}
    dist = CategoricalDistribution(("sgd", "adam", "momentum"))
    trials = [
        create_trial(
            state=TrialState.COMPLETE,
            value=0.9 - 0.01 * i,
            params={"optimizer": "momentum"},  # every top trial at the last choice
            distributions={"optimizer": dist},
        )
        for i in range(20)
    ]
    assert crowded_edges(trials, space) == []
    assert narrow_space(space, trials).space["optimizer"] == space["optimizer"]


def test_an_edge_never_moves_past_its_hard_limit():
    top = EDGE_LIMITS["lr"][1]
    param = Param(1e-3, 0.5, log=True)
    moved = crowding("lr", param, [0.45, 0.48, 0.5])
    assert moved.edge == "high" and moved.moved_to == top
    at_limit = Param(1e-3, top, log=True)
    assert crowding("lr", at_limit, [0.9, 0.95, 1.0]).moved_to == top
    trials = [
        create_trial(
            state=TrialState.COMPLETE,
            value=0.9,
            params={"lr": lr},
            distributions={"lr": FloatDistribution(1e-3, top, log=True)},
        )
        for lr in (0.9, 0.95, 1.0)
    ]
    (line,) = crowded_edges(trials, {"lr": at_limit}, top=3)
    assert line.endswith("that edge is at its hard limit (1).")


@pytest.mark.parametrize(
    ("param", "values", "expected"),
    [
        (Param(1, 100), [95, 99, 100], (85, 100 + 24)),  # int: a quarter of 99, on the grid
        (Param(0.0, 0.5, step=0.05), [0.5, 0.5, 0.45], (0.4, 0.6)),  # dropout-like, on its grid
    ],
)
def test_int_and_stepped_parameters_move_on_their_grid(param, values, expected):
    from hpo.narrowing import narrow_param

    name = "n_rows" if param.is_int else "dropout_ratio"
    new = narrow_param(param, values, margin=0.1, name=name)
    assert (new.low, new.high) == pytest.approx(expected)
    assert type(new.high) is type(param.high)


def test_a_single_top_trial_at_an_edge_is_not_a_crowd():
    assert crowding("lr", DEFAULT_SPACE["lr"], [1e-2]) is None
    assert optuna  # imported for create_trial's types


def test_the_param_map_shows_a_range_moved_past_stage_ones_edge():
    import dataclasses

    from hpo.config import SearchConfig
    from hpo.figures import Stage, plot_param_map
    from hpo.space import space_to_dict

    trials = study_trials(HIGH)
    result = narrow_space(DEFAULT_SPACE, trials)
    first = SearchConfig()
    second = dataclasses.replace(first, space=space_to_dict(result.space), sampler="tpe")
    fig = plot_param_map([Stage("s1", 1, first, trials), Stage("s2", 2, second, [])])
    x_low, x_high = fig.axes[0].get_xlim()
    assert x_low < 1e-6 and x_high > 0.1  # stage 2's lr range reaches 0.1, past stage 1's 1e-2


def test_the_searchs_summary_names_a_crowded_edge_and_says_nothing_otherwise():
    from hpo.config import SearchConfig
    from hpo.progress import summary_lines
    from hpo.study import store_config

    for top_lrs, expected in ((HIGH, 1), (MIDDLE, 0)):
        study = optuna.create_study(direction="maximize")
        store_config(study, SearchConfig())
        study.add_trials(study_trials(top_lrs))
        lines = summary_lines(study, "sqlite:///x.db", 1.0)
        assert sum("widen it with --lr" in line for line in lines) == expected
