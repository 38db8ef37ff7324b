"""``training.precision = "mixed_bfloat16"``: bfloat16 convolutions, float32 capsules."""

import json

import keras
import numpy as np
import pytest

from capszoo import CapsNet2, MarginLoss
from capszoo.config import load_config
from capszoo.training import TrainingError, build_model, train
from tests.helpers import to_numpy

TINY = dict(conv_filters=8, conv_kernel_size=3, primary_types=4, primary_dim=4, primary_kernel_size=3,
            capsules=(3,), capsule_dims=4, num_classes=3)


def pair(**kwargs):
    """A float32 model and a mixed_bfloat16 one with the same weights."""
    full = CapsNet2(input_shape=(12, 12, 1), **TINY, **kwargs)
    mixed = CapsNet2(input_shape=(12, 12, 1), **TINY, dtype="mixed_bfloat16", **kwargs)
    mixed.set_weights(full.get_weights())
    return full, mixed


@pytest.mark.any_backend
@pytest.mark.parametrize("routing", [dict(routing="adaptive_lambda", lam=3.0), dict(routing="dynamic")],
                         ids=lambda k: k["routing"])
def test_mixed_bfloat16_convolutions_feed_float32_capsules(routing):
    full, mixed = pair(**routing)
    assert mixed.conv.compute_dtype == mixed.primary.conv.compute_dtype == "bfloat16"
    assert all(layer.compute_dtype == "float32" for layer in (*mixed.capsule_layers, mixed.length))
    assert {v.dtype for v in mixed.weights} == {"float32"}  # the weights saved stay float32
    x = np.random.default_rng(0).random((5, 12, 12, 1)).astype("float32")
    primary_full, *_, classes_full = full.capsules(x)
    primary_mixed, *_, classes_mixed = mixed.capsules(x)
    dtype = keras.backend.standardize_dtype
    assert dtype(primary_mixed.dtype) == dtype(classes_mixed.dtype) == "float32"
    # bfloat16 keeps 8 mantissa bits: the capsules agree to about 1 %, the scores to about 2 %.
    np.testing.assert_allclose(to_numpy(primary_mixed), to_numpy(primary_full), atol=2e-2)
    scores_full, scores_mixed = to_numpy(full(x)), to_numpy(mixed(x))
    assert scores_mixed.dtype == np.float32
    np.testing.assert_allclose(scores_mixed, scores_full, rtol=5e-2, atol=1e-3)
    assert not np.array_equal(scores_mixed, scores_full)  # it did compute in bfloat16


@pytest.mark.any_backend
def test_a_mixed_model_trains_and_saves_its_policy(tmp_path):
    _, mixed = pair(routing="adaptive_lambda", lam=3.0)
    mixed.compile(optimizer=keras.optimizers.Adam(1e-2), loss=MarginLoss())
    x = np.random.default_rng(1).random((16, 12, 12, 1)).astype("float32")
    y = np.arange(16) % 3
    history = mixed.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    mixed.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")  # a resumed run keeps its precision
    assert loaded.dtype_policy.name == "mixed_bfloat16" and loaded.conv.compute_dtype == "bfloat16"
    np.testing.assert_array_equal(to_numpy(loaded(x)), to_numpy(mixed(x)))


def test_precision_is_validated_and_part_of_the_recipe_hash(tiny_config_path):
    config = load_config(tiny_config_path)
    assert config.training.precision == "float32"
    mixed = config.replace(training={"precision": "mixed_bfloat16"})
    assert mixed.sha256() != config.sha256()
    message = "training.precision must be one of 'float32', 'mixed_bfloat16', got 'float16'"
    with pytest.raises(ValueError, match=message):
        config.replace(training={"precision": "float16"})
    # float32 recipes written before the field existed keep their hashes: test_zoo checks every
    # published card's config_sha256 against its entry.
    assert build_model(config, compile=False).dtype_policy.name == "float32"


def test_mixed_training_run_records_precision_and_measures_in_float32(tiny_config_path, tmp_path):
    config = load_config(tiny_config_path).replace(training={"precision": "mixed_bfloat16", "epochs": 1})
    model, metrics = train(config, out_dir=tmp_path / "run", verbose=0)
    assert metrics["precision"] == "mixed_bfloat16"
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["precision"] == "mixed_bfloat16"
    # the test figure is that of the saved weights in a float32 model, which is what users load
    assert model.dtype_policy.name == "float32"
    assert 0.2 < metrics["test_accuracy"] <= 1.0  # one epoch on digits: well above chance (0.1)


def test_resume_refuses_another_precision(tiny_config_path, tmp_path):
    run = tmp_path / "run"
    train(tiny_config_path, out_dir=run, epochs=1, verbose=0)
    message = "cannot resume .* in mixed_bfloat16: its checkpoint was trained in float32"
    with pytest.raises(TrainingError, match=message):
        train(tiny_config_path, out_dir=run, epochs=2, resume=True, precision="mixed_bfloat16", verbose=0)
