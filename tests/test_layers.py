import numbers
import re

import keras
import numpy as np
import pytest

from capszoo.layers import CapsuleDecoder, CapsuleLayer, Length, Mask, PrimaryCapsule
from capszoo.routing import AdaptiveLambdaRouting, DynamicRouting
from tests import reference
from tests.helpers import random_capsules, to_numpy

pytestmark = pytest.mark.any_backend

ROUTINGS = ["dynamic", DynamicRouting(2, stop_gradient=True), "adaptive", AdaptiveLambdaRouting(3.0), "uniform"]


def test_primary_capsule_is_conv_reshape_squash():
    rng = np.random.default_rng(0)
    x = rng.random((2, 9, 9, 3)).astype("float32")
    layer = PrimaryCapsule(capsule_types=4, capsule_dim=5, kernel_size=3, strides=2)
    out = to_numpy(layer(x))
    assert out.shape == (2, 4 * 4 * 4, 5) == layer.compute_output_shape(x.shape)
    kernel, bias = (to_numpy(w).astype("float64") for w in layer.conv.weights)
    conv = np.zeros((2, 4, 4, 20))
    for r in range(4):
        for c in range(4):
            patch = x[:, 2 * r:2 * r + 3, 2 * c:2 * c + 3, :].astype("float64")
            conv[:, r, c] = np.einsum("bhwc,hwco->bo", patch, kernel) + bias
    np.testing.assert_allclose(out, reference.squash(conv.reshape(2, -1, 5)), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("routing", ROUTINGS, ids=str)
def test_capsule_layer_get_config_round_trip_and_shapes(routing):
    u, _ = random_capsules(np.random.default_rng(1), 2, 6, 4, 3, 5)
    layer = CapsuleLayer(3, 5, routing=routing, name="caps")
    out = layer(u)
    assert tuple(out.shape) == (2, 3, 5)
    assert layer.kernel.shape == (6, 4, 3, 5)
    clone = CapsuleLayer.from_config(layer.get_config())
    assert clone.routing == layer.routing and clone.get_config() == layer.get_config()
    clone.build(u.shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(to_numpy(clone(u)), to_numpy(out), rtol=1e-6)


@pytest.mark.parametrize("routing", ROUTINGS, ids=str)
def test_capsule_layer_symbolic_and_variable_batch(routing):
    inputs = keras.Input((6, 4))
    model = keras.Model(inputs, CapsuleLayer(3, 5, routing=routing)(inputs))
    assert tuple(model.output.shape) == (None, 3, 5)
    rng = np.random.default_rng(2)
    full, _ = random_capsules(rng, 7, 6, 4, 1, 1)
    together = model.predict(full, verbose=0)
    for batch in (1, 3):
        np.testing.assert_allclose(model.predict(full[:batch], verbose=0), together[:batch], rtol=1e-5, atol=1e-6)


def test_capsule_layer_returns_routing_state():
    u, _ = random_capsules(np.random.default_rng(3), 2, 6, 4, 3, 5)
    layer = CapsuleLayer(3, 5, routing=DynamicRouting(3))
    v, state = layer(u, return_routing_state=True)
    assert state["couplings"].shape == (3, 2, 6, 3)
    np.testing.assert_allclose(to_numpy(v), to_numpy(layer(u)), rtol=1e-6)


@pytest.mark.parametrize("shape", [(2, 6), (2, 6, 4, 1)])
def test_capsule_layer_rejects_wrong_input_rank(shape):
    with pytest.raises(ValueError, match=r"expects capsules of shape \(batch, n_capsules, capsule_dim\)"):
        CapsuleLayer(3, 5)(np.zeros(shape, "float32"))


def test_primary_capsule_on_an_empty_batch_returns_no_capsules():
    # TensorFlow's oneDNN convolution returns its input for an empty batch on AVX-512 CPUs, and the
    # bias add then failed; a layer used on its own (not only inside CapsNet) must give (0, N, d)
    layer = PrimaryCapsule(capsule_types=4, capsule_dim=5, kernel_size=3, strides=2)
    for empty in (np.zeros((0, 9, 9, 3), "float32"), keras.ops.zeros((0, 9, 9, 3))):
        out = layer(empty)
        assert tuple(out.shape) == (0, 4 * 4 * 4, 5) == layer.compute_output_shape(empty.shape)
        assert keras.backend.standardize_dtype(out.dtype) == "float32"


def test_primary_capsule_rejects_wrong_input_rank():
    with pytest.raises(ValueError, match=r"expects feature maps of shape \(batch, height, width, channels\)"):
        PrimaryCapsule(2, 4, kernel_size=3)(np.zeros((2, 9, 9), "float32"))


@pytest.mark.parametrize("kwargs", [dict(capsules=0, capsule_dim=4), dict(capsules=3, capsule_dim=2.5),
                                    dict(capsules=3, capsule_dim=4, routing="nope")])
def test_capsule_layer_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        CapsuleLayer(**kwargs)


def test_routing_hyperparameters_may_be_given_beside_the_routing_name():
    # They were Keras' "Unrecognized keyword arguments passed to CapsuleLayer: {'lam': 3.0}".
    layer = CapsuleLayer(3, 5, routing="adaptive_lambda", lam=2.5, name="caps")
    assert layer.routing == AdaptiveLambdaRouting(lam=2.5) and layer.name == "caps"
    assert CapsuleLayer(3, 5, routing="dynamic", iterations=2).routing == DynamicRouting(iterations=2)
    assert CapsuleLayer.from_config(layer.get_config()).routing == layer.routing
    for kwargs, message in [
        (dict(routing="adaptive_lambda", lam=0.0), "lam (the gradient coefficient λ) must be a finite number > 0"),
        (dict(routing="dynamic", iterations=0), "routing iterations must be an integer >= 1, got 0"),
        (dict(routing="dynamic", lam=3.0), "routing 'dynamic' takes no argument(s) lam; it takes: iterations"),
        (dict(routing=DynamicRouting(), iterations=3), "routing hyperparameters can only be given together with a "
                                                       "routing name"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            CapsuleLayer(3, 5, **kwargs)


def test_capsule_sizes_from_numpy_are_plain_ints():
    """Sizes read from an array (np.int64) are counts like any other; the config holds ints."""
    layer, primary = CapsuleLayer(np.int64(3), np.int32(4)), PrimaryCapsule(np.int64(2), np.int16(4), kernel_size=3)
    assert (layer.capsules, layer.capsule_dim, primary.capsule_types, primary.capsule_dim) == (3, 4, 2, 4)
    assert all(type(value) is int for value in (*layer.get_config().values(), *primary.get_config().values())
               if isinstance(value, numbers.Integral) and not isinstance(value, bool))
    with pytest.raises(ValueError, match=r"PrimaryCapsule capsule_dim must be an integer >= 1, got np.int64\(0\)"):
        PrimaryCapsule(2, np.int64(0), kernel_size=3)


def test_length_and_mask():
    caps = np.zeros((2, 3, 2), "float32")
    caps[0, 1] = [3, 4]
    caps[0, 2] = [1, 0]
    caps[1, 0] = [0, 2]
    caps[1, 2] = [0, 1]
    np.testing.assert_allclose(to_numpy(Length()(caps)), [[0, 5, 1], [2, 0, 1]], atol=1e-5)
    by_length = to_numpy(Mask()(caps))
    np.testing.assert_array_equal(by_length, [[0, 0, 3, 4, 0, 0], [0, 2, 0, 0, 0, 0]])
    by_label = to_numpy(Mask()(caps, np.array([2, 2])))
    np.testing.assert_array_equal(by_label, [[0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 1]])
    np.testing.assert_array_equal(to_numpy(Mask()(caps, np.eye(3, dtype="float32")[[2, 2]])), by_label)
    # CapsNet-Keras' form, Mask()([capsules, labels]), was "'list' object has no attribute 'shape'".
    np.testing.assert_array_equal(to_numpy(Mask()([caps, np.array([2, 2])])), by_label)
    capsules, labels = keras.Input((3, 2)), keras.Input(())
    assert tuple(Mask()([capsules, labels]).shape) == (None, 6)
    for args, message in [(([caps],), "Mask takes (capsules, labels=None), or [capsules, labels] as one list; got "
                                      "a list of 1"),
                          (([caps, np.array([2, 2])], np.array([1, 1])), "got a list of 2 and labels"),
                          ((caps[0],), "Mask expects capsules of shape (batch, n_classes, capsule_dim), got (3, 2)")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            Mask()(*args)


def test_mask_refuses_labels_outside_the_classes_given_directly():
    # An id outside the classes kept no capsule (all zeros) on TensorFlow and JAX and failed deep
    # in PyTorch ("Class values must be smaller than num_classes").
    caps = np.random.default_rng(0).normal(size=(2, 3, 4)).astype("float32")
    refused = "Mask: labels must be class ids in [0, 3), got values in "
    for call in (lambda labels: Mask()(caps, labels), lambda labels: Mask()([caps, labels])):
        with pytest.raises(ValueError, match=re.escape(refused + "[0, 3]")):
            call(np.array([0, 3]))
        with pytest.raises(ValueError, match=re.escape(refused + "[-1, 0]")):
            call([-1, 0])
        # a list is read as the array it spells (Keras takes no list as a positional input)
        np.testing.assert_array_equal(to_numpy(call([2, 0])), to_numpy(Mask()(caps, np.array([2, 0]))))


def test_decoder_shape_and_range():
    decoder = CapsuleDecoder((5, 4, 2), units=(8, 16))
    out = to_numpy(decoder(np.random.default_rng(0).normal(size=(3, 12)).astype("float32")))
    assert out.shape == (3, 5, 4, 2) and out.min() >= 0 and out.max() <= 1
    assert CapsuleDecoder.from_config(decoder.get_config()).get_config() == decoder.get_config()
