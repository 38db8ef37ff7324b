import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from keras import ops

from capszoo.ops import ClassAccuracy, MarginLoss, capsule_length, class_targets, routing_energy, squash
from tests import reference
from tests.helpers import to_numpy, value_and_grad

pytestmark = pytest.mark.any_backend

vectors = arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 16)),
                 elements=st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False))


@settings(max_examples=50, deadline=None)
@given(vectors)
def test_squash_matches_reference_shrinks_and_keeps_direction(s):
    v = to_numpy(squash(s.astype("float32")))
    np.testing.assert_allclose(v, reference.squash(s), rtol=1e-4, atol=1e-6)
    norms = np.linalg.norm(v, axis=-1)
    assert np.all(norms < 1.0 + 1e-6)
    s_norm = np.linalg.norm(s, axis=-1)
    big = s_norm > 1e-3
    cos = (v[big] * s[big]).sum(-1) / (np.linalg.norm(v[big], axis=-1) * s_norm[big])
    np.testing.assert_allclose(cos, 1.0, atol=1e-5)


def test_squash_length_formula():
    s = np.array([[3.0, 4.0]], dtype="float32")  # |s| = 5 -> |v| = 25/26
    np.testing.assert_allclose(np.linalg.norm(to_numpy(squash(s))), 25 / 26, rtol=1e-6)


@pytest.mark.parametrize("point", [np.zeros(8), np.full(8, 1e6), np.full(8, -1e6), np.eye(8)[0] * 1e-9])
def test_squash_value_and_gradient_are_finite(point):
    value, grad = value_and_grad(lambda x: ops.sum(squash(x)), point.astype("float32"))
    assert np.isfinite(value) and np.all(np.isfinite(grad))


def test_squash_of_zero_is_zero():
    np.testing.assert_array_equal(to_numpy(squash(np.zeros((2, 5), "float32"))), 0.0)


@pytest.mark.parametrize("dtype", ["int32", "int64", "uint8"])
def test_integer_capsules_are_squashed_and_measured_as_floats(dtype):
    # TensorFlow refused integer input ("expected to be a int64 tensor but is a float tensor"),
    # while JAX and PyTorch promoted it: every backend now gives the float result.
    s = np.array([[3, 4], [0, 0]], dtype=dtype)
    v = to_numpy(squash(s))
    assert v.dtype == np.float32
    np.testing.assert_allclose(v, [[3 * 5 / 26, 4 * 5 / 26], [0.0, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(to_numpy(capsule_length(s)), [5.0, 0.0], atol=1e-5)
    np.testing.assert_allclose(to_numpy(squash(ops.convert_to_tensor(s))), v, rtol=1e-6)


def test_capsule_length():
    v = np.array([[[3.0, 4.0], [0.0, 0.0]]], dtype="float32")
    np.testing.assert_allclose(to_numpy(capsule_length(v)), [[5.0, 0.0]], atol=1e-5)


def test_margin_loss_against_hand_computation():
    lengths = np.array([[0.95, 0.05, 0.5], [0.2, 0.8, 0.1]], dtype="float32")
    labels = np.array([0, 2])
    # row 0: present 0 (0.95 > 0.9), absent 0 + 0.5 * 0.4^2 = 0.08
    # row 1: absent 0.5*(0.1^2 + 0.7^2) = 0.25, present (0.9-0.1)^2 = 0.64 -> 0.89
    expected = np.array([0.08, 0.89])
    np.testing.assert_allclose(reference.margin_loss(labels, lengths), expected, rtol=1e-6)
    loss = MarginLoss(reduction=None)
    np.testing.assert_allclose(to_numpy(loss(labels, lengths)), expected, rtol=1e-5)
    np.testing.assert_allclose(to_numpy(loss(labels[:, None], lengths)), expected, rtol=1e-5)
    np.testing.assert_allclose(to_numpy(loss(np.eye(3)[labels], lengths)), expected, rtol=1e-5)
    np.testing.assert_allclose(to_numpy(MarginLoss()(labels, lengths)), expected.mean(), rtol=1e-5)


def test_class_targets_and_accuracy_read_ids_and_one_hot_rows_alike():
    lengths = np.array([[0.9, 0.1, 0.2], [0.3, 0.2, 0.8], [0.1, 0.7, 0.6]], dtype="float32")  # argmax 0, 2, 1
    labels = np.array([0, 1, 1])  # right, wrong, right: 2/3
    one_hot = np.eye(3, dtype="float32")[labels]
    for form in (labels, labels[:, None], labels.astype("float32"), one_hot):
        np.testing.assert_array_equal(to_numpy(class_targets(form, 3)), one_hot)
        metric = ClassAccuracy()
        metric.update_state(form, lengths)
        # 3 images and 3 classes: Keras' SparseCategoricalAccuracy broadcast one-hot rows here
        assert float(to_numpy(metric.result())) == pytest.approx(2 / 3)
    again = ClassAccuracy.from_config(ClassAccuracy(name="acc").get_config())
    assert again.name == "acc"


def test_loss_and_metric_refuse_labels_outside_the_classes_given_directly():
    # Called outside fit, an id outside [0, classes) became an all-zero target row on TensorFlow
    # and JAX (a wrong loss and accuracy, silently) and an indexing failure deep in PyTorch.
    lengths = np.array([[0.9, 0.1, 0.2], [0.3, 0.2, 0.8]], dtype="float32")
    for labels, message in [(np.array([0, 3]),
                             r"margin_loss: labels must be class ids in \[0, 3\), got values in \[0, 3\]"),
                            ([-1, 1], r"labels must be class ids in \[0, 3\), got values in \[-1, 1\]"),
                            (np.array([0.5, 1.0]), "labels must be whole class ids, got 0.5"),
                            (np.array([[0, 1], [1, 0]]), r"got shape \(2, 2\)")]:
        with pytest.raises(ValueError, match=message):
            MarginLoss()(labels, lengths)
        with pytest.raises(ValueError, match=message.replace("margin_loss", "accuracy")):
            ClassAccuracy().update_state(labels, lengths)
    # targets of the scores' width pass as given, soft ones included (a loss may take them)
    soft = np.array([[0.8, 0.1, 0.1], [0.0, 0.0, 1.0]], dtype="float32")
    # row 0: present 0.1 * 0.8^2 + 0.1 * 0.7^2 = 0.113, absent 0.5 * (0.2 * 0.8^2 + 0.9 * 0.1^2) = 0.0685
    # row 1 (one-hot, class 2): present 0.1^2 = 0.01, absent 0.5 * (0.2^2 + 0.1^2) = 0.025
    np.testing.assert_allclose(to_numpy(MarginLoss(reduction=None)(soft, lengths)), [0.1815, 0.035], rtol=1e-5)
    np.testing.assert_allclose(to_numpy(MarginLoss()([0, 2], lengths)),
                               reference.margin_loss(np.array([0, 2]), lengths).mean(), rtol=1e-5)


def test_margin_loss_rejects_bad_margins_and_round_trips():
    with pytest.raises(ValueError, match="m_minus < m_plus"):
        MarginLoss(m_plus=0.1, m_minus=0.9)
    loss = MarginLoss(m_plus=0.8, down_weight=0.25)
    again = MarginLoss.from_config(loss.get_config())
    assert (again.m_plus, again.m_minus, again.down_weight) == (0.8, 0.1, 0.25)


def test_routing_energy_matches_reference():
    rng = np.random.default_rng(0)
    c = reference.softmax_over_outputs(rng.normal(size=(2, 5, 3)))
    u_hat = rng.normal(size=(2, 5, 3, 4))
    np.testing.assert_allclose(to_numpy(routing_energy(c.astype("float32"), u_hat.astype("float32"))),
                               reference.energy(c, u_hat), rtol=1e-5)
