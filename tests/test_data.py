import io
import re
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from capszoo import data
from capszoo.config import Config, DataConfig
from capszoo.data import DataUnavailableError, load_arrays, load_splits, make_dataset, random_shift, sha256_file


def mnist_like(n_train=40, n_test=20, seed=0):
    rng = np.random.default_rng(seed)
    return dict(x_train=rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8), y_train=rng.integers(0, 10, n_train),
                x_test=rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8), y_test=rng.integers(0, 10, n_test))


def config(**data_fields):
    shape = {"cifar10": [32, 32, 3]}.get(data_fields.get("dataset", "mnist"), [28, 28, 1])
    return Config(model={"input_shape": shape}, data={"dataset": "mnist", **data_fields})


def test_npz_folder(tmp_path):
    arrays = mnist_like()
    np.savez_compressed(tmp_path / "mnist.npz", **arrays)
    loaded = load_arrays(config(data_dir=str(tmp_path)).data)
    assert loaded.x_train.shape == (40, 28, 28, 1) and loaded.x_test.shape == (20, 28, 28, 1)
    np.testing.assert_array_equal(loaded.x_train[..., 0], arrays["x_train"])
    np.testing.assert_array_equal(loaded.y_test, arrays["y_test"])
    assert loaded.source == {"kind": "npz", "path": str(tmp_path / "mnist.npz"),
                             "sha256": sha256_file(tmp_path / "mnist.npz"), "layout": "arrays"}


def test_environment_variable_selects_the_folder(tmp_path, monkeypatch):
    np.savez_compressed(tmp_path / "mnist.npz", **mnist_like())
    monkeypatch.setenv("CAPSZOO_DATA_DIR", str(tmp_path))
    assert load_arrays(config().data).source["kind"] == "npz"


def test_jpeg_bytes_layout(tmp_path):
    ramp = np.linspace(0, 1, 32)
    smooth = [np.stack([np.outer(ramp, ramp) * 255, np.outer(ramp, 1 - ramp) * 255, np.full((32, 32), 40.0 * k)],
                       axis=-1).astype(np.uint8) for k in range(5)]  # smooth images survive JPEG nearly intact
    originals = {"train": np.stack(smooth), "test": np.stack(smooth[:3])}
    payload = {}
    for split, images in originals.items():
        streams = []
        for image in images:
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="JPEG", quality=90)
            streams.append(np.frombuffer(buffer.getvalue(), dtype=np.uint8))
        payload[f"x_{split}_jpeg"] = np.concatenate(streams)
        payload[f"x_{split}_offsets"] = np.concatenate([[0], np.cumsum([len(s) for s in streams])])
        payload[f"y_{split}"] = np.arange(len(images), dtype=np.uint8)
    np.savez_compressed(tmp_path / "cifar10_jpeg_lossy.npz", **payload)
    loaded = load_arrays(config(dataset="cifar10", data_dir=str(tmp_path)).data)
    assert loaded.x_train.shape == (5, 32, 32, 3) and loaded.x_test.shape == (3, 32, 32, 3)
    assert loaded.source["layout"] == "jpeg" and "lossy" in loaded.source["note"]
    first = payload["x_train_jpeg"][:payload["x_train_offsets"][1]]
    np.testing.assert_array_equal(loaded.x_train[0], np.asarray(Image.open(io.BytesIO(first.tobytes())).convert("RGB")))
    assert np.abs(loaded.x_test.astype(int) - originals["test"]).mean() < 5  # lossy, but the same images


def test_named_folder_without_the_dataset_fails_at_once(tmp_path):
    start = time.monotonic()
    with pytest.raises(DataUnavailableError) as err:
        load_arrays(config(dataset="cifar10", data_dir=str(tmp_path)).data)
    assert time.monotonic() - start < 5
    message = str(err.value)
    assert "'cifar10'" in message and str(tmp_path) in message and "cifar10_jpeg_lossy.npz" in message
    assert "tensorflow-datasets" in message


def test_the_npz_itself_named_as_the_folder_is_one_error_naming_its_folder(tmp_path):
    # It read "dataset 'mnist' is not in the offline folder .../mnist.npz: looked for mnist.npz".
    np.savez_compressed(tmp_path / "mnist.npz", **mnist_like())
    with pytest.raises(DataUnavailableError, match=re.escape(
            f"the offline data folder {tmp_path / 'mnist.npz'} (set by data.data_dir / --data-dir) is a file: "
            f"name the folder that holds mnist.npz ({tmp_path}), not a file")):
        load_arrays(config(data_dir=str(tmp_path / "mnist.npz")).data)


def test_npz_source_without_a_folder(monkeypatch):
    monkeypatch.delenv("CAPSZOO_DATA_DIR", raising=False)
    with pytest.raises(DataUnavailableError, match="no offline folder is set; pass --data-dir"):
        load_arrays(config(source="npz").data)


def _npy_bytes():
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((3, 28, 28), np.uint8))
    return buffer.getvalue()


def _npz_bytes(damage):
    buffer = io.BytesIO()
    np.savez(buffer, **mnist_like())
    return damage(bytearray(buffer.getvalue()))


def _flip_a_data_byte(data):
    data[200] ^= 0xFF  # inside the first array's stored bytes: the zip's CRC check fails
    return bytes(data)


# Not a zip at all and a lone .npy used to read "This file contains pickled (object) data" and
# "'numpy.ndarray' object does not support the context manager protocol".
@pytest.mark.parametrize("content, message", [
    (b"not a zip file at all", "it is not an .npz archive .* damaged or of another format"),
    (_npy_bytes(), "it is not an .npz archive"),
    (_npz_bytes(lambda data: bytes(data[: len(data) // 2])), "it is not an .npz archive"),  # cut short
    (_npz_bytes(_flip_a_data_byte), r"cannot read .*mnist.npz: BadZipFile"),
    (None, "expected x_train, y_train, x_test, y_test"),
])
def test_corrupt_or_wrong_files(tmp_path, content, message):
    path = tmp_path / "mnist.npz"
    if content is None:
        np.savez(path, images=np.zeros(3))
    else:
        path.write_bytes(content)
    with pytest.raises(DataUnavailableError, match=message):
        load_arrays(config(data_dir=str(tmp_path)).data)


def test_wrong_shapes_and_dtypes_are_reported(tmp_path):
    arrays = mnist_like()
    arrays["x_train"] = arrays["x_train"].astype(np.float32)
    np.savez(tmp_path / "mnist.npz", **arrays)
    with pytest.raises(DataUnavailableError, match="x_train must be uint8"):
        load_arrays(config(data_dir=str(tmp_path)).data)
    arrays = mnist_like()
    arrays["y_test"] = arrays["y_test"] + 10
    np.savez(tmp_path / "mnist.npz", **arrays)
    with pytest.raises(DataUnavailableError, match="labels must be 0..9"):
        load_arrays(config(data_dir=str(tmp_path)).data)


@pytest.mark.parametrize("labels, message", [
    (lambda y: y + 0.5, r"y_train labels must be whole class ids, got \d\.5"),
    (lambda y: np.where(np.arange(len(y)) == 3, np.nan, y.astype(np.float32)), "must be whole class ids, got nan"),
    (lambda y: y.astype(str), "must be integer class ids, got dtype <U"),
    (lambda y: y > 4, "must be integer class ids, got dtype bool"),
])
def test_labels_that_a_cast_would_change_are_refused(tmp_path, labels, message):
    arrays = mnist_like()
    arrays["y_train"] = labels(arrays["y_train"])  # 9.5 would pass a range check after truncation to 9
    np.savez(tmp_path / "mnist.npz", **arrays)
    with pytest.raises(DataUnavailableError, match=message):
        load_arrays(config(data_dir=str(tmp_path)).data)


def test_whole_float_labels_load_as_integers(tmp_path):
    arrays = mnist_like()
    expected = arrays["y_train"].copy()
    arrays["y_train"] = expected.astype(np.float64)
    np.savez(tmp_path / "mnist.npz", **arrays)
    loaded = load_arrays(config(data_dir=str(tmp_path)).data)
    assert loaded.y_train.dtype == np.int64
    np.testing.assert_array_equal(loaded.y_train, expected)


def test_tfds_path_with_mocked_data(monkeypatch):
    import tensorflow_datasets as tfds

    monkeypatch.delenv("CAPSZOO_DATA_DIR", raising=False)
    with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
        loaded = load_arrays(config(source="tfds").data)
    assert loaded.x_train.shape == (12, 28, 28, 1) and loaded.x_train.dtype == np.uint8
    assert loaded.source["kind"] == "tfds" and loaded.source["tfds_name"] == "mnist"


def test_tfds_failure_is_one_clear_error(monkeypatch):
    import tensorflow_datasets as tfds

    def offline(*args, **kwargs):
        raise ConnectionError("Failed to establish a new connection")

    monkeypatch.setattr(tfds, "load", offline)
    monkeypatch.setattr(data, "_network_reachable", lambda: True)  # the download itself fails
    monkeypatch.delenv("CAPSZOO_DATA_DIR", raising=False)
    with pytest.raises(DataUnavailableError, match="could not be loaded with tensorflow-datasets.*CAPSZOO_DATA_DIR"):
        load_arrays(config().data)


@pytest.fixture
def unprepared_tfds(monkeypatch):
    """tfds.load as on a machine where the dataset is not prepared; records each call's
    ``download`` and fails the download as offline."""
    import tensorflow_datasets as tfds

    calls = []

    def load(*args, download=True, **kwargs):
        calls.append(download)
        if not download:
            raise AssertionError("Dataset mnist: could not find data")
        raise ConnectionError("Max retries exceeded")

    monkeypatch.setattr(tfds, "load", load)
    monkeypatch.delenv("CAPSZOO_DATA_DIR", raising=False)
    return calls


def test_tfds_without_network_fails_at_once_instead_of_retrying_downloads(monkeypatch, unprepared_tfds):
    import socket
    import urllib.request

    def no_dns(host, *args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(urllib.request, "getproxies", dict)
    message = (r"not prepared in its folder and this machine has no network \(cannot resolve storage\.googleapis\.com\)"
               r"\. Without network, point --data-dir or CAPSZOO_DATA_DIR at a folder holding mnist\.npz")
    with pytest.raises(DataUnavailableError, match=message):
        load_arrays(config(source="tfds").data)
    assert unprepared_tfds == [False]  # no download tried


def test_tfds_behind_a_proxy_still_tries_to_download(monkeypatch, unprepared_tfds):
    import socket
    import urllib.request

    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: pytest.fail("no DNS probe behind a proxy"))
    monkeypatch.setattr(urllib.request, "getproxies", lambda: {"https": "http://proxy:3128"})
    with pytest.raises(DataUnavailableError, match=r"\(ConnectionError: Max retries exceeded\)"):
        load_arrays(config(source="tfds").data)
    assert unprepared_tfds == [False, True]


def test_digits_split_is_fixed():
    digits = DataConfig(dataset="digits")
    a, b = load_arrays(digits), load_arrays(digits)
    assert len(a.y_train) + len(a.y_test) == 1797 and len(a.y_test) == 359
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert a.x_train.max() == 255 and a.x_train.dtype == np.uint8


def test_validation_split_is_deterministic_and_disjoint(tmp_path):
    arrays = mnist_like(n_train=50)
    arrays["x_train"][:, 0, 0] = np.arange(50)  # tag every image
    np.savez(tmp_path / "mnist.npz", **arrays)
    cfg = config(data_dir=str(tmp_path), validation_fraction=0.2, seed=3)
    first, second = load_splits(cfg), load_splits(cfg)
    np.testing.assert_array_equal(first.validation[0], second.validation[0])
    tags_val, tags_train = first.validation[0][:, 0, 0, 0], first.train[0][:, 0, 0, 0]
    assert len(tags_val) == 10 and len(tags_train) == 40
    assert sorted(np.concatenate([tags_val, tags_train]).tolist()) == list(range(50))
    other = load_splits(config(data_dir=str(tmp_path), validation_fraction=0.2, seed=4))
    assert set(other.validation[0][:, 0, 0, 0]) != set(tags_val)


def test_subsets(tmp_path):
    np.savez(tmp_path / "mnist.npz", **mnist_like())
    splits = load_splits(config(data_dir=str(tmp_path), train_subset=7, test_subset=5))
    assert len(splits.train[0]) == 7 and len(splits.test[0]) == 5


def test_random_shift_is_bounded_zero_padded_and_seeded():
    images = np.zeros((64, 9, 9, 1), np.float32)
    images[:, 4, 4, 0] = 1.0
    seed = tf.constant([1, 2], tf.int64)
    shifted = random_shift(tf.constant(images), 2, seed).numpy()
    positions = np.argwhere(shifted[..., 0] == 1.0)
    assert len(positions) == 64  # nothing fell off: |shift| <= 2 from the centre of a 9x9 image
    assert np.abs(positions[:, 1:] - 4).max() == 2
    assert len({tuple(p) for p in positions[:, 1:]}) > 10  # shifts vary per image
    np.testing.assert_array_equal(random_shift(tf.constant(images), 2, seed).numpy(), shifted)
    ones = random_shift(tf.ones((64, 9, 9, 1)), 2, seed).numpy()
    assert set(np.unique(ones)) <= {0.0, 1.0}
    zeros = 81 - ones.sum(axis=(1, 2, 3))
    assert zeros.max() <= 81 - 7 * 7 and zeros.max() > 0  # zero padding, at most 2 rows + 2 cols


def epochs_of(ds, steps, epochs):
    batches = list(ds.take(steps * epochs))
    return [batches[k * steps:(k + 1) * steps] for k in range(epochs)]


def test_training_stream_shifts_shuffles_and_is_a_function_of_seed_and_epoch(tmp_path):
    arrays = mnist_like(n_train=64)
    np.savez(tmp_path / "mnist.npz", **arrays)
    cfg = config(data_dir=str(tmp_path), shift_pixels=2).replace(training={"batch_size": 16})
    x, y = load_splits(cfg).train
    eval_x = np.concatenate([b[0].numpy() for b in make_dataset(x, y, cfg, training=False)])
    np.testing.assert_allclose(eval_x, x.astype(np.float32) / 255.0)  # evaluation: in order, not shifted
    steps = data.steps_per_epoch(len(x), 16)
    assert steps == 4
    first, second = epochs_of(make_dataset(x, y, cfg, training=True), steps, 2)
    labels = [np.concatenate([b[1].numpy() for b in epoch]) for epoch in (first, second)]
    assert sorted(labels[0]) == sorted(y) and not np.array_equal(labels[0], y)  # each epoch: a permutation
    assert not np.array_equal(labels[0], labels[1])  # reshuffled every epoch
    (resumed,) = epochs_of(make_dataset(x, y, cfg, training=True, start_epoch=1), steps, 1)
    for (xa, ya), (xb, yb) in zip(second, resumed, strict=True):  # resuming at epoch 1 replays epoch 1 exactly
        np.testing.assert_array_equal(xa.numpy(), xb.numpy())
        np.testing.assert_array_equal(ya.numpy(), yb.numpy())
    (again,) = epochs_of(make_dataset(x, y, cfg, training=True), steps, 1)
    for (xa, _), (xb, _) in zip(first, again, strict=True):
        np.testing.assert_array_equal(xa.numpy(), xb.numpy())
    xa = first[0][0].numpy()
    assert xa.shape == (16, 28, 28, 1) and 0.0 <= xa.min() and xa.max() <= 1.0
    # Shifting happened: some training image differs from every unshifted image with its label.
    originals = x.astype(np.float32) / 255.0
    batch_x, batch_y = first[0][0].numpy(), first[0][1].numpy()
    exact = [any(np.array_equal(img, o) for o in originals[y == label]) for img, label in zip(batch_x, batch_y,
                                                                                              strict=True)]
    assert not all(exact)


def test_pad_and_bilinear_resizing():
    digits = Config(model={"input_shape": [28, 28, 1]}, data={"dataset": "digits", "image_size": [28, 28]})
    x = np.full((2, 8, 8, 1), 255, np.uint8)
    padded = data.scale_and_resize(x, digits.data).numpy()
    assert padded.shape == (2, 28, 28, 1) and padded.sum() == 2 * 64 and padded[0, 10:18, 10:18].min() == 1.0
    bilinear = digits.replace(data={"resize": "bilinear"})
    assert data.scale_and_resize(x, bilinear.data).numpy().min() == pytest.approx(1.0)


def test_decoder_models_get_dict_elements(tmp_path):
    np.savez(tmp_path / "mnist.npz", **mnist_like())
    cfg = config(data_dir=str(tmp_path)).replace(model={"decoder": True})
    features, targets = next(iter(make_dataset(*load_splits(cfg).train, cfg, training=False)))
    assert set(features) == {"images", "labels"} and set(targets) == {"class_scores", "reconstruction"}
    np.testing.assert_array_equal(features["images"].numpy(), targets["reconstruction"].numpy())


def test_a_split_is_named_once_and_a_missing_validation_split_says_why():
    from capszoo.training import evaluate

    x, y = np.zeros((4, 8, 8, 1), np.uint8), np.arange(4)
    splits = data.Splits(train=(x, y), validation=None, test=(x[:2], y[:2]), source={})
    assert splits.named("test")[1].tolist() == [0, 1]
    assert splits.named("train", ("test", "validation", "train"))[1].tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="split must be one of test, validation, got 'train'"):
        splits.named("train")
    # was "split must be 'test' or 'validation' (...), got 'validation'": the name it asked for
    with pytest.raises(ValueError, match="split 'validation': this config holds out no validation data"):
        evaluate(None, "ara-digits", split="validation", splits=splits)
