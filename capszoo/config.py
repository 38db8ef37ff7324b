"""Typed, validated configuration: one object drives build, train, tune, evaluate and export.

``Config`` has three sections, each a frozen dataclass: ``model`` (:class:`ModelConfig`, which
describes a capsule network completely and is what a saved ``.keras`` model carries), ``data``
(:class:`DataConfig`) and ``training`` (:class:`TrainingConfig`), plus an optional ``search``
(:class:`SearchConfig`: what :mod:`capszoo.tuning` varies). A zoo entry is a TOML file with
``[model]``, ``[data]`` and ``[training]`` tables. Invalid values and unknown keys raise
``ValueError`` naming the key (``model.lam``, ``training.epochs``, ...).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import os
from pathlib import Path
from typing import Any, ClassVar

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from capszoo.routing import get_routing
from capszoo.routing.base import (
    _REGISTRY,
    any_routing_parameters,
    check_count,
    routing_parameters,
    unknown_routing_error,
)


def _positive_int(key, value, section="model", minimum=1):
    return check_count(f"{section}.{key}", value, minimum)


def _int_tuple(key, value, length=None, section="model"):
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and length is not None:
        value = (value,) * length
    if not isinstance(value, (tuple, list)):
        raise ValueError(f"{section}.{key} must be a list of integers, got {value!r}")
    items = tuple(_positive_int(key, v, section) for v in value)
    if length is not None and len(items) != length:
        raise ValueError(f"{section}.{key} must have {length} entries (one per capsule layer), got {len(items)}")
    return items


def _number(key, value, section, low=None, high=None, low_open=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{section}.{key} must be a finite number, got {value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{section}.{key} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{section}.{key} must be <= {high}, got {value!r}")
    return float(value)


def _choice(key, value, choices, section):
    if value not in choices:
        raise ValueError(f"{section}.{key} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def _known_routing(key, value):
    if value not in _REGISTRY:
        raise unknown_routing_error(value, key)
    return value


# ModelConfig's fields that are routing hyperparameters: each routing takes some of them.
ROUTING_FIELDS = ("iterations", "lam")

# The intermediate capsule layers of the adaptive-routing paper's deeper nets, in order:
# CapsNet3 adds 256 capsules after the primary ones, CapsNet4 256 and then 32.
PAPER_HIDDEN_CAPSULES = (256, 32)
PRECISIONS = ("float32", "mixed_bfloat16")
# What a [search] table may vary (in the order results are shown).
SEARCH_DIMENSIONS = ("routing", "lam", "iterations", "depth", "learning_rate")


def _from_dict(cls, data, section):
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ValueError(f"the [{section}] config is a table/dict, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        hint = ""
        if "routing_options" in known:  # a routing's own option given as a model field (stop_gradient=True)
            options = sorted(set(unknown) & any_routing_parameters())
            if options:
                hint = (f" ({', '.join(options)}: a routing option, given as routing_options = "
                        f"{{{', '.join(f'{o} = ...' for o in options)}}})")
        raise ValueError(f"unknown {section} config key(s): {', '.join(section + '.' + k for k in unknown)}{hint}")
    return cls(**data)


class _Section:
    """dict round trip of a config section (tuples become lists, for TOML and JSON)."""

    section = ""

    def to_dict(self):
        data = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}

    @classmethod
    def from_dict(cls, data):
        return _from_dict(cls, data, cls.section)

    def updated(self, changes):
        """A copy with the fields of the dict ``changes``, checked as ``from_dict`` checks a table."""
        return type(self).from_dict({**self.to_dict(), **changes})


@dataclasses.dataclass(frozen=True)
class ModelConfig(_Section):
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

    section: ClassVar[str] = "model"

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
        if self.num_classes < 2:
            raise ValueError(f"model.num_classes must be >= 2, got {self.num_classes}: the prediction is the longest "
                             "class capsule, and a lone capsule always is (every image its class, at 100 % accuracy)")
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

    def param_count(self):
        """Number of weights of the network this config builds, computed without building it
        (what ``CapsNet(config).count_params()`` reports; a test holds the two equal)."""
        h, w, c = self.input_shape
        count = self.conv_kernel_size**2 * c * self.conv_filters + self.conv_filters
        primary_filters = self.primary_types * self.primary_dim
        count += self.primary_kernel_size**2 * self.conv_filters * primary_filters + primary_filters
        n_in, d_in = self.primary_capsules, self.primary_dim
        for n_out, d_out in zip(self.capsules, self.capsule_dims, strict=True):
            count += n_in * d_in * n_out * d_out
            n_in, d_in = n_out, d_out
        if self.decoder:
            width = n_in * d_in
            for units in (*self.decoder_units, h * w * c):
                count += width * units + units
                width = units
        return count

    def routing_strategy(self):
        """The routing strategy this config asks for, given only the arguments it takes."""
        _known_routing("model.routing", self.routing)
        accepted = routing_parameters(self.routing)
        # A field at its default stands for "not given" here (a dict round trip holds every field);
        # refuse_ignored_routing_fields sees what a caller named.
        refuse_ignored_routing_fields(self.routing, {key: getattr(self, key) for key in ROUTING_FIELDS
                                                     if getattr(self, key) != _FIELD_DEFAULTS[key]})
        kwargs = {key: getattr(self, key) for key in ROUTING_FIELDS if key in accepted}
        unknown = set(self.routing_options) - set(accepted)
        if unknown:
            raise ValueError(f"model.routing_options: {self.routing!r} routing takes no option(s) {sorted(unknown)}")
        try:
            return get_routing(self.routing, **kwargs, **self.routing_options)
        except ValueError as err:
            raise ValueError(f"model: {err}") from None

    def replace(self, **changes):
        """A copy with ``changes``. A change of routing drops what the new routing does not take
        (``lam``, ``iterations`` back to their defaults, routing options), unless also given."""
        routing = changes.get("routing", self.routing)
        if routing != self.routing and routing in _REGISTRY:
            taken = routing_parameters(routing)
            for key in ROUTING_FIELDS:
                if key not in changes and key not in taken:
                    changes[key] = _FIELD_DEFAULTS[key]
            if "routing_options" not in changes:
                changes["routing_options"] = {k: v for k, v in self.routing_options.items() if k in taken}
        return dataclasses.replace(self, **changes)

    def updated(self, changes):
        """As :meth:`replace` with a dict (``Config.replace(model={...})``): a change of routing
        drops what the new routing does not take, and unknown keys are named."""
        routing = changes.get("routing", self.routing)
        base = self
        if isinstance(routing, str) and routing != self.routing and routing in _REGISTRY:
            base = self.replace(routing=routing)
        return super(ModelConfig, base).updated(changes)

    def with_depth(self, depth, hidden_capsules=PAPER_HIDDEN_CAPSULES, hidden_dim=16):
        """This network with ``depth`` capsule layers counting the primary capsules: the first
        ``depth - 2`` of ``hidden_capsules`` (of dimension ``hidden_dim``), then the class capsules."""
        hidden = tuple(hidden_capsules[:depth - 2])
        if depth < 2 or len(hidden) != depth - 2:
            allowed = list(range(2, 3 + len(hidden_capsules)))
            choices = " or ".join(filter(None, [", ".join(map(str, allowed[:-1])), str(allowed[-1])]))
            raise ValueError(f"depth must be {choices} (capsule layers counting the primary capsules), got {depth}")
        return self.replace(capsules=(*hidden, self.num_classes),
                            capsule_dims=(*[hidden_dim] * len(hidden), self.capsule_dims[-1]))


def refuse_ignored_routing_fields(routing, given):
    """One ``ValueError`` for a routing hyperparameter in ``given`` (a dict of the fields a caller
    set) that ``routing`` does not take: a value the routing would ignore is a mistake, not a setting."""
    _known_routing("model.routing", routing)
    accepted = routing_parameters(routing)
    for key in ROUTING_FIELDS:
        if key in given and key not in accepted:
            takes = ", ".join(accepted) or "no parameters"
            raise ValueError(f"model.{key} = {given[key]!r} has no effect with {routing!r} routing (it takes "
                             f"{takes}): leave {key} out, or choose a routing that takes it")


_FIELD_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ModelConfig) if f.name in ROUTING_FIELDS}

# name -> (native height, width, channels): the one table of the datasets' shapes.
DATASET_SHAPES = {
    "digits": (8, 8, 1),
    "mnist": (28, 28, 1),
    "fashion_mnist": (28, 28, 1),
    "cifar10": (32, 32, 3),
    "svhn_cropped": (32, 32, 3),
}
DATASET_NAMES = tuple(DATASET_SHAPES)


@dataclasses.dataclass(frozen=True)
class DataConfig(_Section):
    """Which data, and the adaptive-routing paper's preprocessing.

    Attributes:
        dataset: one of ``digits`` (scikit-learn's bundled 8x8 digits: needs no download),
            ``mnist``, ``fashion_mnist``, ``cifar10``, ``svhn_cropped``.
        source: ``auto`` (an offline folder if one is set, else tensorflow-datasets), ``tfds``
            or ``npz`` (an offline folder of ``.npz`` files, see :mod:`capszoo.data`).
        data_dir: the offline folder; ``CAPSZOO_DATA_DIR`` is used when this is empty.
        image_size: ``(height, width)`` the images are brought to, or empty to keep them.
        resize: how: ``pad`` (zero padding around the centred image; it must fit) or
            ``bilinear`` (resampling; averaging over the pixels it shrinks, as Pillow's filter in
            ``capszoo predict`` does).
        shift_pixels: random translation of up to this many pixels with zero padding, training
            batches only (2 for CIFAR-10 and SVHN in the paper, 0 otherwise).
        horizontal_flip: mirror each training image left-right with probability 1/2 (the papers
            do not; a recipe without it keeps its hash).
        validation_fraction: share of the training split held out for validation,
            deterministically (the same examples for a given seed).
        train_subset: use only the first N training examples (0: all), for quick runs.
        test_subset: likewise for the test split.
        seed: seed of the validation split, the shuffling and the augmentation.
    """

    section: ClassVar[str] = "data"

    dataset: str = "mnist"
    source: str = "auto"
    data_dir: str = ""
    image_size: tuple[int, ...] = ()
    resize: str = "pad"
    shift_pixels: int = 0
    horizontal_flip: bool = False
    validation_fraction: float = 0.0
    train_subset: int = 0
    test_subset: int = 0
    seed: int = 0

    def __post_init__(self):
        set_ = object.__setattr__
        _choice("dataset", self.dataset, DATASET_NAMES, "data")
        _choice("source", self.source, ("auto", "tfds", "npz"), "data")
        _choice("resize", self.resize, ("pad", "bilinear"), "data")
        if not isinstance(self.data_dir, str):
            raise ValueError(f"data.data_dir must be a path string, got {self.data_dir!r}")
        set_(self, "image_size", _int_tuple("image_size", self.image_size, section="data"))
        if len(self.image_size) not in (0, 2):
            raise ValueError(f"data.image_size must be [height, width] or empty, got {list(self.image_size)}")
        for key in ("shift_pixels", "train_subset", "test_subset", "seed"):
            set_(self, key, _positive_int(key, getattr(self, key), "data", minimum=0))
        set_(self, "validation_fraction", _number("validation_fraction", self.validation_fraction, "data", 0.0, 0.5))
        if not isinstance(self.horizontal_flip, bool):
            raise ValueError(f"data.horizontal_flip must be true or false, got {self.horizontal_flip!r}")

    @property
    def image_shape(self):
        """``(height, width, channels)`` of the images this section produces."""
        height, width, channels = DATASET_SHAPES[self.dataset]
        return (*(self.image_size or (height, width)), channels)



@dataclasses.dataclass(frozen=True)
class TrainingConfig(_Section):
    """The papers' recipe: Adam 1e-3, learning rate x 0.95 each epoch, batch 128, margin loss.

    Attributes:
        epochs, batch_size, learning_rate, lr_decay: per-epoch exponential decay factor.
        reconstruction_weight: weight of the decoder's sum-of-squared-errors loss (Sabour: 0.0005);
            used only when the model has a decoder.
        m_plus, m_minus, down_weight: the margin loss.
        seed: weights initialisation and everything else random in Keras.
        precision: ``float32``, or ``mixed_bfloat16``: the two convolutions compute in bfloat16
            (1.8-1.9x faster per training step on a 2-core CPU with AVX-512 BF16, README) while the squash, the
            routing, the lengths and every weight stay float32. Training only: the weights saved
            are float32 and :func:`capszoo.load` builds a float32 model.
        ema_momentum: ``0`` (off), or the momentum ``m`` in (0, 1) of an exponential moving average
            of the weights (Polyak averaging; Keras' ``use_ema``): after each step ``average <-
            m * average + (1 - m) * weights``, starting from the weights after the first step.
            Each epoch's validation is measured with the averaged weights, and the run saves them
            at its end; checkpoints keep both, so ``resume`` goes on exactly. ``1 / (1 - m)`` steps
            is its horizon: 0.999 averages over about the last 1,000.
    """

    section: ClassVar[str] = "training"

    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 1e-3
    lr_decay: float = 0.95
    reconstruction_weight: float = 0.0005
    m_plus: float = 0.9
    m_minus: float = 0.1
    down_weight: float = 0.5
    seed: int = 0
    precision: str = "float32"
    ema_momentum: float = 0.0

    def __post_init__(self):
        set_ = object.__setattr__
        _choice("precision", self.precision, PRECISIONS, "training")
        set_(self, "epochs", _positive_int("epochs", self.epochs, "training"))
        set_(self, "batch_size", _positive_int("batch_size", self.batch_size, "training"))
        set_(self, "seed", _positive_int("seed", self.seed, "training", minimum=0))
        set_(self, "learning_rate", _number("learning_rate", self.learning_rate, "training", 0.0, low_open=True))
        set_(self, "lr_decay", _number("lr_decay", self.lr_decay, "training", 0.0, 1.0, low_open=True))
        set_(self, "reconstruction_weight",
             _number("reconstruction_weight", self.reconstruction_weight, "training", 0.0))
        for key in ("m_plus", "m_minus", "down_weight"):
            set_(self, key, _number(key, getattr(self, key), "training", 0.0, 1.0 if key != "down_weight" else None))
        set_(self, "ema_momentum", _number("ema_momentum", self.ema_momentum, "training", 0.0))
        if not self.ema_momentum < 1.0:  # 1 would never move the average off the first step's weights
            raise ValueError(f"training.ema_momentum must be below 1 (0 turns the average off), got "
                             f"{self.ema_momentum!r}")
        if not self.m_minus < self.m_plus:
            raise ValueError(f"training.m_minus ({self.m_minus}) must be below training.m_plus ({self.m_plus})")



_RANGE_KEYS = {"min", "max", "step", "sampling"}


def _search_values(key, value, check):
    """A search dimension: ``None`` (fixed by the base config), a list (``hp.Choice``) or a range
    table ``{min, max, step?, sampling?}`` (``hp.Float`` / ``hp.Int``). ``check`` validates one value."""
    name = f"search.{key}"
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError(f"{name} must list at least one value")
        values = tuple(check(name, v) for v in value)
        if len(set(values)) != len(values):
            raise ValueError(f"{name} lists a value twice: {list(value)}")
        return values
    if isinstance(value, dict):
        unknown = sorted(set(value) - _RANGE_KEYS)
        if unknown or not {"min", "max"} <= set(value):
            raise ValueError(f"{name} as a range is a table with min, max and optionally step, sampling; "
                             f"got {sorted(value)}")
        low, high = check(name, value["min"]), check(name, value["max"])
        if isinstance(low, str) or not low < high:
            raise ValueError(f"{name}: a range needs numbers with min < max, got {value!r}")
        sampling = _choice("sampling", value.get("sampling", "linear"), ("linear", "log", "reverse_log"), name)
        spec = {"min": low, "max": high, "sampling": sampling}
        if "step" in value:
            spec["step"] = _number("step", value["step"], name, 0.0, low_open=True)
        return spec
    raise ValueError(f"{name} must be a list of values or a {{min, max}} table, got {value!r}")


def _positive_float(name, value):
    return _number(name.split(".", 1)[1], value, "search", 0.0, low_open=True)


def _at_least_one(name, value):
    return _positive_int(name.split(".", 1)[1], value, "search")


@dataclasses.dataclass(frozen=True)
class SearchConfig(_Section):
    """What a hyperparameter search (:mod:`capszoo.tuning`) varies; anything left out is fixed
    by the rest of the config. Each dimension is a list (``hp.Choice``) or a range table
    ``{min = .., max = .., step = .., sampling = "log"}`` (``hp.Float``/``hp.Int``).

    Attributes:
        routing: routing algorithms to compare.
        lam: the gradient coefficient λ (only for routings that take it: ``adaptive_lambda``).
        iterations: routing iterations (only for routings that take them: ``dynamic``, ``adaptive``).
        depth: capsule layers counting the primary capsules, 2 to ``2 + len(hidden_capsules)``.
        learning_rate: Adam's initial learning rate.
        hidden_capsules: capsule counts of the intermediate layers a deeper net gets, in order:
            the papers' ``[256, 32]`` (CapsNet3 adds 256, CapsNet4 256 and 32).
        hidden_dim: their capsule dimension.
        objective: the validation metric to maximise (``val_accuracy``).
    """

    section: ClassVar[str] = "search"

    routing: Any = None
    lam: Any = None
    iterations: Any = None
    depth: Any = None
    learning_rate: Any = None
    hidden_capsules: tuple[int, ...] = PAPER_HIDDEN_CAPSULES
    hidden_dim: int = 16
    objective: str = "val_accuracy"

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "routing", _search_values("routing", self.routing, _known_routing))
        if isinstance(self.routing, dict):
            raise ValueError("search.routing must be a list of routing names")
        for key, check in (("lam", _positive_float), ("learning_rate", _positive_float),
                           ("iterations", _at_least_one), ("depth", _at_least_one)):
            set_(self, key, _search_values(key, getattr(self, key), check))
        set_(self, "hidden_capsules", _int_tuple("hidden_capsules", self.hidden_capsules, section="search"))
        set_(self, "hidden_dim", _positive_int("hidden_dim", self.hidden_dim, "search"))
        if not isinstance(self.objective, str) or not self.objective.startswith("val_"):
            raise ValueError(f"search.objective must name a validation metric (val_...), got {self.objective!r}")
        deepest = 2 + len(self.hidden_capsules)
        depths = self.depth if isinstance(self.depth, tuple) else (self.depth["min"], self.depth["max"]) \
            if self.depth else ()
        bad = [d for d in depths if not 2 <= d <= deepest]
        if bad:
            raise ValueError(f"search.depth must be between 2 and {deepest} (2 + len(search.hidden_capsules)), "
                             f"got {bad[0]}")

    @property
    def searched(self):
        """Names of the dimensions this search varies."""
        return [k for k in SEARCH_DIMENSIONS if getattr(self, k) is not None]

    def to_dict(self):
        return {k: v for k, v in super().to_dict().items() if v is not None}


@dataclasses.dataclass(frozen=True)
class Config:
    """A whole experiment: ``name``, ``description``, ``model``, ``data``, ``training`` and an
    optional ``search`` space for :mod:`capszoo.tuning`."""

    name: str = "unnamed"
    description: str = ""
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
    search: SearchConfig = dataclasses.field(default_factory=SearchConfig)

    def __post_init__(self):
        for key in ("name", "description"):
            if not isinstance(getattr(self, key), str):
                raise ValueError(f"{key} must be a string, got {getattr(self, key)!r}")
        object.__setattr__(self, "model", ModelConfig.from_dict(self.model))
        object.__setattr__(self, "data", DataConfig.from_dict(self.data))
        object.__setattr__(self, "training", TrainingConfig.from_dict(self.training))
        object.__setattr__(self, "search", SearchConfig.from_dict(self.search))
        routings = self.search.routing or (self.model.routing,)
        for key in ("lam", "iterations"):
            if getattr(self.search, key) is not None and not any(key in routing_parameters(r) for r in routings):
                raise ValueError(f"search.{key} is given but no routing searched ({', '.join(routings)}) takes "
                                 f"{key}: add one that does to search.routing")
        native = DATASET_SHAPES[self.data.dataset]
        if self.data.resize == "pad" and any(s < n for s, n in zip(self.data.image_shape, native, strict=True)):
            raise ValueError(f"data.image_size {list(self.data.image_size)} is smaller than {self.data.dataset}'s "
                             f"{native[0]}x{native[1]} images: padding cannot shrink them (use resize = \"bilinear\")")
        if self.model.input_shape != self.data.image_shape:
            raise ValueError(f"model.input_shape {list(self.model.input_shape)} does not match the images of "
                             f"data.dataset = {self.data.dataset!r} with data.image_size = "
                             f"{list(self.data.image_size)}, which are {list(self.data.image_shape)}")

    def replace(self, **sections):
        """A copy with some fields changed: ``config.replace(training={"epochs": 3})``."""
        changes = {}
        for key, value in sections.items():
            current = getattr(self, key)
            if isinstance(current, _Section) and isinstance(value, dict):
                value = current.updated(value)
            changes[key] = value
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        data = {"name": self.name, "description": self.description, "model": self.model.to_dict(),
                "data": self.data.to_dict(), "training": self.training.to_dict()}
        if self.search != SearchConfig():  # most configs search nothing: keep their TOML short
            data["search"] = self.search.to_dict()
        return data

    @classmethod
    def from_dict(cls, data):
        if isinstance(data, cls):
            return data
        if not isinstance(data, dict):
            raise ValueError(f"a config is a table/dict, got {type(data).__name__}")
        unknown = sorted(set(data) - {"name", "description", "model", "data", "training", "search"})
        if unknown:
            raise ValueError(f"unknown config key(s) or table(s): {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def from_toml(cls, path):
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except OSError as err:
            raise ValueError(f"cannot read config {path}: {err.strerror}") from None
        except UnicodeDecodeError:
            raise ValueError(f"config {path} is not a text file (TOML): {_not_a_config_hint(path)}") from None
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"config {path} is not valid TOML: {err}") from None
        data.setdefault("name", path.stem)
        try:
            return cls.from_dict(data)
        except ValueError as err:
            raise ValueError(f"config {path}: {err}") from None

    def with_overrides(self, epochs=None, data_dir=None, precision=None):
        """The command line's ``--epochs``, ``--data-dir`` and ``--precision`` applied."""
        config = self
        if epochs is not None:
            config = config.replace(training={"epochs": epochs})
        if precision is not None:
            config = config.replace(training={"precision": precision})
        if data_dir is not None:
            config = config.replace(data={"data_dir": str(data_dir)})
        return config

    def to_toml(self):
        return dump_toml(self.to_dict())

    def sha256(self):
        """Hash of the model, data and training sections (not name, description or search):
        identifies a recipe."""
        payload = {k: v for k, v in self.to_dict().items() if k in ("model", "data", "training")}
        payload["data"] = {k: v for k, v in payload["data"].items() if k not in DATA_LOCATION_FIELDS}
        if payload["training"]["precision"] == "float32":  # added later: float32 recipes keep their hashes
            del payload["training"]["precision"]
        if not payload["data"]["horizontal_flip"]:  # likewise: recipes without it keep their hashes
            del payload["data"]["horizontal_flip"]
        if not payload["training"]["ema_momentum"]:  # likewise
            del payload["training"]["ema_momentum"]
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


# Where the data comes from, not what it is: outside a recipe's hash, and free to change on --resume.
DATA_LOCATION_FIELDS = frozenset({"data_dir", "source"})


def zoo_configs_dir():
    """The folder of zoo entries: ``zoo_configs/`` of a source checkout, or the installed copy."""
    package = Path(__file__).resolve().parent
    source = package.parent / "zoo_configs"
    return source if source.is_dir() else package / "zoo_configs"  # the wheel installs them there


def zoo_names():
    return sorted(p.stem for p in zoo_configs_dir().glob("*.toml"))


def zoo_entry_file(text):
    """``zoo_configs/NAME.toml`` when ``text`` is the bare name of a zoo entry, else None.

    A bare name is a ``str`` with no folder part and no ``.toml`` suffix (a ``pathlib.Path`` is a
    path, whatever it holds). It means the entry even where the current folder holds a file or
    folder of that name (a run folder ``ara-digits/``, say): write ``./ara-digits`` for those."""
    if not isinstance(text, str) or not text or text.endswith(".toml"):
        return None
    if any(sep and sep in text for sep in ("/", os.sep, os.altsep)):
        return None
    entry = zoo_configs_dir() / f"{text}.toml"
    return entry if entry.is_file() else None


def entry_spelling(text):
    """``text`` spelt as entry names are, lower case with hyphens: 'ARA-MNIST' and
    'ara_fashion_mnist' (the datasets' spelling) mean ara-mnist and ara-fashion-mnist."""
    return text.lower().replace("_", "-")


def _unknown_name(text, what, detail=""):
    """``what {text!r}`` unknown, with the zoo entries closest to it."""
    import difflib

    names = zoo_names()
    close = difflib.get_close_matches(entry_spelling(text), names, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(names)}"
    return ValueError(f"unknown {what} {text!r}{detail}{hint}")


def zoo_entry_config(name):
    """The :class:`Config` of the zoo entry ``name``, never of a file or folder of that name;
    an unknown name raises ``ValueError`` with close matches."""
    entry = zoo_entry_file(name)
    if entry is None:
        if isinstance(name, str) and not name.strip():
            raise ValueError(f"empty zoo entry name {name!r}: capszoo.list_models() lists them")
        raise _unknown_name(str(name), "zoo entry")
    return Config.from_toml(entry)


def _not_a_config_hint(path):
    """What to give instead of a file that is not a config (a saved model or weights, often)."""
    if path.name.endswith((".keras", ".h5")):
        return (f"it holds a model's weights. Give the config it was trained from (a zoo entry name, a .toml or "
                f"the run folder) and the file apart: `--weights {path}` for eval, predict, analyze and export, "
                f"capszoo.load(ENTRY, weights={str(path)!r}) in Python")
    return "give a zoo entry name, a .toml config or a run folder"


def load_config(name_or_path):
    """A :class:`Config` from the name of a zoo entry (``zoo_configs/NAME.toml``), a ``.toml``
    path, a run folder holding ``config.toml``, or a model ``capszoo.load`` returned (its entry's).
    A bare entry name wins over a file or folder of that name in the current folder (see
    :func:`zoo_entry_file`)."""
    if isinstance(name_or_path, Config):
        return name_or_path
    if hasattr(name_or_path, "model_config"):  # a CapsNet: capszoo.load() tells it its entry
        entry = getattr(name_or_path, "zoo_entry", None)
        if entry is None:
            raise ValueError(f"model {name_or_path.name!r} was not loaded with capszoo.load, so its dataset and "
                             "recipe are not known: give its zoo entry name, run folder or config instead")
        return Config.from_toml(zoo_entry_file(entry))
    text = str(name_or_path)
    if not text.strip():
        raise ValueError(f"empty model name {text!r}: give a zoo entry name, a .toml config or a run folder")
    entry = zoo_entry_file(name_or_path)
    if entry is not None:
        return Config.from_toml(entry)
    path = Path(text)
    if path.is_dir():  # a run folder (or an exported best trial): its config.toml
        if not (path / "config.toml").is_file():
            raise ValueError(f"{path} is not a run folder: it has no config.toml")
        return Config.from_toml(path / "config.toml")
    if path.suffix == ".toml" or path.is_file():
        if path.name.endswith((".keras", ".h5")):
            raise ValueError(f"{path} is not a config: {_not_a_config_hint(path)}")
        if not path.is_file():
            raise ValueError(f"config file {text} does not exist")
        return Config.from_toml(path)
    raise _unknown_name(text, "model or config", " (not a .toml file nor a zoo entry)")


def _toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise ValueError(f"cannot write {value!r} as TOML")


def dump_toml(data):
    """TOML for a dict of scalars and one level of tables (what :class:`Config` holds)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for key, table in data.items():
        if isinstance(table, dict):
            lines += ["", f"[{key}]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"
