"""Save a trained network with its architecture to ``.npz``, and load it back, without pickle."""

from __future__ import annotations

import json
import os

import numpy as np

from models.network import MultiLayerNet

_CONFIG_KEY = "__config__"


def save_network(net: MultiLayerNet, path: str | os.PathLike) -> None:
    """Write the network's architecture (as JSON) and state arrays to one ``.npz`` file."""
    np.savez(path, **net.state(), **{_CONFIG_KEY: np.array(json.dumps(net.config))})


def load_network(path: str | os.PathLike) -> MultiLayerNet:
    """Rebuild a network saved by :func:`save_network`.

    Raises:
        ValueError: If the file lacks the architecture or its arrays do not fit it.
    """
    with np.load(path, allow_pickle=False) as data:
        if _CONFIG_KEY not in data:
            raise ValueError(f"{os.fspath(path)!r} holds no network architecture ({_CONFIG_KEY}).")
        net = MultiLayerNet(**json.loads(str(data[_CONFIG_KEY])))
        net.load_state({key: data[key] for key in data.files if key != _CONFIG_KEY})
    return net
