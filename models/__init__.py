"""The NumPy learning library of *Deep Learning from Scratch*: layers, ``MultiLayerNet``,
optimizers, ``Trainer``, datasets, and saving networks. Imports NumPy only."""

from models.datasets import (
    DATASETS,
    Dataset,
    DatasetUnavailableError,
    Split,
    load_dataset,
    search_split,
    train_val_split,
)
from models.layers import (
    Affine,
    BatchNormalization,
    Dropout,
    Relu,
    Sigmoid,
    SoftmaxWithLoss,
    Tanh,
)
from models.network import MultiLayerNet, init_std
from models.optimizers import (
    OPTIMIZERS,
    SGD,
    AdaGrad,
    Adam,
    Momentum,
    Nesterov,
    Optimizer,
    RMSprop,
    get_optimizer,
)
from models.serialize import load_network, save_network
from models.trainer import Trainer, TrainResult

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetUnavailableError",
    "Split",
    "load_dataset",
    "search_split",
    "train_val_split",
    "OPTIMIZERS",
    "SGD",
    "AdaGrad",
    "Adam",
    "Affine",
    "BatchNormalization",
    "Dropout",
    "Momentum",
    "MultiLayerNet",
    "Nesterov",
    "Optimizer",
    "RMSprop",
    "Relu",
    "Sigmoid",
    "SoftmaxWithLoss",
    "Tanh",
    "TrainResult",
    "Trainer",
    "get_optimizer",
    "init_std",
    "load_network",
    "save_network",
]
