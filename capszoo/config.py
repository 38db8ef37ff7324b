"""Typed, validated configuration.

``ModelConfig`` describes a capsule network completely: the models are built from it, and it
is what a zoo entry's ``[model]`` table and a saved ``.keras`` model carry. Invalid values and
unknown keys raise ``ValueError`` naming the key.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any

from capszoo.routing import available_routings, get_routing
from capszoo.routing.base import _REGISTRY, routing_parameters


def _positive_int(key, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"model.{key} must be an integer >= 1, got {value!r}")
    return int(value)


def _int_tuple(key, value, length=None):
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and length is not None:
        value = (value,) * length
    if not isinstance(value, (tuple, list)):
        raise ValueError(f"model.{key} must be a list of integers, got {value!r}")
    items = tuple(_positive_int(key, v) for v in value)
    if length is not None and len(items) != length:
        raise ValueError(f"model.{key} must have {length} entries (one per capsule layer), got {len(items)}")
    return items


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A capsule network: conv -> primary capsules -> capsule layers -> class-capsule lengths.

    Defaults are the paper's CapsNet2 on 28x28x1 (Sabour et al.; Ren et al.).

    Attributes:
        input_shape: ``(height, width, channels)`` of the images.
        num_classes: number of classes; the last capsule layer has this many capsules.
        conv_filters, conv_kernel_size: the first (ReLU) convolution.
        primary_types, primary_dim, primary_kernel_size, primary_strides: the primary capsules.
        capsules: capsule counts of the layers after the primary capsules, ending with
            ``num_classes``: ``(10,)`` for CapsNet2, ``(256, 10)`` for CapsNet3,
            ``(256, 32, 10)`` for CapsNet4.
        capsule_dims: capsule dimension of each of those layers (an int means "all"); the class
            capsules are 16-D in the papers, which do not give the intermediate ones (16 here).
        routing: a registered routing name (see :func:`capszoo.routing.available_routings`).
        iterations: routing iterations, for strategies that take them.
        lam: the gradient coefficient λ, for strategies that take it.
        routing_options: any further keyword arguments of the routing strategy
            (``{"stop_gradient": True}`` for ``dynamic``).
        decoder: add Sabour's reconstruction decoder.
        decoder_units: its hidden widths.
        return_capsules: output a dict with the class capsules, not only the class scores.
    """

    input_shape: tuple[int, int, int] = (28, 28, 1)
    num_classes: int = 10
    conv_filters: int = 256
    conv_kernel_size: int = 9
    primary_types: int = 32
    primary_dim: int = 8
    primary_kernel_size: int = 9
    primary_strides: int = 2
    capsules: tuple[int, ...] = (10,)
    capsule_dims: Any = 16
    routing: str = "dynamic"
    iterations: int = 3
    lam: float = 1.0
    routing_options: dict = dataclasses.field(default_factory=dict)
    decoder: bool = False
    decoder_units: tuple[int, ...] = (512, 1024)
    return_capsules: bool = False

    def __post_init__(self):
        set_ = object.__setattr__  # frozen: normalise in place once, here
        set_(self, "input_shape", _int_tuple("input_shape", self.input_shape))
        if len(self.input_shape) != 3:
            raise ValueError(f"model.input_shape must be (height, width, channels), got {self.input_shape!r}")
        for key in ("num_classes", "conv_filters", "conv_kernel_size", "primary_types", "primary_dim",
                    "primary_kernel_size", "primary_strides"):
            set_(self, key, _positive_int(key, getattr(self, key)))
        set_(self, "capsules", _int_tuple("capsules", self.capsules))
        if not self.capsules or self.capsules[-1] != self.num_classes:
            raise ValueError(
                f"model.capsules must end with the class capsules (num_classes={self.num_classes}), "
                f"got {self.capsules!r}"
            )
        set_(self, "capsule_dims", _int_tuple("capsule_dims", self.capsule_dims, len(self.capsules)))
        set_(self, "decoder_units", _int_tuple("decoder_units", self.decoder_units))
        for key in ("decoder", "return_capsules"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"model.{key} must be true or false, got {getattr(self, key)!r}")
        if not isinstance(self.routing_options, dict):
            raise ValueError(f"model.routing_options must be a table, got {self.routing_options!r}")
        set_(self, "routing_options", dict(self.routing_options))
        self.routing_strategy()  # validates routing, iterations, lam and routing_options
        if self.primary_grid[0] < 1 or self.primary_grid[1] < 1:
            raise ValueError(
                f"model.input_shape {self.input_shape} is too small for a {self.conv_kernel_size}x"
                f"{self.conv_kernel_size} convolution followed by {self.primary_kernel_size}x"
                f"{self.primary_kernel_size} primary capsules with stride {self.primary_strides}"
            )

    @property
    def primary_grid(self):
        """Spatial size of the primary-capsule grid (valid padding)."""
        h, w, _ = self.input_shape
        k, p, s = self.conv_kernel_size, self.primary_kernel_size, self.primary_strides
        return tuple((d - k + 1 - p) // s + 1 for d in (h, w))

    @property
    def primary_capsules(self):
        """Number of primary capsules: 1152 on 28x28 and 2048 on 32x32 with the paper's widths."""
        return self.primary_grid[0] * self.primary_grid[1] * self.primary_types

    @property
    def depth(self):
        """Number of capsule layers counting the primary capsules (2 for CapsNet2)."""
        return len(self.capsules) + 1

    def routing_strategy(self):
        """The routing strategy this config asks for, given only the arguments it takes."""
        if self.routing not in _REGISTRY:
            raise ValueError(
                f"model.routing: unknown routing {self.routing!r}; available: {', '.join(available_routings())}"
            )
        accepted = routing_parameters(self.routing)
        kwargs = {key: getattr(self, key) for key in ("iterations", "lam") if key in accepted}
        unknown = set(self.routing_options) - set(accepted)
        if unknown:
            raise ValueError(f"model.routing_options: {self.routing!r} routing takes no option(s) {sorted(unknown)}")
        try:
            return get_routing(self.routing, **kwargs, **self.routing_options)
        except ValueError as err:
            raise ValueError(f"model: {err}") from None

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        data = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}

    @classmethod
    def from_dict(cls, data):
        if isinstance(data, cls):
            return data
        if not isinstance(data, dict):
            raise ValueError(f"a model config is a table/dict, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config key(s): {', '.join('model.' + k for k in unknown)}")
        return cls(**data)
