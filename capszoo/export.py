"""SavedModel export in TF Serving's layout, with named signatures.

``export_saved_model(model, "serving")`` writes ``serving/NAME/1/{saved_model.pb, variables/,
assets/}`` with two signatures:

* ``serving_default``: ``images`` float32 ``(batch, H, W, C)`` in [0, 1] ->
  ``class_scores`` (capsule lengths), ``class_ids`` (int64 argmax), ``class_names`` (the name of
  that class: the dataset's for a run or zoo entry, else as given, else the id written out),
  ``class_capsules`` ``(batch, classes, dims)``.
* ``predict_image_bytes``: ``image_bytes`` (a batch of encoded PNG/JPEG strings, as TF Serving's
  REST API delivers ``{"b64": ...}`` values) -> decoded, turned upright by their EXIF
  orientation (as viewers and ``capszoo predict`` show them), converted to the model's channels,
  resized to its input size as Pillow resizes, scaled to [0, 1], then the same outputs.

The graph checks what is cheap to check (rank, size and channels, finite values in [0, 1], no
transparent pixels in an encoded image) and fails with a message naming the problem. This module is
TensorFlow-specific on purpose: export is where TF belongs.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import keras
import numpy as np

OUTPUT_NAMES = ("class_scores", "class_ids", "class_names", "class_capsules")


def _serving_functions(model, class_names):
    import tensorflow as tf

    height, width, channels = model.model_config.input_shape

    def outputs(images):
        class_capsules = model.capsules(images)[-1]
        class_scores = model.length(class_capsules)
        class_ids = tf.argmax(class_scores, axis=-1, output_type=tf.int64)
        return {"class_scores": class_scores, "class_ids": class_ids,
                "class_names": tf.gather(tf.constant(class_names), class_ids), "class_capsules": class_capsules}

    expected = f"(batch, {height}, {width}, {channels})"

    # Traced for an input of unknown rank, so that its checks stay runtime checks: a loaded
    # signature does not enforce its declared input shape, and checks traced against that
    # static shape would be folded away.
    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32)])
    def validate(images):
        shape = tf.shape(images)
        padded = tf.pad(shape, [[0, 4]])  # slicing stays valid whatever the rank
        ok = tf.logical_and(tf.equal(tf.size(shape), 4),
                            tf.reduce_all(tf.equal(padded[1:4], [height, width, channels])))
        checks = [tf.debugging.Assert(ok, [f"images must have shape {expected}; got shape", shape], summarize=8)]
        with tf.control_dependencies(checks):
            checks += [
                tf.debugging.assert_all_finite(images, "images contain NaN or inf values"),
                tf.debugging.assert_greater_equal(images, 0.0, message="images must be scaled to [0, 1]: found < 0"),
                tf.debugging.assert_less_equal(images, 1.0, message="images must be scaled to [0, 1]: found > 1"),
            ]
        with tf.control_dependencies(checks):
            return tf.identity(images)

    validate_images = validate.get_concrete_function()

    @tf.function(input_signature=[tf.TensorSpec([None, height, width, channels], tf.float32, name="images")])
    def serve_images(images):
        return outputs(tf.ensure_shape(validate_images(images), [None, height, width, channels]))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve_image_bytes(image_bytes):
        images = tf.map_fn(lambda args: decode_image(*args, (height, width, channels)),
                           (image_bytes, exif_orientation(image_bytes)),
                           fn_output_signature=tf.TensorSpec([height, width, channels], tf.float32))
        return outputs(tf.clip_by_value(images, 0.0, 1.0))

    return serve_images, serve_image_bytes


def decode_image(data, orientation, input_shape):
    """One encoded PNG/JPEG (a scalar string tensor) -> float32 ``input_shape`` in [0, 1], as
    ``capszoo.runs.load_image`` reads a file: refused if it has transparent pixels, turned upright
    by its EXIF ``orientation`` (from :func:`exif_orientation`), converted to gray or RGB,
    resized with Pillow's bilinear filter, which averages over the pixels it shrinks (TF's plain
    bilinear samples four of them and aliases a photo shrunk to 28 x 28 into a different picture)."""
    import tensorflow as tf

    from capszoo.runs import TRANSPARENT

    height, width, channels = input_shape
    image = tf.io.decode_image(data, expand_animations=False, dtype=tf.float32)  # as stored: 1 to 4 channels
    alpha = tf.equal(tf.shape(image)[-1] % 2, 0)  # gray and alpha, or RGBA
    # What lies under transparent pixels (often black, the zoo's background too) is not what a
    # viewer shows: refused, as `capszoo predict` refuses it, rather than silently classified.
    # Only a PNG's alpha is read so: a 32-bit BMP's fourth byte is often 0 and unused (Pillow,
    # and so `capszoo predict`, reads such a file as RGB).
    png = tf.equal(tf.strings.substr(data, 0, 8), PNG_SIGNATURE)
    opaque = tf.logical_not(alpha & png) | (tf.reduce_min(image[..., -1]) >= 1.0)
    with tf.control_dependencies([tf.debugging.Assert(opaque, [f"image {TRANSPARENT}"])]):
        image = tf.cond(alpha, lambda: image[..., :-1], lambda: tf.identity(image))
    if channels == 1:
        image = tf.cond(tf.equal(tf.shape(image)[-1], 3), lambda: tf.image.rgb_to_grayscale(
            tf.ensure_shape(image, (None, None, 3))), lambda: image)
    else:
        image = tf.cond(tf.equal(tf.shape(image)[-1], 1), lambda: tf.image.grayscale_to_rgb(
            tf.ensure_shape(image, (None, None, 1))), lambda: image)
    image = upright(tf.ensure_shape(image, (None, None, channels)), orientation)
    sized = tf.reduce_all(tf.equal(tf.shape(image)[:2], [height, width]))  # the filter would copy it: skip it
    image = tf.cond(sized, lambda: image,
                    lambda: tf.image.resize(image, (height, width), method="bilinear", antialias=True))
    return tf.ensure_shape(image, (height, width, channels))


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ORIENTATION_TAG = 0x0112
JPEG_SEGMENTS_READ = 64  # markers before the scan; the APP1 "Exif" segment is nearly always first
PNG_CHUNKS_READ = 64  # chunks before the first IDAT, where eXIf is written
IFD_ENTRIES_READ = 64  # a photo's first IFD holds about a dozen


def exif_orientation(data):
    """The EXIF orientations (1-8) of encoded images (a string tensor of any shape), as graph ops:
    read from a JPEG's APP1 ``Exif`` segment or a PNG's ``eXIf`` chunk before its image data; 1
    (as stored) for other formats, or where there is none or it cannot be read. TensorFlow's
    decoders ignore it, but a phone photo's pixels are stored sideways with an orientation that
    viewers apply. A whole batch is read at once: its loops step through every image together."""
    import tensorflow as tf

    shape = tf.shape(data)
    data = tf.reshape(data, [-1])
    size = tf.cast(tf.strings.length(data), tf.int64)
    none = tf.fill(tf.shape(size), tf.constant(-1, tf.int64))

    def substr(pos, n):  # data[pos:pos+n] of each image, shorter or empty past its end
        pos = tf.cast(tf.clip_by_value(pos, 0, size), tf.int32)
        return tf.strings.substr(data, pos, tf.fill(tf.shape(pos), n))

    def octets(pos, n):  # data[pos:pos+n] of each image as n int64 values, zeros past its end
        return tf.cast(tf.io.decode_raw(substr(pos, n), tf.uint8, fixed_length=n), tf.int64)

    def walk(start, more, step, limit):  # step every image still to be read until none is
        def go(pos, tiff, steps):
            return (steps < limit) & tf.reduce_any(more(pos, tiff))

        def advance(pos, tiff, steps):
            active = more(pos, tiff)
            next_pos, found = step(pos)
            return (tf.where(active, next_pos, pos), tf.where(active & (found >= 0), found, tiff), steps + 1)

        return tf.while_loop(go, advance, (start, none, tf.constant(0)))[1]

    # JPEG: SOI, then marker segments (0xFF, marker, 2-byte big-endian length counting itself)
    # until the scan (SOS) or the end (EOI).
    def jpeg_more(pos, tiff):
        marker = octets(pos, 2)
        return ((tiff < 0) & (pos + 4 <= size) & tf.equal(marker[:, 0], 0xFF) & tf.not_equal(marker[:, 1], 0xDA)
                & tf.not_equal(marker[:, 1], 0xD9))

    def jpeg_segment(pos):
        exif = tf.equal(octets(pos + 1, 1)[:, 0], 0xE1) & tf.equal(substr(pos + 4, 6), b"Exif\x00\x00")
        return pos + 2 + tf.maximum(_unsigned(octets(pos + 2, 2), False), 2), tf.where(exif, pos + 10, -1)

    jpeg = tf.equal(substr(tf.zeros_like(size), 2), b"\xff\xd8")
    tiff = walk(tf.where(jpeg, tf.constant(2, tf.int64), size), jpeg_more, jpeg_segment, JPEG_SEGMENTS_READ)

    # PNG: the signature, then chunks (4-byte big-endian data length, 4-byte type, data, CRC).
    def png_more(pos, tiff):
        return (tiff < 0) & (pos + 8 <= size) & tf.not_equal(substr(pos + 4, 4), b"IDAT")

    def png_chunk(pos):
        exif = tf.equal(substr(pos + 4, 4), b"eXIf")
        return pos + 12 + _unsigned(octets(pos, 4), False), tf.where(exif, pos + 8, -1)

    png = tf.equal(substr(tf.zeros_like(size), 8), PNG_SIGNATURE)
    tiff = tf.maximum(tiff, walk(tf.where(png, tf.constant(8, tf.int64), size), png_more, png_chunk, PNG_CHUNKS_READ))

    # TIFF: byte order ("II" little-endian, "MM" big), 42, the first IFD's offset; the IFD: an
    # entry count, then 12-byte entries (tag, type, count, value or offset).
    order = substr(tiff, 2)
    little = tf.equal(order, b"II")
    valid = (tiff >= 0) & (little | tf.equal(order, b"MM")) & tf.equal(_unsigned(octets(tiff + 2, 2), little), 42)
    ifd = tiff + _unsigned(octets(tiff + 4, 4), little)
    count = _unsigned(octets(ifd, 2), little)
    entries = tf.reshape(octets(ifd + 2, 12 * IFD_ENTRIES_READ), (-1, IFD_ENTRIES_READ, 12))

    def field(start, n):  # each entry's n-byte unsigned integer at byte start
        return _unsigned(entries[:, :, start:start + n], little[:, None])

    kind = field(2, 2)  # SHORT (3), as the standard has it, or LONG (4)
    value = tf.where(tf.equal(kind, 4), field(8, 4), field(8, 2))
    hit = (tf.equal(field(0, 2), ORIENTATION_TAG) & (tf.range(IFD_ENTRIES_READ, dtype=tf.int64) < count[:, None])
           & (tf.equal(kind, 3) | tf.equal(kind, 4)))
    orientation = tf.gather(value, tf.argmax(tf.cast(hit, tf.int32), axis=1), batch_dims=1)
    found = valid & tf.reduce_any(hit, axis=1) & (orientation >= 1) & (orientation <= 8)
    return tf.reshape(tf.cast(tf.where(found, orientation, 1), tf.int32), shape)


def _unsigned(octets, little):
    """The unsigned integers spelled by the last axis of ``octets`` (int64 byte values), read
    little-endian where ``little`` (a boolean, or a tensor of them broadcast against the result)
    holds, else big-endian."""
    import tensorflow as tf

    n = octets.shape[-1]
    weights = 256 ** np.arange(n, dtype=np.int64)  # place values, least significant first
    return tf.where(little, tf.reduce_sum(octets * weights, -1), tf.reduce_sum(octets * weights[::-1], -1))


def upright(image, orientation):
    """One ``(H, W, C)`` image turned as EXIF ``orientation`` (1-8) says viewers show it."""
    import tensorflow as tf

    def swap(x):
        return tf.transpose(x, (1, 0, 2))

    turns = [
        lambda: image,                              # 1: as stored
        lambda: tf.reverse(image, [1]),             # 2: mirrored left-right
        lambda: tf.reverse(image, [0, 1]),          # 3: rotated 180 degrees
        lambda: tf.reverse(image, [0]),             # 4: mirrored top-bottom
        lambda: swap(image),                        # 5: transposed
        lambda: tf.reverse(swap(image), [1]),       # 6: shown turned 90 degrees clockwise
        lambda: tf.reverse(swap(image), [0, 1]),    # 7: transversed
        lambda: tf.reverse(swap(image), [0]),       # 8: shown turned 90 degrees counter-clockwise
    ]
    return tf.switch_case(tf.clip_by_value(orientation, 1, 8) - 1, turns)


def _resolve_model(model_or_name, weights=None):
    """``(model, default name, its dataset's class names or None)``: a run's, config's or zoo
    entry's name (a model from ``capszoo.load`` knows its entry), else the Keras model's name
    (whose dataset is not known)."""
    from capszoo.data import class_names

    if isinstance(model_or_name, keras.Model):
        if not hasattr(model_or_name, "model_config"):
            raise ValueError("export needs a capszoo CapsNet model (one built from a ModelConfig)")
        entry = getattr(model_or_name, "zoo_entry", None)
        return model_or_name, entry or model_or_name.name, entry and class_names(entry)
    from capszoo.runs import load_trained

    model, config = load_trained(model_or_name, weights=weights)
    return model, config.name, class_names(config)


def _check_class_names(names, classes):
    """``names`` as a list of ``classes`` non-empty strings, or ValueError saying what is wrong."""
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"class_names must be a list of non-empty strings, one per class, got {names!r}")
    names = list(names)
    if len(names) != classes:
        raise ValueError(f"class_names has {len(names)} names for a model of {classes} classes")
    return names


def export_saved_model(model_or_name, base_dir, version=1, name=None, overwrite=False, weights=None,
                       class_names=None):
    """Write ``base_dir/NAME/VERSION`` (TF Serving layout); returns that path.

    ``model_or_name``: a CapsNet, a run folder, or a config/zoo name with ``weights``.
    ``class_names`` (one string per class) are what the ``class_names`` output returns; by
    default a run's or entry's dataset's names (also for a model from ``capszoo.load``), and for
    another CapsNet the ids written out. NAME defaults to the run's or entry's name, else the
    model's. The SavedModel is written to a temporary folder beside the target and renamed into
    place, so a failed export leaves nothing half written. An existing version is refused unless
    ``overwrite``.
    """
    if keras.backend.backend() != "tensorflow":
        raise ValueError("SavedModel export needs KERAS_BACKEND=tensorflow (train on any backend, export on TF)")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version must be an integer >= 1 (TF Serving's numbered folders), got {version!r}")
    model, default_name, dataset_names = _resolve_model(model_or_name, weights)
    classes = model.model_config.num_classes
    names = _check_class_names(class_names if class_names is not None
                               else dataset_names or [str(k) for k in range(classes)], classes)
    name = name or default_name
    check_serving_name(name, "give another name (--name NAME)" if name == default_name else "")
    target = Path(base_dir) / name / str(version)
    if target.exists() and not overwrite:
        raise ValueError(f"{target} already exists: choose another --version, or pass --overwrite")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}-partial-", dir=target.parent))
    try:
        archive = keras.export.ExportArchive()
        archive.track(model)
        serve_images, serve_image_bytes = _serving_functions(model, names)
        archive.add_endpoint("serving_default", serve_images)
        archive.add_endpoint("predict_image_bytes", serve_image_bytes)
        archive.write_out(str(staging / "model"), verbose=False)
        (staging / "model" / "assets").mkdir(exist_ok=True)
        (staging / "model" / "assets" / "capszoo.json").write_text(json.dumps(
            {"name": name, "version": version, "model_config": model.model_config.to_dict(),
             "outputs": list(OUTPUT_NAMES), "class_names": names}, indent=2))
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging / "model", target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


SERVING_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_serving_name(name, remedy=""):
    """A model name TF Serving can take as written: its folder, a quoted string in
    ``models.config`` and the ``/v1/models/NAME`` URL segment. Quotes or backslashes would break
    the config's text format; spaces, slashes or a leading dot the URL or the folder layout."""
    if not isinstance(name, str) or not SERVING_NAME.fullmatch(name):
        hint = f": {remedy}" if remedy else ""
        raise ValueError(f"invalid model name for TF Serving: {name!r} (letters, digits, '.', '_' and '-', "
                         f"not starting with '.', '_' or '-'){hint}")


def write_models_config(models_dir, base_path="/models"):
    """Write ``models_dir/models.config`` (TF Serving's ``model_config_list``) for every model in it.

    A model is a sub-folder holding numbered version folders with a ``saved_model.pb``;
    ``base_path`` is where ``models_dir`` is mounted in the serving container.
    """
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        raise ValueError(f"{models_dir} is not a folder of exported models (NAME/VERSION/saved_model.pb)")
    names = sorted(p.name for p in models_dir.iterdir() if p.is_dir() and any(
        v.name.isdigit() and (v / "saved_model.pb").is_file() for v in p.iterdir() if v.is_dir()))
    if not names:
        raise ValueError(f"no exported models under {models_dir} (expected NAME/VERSION/saved_model.pb)")
    for name in names:
        check_serving_name(name, f"rename the folder {models_dir / name}")
    if any(c in base_path for c in '"\\\n'):
        raise ValueError(f"base path {base_path!r} holds a quote, backslash or newline, which models.config cannot")
    entries = "".join(
        f'  config {{\n    name: "{n}"\n    base_path: "{base_path.rstrip("/")}/{n}"\n'
        f'    model_platform: "tensorflow"\n  }}\n' for n in names)
    path = models_dir / "models.config"
    path.write_text(f"model_config_list {{\n{entries}}}\n")
    return path


def example_request(images=None, image_bytes=None):
    """A TF Serving REST ``:predict`` body in the row ("instances") format.

    ``images``: float array ``(batch, H, W, C)`` for ``serving_default``; ``image_bytes``: a list
    of encoded PNG/JPEG ``bytes`` for ``predict_image_bytes`` (sent as ``{"b64": ...}``).
    """
    if (images is None) == (image_bytes is None):
        raise ValueError("give either images or image_bytes")
    if images is not None:
        rows = [{"images": np.asarray(image, dtype=np.float32).tolist()} for image in images]
        return {"signature_name": "serving_default", "instances": rows}
    rows = [{"image_bytes": {"b64": base64.b64encode(data).decode("ascii")}} for data in image_bytes]
    return {"signature_name": "predict_image_bytes", "instances": rows}
