import contextlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from keras import ops

from capszoo.layers import CapsuleLayer
from capszoo.ops import routing_energy, squash
from capszoo.routing import (
    AdaptiveLambdaRouting,
    AdaptiveRouting,
    DynamicRouting,
    RoutingStrategy,
    UniformRouting,
    available_routings,
    get_routing,
    predictions,
    register_routing,
    serialize_routing,
    summed_predictions,
)
from capszoo.routing.base import _REGISTRY
from tests import reference
from tests.helpers import random_capsules, to_numpy, value_and_grad

pytestmark = pytest.mark.any_backend

TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture
def capsules():
    return random_capsules(np.random.default_rng(0), batch=3, n_in=7, d_in=4, n_out=5, d_out=6, scale=0.5)


def test_predictions_and_their_sum_match_reference(capsules):
    u, W = capsules
    u_hat = reference.predictions(u.astype("float64"), W.astype("float64"))
    np.testing.assert_allclose(to_numpy(predictions(u, W)), u_hat, **TOL)
    np.testing.assert_allclose(to_numpy(summed_predictions(u, W)), u_hat.sum(axis=1), **TOL)


@pytest.mark.parametrize("iterations", [1, 2, 3, 5])
def test_dynamic_matches_reference(capsules, iterations):
    u, W = capsules
    v, state = DynamicRouting(iterations)(u, W, return_state=True)
    v_ref, c_ref = reference.dynamic_routing(u.astype("float64"), W.astype("float64"), iterations)
    np.testing.assert_allclose(to_numpy(v), v_ref, **TOL)
    np.testing.assert_allclose(to_numpy(state["couplings"]), np.stack(c_ref), **TOL)
    np.testing.assert_allclose(to_numpy(DynamicRouting(iterations)(u, W)), v_ref, **TOL)


@pytest.mark.parametrize("iterations", [1, 2, 3])
def test_adaptive_matches_reference_with_explicit_prediction_updates(capsules, iterations):
    u, W = capsules
    v_ref = reference.adaptive_routing(u.astype("float64"), W.astype("float64"), iterations)
    np.testing.assert_allclose(to_numpy(AdaptiveRouting(iterations)(u, W)), v_ref, **TOL)


@pytest.mark.parametrize("lam", [1e-3, 0.5, 1.0, 3.0])
def test_adaptive_lambda_matches_reference(capsules, lam):
    u, W = capsules
    v_ref = reference.adaptive_lambda_routing(u.astype("float64"), W.astype("float64"), lam)
    np.testing.assert_allclose(to_numpy(AdaptiveLambdaRouting(lam)(u, W)), v_ref, **TOL)


def test_lambda_form_equals_explicit_sum_over_predictions(capsules):
    u, W = capsules
    explicit = squash(3.0 * ops.sum(predictions(u, W), axis=1))
    np.testing.assert_allclose(to_numpy(AdaptiveLambdaRouting(3.0)(u, W)), to_numpy(explicit), **TOL)


def test_adaptive_with_one_iteration_is_squash_of_summed_predictions(capsules):
    u, W = capsules
    expected = squash(ops.sum(predictions(u, W), axis=1))
    np.testing.assert_allclose(to_numpy(AdaptiveRouting(1)(u, W)), to_numpy(expected), **TOL)


def test_uniform_matches_reference_and_dynamic_with_one_iteration(capsules):
    u, W = capsules
    v = to_numpy(UniformRouting()(u, W))
    np.testing.assert_allclose(v, reference.uniform_routing(u.astype("float64"), W.astype("float64")), **TOL)
    np.testing.assert_allclose(v, to_numpy(DynamicRouting(1)(u, W)), **TOL)
    # ... and the λ-form with λ = 1 / n_out (docs/zoo-training.md: uniform-* compares with ARA at λ = 0.1)
    np.testing.assert_allclose(v, to_numpy(AdaptiveLambdaRouting(1.0 / W.shape[2])(u, W)), **TOL)


# Shapes from a few sizes: JAX compiles each new shape's ops afresh (45 s of its test run when
# every integer in 2..12 x 2..8 could be drawn); the values vary as freely as before.
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), n_in=st.sampled_from([2, 5, 12]), n_out=st.sampled_from([2, 3, 8]),
       scale=st.sampled_from([0.1, 0.5, 1.0, 3.0]))
def test_dynamic_couplings_are_row_stochastic_and_energy_never_increases(seed, n_in, n_out, scale):
    u, W = random_capsules(np.random.default_rng(seed), 2, n_in, 3, n_out, 4, scale=scale)
    _, state = DynamicRouting(iterations=6)(u, W, return_state=True)
    c = to_numpy(state["couplings"]).astype("float64")
    u_hat = to_numpy(state["predictions"]).astype("float64")
    assert np.all(c >= 0)
    np.testing.assert_allclose(c.sum(axis=-1), 1.0, atol=1e-5)  # softmax over OUTPUT capsules j
    energies = np.stack([reference.energy(c_t, u_hat) for c_t in c])  # (iterations, batch)
    slack = 1e-5 * (1 + np.abs(energies[:-1]))
    assert np.all(np.diff(energies, axis=0) <= slack), energies
    # Our keras.ops energy agrees with the reference.
    np.testing.assert_allclose(to_numpy(routing_energy(state["couplings"][-1], state["predictions"])),
                               energies[-1], rtol=1e-4, atol=1e-4)


def test_energy_theorem_holds_exactly_in_the_float64_reference():
    rng = np.random.default_rng(1)
    for _ in range(20):
        u, W = random_capsules(rng, 4, 10, 4, 6, 8, scale=2.0)
        u_hat = reference.predictions(u.astype("float64"), W.astype("float64"))
        _, cs = reference.dynamic_routing(u.astype("float64"), W.astype("float64"), 10)
        energies = np.stack([reference.energy(c, u_hat) for c in cs])
        assert np.all(np.diff(energies, axis=0) <= 1e-12)


def test_dynamic_state_shapes(capsules):
    u, W = capsules
    _, state = DynamicRouting(4)(u, W, return_state=True)
    assert state["couplings"].shape == (4, 3, 7, 5)
    assert state["logits"].shape == (4, 3, 7, 5)
    assert state["outputs"].shape == (4, 3, 5, 6)
    assert state["predictions"].shape == (3, 7, 5, 6)
    np.testing.assert_array_equal(to_numpy(state["logits"][0]), 0.0)


def test_dynamic_stop_gradient_keeps_forward_values_but_changes_gradients(capsules):
    u, W = capsules

    def loss(routing):
        return lambda kernel: ops.sum(ops.square(routing(u, kernel)))

    v_full, g_full = value_and_grad(loss(DynamicRouting(3)), W)
    v_stop, g_stop = value_and_grad(loss(DynamicRouting(3, stop_gradient=True)), W)
    np.testing.assert_allclose(v_full, v_stop, rtol=1e-6)
    assert np.all(np.isfinite(g_full)) and np.all(np.isfinite(g_stop))
    assert not np.allclose(g_full, g_stop, rtol=1e-3, atol=1e-7)
    # With one iteration there is no agreement step, so nothing differs.
    _, g1 = value_and_grad(loss(DynamicRouting(1)), W)
    _, g1_stop = value_and_grad(loss(DynamicRouting(1, stop_gradient=True)), W)
    np.testing.assert_allclose(g1, g1_stop, rtol=1e-6)


@pytest.mark.parametrize("strategy", [AdaptiveRouting(2), AdaptiveLambdaRouting(2.0), UniformRouting()])
def test_couplingless_strategies_report_outputs(capsules, strategy):
    u, W = capsules
    v, state = strategy(u, W, return_state=True)
    np.testing.assert_allclose(to_numpy(state["outputs"][-1]), to_numpy(v), **TOL)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3", None])
def test_iterations_must_be_a_positive_integer(bad):
    for cls in (DynamicRouting, AdaptiveRouting):
        with pytest.raises(ValueError, match="iterations must be an integer >= 1"):
            cls(iterations=bad)


@pytest.mark.parametrize("bad", [0, -1e-3, float("nan"), float("inf"), "1", True])
def test_lambda_must_be_positive_and_finite(bad):
    with pytest.raises(ValueError, match="λ"):
        AdaptiveLambdaRouting(lam=bad)


def test_registry_resolves_names_dicts_and_instances():
    assert {"dynamic", "adaptive", "adaptive_lambda", "uniform"} <= set(available_routings())
    assert get_routing("dynamic", iterations=2) == DynamicRouting(2)
    for strategy in (DynamicRouting(4, stop_gradient=True), AdaptiveRouting(2), AdaptiveLambdaRouting(3.0),
                     UniformRouting()):
        assert get_routing(serialize_routing(strategy)) == strategy
    with pytest.raises(ValueError, match="unknown routing 'dynamc'; did you mean 'dynamic'\\?$"):
        get_routing("dynamc")
    with pytest.raises(ValueError, match=r"unknown routing 'em'; available: adaptive, adaptive_lambda, dynamic, "
                                         r"uniform; a routing of your own .*register_routing\('em'\)"):
        get_routing("em")
    with pytest.raises(ValueError, match="routing 'uniform' takes no argument.s. iterations; it takes: nothing"):
        get_routing("uniform", iterations=3)


@contextlib.contextmanager
def mean_routing(name):
    """A routing of one's own, registered as ``name`` inside the block (a new class each time)."""

    class MeanRouting(RoutingStrategy):
        def route(self, inputs, kernel, return_state):
            v = squash(ops.mean(predictions(inputs, kernel), axis=1))
            return (v, {"outputs": v[None]}) if return_state else v

    register_routing(name)(MeanRouting)
    try:
        yield MeanRouting
    finally:
        del _REGISTRY[name]


def test_a_new_routing_plugs_into_the_layer_without_changing_it():
    with mean_routing("test_mean") as MeanRouting:
        u, W = random_capsules(np.random.default_rng(2), 2, 5, 3, 4, 2)
        layer = CapsuleLayer(4, 2, routing="test_mean")
        layer.build(u.shape)
        layer.kernel.assign(W)
        expected = reference.squash(reference.predictions(u.astype("float64"), W.astype("float64")).mean(1))
        np.testing.assert_allclose(to_numpy(layer(u)), expected, **TOL)
        assert CapsuleLayer.from_config(layer.get_config()).routing == MeanRouting()


def test_a_saved_model_with_a_routing_of_ones_own_loads_once_it_is_registered(tmp_path):
    import keras

    from capszoo.models import CapsNet2

    with mean_routing("test_own"):
        model = CapsNet2(input_shape=(12, 12, 1), conv_filters=4, conv_kernel_size=3, primary_types=2,
                         primary_dim=4, primary_kernel_size=3, routing="test_own")
        model.save(tmp_path / "m.keras")
    # As in a fresh process, where the class was never defined: the error says what to do.
    with pytest.raises(ValueError, match=r"unknown routing 'test_own'; available: .*register_routing\('test_own'\)"
                                         r".* before a model that uses it is built or loaded"):
        keras.saving.load_model(tmp_path / "m.keras")
    with mean_routing("test_own"):
        x = np.random.default_rng(0).uniform(size=(2, 12, 12, 1)).astype("float32")
        loaded = keras.saving.load_model(tmp_path / "m.keras")
        np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(model(x)), **TOL)
