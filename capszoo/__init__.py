"""capszoo: capsule networks with interchangeable routing, for Keras 3 on any backend."""

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
