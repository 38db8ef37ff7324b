"""Datasets and ``tf.data`` pipelines with the adaptive-routing paper's preprocessing.

Sources, in the order ``source = "auto"`` tries them:

1. an **offline folder** of ``.npz`` files, from ``data.data_dir`` / ``--data-dir`` or the
   ``CAPSZOO_DATA_DIR`` environment variable. A file holds ``x_train``, ``y_train``, ``x_test``,
   ``y_test`` (uint8 images, integer labels), or the JPEG-bytes layout ``x_train_jpeg`` +
   ``x_train_offsets`` (and the same for test) in which a lossy CIFAR-10 is distributed. When a
   folder is named and lacks the dataset, that is an error at once: nothing is downloaded.
2. **tensorflow-datasets** (``tfds.load``), the default users get; it downloads on first use.

``digits`` is scikit-learn's bundled 8x8 digits (1,797 images) and needs neither.

Batches come from a ``tf.data`` pipeline where TensorFlow is installed, else from a NumPy
pipeline with the same preprocessing and the same guarantees (a pure function of the seed, so a
resumed run sees what an uninterrupted one would). The NumPy one is what trains on a JAX or
PyTorch machine without TensorFlow; ``CAPSZOO_PIPELINE=numpy|tf`` picks one explicitly. The two
give identical evaluation batches; their training streams are shuffled and shifted by different
random generators.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import io
import math
import os
import zipfile
from pathlib import Path

import keras
import numpy as np

from capszoo.config import DATASET_SHAPES, Config, DataConfig, load_config
from capszoo.routing.base import check_count

ENV_DATA_DIR = "CAPSZOO_DATA_DIR"
ENV_PIPELINE = "CAPSZOO_PIPELINE"
PIPELINES = ("tf", "numpy")

# Offline file names tried for each dataset, in order.
NPZ_FILES = {
    "mnist": ("mnist.npz",),
    "fashion_mnist": ("fashion_mnist.npz",),
    "cifar10": ("cifar10.npz", "cifar10_jpeg_lossy.npz"),
    "svhn_cropped": ("svhn_cropped.npz", "svhn.npz"),
}

CLASS_NAMES = {
    "digits": tuple(str(k) for k in range(10)),
    "mnist": tuple(str(k) for k in range(10)),
    "svhn_cropped": tuple(str(k) for k in range(10)),
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}


def class_names(config_or_name):
    """The class names, in class-id order, of a zoo entry, a run folder, a config file, a
    :class:`~capszoo.config.Config` or a model from ``capszoo.load``:
    ``class_names("ara-fashion-mnist")[k]`` names class id ``k`` of the scores
    ``capszoo.load("ara-fashion-mnist")`` predicts."""
    return CLASS_NAMES[load_config(config_or_name).data.dataset]


# Datasets of light objects on a black background. None of their images has a light border: the
# largest mean of the outermost pixel ring is 0.41 of white over the 140,000 MNIST and
# Fashion-MNIST images, 0.28 over the 1,797 digits; a photo of dark ink on paper has about 0.9.
DARK_BACKGROUND = frozenset({"digits", "mnist", "fashion_mnist"})

DIGITS_TEST_FRACTION = 0.2


class DataUnavailableError(ValueError):
    """The dataset could not be found or read; the message says where we looked and what to do."""


@dataclasses.dataclass
class Arrays:
    """A dataset in memory: uint8 images ``(n, H, W, C)`` and int labels, with its provenance."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: dict


def sha256_file(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def offline_dir(data_config: DataConfig):
    """The offline folder in force and where that setting came from, or ``(None, None)``."""
    if data_config.data_dir:
        return Path(data_config.data_dir).expanduser(), "data.data_dir / --data-dir"
    if os.environ.get(ENV_DATA_DIR):
        return Path(os.environ[ENV_DATA_DIR]).expanduser(), f"${ENV_DATA_DIR}"
    return None, None


def load_arrays(data_config: DataConfig) -> Arrays:
    """Load the configured dataset into memory (before subsets, splits and preprocessing)."""
    name = data_config.dataset
    if name == "digits":
        arrays = _load_digits()
    else:
        folder, origin = offline_dir(data_config)
        if data_config.source == "npz" or (data_config.source == "auto" and folder is not None):
            if folder is None:
                raise DataUnavailableError(
                    f"dataset {name!r}: data.source is 'npz' but no offline folder is set; pass --data-dir DIR "
                    f"or set {ENV_DATA_DIR}")
            arrays = _load_npz(name, folder, origin)
        else:
            arrays = _load_tfds(name)
    _check_arrays(name, arrays)
    return dataclasses.replace(arrays, y_train=arrays.y_train.astype(np.int64),
                               y_test=arrays.y_test.astype(np.int64))


def _load_digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(labels))  # fixed: the split never changes
    n_test = int(round(DIGITS_TEST_FRACTION * len(labels)))
    test, train = order[:n_test], order[n_test:]
    source = {"kind": "sklearn", "loader": "sklearn.datasets.load_digits",
              "note": f"deterministic split: {len(train)} train / {len(test)} test (permutation seed 0)"}
    return Arrays(images[train], labels[train], images[test], labels[test], source)


def _load_npz(name, folder, origin):
    if folder.is_file():  # the .npz itself, named where its folder is meant
        raise DataUnavailableError(
            f"the offline data folder {folder} (set by {origin}) is a file: name the folder that holds "
            f"{' or '.join(NPZ_FILES[name])} ({folder.parent}), not a file")
    candidates = [folder / f for f in NPZ_FILES[name]]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise DataUnavailableError(
            f"dataset {name!r} is not in the offline folder {folder} (set by {origin}): looked for "
            f"{', '.join(p.name for p in candidates)}. Put an .npz with x_train, y_train, x_test, y_test (uint8) "
            f"there, or unset the folder to use tensorflow-datasets (needs network on first use).")
    if not zipfile.is_zipfile(path):  # else np.load tries it as a pickle, or returns a lone .npy array
        raise DataUnavailableError(
            f"cannot read {path}: it is not an .npz archive (a zip of named arrays, as numpy.savez writes); "
            f"the file is damaged or of another format")
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = set(data.files)
            if {"x_train_jpeg", "x_train_offsets", "x_test_jpeg", "x_test_offsets"} <= keys:
                x_train = decode_jpeg_array(data["x_train_jpeg"], data["x_train_offsets"])
                x_test = decode_jpeg_array(data["x_test_jpeg"], data["x_test_offsets"])
                layout = "jpeg"
            elif {"x_train", "x_test"} <= keys:
                x_train, x_test = data["x_train"], data["x_test"]
                layout = "arrays"
            else:
                raise DataUnavailableError(
                    f"{path} has keys {sorted(keys)}; expected x_train, y_train, x_test, y_test "
                    f"(or x_train_jpeg/x_train_offsets and x_test_jpeg/x_test_offsets)")
            y_train, y_test = data["y_train"], data["y_test"]
    except DataUnavailableError:
        raise
    except Exception as err:  # zip/npz/JPEG corruption: one clear message, not a deep trace
        raise DataUnavailableError(f"cannot read {path}: {type(err).__name__}: {err}") from None
    if x_train.ndim == 3:
        x_train, x_test = x_train[..., None], x_test[..., None]
    source = {"kind": "npz", "path": str(path), "sha256": sha256_file(path), "layout": layout}
    if layout == "jpeg":
        source["note"] = "JPEG re-encoding (lossy): not the original pixels"
    return Arrays(x_train, y_train, x_test, y_test, source)  # labels are checked before their cast


def decode_jpeg_array(buffer, offsets):
    """Concatenated JPEG byte streams + offsets -> ``(n, H, W, 3)`` uint8, decoded with Pillow."""
    from PIL import Image

    buffer = np.asarray(buffer, dtype=np.uint8)
    offsets = np.asarray(offsets, dtype=np.int64)
    if offsets.ndim != 1 or len(offsets) < 2 or offsets[0] != 0 or offsets[-1] != len(buffer) \
            or np.any(np.diff(offsets) <= 0):
        raise ValueError("JPEG offsets must start at 0, increase, and end at the buffer's length")
    return np.stack([
        np.asarray(Image.open(io.BytesIO(buffer[a:b].tobytes())).convert("RGB"))
        for a, b in zip(offsets[:-1], offsets[1:], strict=True)
    ])


TFDS_PROBE_HOST = "storage.googleapis.com"  # tensorflow-datasets' own bucket


def _network_reachable(host=TFDS_PROBE_HOST):
    """False when ``host`` does not resolve and no proxy is configured. Offline,
    tensorflow-datasets retries every download for minutes before it fails."""
    import socket
    import urllib.request

    if urllib.request.getproxies():  # a proxy may reach what this machine's DNS cannot
        return True
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


def _load_tfds(name):
    import tensorflow_datasets as tfds

    def to_arrays(ds):
        batches = list(tfds.as_numpy(ds.batch(4096)))
        return np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches])

    offline_hint = (f"Without network, point --data-dir or {ENV_DATA_DIR} at a folder holding "
                    f"{' or '.join(NPZ_FILES[name])}.")

    try:
        try:  # already prepared in tensorflow-datasets' folder: no network needed
            train, test = tfds.load(name, split=["train", "test"], as_supervised=True, download=False)
        except Exception:
            if not _network_reachable():
                raise DataUnavailableError(
                    f"dataset {name!r} could not be loaded with tensorflow-datasets: it is not prepared in "
                    f"its folder and this machine has no network (cannot resolve {TFDS_PROBE_HOST}). "
                    f"{offline_hint}") from None
            train, test = tfds.load(name, split=["train", "test"], as_supervised=True)
        (x_train, y_train), (x_test, y_test) = to_arrays(train), to_arrays(test)
        version = str(tfds.builder(name).version)
    except DataUnavailableError:
        raise
    except Exception as err:  # a download that failed after its retries, missing deps, ...
        reason = str(err).splitlines()[0][:300] if str(err) else ""
        raise DataUnavailableError(
            f"dataset {name!r} could not be loaded with tensorflow-datasets ({type(err).__name__}: {reason}). "
            f"{offline_hint}") from None
    return Arrays(x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64),
                  {"kind": "tfds", "tfds_name": name, "version": version})


def _check_arrays(name, arrays):
    expected = DATASET_SHAPES[name]
    where = arrays.source.get("path", arrays.source.get("name", name))
    for split in ("train", "test"):
        x, y = getattr(arrays, f"x_{split}"), getattr(arrays, f"y_{split}")
        if x.dtype != np.uint8:
            raise DataUnavailableError(f"{where}: x_{split} must be uint8 images 0-255, got {x.dtype}")
        if x.shape[1:] != expected:
            raise DataUnavailableError(f"{where}: x_{split} images are {x.shape[1:]}, {name} has {expected}")
        if y.shape != (len(x),):
            raise DataUnavailableError(f"{where}: y_{split} has shape {y.shape}, expected ({len(x)},)")
        if y.dtype == bool or not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
            raise DataUnavailableError(f"{where}: y_{split} must be integer class ids, got dtype {y.dtype}")
        if np.issubdtype(y.dtype, np.floating):  # a cast would truncate 2.5 to 2 and NaN to anything
            bad = y[~(np.isfinite(y) & (y == np.round(y)))]
            if bad.size:
                raise DataUnavailableError(f"{where}: y_{split} labels must be whole class ids, got {bad[0]:g}")
        if len(y) and (y.min() < 0 or y.max() >= len(CLASS_NAMES[name])):
            raise DataUnavailableError(f"{where}: y_{split} labels must be 0..{len(CLASS_NAMES[name]) - 1}")


@dataclasses.dataclass
class Splits:
    """Train / validation / test arrays after subsetting and the deterministic validation split."""

    train: tuple
    validation: tuple | None
    test: tuple
    source: dict

    def named(self, split, names=("test", "validation")):
        """``(x, y)`` of the split called ``split``, one of ``names``: one error for a name outside
        them and for the validation split of a config that holds none out."""
        if split not in names:
            raise ValueError(f"split must be one of {', '.join(names)}, got {split!r}")
        arrays = getattr(self, split)
        if arrays is None:  # only validation can be absent
            raise ValueError(f"split {split!r}: this config holds out no validation data (its "
                             "data.validation_fraction is 0)")
        return arrays


def split_arrays(arrays: Arrays, data_config: DataConfig) -> Splits:
    x_train, y_train = arrays.x_train, arrays.y_train
    x_test, y_test = arrays.x_test, arrays.y_test
    if data_config.train_subset:
        x_train, y_train = x_train[:data_config.train_subset], y_train[:data_config.train_subset]
    if data_config.test_subset:
        x_test, y_test = x_test[:data_config.test_subset], y_test[:data_config.test_subset]
    validation = None
    n_val = int(round(data_config.validation_fraction * len(x_train)))
    if n_val:
        order = np.random.default_rng(data_config.seed).permutation(len(x_train))
        val, keep = np.sort(order[:n_val]), np.sort(order[n_val:])
        validation = (x_train[val], y_train[val])
        x_train, y_train = x_train[keep], y_train[keep]
    return Splits((x_train, y_train), validation, (x_test, y_test), arrays.source)


# ---- preprocessing (pure functions of a batch) ----

def scale_and_resize(images, data_config: DataConfig):
    """uint8 ``(batch, H, W, C)`` -> float32 in [0, 1] at ``data_config.image_shape``.

    ``bilinear`` averages over the pixels it shrinks (``antialias``), as Pillow's filter in
    ``capszoo predict`` and the served ``predict_image_bytes`` do: a model is trained on what it
    is later shown. Growing an image is plain bilinear either way.
    """
    import tensorflow as tf

    x = tf.cast(images, tf.float32) / 255.0
    height, width, _ = data_config.image_shape
    if tuple(x.shape[1:3]) != (height, width):
        if data_config.resize == "pad":
            x = tf.image.resize_with_crop_or_pad(x, height, width)
        else:
            x = tf.clip_by_value(tf.image.resize(x, (height, width), method="bilinear", antialias=True),
                                 0.0, 1.0)
    return x


def random_shift(images, max_shift, seed):
    """Translate each image by its own random (dy, dx) in [-max_shift, max_shift], zero padded.

    ``seed`` is a shape-(2,) int tensor: the same seed gives the same shifts (stateless RNG).
    """
    import tensorflow as tf

    if max_shift == 0:
        return images
    height, width = images.shape[1], images.shape[2]
    padded = tf.pad(images, [[0, 0], [max_shift, max_shift], [max_shift, max_shift], [0, 0]])
    batch = tf.shape(images)[0]
    offsets = tf.random.stateless_uniform((batch, 2), seed=seed, minval=0, maxval=2 * max_shift + 1, dtype=tf.int32)
    rows = offsets[:, :1] + tf.range(height)[None, :]
    cols = offsets[:, 1:] + tf.range(width)[None, :]
    return tf.gather(tf.gather(padded, rows, axis=1, batch_dims=1), cols, axis=2, batch_dims=1)


def random_flip(images, seed):
    """Mirror each image left-right with probability 1/2; ``seed`` as for :func:`random_shift`."""
    import tensorflow as tf

    flipped = tf.random.stateless_uniform((tf.shape(images)[0], 1, 1, 1), seed=seed) < 0.5
    return tf.where(flipped, tf.reverse(images, axis=[2]), images)


def steps_per_epoch(examples, batch_size):
    return max(1, math.ceil(examples / batch_size))


def examples_per_epoch(examples, batch_size, multiple=1):
    """How many of ``examples`` one training epoch uses: all of them, unless each batch must
    split into ``multiple`` equal parts (data parallelism over that many devices) and the last
    batch does not; it then loses its remainder, at most ``multiple - 1`` examples, a different
    few each epoch since every epoch is shuffled."""
    return examples - (examples % batch_size) % multiple


def default_pipeline():
    """``$CAPSZOO_PIPELINE`` if set, else ``"tf"`` where TensorFlow is installed and ``"numpy"`` where not."""
    chosen = os.environ.get(ENV_PIPELINE)
    if chosen:
        if chosen not in PIPELINES:
            raise ValueError(f"${ENV_PIPELINE} must be one of {', '.join(PIPELINES)}, got {chosen!r}")
        return chosen
    return "tf" if importlib.util.find_spec("tensorflow") is not None else "numpy"


def make_dataset(x, y, config: Config, training: bool, batch_size=None, start_epoch=0, pipeline=None, multiple=1):
    """The batches of one split, for ``model.fit`` / ``model.evaluate``.

    ``pipeline``: ``"tf"`` (a prefetched ``tf.data.Dataset``), ``"numpy"`` (an endless generator
    when training, a re-iterable ``keras.utils.PyDataset`` when not), or ``None`` for
    :func:`default_pipeline`.

    Evaluation (``training=False``): one pass, in order, no augmentation.

    Training: an endless stream of epochs starting at ``start_epoch``, consumed with
    ``steps_per_epoch(len(x), batch_size)`` steps per epoch. Epoch ``e`` is shuffled with a seed
    made of ``(data.seed, e)`` and each of its batches shifted by up to ``data.shift_pixels``
    (and, with ``data.horizontal_flip``, half its images mirrored) with stateless seeds made of
    ``(data.seed, e, batch)``. The stream is therefore a pure
    function of the seed: a resumed run sees exactly the batches an uninterrupted run would,
    and a distributed run the same batches as a single-device one. ``multiple`` (training
    only): the number of devices each batch is split over; an epoch then takes the first
    :func:`examples_per_epoch` of its shuffled order, so that its last batch splits too.

    Elements are ``(images, labels)``; for a model with a decoder,
    ``({"images", "labels"}, {"class_scores": labels, "reconstruction": images})``.
    """
    pipeline = pipeline or default_pipeline()
    if pipeline == "numpy":
        return _numpy_dataset(x, y, config, training, batch_size, start_epoch, multiple)
    if pipeline != "tf":
        raise ValueError(f"pipeline must be one of {', '.join(PIPELINES)}, got {pipeline!r}")
    import tensorflow as tf

    data = config.data
    batch_size = batch_size or config.training.batch_size
    labels = y.astype(np.int32)

    def scale(images, labels):
        return scale_and_resize(images, data), labels

    parallel = dict(num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if not training:
        ds = tf.data.Dataset.from_tensor_slices((x, labels)).batch(batch_size).map(scale, **parallel)
    else:
        images_t, labels_t = tf.constant(x), tf.constant(labels)
        n, used = len(x), examples_per_epoch(len(x), batch_size, multiple)

        def one_epoch(epoch):
            # A stateless permutation: the order depends on (data.seed, epoch) and nothing else.
            epoch_seed = tf.stack([tf.constant(data.seed, tf.int64), epoch])
            order = tf.argsort(tf.random.stateless_uniform((n,), seed=epoch_seed))[:used]
            batches = tf.data.Dataset.from_tensor_slices(order).batch(batch_size).enumerate()

            def load(step, index):
                images = scale_and_resize(tf.gather(images_t, index), data)
                if data.shift_pixels:
                    images = random_shift(images, data.shift_pixels, tf.stack([epoch * 1_000_003 + data.seed, step]))
                if data.horizontal_flip:  # a seed of its own: the shift's would tie the coin to the offsets
                    images = random_flip(images, tf.stack([epoch * 1_000_003 + data.seed, -1 - step]))
                return images, tf.gather(labels_t, index)

            return batches.map(load, **parallel)

        ds = tf.data.Dataset.range(start_epoch, 2**62).flat_map(one_epoch)
    if config.model.decoder:
        ds = ds.map(lambda images, labels: _pack(images, labels, config))
    return ds.prefetch(tf.data.AUTOTUNE)


# ---- the NumPy pipeline (no TensorFlow needed) ----

def scale_and_resize_numpy(images, data_config: DataConfig):
    """:func:`scale_and_resize` in NumPy: the same values for ``pad``; ``bilinear`` through
    ``keras.ops.image.resize`` (TF's own resize on the TensorFlow backend)."""
    x = np.asarray(images, dtype=np.float32) / np.float32(255.0)
    height, width, _ = data_config.image_shape
    if tuple(x.shape[1:3]) != (height, width):
        if data_config.resize == "pad":
            top, left = (height - x.shape[1]) // 2, (width - x.shape[2]) // 2
            x = np.pad(x, [(0, 0), (top, height - x.shape[1] - top), (left, width - x.shape[2] - left), (0, 0)])
        else:
            resized = keras.ops.image.resize(x, (height, width), interpolation="bilinear", antialias=True,
                                             data_format="channels_last")
            x = np.clip(keras.ops.convert_to_numpy(resized), 0.0, 1.0).astype(np.float32)
    return x


def random_flip_numpy(images, rng):
    """:func:`random_flip` in NumPy, each image's coin drawn from the generator ``rng``."""
    flipped = rng.random(len(images)) < 0.5
    out = images.copy()
    out[flipped] = images[flipped, :, ::-1]
    return out


def random_shift_numpy(images, max_shift, rng):
    """:func:`random_shift` in NumPy, each image's (dy, dx) drawn from the generator ``rng``."""
    if max_shift == 0:
        return images
    batch, height, width = images.shape[:3]
    padded = np.pad(images, [(0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)])
    offsets = rng.integers(0, 2 * max_shift + 1, size=(batch, 2))
    rows = offsets[:, :1] + np.arange(height)[None, :]
    cols = offsets[:, 1:] + np.arange(width)[None, :]
    return padded[np.arange(batch)[:, None, None], rows[:, :, None], cols[:, None, :]]


def _pack(images, labels, config: Config):
    if config.model.decoder:
        return {"images": images, "labels": labels}, {"class_scores": labels, "reconstruction": images}
    return images, labels


def _numpy_dataset(x, y, config: Config, training, batch_size, start_epoch, multiple=1):
    data = config.data
    batch_size = batch_size or config.training.batch_size
    labels = np.asarray(y, dtype=np.int32)
    if not training:
        return _NumpyBatches(x, labels, config, batch_size)

    def stream():
        n, used = len(x), examples_per_epoch(len(x), batch_size, multiple)
        epoch = start_epoch
        while True:
            # Stateless in the same sense as the tf.data stream: (data.seed, epoch[, step]) alone decide.
            order = np.random.default_rng([data.seed, epoch]).permutation(n)[:used]
            for step, start in enumerate(range(0, used, batch_size)):
                index = order[start:start + batch_size]
                images = scale_and_resize_numpy(x[index], data)
                if data.shift_pixels:
                    images = random_shift_numpy(images, data.shift_pixels,
                                                np.random.default_rng([data.seed, epoch, step]))
                if data.horizontal_flip:
                    images = random_flip_numpy(images, np.random.default_rng([data.seed, epoch, step, 1]))
                yield _pack(images, labels[index], config)
            epoch += 1

    return stream()


class _NumpyBatches(keras.utils.PyDataset):
    """One in-order pass over a split, no augmentation; re-iterable (Keras validates every epoch)."""

    def __init__(self, x, labels, config: Config, batch_size):
        super().__init__()
        self.x, self.labels, self.config, self.batch_size = x, labels, config, batch_size

    def __len__(self):
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, index):
        part = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return _pack(scale_and_resize_numpy(self.x[part], self.config.data), self.labels[part], self.config)


def load_splits(config: Config) -> Splits:
    return split_arrays(load_arrays(config.data), config.data)


def sample(config: Config, count, split="test"):
    """The first ``count`` examples of a split, preprocessed for the model (no augmentation):
    ``(images float32, labels int32)`` as NumPy arrays."""
    check_count("sample: count (images)", count)  # before loading the dataset
    splits = load_splits(config)
    x, y = splits.named(split, ("test", "validation", "train"))
    x, y = x[:count], y[:count]
    return scale_and_resize_numpy(x, config.data), y.astype(np.int32)
