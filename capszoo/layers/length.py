"""Capsule lengths (class scores) and the masking that feeds the reconstruction decoder."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from capszoo.ops import capsule_length, check_given_labels, class_targets


@keras.saving.register_keras_serializable(package="capszoo")
class Length(keras.layers.Layer):
    """``(batch, n, d)`` capsules -> ``(batch, n)`` lengths: a class capsule's length is its score."""

    def call(self, inputs):
        return capsule_length(inputs)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1])


@keras.saving.register_keras_serializable(package="capszoo")
class Mask(keras.layers.Layer):
    """Keep one class capsule, zero the others, and flatten: ``(batch, n, d)`` -> ``(batch, n * d)``.

    ``Mask()(capsules)`` keeps the longest capsule (inference); ``Mask()(capsules, labels)``
    keeps the capsule of the given label (training, as in Sabour et al.). ``labels`` are class ids
    ``(batch,)`` / ``(batch, 1)`` or one-hot rows ``(batch, n)``. ``Mask()([capsules, labels])``,
    the form of the widely copied CapsNet-Keras, is read the same way. Labels given as a NumPy
    array or a list are checked first (an id outside the classes would keep no capsule).
    """

    def __call__(self, capsules, labels=None, **kwargs):
        if labels is None and isinstance(capsules, (list, tuple)) and len(capsules) == 2:
            capsules, labels = capsules  # [capsules, labels]: call reads the two alike
        if isinstance(labels, list):
            labels = np.asarray(labels)  # Keras takes no list as a positional input
        if len(getattr(capsules, "shape", ())) == 3:
            check_given_labels(labels, capsules, "Mask", class_axis=1)
        args = (capsules,) if labels is None else (capsules, labels)
        return super().__call__(*args, **kwargs)

    def call(self, capsules, labels=None):
        if isinstance(capsules, (list, tuple)):
            if len(capsules) != 2 or labels is not None:
                raise ValueError("Mask takes (capsules, labels=None), or [capsules, labels] as one list; got a "
                                 f"list of {len(capsules)}" + (" and labels" if labels is not None else ""))
            capsules, labels = capsules
        if len(capsules.shape) != 3:
            raise ValueError("Mask expects capsules of shape (batch, n_classes, capsule_dim), got "
                             f"{tuple(capsules.shape)}")
        n_classes = capsules.shape[1]
        if labels is None:
            labels = ops.argmax(capsule_length(capsules), axis=-1)
        keep = class_targets(labels, n_classes, capsules.dtype)
        masked = capsules * keep[:, :, None]
        return ops.reshape(masked, (-1, n_classes * capsules.shape[2]))

    def compute_output_shape(self, capsules_shape, labels_shape=None):
        if capsules_shape and isinstance(capsules_shape[0], (list, tuple)):
            capsules_shape = capsules_shape[0]  # [capsules, labels]
        return (capsules_shape[0], capsules_shape[1] * capsules_shape[2])
