"""hpo: hyperparameter optimization for the NumPy networks of *Deep Learning from Scratch*."""
