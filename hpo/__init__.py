"""hpo: hyperparameter optimization for the NumPy networks of *Deep Learning from Scratch*.

Training code takes a study's result in one line::

    from hpo import best_params
    params = best_params("sqlite:///studies/hpo.db", study="default")  # {"lr": ..., ...}

and :func:`trial_config` rebuilds any trial's network, optimizer, trainer and data split.
"""

from hpo.objective import TrialSetup
from hpo.results import best_params, trial_config

__all__ = ["TrialSetup", "best_params", "trial_config"]
