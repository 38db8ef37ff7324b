"""capszoo: capsule networks with interchangeable routing, for Keras 3 on any backend."""

import os as _os

try:  # first, so that a backend that cannot be imported is named, not met deep inside Keras
    import keras  # noqa: F401
except (ImportError, ValueError) as err:  # KERAS_BACKEND (or keras.json) names a missing or unknown backend
    _where = (f"KERAS_BACKEND={_os.environ['KERAS_BACKEND']}" if _os.environ.get("KERAS_BACKEND")
              else "the backend in Keras' keras.json (KERAS_BACKEND is unset)")
    _message = (f"cannot import Keras with {_where}: {err}. Install that backend or set "
                "KERAS_BACKEND to one that is installed: tensorflow, jax or torch")
    import sys as _sys

    # The `capszoo` command (or `python -m capszoo`, whose argv[0] is "-m" while the package
    # loads) imports this package before its main() runs: give it the CLI's one line, not a traceback.
    if _os.path.basename(_sys.argv[0] if _sys.argv else "") in ("capszoo", "capszoo.exe", "-m"):
        _sys.stderr.write(f"capszoo: error: {_message}\n")
        raise SystemExit(2) from None
    raise ImportError(f"capszoo {_message}") from None

from capszoo import layers, ops, routing
from capszoo.config import ModelConfig
from capszoo.data import class_names
from capszoo.models import CapsNet, CapsNet2, CapsNet3, CapsNet4
from capszoo.ops import ClassAccuracy, MarginLoss, squash
from capszoo.zoo import card, list_models, load

__version__ = "0.1.0"

__all__ = [
    "CapsNet",
    "CapsNet2",
    "CapsNet3",
    "CapsNet4",
    "ClassAccuracy",
    "MarginLoss",
    "ModelConfig",
    "card",
    "class_names",
    "layers",
    "list_models",
    "load",
    "ops",
    "routing",
    "squash",
]
