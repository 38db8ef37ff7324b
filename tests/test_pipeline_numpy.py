"""The NumPy input pipeline: what trains on a machine without TensorFlow (a GPU with JAX)."""

import itertools
import json

import keras
import numpy as np
import pytest

from capszoo import data
from capszoo.config import Config
from capszoo.data import load_splits, make_dataset, random_shift_numpy, scale_and_resize_numpy


def mnist_like(n_train=64, n_test=20, seed=0):
    rng = np.random.default_rng(seed)
    return dict(x_train=rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8), y_train=rng.integers(0, 10, n_train),
                x_test=rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8), y_test=rng.integers(0, 10, n_test))


def mnist_config(folder, **data_fields):
    return Config(model={"input_shape": [28, 28, 1]},
                  data={"dataset": "mnist", "data_dir": str(folder), **data_fields},
                  training={"batch_size": 16})


def to_numpy(value):
    if isinstance(value, dict):
        return {k: to_numpy(v) for k, v in value.items()}
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


def batches(ds, count=None):
    """Batches of either pipeline as NumPy: all of an evaluation pass, or ``count`` of a stream."""
    if isinstance(ds, keras.utils.PyDataset):
        items = [ds[k] for k in range(len(ds))]
    elif hasattr(ds, "take"):  # tf.data
        items = list(ds.take(count) if count else ds)
    else:
        items = list(itertools.islice(ds, count))
    return [tuple(to_numpy(part) for part in item) for item in items]


@pytest.mark.any_backend
def test_numpy_stream_shuffles_shifts_and_is_a_function_of_seed_and_epoch(tmp_path):
    np.savez(tmp_path / "mnist.npz", **mnist_like())
    cfg = mnist_config(tmp_path, shift_pixels=2)
    x, y = load_splits(cfg).train
    steps = data.steps_per_epoch(len(x), 16)
    stream = batches(make_dataset(x, y, cfg, training=True, pipeline="numpy"), 2 * steps)
    first, second = stream[:steps], stream[steps:]
    labels = [np.concatenate([b[1] for b in epoch]) for epoch in (first, second)]
    assert sorted(labels[0]) == sorted(y) and not np.array_equal(labels[0], y)  # each epoch: a permutation
    assert not np.array_equal(labels[0], labels[1])  # reshuffled every epoch
    assert first[0][0].shape == (16, 28, 28, 1) and first[0][0].dtype == np.float32
    assert first[0][1].dtype == np.int32
    resumed = batches(make_dataset(x, y, cfg, training=True, start_epoch=1, pipeline="numpy"), steps)
    again = batches(make_dataset(x, y, cfg, training=True, pipeline="numpy"), steps)
    for (xa, ya), (xb, yb) in zip(second, resumed, strict=True):  # resuming at epoch 1 replays epoch 1 exactly
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    for (xa, _), (xb, _) in zip(first, again, strict=True):
        np.testing.assert_array_equal(xa, xb)
    # Every training image is its original shifted by at most 2 px with zero fill, and some are shifted.
    originals = x.astype(np.float32) / 255.0
    shifted = 0
    for images, label_batch in first:
        for image, label in zip(images, label_batch, strict=True):
            padded = np.pad(originals[y == label], [(0, 0), (2, 2), (2, 2), (0, 0)])
            hits = [(dy, dx) for dy in range(5) for dx in range(5)
                    if any(np.array_equal(image, p[dy:dy + 28, dx:dx + 28]) for p in padded)]
            assert hits, "a training image is not a <=2 px shift of any training image with its label"
            shifted += (2, 2) not in hits
    assert shifted > len(x) // 2


@pytest.mark.parametrize("pipeline", ["numpy", pytest.param("tf", marks=pytest.mark.tensorflow_only)])
def test_a_stream_for_several_devices_drops_only_what_its_last_batch_cannot_split(tmp_path, pipeline):
    np.savez(tmp_path / "mnist.npz", **mnist_like(n_train=67))  # 4 batches of 16, then 3
    cfg = mnist_config(tmp_path)
    x, y = load_splits(cfg).train
    assert [data.examples_per_epoch(67, 16, k) for k in (1, 2, 3, 4)] == [67, 66, 67, 64]
    whole = batches(make_dataset(x, y, cfg, training=True, pipeline=pipeline), 10)
    for devices, last in ((2, 2), (4, None)):
        used = data.examples_per_epoch(67, 16, devices)
        steps = data.steps_per_epoch(used, 16)
        stream = batches(make_dataset(x, y, cfg, training=True, pipeline=pipeline, multiple=devices), 2 * steps)
        assert [len(b[1]) for b in stream] == ([16] * 4 + ([last] if last else [])) * 2
        for epoch, start in ((0, 0), (1, 5)):  # the single-device epoch, less its last few examples
            expected = np.concatenate([b[1] for b in whole[start:start + 5]])[:used]
            np.testing.assert_array_equal(np.concatenate([b[1] for b in stream[epoch * steps:(epoch + 1) * steps]]),
                                          expected)


@pytest.mark.any_backend
def test_numpy_evaluation_pass_is_in_order_unshifted_and_reiterable(tmp_path):
    np.savez(tmp_path / "mnist.npz", **mnist_like())
    cfg = mnist_config(tmp_path, shift_pixels=2)
    x, y = load_splits(cfg).test
    ds = make_dataset(x, y, cfg, training=False, pipeline="numpy")
    assert len(ds) == 2  # 20 examples in batches of 16
    once, twice = batches(ds), batches(ds)
    images = np.concatenate([b[0] for b in once])
    np.testing.assert_array_equal(images, x.astype(np.float32) / 255.0)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in once]), y)
    np.testing.assert_array_equal(images, np.concatenate([b[0] for b in twice]))


@pytest.mark.any_backend
def test_numpy_pipeline_gives_decoder_models_dict_elements(tmp_path):
    np.savez(tmp_path / "mnist.npz", **mnist_like())
    cfg = mnist_config(tmp_path).replace(model={"decoder": True})
    for training in (False, True):
        features, targets = next(iter(make_dataset(*load_splits(cfg).train, cfg, training=training, pipeline="numpy")))
        assert set(features) == {"images", "labels"} and set(targets) == {"class_scores", "reconstruction"}
        assert features["images"] is targets["reconstruction"]
        np.testing.assert_array_equal(features["labels"], targets["class_scores"])


@pytest.mark.any_backend
def test_random_shift_numpy_is_bounded_zero_padded_and_seeded():
    images = np.zeros((64, 9, 9, 1), np.float32)
    images[:, 4, 4, 0] = 1.0
    shifted = random_shift_numpy(images, 2, np.random.default_rng([1, 2]))
    positions = np.argwhere(shifted[..., 0] == 1.0)
    assert len(positions) == 64 and np.abs(positions[:, 1:] - 4).max() == 2
    assert len({tuple(p) for p in positions[:, 1:]}) > 10  # shifts vary per image
    np.testing.assert_array_equal(random_shift_numpy(images, 2, np.random.default_rng([1, 2])), shifted)
    ones = random_shift_numpy(np.ones((64, 9, 9, 1), np.float32), 2, np.random.default_rng(0))
    zeros = 81 - ones.sum(axis=(1, 2, 3))
    assert zeros.max() <= 81 - 7 * 7 and zeros.max() > 0  # zero padding, at most 2 rows + 2 cols
    assert random_shift_numpy(images, 0, None) is images


@pytest.mark.any_backend
def test_pipeline_choice(monkeypatch):
    monkeypatch.setenv("CAPSZOO_PIPELINE", "numpy")
    assert data.default_pipeline() == "numpy"
    monkeypatch.setenv("CAPSZOO_PIPELINE", "torch")
    with pytest.raises(ValueError, match=r"\$CAPSZOO_PIPELINE must be one of tf, numpy, got 'torch'"):
        data.default_pipeline()
    monkeypatch.delenv("CAPSZOO_PIPELINE")
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: None)  # as on a machine without TensorFlow
    assert data.default_pipeline() == "numpy"
    cfg = Config(model={"input_shape": [28, 28, 1]}, data={"dataset": "mnist"})
    with pytest.raises(ValueError, match="pipeline must be one of tf, numpy, got 'jax'"):
        make_dataset(np.zeros((1, 28, 28, 1), np.uint8), np.zeros(1), cfg, training=False, pipeline="jax")


def test_both_pipelines_give_identical_evaluation_batches(tmp_path):
    """pad and bilinear resizing, decoder dicts: the NumPy pipeline evaluates exactly as tf.data does."""
    np.savez(tmp_path / "mnist.npz", **mnist_like())
    padded = Config(model={"input_shape": [32, 32, 1]},
                    data={"dataset": "mnist", "data_dir": str(tmp_path), "image_size": [32, 32]})
    digits = Config(model={"input_shape": [28, 28, 1], "decoder": True},
                    data={"dataset": "digits", "image_size": [28, 28], "resize": "bilinear"})
    for cfg in (padded, digits):
        x, y = load_splits(cfg).test
        ours, theirs = (batches(make_dataset(x, y, cfg, training=False, pipeline=p)) for p in ("numpy", "tf"))
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs, strict=True):
            assert json.dumps(a, default=lambda v: v.shape) == json.dumps(b, default=lambda v: v.shape)
            for part_a, part_b in zip(a, b, strict=True):
                if isinstance(part_a, dict):
                    for key in part_a:
                        np.testing.assert_allclose(part_a[key], part_b[key], atol=1e-6)
                else:
                    np.testing.assert_allclose(part_a, part_b, atol=1e-6)
    np.testing.assert_array_equal(scale_and_resize_numpy(load_splits(padded).test[0], padded.data)[:, :2], 0.0)


def pillow_bilinear(images, size):
    """Pillow's BILINEAR on float images, channel by channel: the filter `capszoo predict` reads a
    file with, which averages over the pixels it shrinks."""
    from PIL import Image

    return np.stack([np.stack([np.asarray(Image.fromarray(image[:, :, c], "F").resize(size[::-1], Image.BILINEAR))
                               for c in range(image.shape[-1])], axis=-1) for image in images])


@pytest.mark.parametrize("pipeline", [pytest.param("numpy", marks=pytest.mark.any_backend), "tf"])
@pytest.mark.parametrize("native", [(64, 48), (32, 32), (13, 40), (8, 8)])
def test_bilinear_resizing_averages_what_it_shrinks_as_capszoo_predict_does(pipeline, native):
    # Plain bilinear samples four pixels per output pixel: a model trained on images it shrank
    # so would be shown different ones by `capszoo predict` and the served `predict_image_bytes`.
    # (64, 48) and (32, 32) shrink, (13, 40) stretches one side and shrinks the other, (8, 8) grows.
    cfg = Config(model={"input_shape": [28, 28, 3]}, data={"dataset": "cifar10", "image_size": [28, 28],
                                                           "resize": "bilinear"})
    images = np.random.default_rng(7).integers(0, 256, (3, *native, 3)).astype(np.uint8)
    resize = scale_and_resize_numpy if pipeline == "numpy" else data.scale_and_resize
    ours = np.asarray(resize(images, cfg.data))
    assert ours.shape == (3, 28, 28, 3) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, pillow_bilinear(images.astype(np.float32) / 255, (28, 28)), atol=1e-5)


@pytest.mark.any_backend
def test_training_and_evaluation_on_the_numpy_pipeline(tiny_config_path, tmp_path, monkeypatch):
    from capszoo.runs import load_trained
    from capszoo.training import evaluate, train

    monkeypatch.setenv("CAPSZOO_PIPELINE", "numpy")
    model, metrics = train(tiny_config_path, out_dir=tmp_path / "run", verbose=0)
    assert metrics["data_pipeline"] == "numpy" and metrics["epochs"] == 2
    assert 0.3 < metrics["test_accuracy"] <= 1.0  # chance is 0.1
    loaded, config = load_trained(tmp_path / "run")
    assert evaluate(loaded, config)["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)


@pytest.mark.parametrize("pipeline", ["numpy", "tf"])
def test_horizontal_flip_mirrors_about_half_the_training_images_and_no_evaluation_image(tmp_path, pipeline):
    np.savez(tmp_path / "mnist.npz", **mnist_like(n_train=128))
    cfg = mnist_config(tmp_path, horizontal_flip=True)
    x, y = load_splits(cfg).train
    originals = x.astype(np.float32) / 255.0
    steps = data.steps_per_epoch(len(x), 16)
    epoch = batches(make_dataset(x, y, cfg, training=True, pipeline=pipeline), steps)
    mirrored = 0
    for images, labels in epoch:
        for image, label in zip(images, labels, strict=True):
            same = [o for o in originals[y == label] if np.array_equal(image, o)]
            mirror = [o for o in originals[y == label] if np.array_equal(image, o[:, ::-1])]
            assert len(same) + len(mirror) == 1, "a training image is neither an original nor its mirror"
            mirrored += len(mirror)
    assert 32 <= mirrored <= 96  # of 128, each a fair coin: outside this range with probability < 1e-8
    again = batches(make_dataset(x, y, cfg, training=True, pipeline=pipeline), steps)
    for (xa, _), (xb, _) in zip(epoch, again, strict=True):  # the same seed mirrors the same images
        np.testing.assert_array_equal(xa, xb)
    evaluation = np.concatenate([b[0] for b in batches(make_dataset(x, y, cfg, training=False, pipeline=pipeline))])
    np.testing.assert_array_equal(evaluation, originals)


def test_horizontal_flip_is_a_flag_that_changes_the_recipe_hash_only_when_on():
    """Recipes without it keep the hashes their cards were published with (test_zoo pins those)."""
    base = Config(model={"input_shape": [28, 28, 1]}, data={"dataset": "fashion_mnist"})
    assert base.replace(data={"horizontal_flip": False}).sha256() == base.sha256()
    assert base.replace(data={"horizontal_flip": True}).sha256() != base.sha256()
    with pytest.raises(ValueError, match="data.horizontal_flip must be true or false, got 'yes'"):
        base.replace(data={"horizontal_flip": "yes"})
