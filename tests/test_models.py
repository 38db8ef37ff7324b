import keras
import numpy as np
import pytest

from capszoo import CapsNet, CapsNet2, CapsNet3, CapsNet4, MarginLoss, ModelConfig
from tests.helpers import to_numpy

pytestmark = pytest.mark.any_backend

ROUTING_KWARGS = [dict(routing="dynamic", iterations=3), dict(routing="adaptive", iterations=2),
                  dict(routing="adaptive_lambda", lam=3.0), dict(routing="uniform")]
TINY = dict(conv_filters=8, conv_kernel_size=3, primary_types=4, primary_dim=4, primary_kernel_size=3)


def tiny(factory=CapsNet2, input_shape=(12, 12, 1), **kwargs):
    hidden = {CapsNet2: (), CapsNet3: (6,), CapsNet4: (6, 5)}[factory]
    kwargs = {**TINY, "capsules": (*hidden, kwargs.pop("num_classes", 3)), "capsule_dims": 4, **kwargs}
    return factory(input_shape=input_shape, num_classes=kwargs["capsules"][-1], **kwargs)


def images(batch, shape=(12, 12, 1), seed=0):
    return np.random.default_rng(seed).random((batch, *shape)).astype("float32")


@pytest.mark.parametrize("shape, primary", [((28, 28, 1), 1152), ((32, 32, 3), 2048)])
def test_paper_primary_capsule_counts(shape, primary):
    assert ModelConfig(input_shape=shape).primary_capsules == primary


@pytest.mark.parametrize("factory, capsules", [(CapsNet2, (10,)), (CapsNet3, (256, 10)), (CapsNet4, (256, 32, 10))])
@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3)])
def test_paper_models_shapes(factory, capsules, shape):
    model = factory(input_shape=shape, routing="adaptive_lambda", lam=3.0)
    assert model.model_config.capsules == capsules
    primary = ModelConfig(input_shape=shape).primary_capsules
    n_in, d_in = [primary, *capsules[:-1]], [8] + [16] * (len(capsules) - 1)
    expected = [(n, d, n_out, 16) for n, d, n_out in zip(n_in, d_in, capsules, strict=True)]
    assert [tuple(layer.kernel.shape) for layer in model.capsule_layers] == expected
    assert to_numpy(model(images(2, shape))).shape == (2, 10)


def test_paper_capsnet2_parameter_count():
    # conv 9*9*1*256+256, primary 9*9*256*256+256, W 1152*8*10*16
    assert CapsNet2().count_params() == 20_992 + 5_308_672 + 1_474_560
    assert ModelConfig().param_count() == 20_992 + 5_308_672 + 1_474_560


@pytest.mark.parametrize("factory", [CapsNet2, CapsNet3, CapsNet4])
@pytest.mark.parametrize("extra", [{}, {"decoder": True}, {"input_shape": (13, 11, 3), "capsule_dims": (5, 3, 4)}],
                         ids=["plain", "decoder", "rgb-dims"])
def test_param_count_without_building_equals_the_built_model(factory, extra):
    extra = dict(extra)
    if "capsule_dims" in extra:
        extra["capsule_dims"] = extra["capsule_dims"][-len(tiny(factory).model_config.capsules):]
    model = tiny(factory, **extra)
    assert model.model_config.param_count() == model.count_params()


def test_param_count_of_the_paper_capsnet4_on_32x32():
    # the README's figure, from building the model once
    assert ModelConfig(input_shape=(32, 32, 3), capsules=(256, 32, 10)).param_count() == 74_659_072


@pytest.mark.parametrize("factory", [CapsNet2, CapsNet3, CapsNet4])
@pytest.mark.parametrize("routing", ROUTING_KWARGS, ids=lambda k: k["routing"])
def test_tiny_models_variable_batch(factory, routing):
    model = tiny(factory, **routing)
    x = images(5)
    together = to_numpy(model(x))
    assert together.shape == (5, 3) and np.all((together >= 0) & (together < 1))
    for batch in (1, 2):
        np.testing.assert_allclose(to_numpy(model(x[:batch])), together[:batch], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.predict(x, batch_size=2, verbose=0), together, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("routing", ROUTING_KWARGS, ids=lambda k: k["routing"])
def test_keras_save_and_load_gives_identical_outputs(tmp_path, routing):
    model = tiny(CapsNet3, decoder=True, decoder_units=(8, 8), **routing)
    model.compile(optimizer="adam", loss={"class_scores": MarginLoss()})
    model.optimizer.build(model.trainable_variables)
    x = images(3)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.model_config == model.model_config
    before, after = model(x), loaded(x)
    assert set(before) == set(after) == {"class_scores", "reconstruction"}
    for key in before:
        np.testing.assert_array_equal(to_numpy(after[key]), to_numpy(before[key]))


def test_outputs_dict_and_decoder_masking():
    model = tiny(return_capsules=True)
    out = model(images(2))
    assert set(out) == {"class_scores", "class_capsules"} and out["class_capsules"].shape == (2, 3, 4)
    with_decoder = tiny(decoder=True, decoder_units=(8, 8))
    x = images(2)
    by_length = to_numpy(with_decoder(x)["reconstruction"])
    assert by_length.shape == (2, 12, 12, 1)
    scores = to_numpy(with_decoder(x)["class_scores"])
    labels = np.argmax(scores, axis=1)
    np.testing.assert_allclose(to_numpy(with_decoder({"images": x, "labels": labels})["reconstruction"]), by_length,
                               rtol=1e-6)
    other_labels = (labels + 1) % 3
    other = to_numpy(with_decoder({"images": x, "labels": other_labels})["reconstruction"])
    capsules = with_decoder.capsules(x)[-1]
    masked = to_numpy(with_decoder.mask(capsules, other_labels))
    keep = np.eye(3)[other_labels]
    np.testing.assert_array_equal(masked.reshape(2, 3, 4), to_numpy(capsules) * keep[:, :, None])
    np.testing.assert_allclose(other, to_numpy(with_decoder.decoder(masked)), rtol=1e-6)


@pytest.mark.parametrize("kwargs", [{}, dict(return_capsules=True), dict(decoder=True, decoder_units=(8, 8)),
                                    dict(return_capsules=True, decoder=True, decoder_units=(8, 8))])
def test_input_and_output_shape_are_those_a_functional_model_reports(kwargs):
    """Keras' functional models answer model.input_shape / output_shape; a CapsNet (subclassed)
    had neither, so `capszoo.load(name).input_shape` raised AttributeError."""
    model = tiny(factory=CapsNet3, input_shape=(13, 12, 2), **kwargs)
    assert model.input_shape == (None, 13, 12, 2)
    out = model(images(2, (13, 12, 2)))
    actual = {k: (None, *v.shape[1:]) for k, v in out.items()} if isinstance(out, dict) else (None, *out.shape[1:])
    assert model.output_shape == actual
    symbolic = model(keras.Input(model.input_shape[1:]))  # what the shape is for: wiring the model into others
    assert keras.tree.map_structure(lambda tensor: tuple(tensor.shape), symbolic) == actual


@pytest.mark.parametrize("kwargs, message", [
    (dict(routing="adaptive_lambda", lam=0.0), "λ"),
    (dict(routing="adaptive_lambda", lam=-1.0), "λ"),
    (dict(routing="dynamic", iterations=0), "iterations must be an integer >= 1"),
    (dict(routing="adaptive", iterations=-2), "iterations must be an integer >= 1"),
    (dict(routing="dinamic"), "unknown routing 'dinamic'"),
    (dict(capsules=(16, 10), num_classes=10), "CapsNet2 has 1 capsule layers"),
    (dict(conv_filters=0), "model.conv_filters must be an integer >= 1"),
    (dict(num_classes=1, capsules=(1,)), "model.num_classes must be >= 2, got 1"),
    (dict(routing_options={"stop_gradient": 1}), "stop_gradient must be True or False"),
    (dict(routing="uniform", routing_options={"stop_gradient": True}), "takes no option"),
    (dict(input_shape=(8, 8, 1)), "too small"),
])
def test_bad_arguments_raise_clear_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CapsNet2(**kwargs)


@pytest.mark.parametrize("factory, routing, values", [
    (CapsNet2, "adaptive_lambda", {"iterations": 3}),
    (CapsNet3, "dynamic", {"lam": 1.0}),
    (CapsNet4, "uniform", {"iterations": 3, "lam": 1.0}),
])
def test_a_factory_refuses_an_ignored_routing_hyperparameter_at_its_default(factory, routing, values):
    # CapsNet2(routing="adaptive_lambda", iterations=3) built silently: 3 is ModelConfig's default,
    # which ModelConfig cannot tell from "not given"; the factory sees what was named.
    key = next(iter(values))
    with pytest.raises(ValueError, match=rf"model.{key} = .* has no effect with '{routing}' routing"):
        factory(routing=routing, **values)
    with pytest.raises(ValueError, match="unknown routing"):
        factory(routing="dynamc", iterations=3)


def test_factory_name_and_unknown_override():
    assert tiny(name="my_net").name == "my_net"
    with pytest.raises(ValueError, match="unknown model config key.*model.lamda"):
        CapsNet2(routing="adaptive_lambda", lamda=3.0)


def test_unknown_config_key_is_named():
    with pytest.raises(ValueError, match="unknown model config key.*model.lambda"):
        ModelConfig.from_dict({"routing": "adaptive_lambda", "lambda": 3.0})


@pytest.mark.parametrize("bad, message", [
    (np.zeros((12, 12, 1), "float32"), r"expects images of shape \(batch, 12, 12, 1\), got a rank-3"),
    (np.zeros((2, 12, 12), "float32"), "rank-3"),
    (np.zeros((2, 14, 14, 1), "float32"), r"got \(2, 14, 14, 1\)"),
    (np.zeros((2, 12, 12, 3), "float32"), r"got \(2, 12, 12, 3\)"),
    (np.zeros((2, 12, 12, 1), "uint8"), "expects float images scaled to"),
])
def test_wrong_image_shape_or_dtype_is_rejected(bad, message):
    with pytest.raises(ValueError, match=message):
        tiny()(bad)


def _with(value, dtype="float32"):
    x = images(4).astype(dtype)
    x[1, 3, 5, 0] = value
    return x


BAD_VALUES = [
    (_with(np.nan), "tiny: images contain NaN or inf values"),
    (_with(np.inf), "images contain NaN or inf values"),
    (_with(-np.inf, "float16"), "images contain NaN or inf values"),
    (images(4) * 255, r"images must be scaled to \[0, 1\], got values in \[[^,]+, [^]]+\]; divide 8-bit"),
    (_with(-0.5), r"got values in \[-0\.5, "),
    ((images(4) * 255).astype("uint8"), "tiny expects float images scaled to"),
]


def _predict_scores(model, x, y):
    from capszoo.training import predict_scores  # behind `capszoo predict`

    return predict_scores(model, x)


ENTRY_POINTS = {
    "call": lambda model, x, y: model(x),
    "predict": lambda model, x, y: model.predict(x, verbose=0),
    "predict_tensor": lambda model, x, y: model.predict(keras.ops.convert_to_tensor(x), verbose=0),
    "evaluate": lambda model, x, y: model.evaluate(x, y, verbose=0),
    "fit": lambda model, x, y: model.fit(x, y, epochs=1, verbose=0),
    "fit_validation": lambda model, x, y: model.fit(images(4), np.zeros(4, "int32"), validation_data=(x, y), epochs=1,
                                                    verbose=0),
    "predict_dict": lambda model, x, y: model.predict({"images": x}, verbose=0),
    "predict_scores": _predict_scores,
    "train_on_batch": lambda model, x, y: model.train_on_batch(x, y),
    "test_on_batch": lambda model, x, y: model.test_on_batch(x, y),
    "predict_on_batch": lambda model, x, y: model.predict_on_batch(x),
}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("bad, message", BAD_VALUES, ids=["nan", "inf", "-inf16", "255", "negative", "uint8"])
def test_nan_or_unscaled_array_images_are_rejected_before_the_model_runs(entry, bad, message):
    model = tiny(name="tiny")
    model.compile(optimizer="adam", loss=MarginLoss())
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match=message):
        ENTRY_POINTS[entry](model, bad, np.zeros(4, "int32"))
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


WRONG_SHAPES = [
    (np.zeros((4, 14, 14, 1), "float32"), r"tiny expects images of shape \(batch, 12, 12, 1\), got \(4, 14, 14, 1\)"),
    (np.zeros((4, 12, 12, 3), "float32"), r"got \(4, 12, 12, 3\)"),
    (np.zeros((12, 12, 1), "float32"), r"got a rank-3 input of shape \(12, 12, 1\)"),
]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_wrong_image_shapes_are_rejected_by_every_entry_point_after_a_good_batch(entry):
    # After a first batch Keras may retrace with unknown sizes (TensorFlow), so the check in
    # `call` alone let a wrong size through to an error deep in the convolution.
    model = tiny(name="tiny")
    model.compile(optimizer="adam", loss=MarginLoss())
    ENTRY_POINTS[entry](model, images(4), np.zeros(4, "int32"))
    before = [w.copy() for w in model.get_weights()]
    for bad, message in WRONG_SHAPES:
        with pytest.raises(ValueError, match=message):
            ENTRY_POINTS[entry](model, bad, np.zeros(4, "int32"))
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


@pytest.mark.parametrize("entry", sorted(set(ENTRY_POINTS) - {"call"}))
def test_empty_image_arrays_are_rejected_by_the_keras_loops(entry):
    model = tiny(name="tiny")
    model.compile(optimizer="adam", loss=MarginLoss())
    with pytest.raises(ValueError, match=r"tiny: got no images \(an empty array of shape \(0, 12, 12, 1\)\)"):
        ENTRY_POINTS[entry](model, images(0), np.zeros(0, "int32"))


LABEL_ENTRY_POINTS = {
    "evaluate": lambda model, y: model.evaluate(images(6), y, batch_size=3, verbose=0),
    "fit": lambda model, y: model.fit(images(6), y, batch_size=3, epochs=1, verbose=0),
    "fit_validation": lambda model, y: model.fit(images(6), np.zeros(6, "int32"), validation_data=(images(6), y),
                                                 batch_size=3, epochs=1, verbose=0),
    "evaluate_tensor": lambda model, y: model.evaluate(images(6), keras.ops.convert_to_tensor(y), verbose=0),
    "evaluate_lists": lambda model, y: model.evaluate(images(6).tolist(), y.tolist(), verbose=0),
    "train_on_batch": lambda model, y: model.train_on_batch(images(6), y),
    "test_on_batch": lambda model, y: model.test_on_batch(images(6), y),
}
BAD_LABELS = [
    (np.array([0, 1, 2, 3, 0, 1]), r"tiny: labels must be class ids in \[0, 3\), got values in \[0, 3\]"),
    (np.array([0, 1, -1, 2, 0, 1]), r"got values in \[-1, 2\]"),
    (np.array([0, 1, 0.5, 2, 0, 1]), "tiny: labels must be whole class ids, got 0.5"),
    (np.array([0, 1, np.nan, 2, 0, 1]), "tiny: labels contain NaN or inf values"),
    (np.full((6, 3), 1 / 3), r"labels of shape \(6, 3\) must be one-hot rows, a single 1 in each"),
    (np.zeros((6, 4)), r"tiny expects labels as class ids in \[0, 3\) .* got shape \(6, 4\)"),
    (np.array(list("abcabc")), "expects labels as .* got dtype <U1"),
    (np.ones(6, bool), "got dtype bool"),
]


@pytest.mark.parametrize("entry", LABEL_ENTRY_POINTS)
@pytest.mark.parametrize("bad, message", BAD_LABELS,
                         ids=["too-big", "negative", "fraction", "nan", "soft", "wide", "strings", "bool"])
def test_bad_label_arrays_are_rejected_before_the_model_runs(entry, bad, message):
    # Before: ids outside the classes trained on all-zero targets silently; the rest failed deep
    # in the backend (or, for strings, in Keras' data adapter).
    if entry == "evaluate_tensor" and bad.dtype.kind in "U":
        pytest.skip("no backend tensor of strings")
    model = tiny(name="tiny")
    model.compile(optimizer="adam", loss=MarginLoss(), metrics=[keras.metrics.SparseCategoricalAccuracy()])
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match=message):
        LABEL_ENTRY_POINTS[entry](model, bad)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


@pytest.mark.parametrize("entry", LABEL_ENTRY_POINTS)
def test_missing_or_miscounted_labels_are_one_error(entry):
    # Before: "None values not supported" from deep in the backend, and Keras' "Data cardinality
    # is ambiguous" with the sizes on lines of their own.
    model = tiny(name="tiny")
    model.compile(optimizer="adam", loss=MarginLoss(), metrics=[keras.metrics.SparseCategoricalAccuracy()])
    if entry not in ("evaluate_tensor", "evaluate_lists"):  # no tensor or list of None
        with pytest.raises(ValueError, match=r"^tiny: (evaluate|fit|fit's validation_data|train_on_batch|"
                                             r"test_on_batch) needs labels: .*\(images, labels\), the labels as "):
            LABEL_ENTRY_POINTS[entry](model, None)
    with pytest.raises(ValueError, match="^tiny: 6 images but 5 labels$"):
        LABEL_ENTRY_POINTS[entry](model, np.zeros(5, "int32"))


def test_one_hot_float_and_column_labels_measure_what_class_ids_measure():
    # One-hot rows used to meet SparseCategoricalAccuracy as they were: an error deep in the
    # backend, or, with a batch of num_classes images, a broadcast comparison and a wrong accuracy.
    model = tiny(name="tiny")
    model.compile(optimizer="adam", loss=MarginLoss(), metrics=[keras.metrics.SparseCategoricalAccuracy()])
    x = images(6)
    ids = np.argmax(to_numpy(model(x)), axis=1)
    ids[:2] = (ids[:2] + 1) % 3  # four of six right: accuracy 2/3, not 0 or 1 by luck
    reference = model.evaluate(x, ids, batch_size=3, verbose=0)
    assert reference[1] == pytest.approx(4 / 6)
    for labels in (np.eye(3, dtype="float32")[ids], ids.astype("float64"), ids[:, None], ids.astype("uint8")):
        assert model.evaluate(x, labels, batch_size=3, verbose=0) == pytest.approx(reference, rel=1e-6)


def test_python_lists_of_images_and_labels_measure_what_arrays_measure():
    # Keras refused nested lists of numbers with "Unrecognized data type: x=" and every value.
    model = tiny(name="tiny")
    model.compile(optimizer="adam", loss=MarginLoss(), metrics=[keras.metrics.SparseCategoricalAccuracy()])
    x, y = images(6), np.array([0, 1, 2, 0, 1, 2])
    np.testing.assert_allclose(model.predict(x.tolist(), verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    reference = model.evaluate(x, y, batch_size=3, verbose=0)
    assert model.evaluate(x.tolist(), y.tolist(), batch_size=3, verbose=0) == pytest.approx(reference, rel=1e-6)
    assert model.evaluate(list(x), list(y), batch_size=3, verbose=0) == pytest.approx(reference, rel=1e-6)
    model.fit(x.tolist(), y.tolist(), validation_data=(x.tolist(), y.tolist()), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="tiny: images given as a list must all have one shape"):
        model.predict([x[0], x[0, :5]], verbose=0)
    with pytest.raises(ValueError, match=r"tiny: images must be scaled to \[0, 1\], got values in \[\d+, 25\d\]"):
        model.predict((x * 255).round().tolist(), verbose=0)


def test_labels_inside_decoder_inputs_and_targets_are_checked():
    model = tiny(name="tiny", decoder=True, decoder_units=(8, 8))
    model.compile(optimizer="adam", loss={"class_scores": MarginLoss(), "reconstruction": "mse"})
    x, good, bad = images(6), np.zeros(6, "int32"), np.full(6, 7)
    for inputs, targets in [({"images": x, "labels": bad}, {"class_scores": good, "reconstruction": x}),
                            ({"images": x, "labels": good}, {"class_scores": bad, "reconstruction": x})]:
        with pytest.raises(ValueError, match=r"tiny: labels must be class ids in \[0, 3\), got values in \[7, 7\]"):
            model.fit(inputs, targets, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="tiny: 6 images but 5 labels"):
        model.fit({"images": x, "labels": good[:5]}, {"class_scores": good, "reconstruction": x}, verbose=0)
    one_hot = np.eye(3, dtype="float32")[good]
    inputs = {"images": x, "labels": one_hot}
    model.fit(inputs, {"class_scores": one_hot, "reconstruction": x}, epochs=1, verbose=0)
    assert inputs["labels"] is one_hot  # the caller's dict is left as it was


def test_a_call_on_an_empty_batch_returns_no_scores():
    assert to_numpy(tiny()(images(0))).shape == (0, 3)
    # every output and every capsule layer, as for a batch of two less its two images; TensorFlow's
    # oneDNN convolution returns its input for an empty batch on AVX-512 CPUs, which broke this
    model = tiny(CapsNet3, decoder=True, decoder_units=(8, 8), return_capsules=True)
    for empty, full in [(model(images(0)), model(images(2))),
                        (model.capsules(images(0)), model.capsules(images(2)))]:
        empty, full = keras.tree.flatten(empty), keras.tree.flatten(full)
        assert [tuple(t.shape) for t in empty] == [(0, *t.shape[1:]) for t in full]


def test_predict_scores_accepts_float64_and_float16_images_as_float32():
    model, x = tiny(), images(3)
    x[0], x[1] = 0.0, 1.0
    for dtype in ("float64", "float16"):
        cast = x.astype(dtype)
        got = _predict_scores(model, cast, None)
        assert got.dtype == np.float32 and got.shape == (3, 3)
        np.testing.assert_allclose(got, to_numpy(model.predict(cast.astype("float32"), verbose=0)), rtol=1e-6)


def test_predict_scores_names_the_range_of_float64_pixels_beyond_float32():
    x = _with(1e300, "float64")
    with pytest.raises(ValueError, match=r"tiny: images must be scaled to \[0, 1\], got values in \[[^,]+, 1e\+300\]"):
        _predict_scores(tiny(name="tiny"), x, None)


def test_images_at_the_ends_of_the_unit_interval_are_accepted():
    x = images(3)
    x[0], x[1] = 0.0, 1.0
    scores = to_numpy(tiny()(x))
    assert scores.shape == (3, 3) and np.all(np.isfinite(scores))


def test_config_round_trip_through_dict():
    config = ModelConfig(routing="dynamic", iterations=2, routing_options={"stop_gradient": True},
                         capsules=(32, 10), capsule_dims=(8, 16))
    assert ModelConfig.from_dict(config.to_dict()) == config
    assert CapsNet(config.to_dict()).model_config == config


def _synthetic_task(n, seed):
    """3 classes, each a bright 4x4 patch in a different place, plus noise: linearly separable."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    x = 0.2 * rng.random((n, 12, 12, 1))
    for k, (r, c) in enumerate([(1, 1), (1, 7), (7, 4)]):
        x[labels == k, r:r + 4, c:c + 4, 0] += 0.8
    return np.clip(x, 0, 1).astype("float32"), labels


@pytest.mark.parametrize("routing", [dict(routing="adaptive_lambda", lam=3.0), dict(routing="dynamic")],
                         ids=lambda k: k["routing"])
def test_tiny_capsnet_learns_a_separable_task(routing):
    keras.utils.set_random_seed(0)
    x, y = _synthetic_task(384, seed=0)
    x_test, y_test = _synthetic_task(192, seed=1)
    model = tiny(**routing)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=MarginLoss(), metrics=["sparse_categorical_accuracy"])
    _, untrained = model.evaluate(x_test, y_test, verbose=0)
    assert untrained < 0.7
    model.fit(x, y, batch_size=32, epochs=6, verbose=0)
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    assert accuracy > 0.9  # chance is 1/3
