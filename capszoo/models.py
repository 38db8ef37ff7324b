"""Capsule networks built from a :class:`capszoo.config.ModelConfig`."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from capszoo.config import PAPER_HIDDEN_CAPSULES, ROUTING_FIELDS, ModelConfig, refuse_ignored_routing_fields
from capszoo.layers import CapsuleDecoder, CapsuleLayer, Length, Mask, PrimaryCapsule
from capszoo.layers.primary import convolve
from capszoo.ops import check_labels


def _dtype_message(owner, dtype):
    return (f"{owner} expects float images scaled to [0, 1], got dtype {dtype}; "
            "convert with images.astype('float32') / 255")


def check_image_values(images, owner="capsnet"):
    """``images`` as a NumPy array, or a ValueError naming the problem: not float, NaN/inf, or
    values outside [0, 1] (e.g. 8-bit pixels not divided by 255), which would otherwise give
    NaN or silently wrong class scores. ``owner`` (a model name) starts the message."""
    images = np.asarray(images)
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(_dtype_message(owner, images.dtype))
    if images.size:
        low, high = images.min(), images.max()  # NaN propagates through both; no temporary array
        if not (np.isfinite(low) and np.isfinite(high)):
            raise ValueError(f"{owner}: images contain NaN or inf values")
        if low < 0 or high > 1:
            raise ValueError(f"{owner}: images must be scaled to [0, 1], got values in [{low:g}, {high:g}]; "
                             "divide 8-bit pixels by 255")
    return images


def _list_as_array(value, what, owner):
    """A (nested) list of numbers or of equal-shape arrays as one NumPy array; anything else as
    it is. Keras takes a list of arrays but refuses nested Python numbers with "Unrecognized data
    type" followed by every value given."""
    if not isinstance(value, list):
        return value
    try:
        return np.asarray(value)
    except ValueError:  # ragged: NumPy refuses an inhomogeneous shape
        raise ValueError(f"{owner}: {what} given as a list must all have one shape") from None


def _is_array(value, tensors=True):
    return isinstance(value, np.ndarray) or (tensors and ops.is_tensor(value))


@keras.saving.register_keras_serializable(package="capszoo")
class CapsNet(keras.Model):
    """Conv (ReLU) -> primary capsules -> capsule layers (routing strategy) -> lengths.

    ``CapsNet(config)`` takes a :class:`ModelConfig` (or a dict of its fields, or its fields as
    keyword arguments). Call it on float images ``(batch, H, W, C)`` scaled to [0, 1].

    Outputs: the class scores ``(batch, num_classes)`` (class-capsule lengths). With
    ``return_capsules`` or ``decoder`` in the config, a dict instead: ``class_scores``, plus
    ``class_capsules`` with ``return_capsules`` and ``reconstruction`` with ``decoder``. The
    decoder reconstructs from the capsule of the label when the input is
    ``{"images": x, "labels": y}`` (training, as in Sabour et al.), otherwise from the longest
    capsule.

    Images given as arrays (to ``fit``, ``evaluate``, ``predict``, ``validation_data``, or a
    call on a NumPy array) are checked first: shape, float, finite, in [0, 1]
    (:func:`check_image_values`), and not empty except in a call. Datasets and generators stream
    past the value checks; the shape and dtype are checked for every input. Labels given as
    arrays to ``fit`` and ``evaluate`` (``y``, ``validation_data``, the ``"labels"`` input and a
    ``"class_scores"`` target) are checked and passed on as class ids (:func:`check_labels`).

    ``dtype`` (a Keras dtype policy, e.g. ``"mixed_bfloat16"``) applies to the two convolutions
    only: the squash, routing, lengths and decoder always compute in float32, where bfloat16's
    8-bit mantissa would distort the small vectors routing sums.
    """

    def __init__(self, config=None, name="capsnet", **kwargs):
        base_kwargs = {k: kwargs.pop(k) for k in ("trainable", "dtype") if k in kwargs}
        if config is None:
            config = ModelConfig.from_dict(kwargs)
        elif kwargs:
            raise ValueError(f"CapsNet takes a config or its fields as keywords, not both (got {sorted(kwargs)})")
        config = ModelConfig.from_dict(config)
        super().__init__(name=name, **base_kwargs)
        self.model_config = config
        self.conv = keras.layers.Conv2D(
            config.conv_filters, config.conv_kernel_size, activation="relu", dtype=self.dtype_policy, name="conv"
        )
        self.primary = PrimaryCapsule(
            config.primary_types,
            config.primary_dim,
            kernel_size=config.primary_kernel_size,
            strides=config.primary_strides,
            dtype=self.dtype_policy,
            name="primary_capsules",
        )
        routing = config.routing_strategy()
        self.capsule_layers = [
            CapsuleLayer(n, d, routing=routing, dtype="float32", name=f"capsules_{k + 1}")
            for k, (n, d) in enumerate(zip(config.capsules, config.capsule_dims, strict=True))
        ]
        self.length = Length(dtype="float32", name="class_scores")
        self.mask = Mask(dtype="float32", name="mask") if config.decoder else None
        self.decoder = (
            CapsuleDecoder(config.input_shape, config.decoder_units, dtype="float32", name="decoder")
            if config.decoder else None
        )
        self.build((None, *config.input_shape))

    @property
    def input_shape(self):
        """``(None, H, W, C)``, as a functional Keras model reports it."""
        return (None, *self.model_config.input_shape)

    @property
    def output_shape(self):
        """``(None, classes)``; with ``return_capsules`` or ``decoder``, a dict of the outputs'
        shapes, as :meth:`call` returns them."""
        config = self.model_config
        scores = (None, config.num_classes)
        if self.decoder is None and not config.return_capsules:
            return scores
        shapes = {"class_scores": scores}
        if config.return_capsules:
            shapes["class_capsules"] = (None, config.num_classes, config.capsule_dims[-1])
        if self.decoder is not None:
            shapes["reconstruction"] = self.input_shape
        return shapes

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in (self.conv, self.primary, *self.capsule_layers):
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.length.build(shape)
        if self.decoder is not None:
            self.decoder.build((None, shape[1] * shape[2]))
        self.built = True

    def _check_shape(self, shape, dtype):
        expected = self.model_config.input_shape
        if len(shape) != 4:
            raise ValueError(
                f"{self.name} expects images of shape (batch, {', '.join(map(str, expected))}), "
                f"got a rank-{len(shape)} input of shape {tuple(shape)}"
            )
        if any(got is not None and got != want for got, want in zip(shape[1:], expected, strict=True)):
            raise ValueError(f"{self.name} expects images of shape (batch, {', '.join(map(str, expected))}), "
                             f"got {tuple(shape)}")
        if "float" not in str(dtype):
            raise ValueError(_dtype_message(self.name, dtype))

    def _check_images(self, images):
        images = ops.convert_to_tensor(images)
        self._check_shape(images.shape, images.dtype)
        return images

    def _check_values(self, x, tensors=True, empty_ok=False):
        """Checks of images given as arrays, before Keras sees them: shape and dtype (``call``
        checks them again, but a trace that Keras relaxed to unknown sizes after a first batch
        would let a wrong shape through to a deep error), then the values. ``tensors=False``
        checks NumPy arrays only (a tensor in ``__call__`` may be symbolic); an empty array is an
        error unless ``empty_ok`` (Keras' loops fail on one or silently do nothing)."""
        images = x.get("images") if isinstance(x, dict) else x
        if isinstance(images, np.ndarray) or (tensors and ops.is_tensor(images)):
            images = ops.convert_to_numpy(images)
            self._check_shape(images.shape, images.dtype)
            if not (empty_ok or len(images)):
                raise ValueError(f"{self.name}: got no images (an empty array of shape {images.shape})")
            check_image_values(images, self.name)

    def __call__(self, inputs, *args, **kwargs):
        self._check_values(inputs, tensors=False, empty_ok=True)
        return super().__call__(inputs, *args, **kwargs)

    def _check_labels(self, x, y, tensors=True):
        """``(x, y)`` with every label array among them checked and made class ids; the caller's
        dicts are not changed. ``tensors=False``: NumPy arrays only."""
        def checked(labels):
            return check_labels(ops.convert_to_numpy(labels), self.model_config.num_classes, self.name)

        if isinstance(x, dict) and _is_array(x.get("labels"), tensors):
            x = {**x, "labels": checked(x["labels"])}
        if isinstance(y, dict) and _is_array(y.get("class_scores"), tensors):
            y = {**y, "class_scores": checked(y["class_scores"])}
        elif _is_array(y, tensors):
            y = checked(y)
        return x, y

    def _checked_data(self, x, y=None, tensors=True):
        """``(x, y)`` as :meth:`fit`, :meth:`evaluate` and :meth:`predict` pass them on: lists
        made arrays, images checked, labels checked and made class ids. ``tensors=False`` (the
        ``*_on_batch`` methods, called once a step) leaves backend tensors alone: checking them
        would copy each batch from the accelerator and wait for it."""
        x = _list_as_array(x, "images", self.name)
        y = _list_as_array(y, "labels", self.name)
        self._check_values(x, tensors=tensors)
        x, y = self._check_labels(x, y, tensors=tensors)
        images = x.get("images") if isinstance(x, dict) else x
        labels = y.get("class_scores") if isinstance(y, dict) else y
        for given in (labels, x.get("labels") if isinstance(x, dict) else None):
            if _is_array(images) and _is_array(given) and images.shape[0] != given.shape[0]:
                raise ValueError(f"{self.name}: {images.shape[0]} images but {given.shape[0]} labels")
        return x, y

    def _labelled_data(self, x, y, what, usage=None, tensors=True):
        """:meth:`_checked_data` for the methods that need labels: images given as an array
        without any (Keras: "None values not supported", from deep in the backend) are one
        error. Datasets and generators carry their labels in each batch."""
        x = _list_as_array(x, "images", self.name)
        if y is None and _is_array(x):
            raise ValueError(f"{self.name}: {what} needs labels: {usage or what + '(images, labels)'}, the labels as "
                             "class ids or one-hot rows (predict(images) gives the class scores without them)")
        return self._checked_data(x, y, tensors=tensors)

    def fit(self, x=None, y=None, *args, validation_data=None, **kwargs):
        x, y = self._labelled_data(x, y, "fit")
        if isinstance(validation_data, (tuple, list)) and validation_data:
            images, labels = (*validation_data[:2], None)[:2]
            checked = self._labelled_data(images, labels, "fit's validation_data",
                                          "validation_data=(images, labels)")
            validation_data = (*checked[:len(validation_data)], *validation_data[2:])
        return super().fit(x, y, *args, validation_data=validation_data, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        x, y = self._labelled_data(x, y, "evaluate")
        return super().evaluate(x, y, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        x, _ = self._checked_data(x)
        return super().predict(x, *args, **kwargs)

    def train_on_batch(self, x, y=None, *args, **kwargs):
        return super().train_on_batch(*self._labelled_data(x, y, "train_on_batch", tensors=False), *args, **kwargs)

    def test_on_batch(self, x, y=None, *args, **kwargs):
        return super().test_on_batch(*self._labelled_data(x, y, "test_on_batch", tensors=False), *args, **kwargs)

    def predict_on_batch(self, x):
        return super().predict_on_batch(self._checked_data(x, tensors=False)[0])

    def capsules(self, images, return_routing_state=False):
        """The capsules of every layer: ``[primary, capsules_1, ..., class capsules]``.

        With ``return_routing_state=True`` also the per-layer routing states (see the routing
        strategies), for the analysis tools: ``(capsules, states)``.
        """
        self._check_values(images, tensors=False, empty_ok=True)  # NumPy arrays: a trace has tensors
        images = self._check_images(images)
        caps = [self.primary(convolve(self.conv, images))]  # convolve: see it for empty batches
        states = []
        for layer in self.capsule_layers:
            if return_routing_state:
                v, state = layer(caps[-1], return_routing_state=True)
                states.append(state)
            else:
                v = layer(caps[-1])
            caps.append(v)
        return (caps, states) if return_routing_state else caps

    def call(self, inputs, training=None):
        labels = None
        if isinstance(inputs, dict):
            unknown = set(inputs) - {"images", "labels"}
            if "images" not in inputs or unknown:
                raise ValueError(f"{self.name} takes images, or a dict with 'images' and optional 'labels'; "
                                 f"got keys {sorted(inputs)}")
            images, labels = inputs["images"], inputs.get("labels")
        else:
            images = inputs
        class_capsules = self.capsules(images)[-1]
        scores = self.length(class_capsules)
        if self.decoder is None and not self.model_config.return_capsules:
            return scores
        outputs = {"class_scores": scores}
        if self.model_config.return_capsules:
            outputs["class_capsules"] = class_capsules
        if self.decoder is not None:
            outputs["reconstruction"] = self.decoder(self.mask(class_capsules, labels))
        return outputs

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, "dtype": self.dtype_policy.name,
                "config": self.model_config.to_dict()}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _factory(depth):
    default_hidden = PAPER_HIDDEN_CAPSULES[:depth - 2]

    def build(input_shape=(28, 28, 1), num_classes=10, routing="dynamic", **overrides):
        name = overrides.pop("name", f"capsnet{depth}")
        dtype = overrides.pop("dtype", None)
        capsules = tuple(overrides.pop("capsules", (*default_hidden, num_classes)))
        if len(capsules) != depth - 1:
            raise ValueError(f"CapsNet{depth} has {depth - 1} capsule layers after the primary capsules, "
                             f"got capsules={capsules!r}")
        if isinstance(routing, str):  # named here, so refused even at ModelConfig's default value
            refuse_ignored_routing_fields(routing, {k: v for k, v in overrides.items() if k in ROUTING_FIELDS})
        config = ModelConfig.from_dict(dict(input_shape=input_shape, num_classes=num_classes, routing=routing,
                                            capsules=capsules, **overrides))
        return CapsNet(config, name=name, dtype=dtype)

    build.__name__ = build.__qualname__ = f"CapsNet{depth}"
    build.__doc__ = (
        f"The adaptive-routing paper's CapsNet{depth}: capsule layers [primary, "
        f"{', '.join(map(str, default_hidden + ('num_classes',)))}].\n\n"
        "Any :class:`ModelConfig` field can be overridden by keyword (widths for tiny test models); ``dtype``\n"
        "is the convolutions' dtype policy (see :class:`CapsNet`)."
    )
    return build


CapsNet2 = _factory(2)
CapsNet3 = _factory(3)
CapsNet4 = _factory(4)
