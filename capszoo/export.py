"""SavedModel export in TF Serving's layout, with named signatures.

``export_saved_model(model, "serving")`` writes ``serving/NAME/1/{saved_model.pb, variables/,
assets/}`` with two signatures:

* ``serving_default``: ``images`` float32 ``(batch, H, W, C)`` in [0, 1] ->
  ``class_scores`` (capsule lengths), ``class_ids`` (int64 argmax), ``class_names`` (the name of
  that class: the dataset's for a run or zoo entry, else as given, else the id written out),
  ``class_capsules`` ``(batch, classes, dims)``.
* ``predict_image_bytes``: ``image_bytes`` (a batch of encoded PNG/JPEG strings, as TF Serving's
  REST API delivers ``{"b64": ...}`` values) -> decoded, converted to the model's channels,
  resized to its input size, scaled to [0, 1], then the same outputs.

The graph checks what is cheap to check (rank, size and channels, finite values in [0, 1]) and
fails with a message naming the problem. This module is
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

    def decode(data):
        image = tf.io.decode_image(data, channels=channels, expand_animations=False, dtype=tf.float32)
        return tf.image.resize(image, (height, width), method="bilinear")

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve_image_bytes(image_bytes):
        images = tf.map_fn(decode, image_bytes, fn_output_signature=tf.TensorSpec([height, width, channels],
                                                                                   tf.float32))
        return outputs(tf.clip_by_value(images, 0.0, 1.0))

    return serve_images, serve_image_bytes


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
