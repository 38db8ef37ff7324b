import numpy as np
import pytest

from capszoo import analysis
from capszoo.models import CapsNet2
from tests.helpers import to_numpy

pytestmark = pytest.mark.any_backend

TINY = dict(input_shape=(12, 12, 1), conv_filters=8, conv_kernel_size=3, primary_types=4, primary_dim=4,
            primary_kernel_size=3, capsules=(3,), capsule_dims=4, num_classes=3)


def images(batch, seed=0):
    return np.random.default_rng(seed).random((batch, 12, 12, 1)).astype("float32")


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("clusters", [True, False])
def test_energy_of_random_predictions_never_increases(seed, clusters):
    predictions = analysis.random_predictions(3, n_in=40, n_out=4, dim=6, seed=seed, clusters=clusters)
    state = analysis.trace_predictions(predictions, iterations=15)
    np.testing.assert_allclose(state["predictions"], predictions, rtol=1e-6)  # routed exactly these vectors
    np.testing.assert_allclose(state["couplings"].sum(axis=-1), 1.0, atol=1e-5)  # rows are stochastic
    frame = analysis.energy(state)
    assert list(frame.columns) == ["iteration", "total", "capsule_0", "capsule_1", "capsule_2", "capsule_3"]
    assert frame.iteration.tolist() == list(range(1, 16))
    assert not frame.attrs["ever_increased"] and np.all(np.diff(frame.total) <= 1e-4)
    np.testing.assert_allclose(frame.filter(like="capsule_").sum(axis=1), frame.total, rtol=1e-5)


def test_energy_matches_a_numpy_reference_at_uniform_couplings():
    predictions = analysis.random_predictions(2, n_in=5, n_out=3, dim=4, seed=3)
    frame = analysis.energy(analysis.trace_predictions(predictions, iterations=1))
    s = predictions.sum(axis=1) / 3  # c_ij = 1/3 at iteration 1: s_j, shape (batch, n_out, d)
    norm = np.linalg.norm(s, axis=-1)
    expected = -(norm - np.arctan(norm)).sum(axis=-1).mean()
    assert frame.total.iloc[0] == pytest.approx(expected, rel=1e-5)


def test_polarization_starts_uniform_and_entropy_falls_with_iterations():
    state = analysis.trace_predictions(analysis.random_predictions(2, n_in=50, n_out=4, dim=2, seed=0), 20)
    frame = analysis.polarization(state)
    first, last = frame.iloc[0], frame.iloc[-1]
    assert first.entropy_normalized == pytest.approx(1.0) and first.max_coupling == pytest.approx(0.25)
    assert first.near_0_or_1 == 0.0
    assert np.all(np.diff(frame.entropy) <= 1e-6)  # couplings only polarize
    assert last.entropy_normalized < 0.5 and last.max_coupling > 0.8 and last.near_0_or_1 > first.near_0_or_1
    # the logits behind each iteration's couplings: none at the first, then the summed agreements
    b, v = state["logits"], state["outputs"]
    assert first.logit_spread == 0.0 and np.all(np.diff(frame.logit_spread) > 0)
    np.testing.assert_allclose(frame.logit_spread, [np.mean(np.ptp(b[t], axis=-1)) for t in range(20)], rtol=1e-6)
    np.testing.assert_allclose(frame.output_length, np.sqrt((v ** 2).sum(-1)).mean(axis=(1, 2)), rtol=1e-6)
    u = np.asarray(analysis.random_predictions(2, n_in=50, n_out=4, dim=2, seed=0))
    lengths = np.sqrt((u ** 2).sum(-1))
    np.testing.assert_allclose(analysis.prediction_lengths(state), (lengths.mean(), lengths.max()), rtol=1e-6)


def test_top_couplings_into_the_correct_class():
    rng = np.random.default_rng(0)
    couplings = rng.dirichlet(np.ones(3), size=(2, 7))  # (batch, n_in, n_out)
    state = {"couplings": couplings[None]}
    labels = np.array([2, 0])
    largest = analysis.top_couplings(state, labels, top=4)
    assert largest.shape == (2, 4)
    np.testing.assert_allclose(largest[0], np.sort(couplings[0, :, 2])[-4:])
    np.testing.assert_allclose(largest[1], np.sort(couplings[1, :, 0])[-4:])


def test_model_trace_routes_a_trained_layer_and_checks_its_arguments():
    model = CapsNet2(**TINY, routing="adaptive_lambda", lam=3.0)
    state = analysis.model_trace(model, images(5), iterations=4)
    assert state["couplings"].shape == (4, 5, model.model_config.primary_capsules, 3)
    assert not analysis.energy(state).attrs["ever_increased"]
    with pytest.raises(ValueError, match="layer 1 out of range: the model has 1 capsule layer"):
        analysis.model_trace(model, images(2), layer=1)
    with pytest.raises(ValueError, match="iterations must be an integer >= 1"):
        analysis.model_trace(model, images(2), iterations=0)
    with pytest.raises(ValueError, match=r"predictions must be \(batch, n_in, n_out, d\)"):
        analysis.trace_predictions(np.zeros((3, 4, 2)), 3)
    with pytest.raises(ValueError, match="model_trace needs at least one image"):
        analysis.model_trace(model, images(0))


@pytest.mark.parametrize("call, message", [
    (lambda: analysis.random_predictions(2, n_in=5, dim=0), "random predictions: dim must be an integer >= 1, got 0"),
    (lambda: analysis.random_predictions(0, n_in=5), "random predictions: batch must be"),
    (lambda: analysis.random_predictions(1, n_in=0), "random predictions: n_in must be"),
    (lambda: analysis.random_predictions(1, n_out=2.5), "random predictions: n_out must be"),
    (lambda: analysis.trace_predictions(np.zeros((0, 4, 3, 2)), 3), r"none of them 0, got shape \(0, 4, 3, 2\)"),
    (lambda: analysis.trace_predictions(np.zeros((1, 4, 3, 0)), 3), r"none of them 0"),
    (lambda: analysis.top_couplings({"couplings": np.full((1, 1, 4, 3), 1 / 3)}, [0], top=0), "top must be"),
])
def test_empty_sizes_are_refused_not_routed_to_nan_or_a_deep_error(call, message):
    """Each of these once gave a TensorFlow slice error, an IndexError, or energies of 0.0 and
    NaN polarizations written to the CSV as if measured."""
    with pytest.raises(ValueError, match=message):
        call()


ANALYSES = {
    "model_trace": lambda model, x, y: analysis.model_trace(model, x, iterations=2),
    "activity": lambda model, x, y: analysis.activity(model, x),
    "conv_gradient": lambda model, x, y: analysis.conv_gradient(model, x, y),
    "capsules": lambda model, x, y: model.capsules(x),
}


@pytest.mark.parametrize("analyse", ANALYSES)
@pytest.mark.parametrize("bad, message", [
    ((images(2) * 255).astype("uint8"), r"tiny expects float images scaled to \[0, 1\], got dtype uint8"),
    (images(2) * 255, r"tiny: images must be scaled to \[0, 1\], got values in"),
    (np.full((2, 12, 12, 1), np.nan, "float32"), "tiny: images contain NaN or inf values"),
    (np.zeros((2, 14, 14, 1), "float32"), r"tiny expects images of shape \(batch, 12, 12, 1\)"),
], ids=["uint8", "255", "nan", "shape"])
def test_analyses_refuse_the_images_predict_refuses(analyse, bad, message):
    # The traces, activity and gradient cast any array to float32 first: 8-bit pixels and NaN
    # images were traced and plotted as the model's.
    model = CapsNet2(**TINY, routing="dynamic", name="tiny")
    with pytest.raises(ValueError, match=message):
        ANALYSES[analyse](model, bad, np.zeros(2, "int32"))


@pytest.mark.parametrize("labels, message", [
    ([0, 3], r"tiny: labels must be class ids in \[0, 3\), got values in \[0, 3\]"),
    ([0, -1], r"got values in \[-1, 0\]"),
    ([0, 1, 2], "tiny: 2 images but 3 labels"),
])
def test_conv_gradient_and_top_couplings_refuse_labels_outside_the_classes(labels, message):
    # An id outside the classes was an all-zero margin target (conv_gradient) or, for -1, the
    # last class's couplings (top_couplings), without a word.
    model = CapsNet2(**TINY, routing="dynamic", name="tiny")
    with pytest.raises(ValueError, match=message):
        analysis.conv_gradient(model, images(2), np.array(labels))
    state = analysis.model_trace(model, images(2), iterations=2)
    with pytest.raises(ValueError, match=message.replace("tiny", "top_couplings").replace(
            "top_couplings: 2 images but 3 labels", "top_couplings: 3 labels for a routing state of 2 images")):
        analysis.top_couplings(state, labels)


def test_conv_gradient_agrees_with_a_finite_difference():
    import keras

    keras.utils.set_random_seed(0)
    model = CapsNet2(**TINY, routing="adaptive_lambda", lam=3.0)
    x, y = images(4), np.array([0, 1, 2, 1])
    g = analysis.conv_gradient(model, x, y)
    kernel = model.conv.kernel
    assert g.shape == tuple(kernel.shape) and np.linalg.norm(g) > 0
    from capszoo.ops import MarginLoss

    w = to_numpy(kernel.value).astype("float64")
    direction = g / np.linalg.norm(g)
    h = 1e-2

    def loss_at(weights):
        kernel.assign(weights.astype("float32"))
        return float(to_numpy(MarginLoss()(y, model(x))))

    slope = (loss_at(w + h * direction) - loss_at(w - h * direction)) / (2 * h)
    kernel.assign(w.astype("float32"))
    assert slope == pytest.approx(np.linalg.norm(g), rel=0.05)


def test_conv_gradient_of_a_model_with_dict_outputs_is_that_of_its_class_scores():
    # `capszoo analyze gradients RUN` of a run trained with decoder = true failed with
    # "Attempt to convert a value ({'class_scores': ..., 'reconstruction': ...}) ... to a Tensor".
    x, y = images(4), np.array([0, 1, 2, 1])
    plain = CapsNet2(**TINY, routing="adaptive_lambda", lam=3.0)
    g = analysis.conv_gradient(plain, x, y)
    for extra in ({"decoder": True}, {"return_capsules": True}):
        other = CapsNet2(**TINY, routing="adaptive_lambda", lam=3.0, **extra)
        other(x)
        for mine, theirs in ((other.conv, plain.conv), (other.primary, plain.primary)):
            for a, b in zip(mine.weights, theirs.weights, strict=True):
                a.assign(b.value)
        for a, b in zip(other.capsule_layers[-1].weights, plain.capsule_layers[-1].weights, strict=True):
            a.assign(b.value)
        assert isinstance(other(x), dict)
        np.testing.assert_allclose(analysis.conv_gradient(other, x, y), g, rtol=1e-5, atol=1e-9)


def test_gradients_frame_over_depths_and_routings(tiny_config_path):
    frame, grads = analysis.gradients(tiny_config_path, images(4), np.array([0, 1, 2, 3]), depths=(2, 3))
    assert list(zip(frame.depth, frame.routing, strict=True)) == [
        (2, "dynamic"), (2, "adaptive_lambda"), (3, "dynamic"), (3, "adaptive_lambda")]
    assert set(grads) == {(2, "dynamic"), (2, "adaptive_lambda"), (3, "dynamic"), (3, "adaptive_lambda")}
    assert (frame[frame.routing == "dynamic"].ratio_to_dynamic == 1.0).all()
    # The adaptive-routing paper's point: through stacked layers, couplings starve the gradient.
    deep = frame[frame.depth == 3].set_index("routing").norm
    assert deep["adaptive_lambda"] > 10 * deep["dynamic"]
    for row in frame.itertuples():
        g = grads[(row.depth, row.routing)]
        assert row.norm == pytest.approx(np.linalg.norm(g.astype("float64")))
        assert row.min == g.min() and row.max == g.max()
    with pytest.raises(ValueError, match="depth must be 2, 3 or 4"):
        analysis.gradients(tiny_config_path, images(2), np.array([0, 1]), depths=(5,))


def test_activity_and_diagnose_tell_the_two_collapses_apart():
    import keras

    keras.utils.set_random_seed(0)
    x = images(6)
    model = CapsNet2(**TINY, routing="adaptive_lambda", lam=3.0)
    conv = to_numpy(model.conv(x))
    lengths = np.linalg.norm(to_numpy(model.capsules(x)[-1]), axis=-1)
    alive = analysis.activity(model, x)
    assert alive["relu_active"] == pytest.approx(np.mean(conv > 0)) and 0 < alive["relu_active"] < 1
    assert alive["length_mean"] == pytest.approx(lengths.mean(), rel=1e-5)
    assert alive["length_max"] == pytest.approx(lengths.max(), rel=1e-5)
    assert analysis.diagnose(0.2, alive) == "trains"  # twice chance (10 classes) is enough
    long_and_alive = {"relu_active": 0.5, "length_mean": 0.3, "length_max": 0.9}
    assert analysis.diagnose(0.5, long_and_alive, classes=3) == "collapsed"  # at chance, cause unknown
    every_class_lit = {"relu_active": 0.5, "length_mean": 0.99, "length_max": 1.0}
    assert analysis.diagnose(0.1, every_class_lit) == "collapsed: saturated"

    model.conv.bias.assign(np.full(tuple(model.conv.bias.shape), -1e3, "float32"))  # every ReLU dead
    dead = analysis.activity(model, x)
    assert dead["relu_active"] == 0 and analysis.diagnose(0.1, dead) == "collapsed: ReLUs dead"

    starved = CapsNet2(**TINY, routing="adaptive_lambda", lam=1e-9)  # squash of ~0 sums: no length
    stats = analysis.activity(starved, x)
    assert stats["relu_active"] > 0.01 and stats["length_max"] < 1e-6
    assert analysis.diagnose(0.1, stats) == "collapsed: no length"
