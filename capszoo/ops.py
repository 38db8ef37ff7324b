"""Capsule maths shared by layers, routing strategies, losses and analysis.

The maths uses ``keras.ops`` only, so it runs unchanged on the TensorFlow, JAX and PyTorch
backends; the label checks read host arrays with NumPy, before any backend call.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

# Added under the square root of |s|^2. Small enough not to bias |s| for any capsule that
# carries signal (|s| >> 1e-6), large enough that d|s|/ds stays finite at s = 0.
NORM_EPSILON = 1e-12


def floating(x):
    """``x`` itself if it is floating point, else cast to Keras' float type: integer capsules
    (``squash(np.array([3, 4]))``) give the same result on every backend (TensorFlow refused
    to add the float epsilon to them, JAX and PyTorch promoted). Adds no op for float input."""
    if not hasattr(x, "dtype"):
        x = ops.convert_to_tensor(x)
    return x if keras.backend.is_float_dtype(x.dtype) else ops.cast(x, keras.config.floatx())


def safe_norm(x, axis=-1, keepdims=False):
    """Euclidean norm along ``axis`` with a finite gradient at the zero vector."""
    x = floating(x)
    return ops.sqrt(ops.sum(ops.square(x), axis=axis, keepdims=keepdims) + NORM_EPSILON)


def squash(s, axis=-1):
    """Sabour et al.'s non-linearity ``|s|^2 / (1 + |s|^2) * s / |s|``.

    Written as ``s * |s| / (1 + |s|^2)``, which is the same function but never divides by
    ``|s|``: the value and the gradient are finite at ``s = 0`` (both are zero there) and for
    huge inputs (the factor tends to ``1 / |s|`` instead of forming ``inf / inf``).
    """
    s = floating(s)
    norm = safe_norm(s, axis=axis, keepdims=True)
    return ops.multiply(s, norm / (1.0 + ops.square(norm)))  # not `*`: s may be a NumPy array (torch)


def capsule_length(v, axis=-1):
    """Length of each capsule: the class score of a class capsule."""
    return safe_norm(v, axis=axis)


def psi(z):
    """``psi(z) = z - arctan(z)``, the potential whose gradient field is ``squash``."""
    return ops.subtract(z, ops.arctan(z))


def routing_energy(couplings, predictions, per_capsule=False):
    """The energy that dynamic routing minimises (objective-function paper, eq. for Psi).

    ``Psi(C) = -sum_j psi(|sum_i c_ij u_hat_j|i|)``.

    Args:
        couplings: ``(batch, n_in, n_out)`` coupling coefficients ``c_ij``.
        predictions: ``(batch, n_in, n_out, d_out)`` prediction vectors ``u_hat_j|i``.
        per_capsule: return ``(batch, n_out)`` terms instead of the ``(batch,)`` total.
    """
    s = ops.einsum("bij,bijd->bjd", couplings, predictions)
    terms = -psi(safe_norm(s, axis=-1))
    return terms if per_capsule else ops.sum(terms, axis=-1)


def _one_hot_rows(shape, num_classes):
    """Whether labels of ``shape`` are rows, one per class (else class ids): the one rule that
    tells the two label forms apart, for the checks here and :func:`class_targets`."""
    return len(shape) == 2 and shape[-1] == num_classes and num_classes != 1


def check_labels(labels, num_classes, owner="capsnet"):
    """Class labels as int32 class ids of shape ``(n,)``, or a ValueError naming the problem.

    Accepted: class ids of shape ``(n,)`` or ``(n, 1)`` in ``[0, num_classes)``, integer or whole
    floats, and one-hot rows of shape ``(n, num_classes)``. An id outside the classes would
    become an all-zero target row, a silently wrong loss and accuracy; rows that are not one-hot
    have no class for an accuracy. Passing ids on also suits a model compiled with Keras'
    ``SparseCategoricalAccuracy``, which takes ids only (the zoo's ``ClassAccuracy`` takes both).
    """
    labels = np.asarray(labels)
    expected = (f"class ids in [0, {num_classes}) of shape (n,) or (n, 1), "
                f"or one-hot rows of shape (n, {num_classes})")
    if labels.dtype == bool or not (np.issubdtype(labels.dtype, np.integer)
                                    or np.issubdtype(labels.dtype, np.floating)):
        raise ValueError(f"{owner} expects labels as {expected}; got dtype {labels.dtype}")
    if _one_hot_rows(labels.shape, num_classes):
        if not (np.isin(labels, (0, 1)).all() and (labels.sum(axis=1) == 1).all()):
            raise ValueError(f"{owner}: labels of shape {labels.shape} must be one-hot rows, a single 1 in "
                             "each (soft or multi-hot targets have no class id for the accuracy)")
        return labels.argmax(axis=1).astype("int32")
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise ValueError(f"{owner} expects labels as {expected}; got shape {labels.shape}")
    if labels.size:
        low, high = labels.min(), labels.max()
        if not (np.isfinite(low) and np.isfinite(high)):
            raise ValueError(f"{owner}: labels contain NaN or inf values")
        fractions = labels[labels != np.round(labels)]
        if fractions.size:
            raise ValueError(f"{owner}: labels must be whole class ids, got {fractions[0]:g}")
        if low < 0 or high >= num_classes:
            raise ValueError(f"{owner}: labels must be class ids in [0, {num_classes}), "
                             f"got values in [{low:g}, {high:g}]")
    return labels.astype("int32")


def check_given_labels(labels, scores, owner, class_axis=-1):
    """Labels handed straight to the loss, the metric or the mask (a NumPy array or a list)
    checked as ``fit`` checks its arrays, so that an id outside the classes is one error rather
    than an all-zero target row (TensorFlow, JAX) or an indexing failure deep in PyTorch.
    ``scores`` (class scores, or capsules with ``class_axis=1``) give the number of classes.
    Rows of that width pass as the targets they are (soft ones included: the loss takes them);
    tensors pass unchecked: they may be symbolic, and inside ``fit`` they are batches of arrays
    checked already."""
    if not isinstance(labels, (np.ndarray, list)):
        return
    labels = np.asarray(labels)
    num_classes = (scores.shape if hasattr(scores, "shape") else np.shape(scores))[class_axis]
    if not _one_hot_rows(labels.shape, num_classes):
        check_labels(labels, num_classes, owner)


def class_targets(labels, num_classes, dtype="float32"):
    """One-hot targets ``(batch, num_classes)`` from class ids ``(batch,)`` / ``(batch, 1)`` or
    from one-hot rows ``(batch, num_classes)``, which pass through cast to ``dtype``.

    The one reading of the two label forms (:func:`_one_hot_rows`) for the margin loss, the
    accuracy and the decoder's mask. Ids are not range-checked here (an id outside
    ``[0, num_classes)`` gives an all-zero row on TensorFlow and JAX, an error on PyTorch): arrays
    given to ``CapsNet.fit``/``evaluate`` are checked before (:func:`check_labels`), and so are
    arrays given to the loss, the metric and the mask directly (:func:`check_given_labels`).
    """
    labels = ops.convert_to_tensor(labels)
    if _one_hot_rows(labels.shape, num_classes):
        return ops.cast(labels, dtype)
    return ops.one_hot(ops.cast(ops.reshape(labels, (-1,)), "int32"), num_classes, dtype=dtype)


def class_accuracy(y_true, y_pred):
    """1.0 where the longest class capsule is the label's class, else 0.0: ``(batch,)``.

    Labels may be class ids or one-hot rows (:func:`class_targets`). Keras'
    ``SparseCategoricalAccuracy`` takes ids only: on one-hot rows it fails inside the backend or,
    in a batch of ``num_classes`` images, broadcasts the comparison into a wrong figure.
    """
    y_pred = ops.convert_to_tensor(y_pred)
    targets = class_targets(y_true, y_pred.shape[-1], y_pred.dtype)
    hit = ops.equal(ops.argmax(targets, axis=-1), ops.argmax(y_pred, axis=-1))
    return ops.cast(hit, "float32")


@keras.saving.register_keras_serializable(package="capszoo")
class ClassAccuracy(keras.metrics.MeanMetricWrapper):
    """Mean :func:`class_accuracy`: the compiled models' ``accuracy``, for ids or one-hot labels."""

    def __init__(self, name="accuracy", dtype=None):
        super().__init__(fn=class_accuracy, name=name, dtype=dtype)
        self._direction = "up"

    def update_state(self, y_true, y_pred, sample_weight=None):
        check_given_labels(y_true, y_pred, self.name)
        return super().update_state(y_true, y_pred, sample_weight=sample_weight)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


@keras.saving.register_keras_serializable(package="capszoo")
class MarginLoss(keras.losses.Loss):
    """Sabour et al.'s margin loss on capsule lengths.

    ``L_k = T_k max(0, m+ - |v_k|)^2 + down_weight (1 - T_k) max(0, |v_k| - m-)^2``, summed over
    classes. ``y_true`` may be integer class ids (shape ``(batch,)`` or ``(batch, 1)``) or one-hot
    rows (shape ``(batch, classes)``); ``y_pred`` are the class scores (capsule lengths).
    """

    def __init__(self, m_plus=0.9, m_minus=0.1, down_weight=0.5, name="margin_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        if not 0.0 <= m_minus < m_plus <= 1.0:
            raise ValueError(f"MarginLoss needs 0 <= m_minus < m_plus <= 1, got m_minus={m_minus}, m_plus={m_plus}")
        if down_weight < 0:
            raise ValueError(f"MarginLoss needs down_weight >= 0, got {down_weight}")
        self.m_plus = float(m_plus)
        self.m_minus = float(m_minus)
        self.down_weight = float(down_weight)

    def __call__(self, y_true, y_pred, sample_weight=None):
        check_given_labels(y_true, y_pred, self.name)
        return super().__call__(y_true, y_pred, sample_weight=sample_weight)

    def call(self, y_true, y_pred):
        y_pred = ops.convert_to_tensor(y_pred)
        targets = class_targets(y_true, y_pred.shape[-1], y_pred.dtype)
        present = targets * ops.square(ops.relu(self.m_plus - y_pred))
        absent = (1.0 - targets) * ops.square(ops.relu(y_pred - self.m_minus))
        return ops.sum(present + self.down_weight * absent, axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(m_plus=self.m_plus, m_minus=self.m_minus, down_weight=self.down_weight)
        return config
