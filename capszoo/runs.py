"""Loading what training produced: a run folder, or a config plus a weights file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from capszoo.config import load_config, zoo_entry_file

METRICS_FILE = "metrics.json"
EARLIER_METRICS = "metrics-epoch-{:04d}.json"  # a resumed run's predecessor, by the epochs it ended at
# What `load_image` and the served graph (capszoo.export.decode_image) say of a transparent image
TRANSPARENT = ("has transparent pixels: flatten it onto the background you mean (the zoo's datasets have "
               "opaque images, MNIST's light digits on black)")
# What a model card keeps of each run behind its weights (``training_runs``), besides its epochs.
RUN_ACCOUNT = ("wall_time_s", "images_per_s", "hardware", "versions", "data_pipeline")


def read_json_object(path, where, remedy):
    """The JSON object in ``path``, or one ValueError that starts with ``where`` and ends with ``remedy``."""
    try:
        value = json.loads(Path(path).read_bytes())
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        raise ValueError(f"{where} is not valid JSON ({err}): {remedy}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{where} is not a JSON object but {type(value).__name__}: {remedy}")
    return value


def archive_metrics(run):
    """Keep the metrics of the run that a resumed run continues, as ``metrics-epoch-NNNN.json``.

    Called by training just before a resumed run writes its own ``metrics.json``, so that
    :func:`training_runs` can still account for the earlier runs' wall time and hardware.
    """
    path = Path(run) / METRICS_FILE
    try:
        epochs = int(json.loads(path.read_text())["epochs"])
    except (OSError, ValueError, KeyError, TypeError):  # none, or not a finished run's: nothing to keep
        return
    path.replace(path.with_name(EARLIER_METRICS.format(epochs)))


def training_runs(run):
    """The training runs behind a run folder's weights, oldest first, each a ``metrics.json`` dict.

    Starts from ``metrics.json`` and follows ``resumed_from_epoch`` back through the files
    :func:`archive_metrics` kept. A run killed before it wrote metrics leaves a gap: the chain
    then continues with the latest earlier run, and the epochs covered tell the gap.
    """
    run = Path(run)
    chain = [json.loads((run / METRICS_FILE).read_text())]
    earlier = {}
    for path in run.glob(EARLIER_METRICS.replace("{:04d}", "*")):
        try:
            metrics = json.loads(path.read_text())
            earlier[int(metrics["epochs"])] = metrics
        except (OSError, ValueError, KeyError, TypeError):
            continue
    while (start := int(chain[-1].get("resumed_from_epoch", 0))) > 0:
        candidates = [epochs for epochs in earlier if epochs <= start]
        if not candidates:
            break
        chain.append(earlier.pop(max(candidates)))
    return chain[::-1]


WEIGHT_DTYPES = ("float32", "float16")


def check_weights_dtype(dtype):
    if dtype not in WEIGHT_DTYPES:
        raise ValueError(f"weights dtype must be one of {', '.join(map(repr, WEIGHT_DTYPES))}, got {dtype!r}")
    return dtype


def save_weights(model, path, dtype="float32"):
    """Save ``model``'s weights to the ``.weights.h5`` file ``path``, as float32 or float16.

    ``float16`` rounds every float32 array and keeps the file's layout and attributes, so the
    file is half the size and loads like any other: Keras casts the values back to the model's
    float32 variables (TensorFlow, JAX and PyTorch alike).
    """
    path = Path(path)
    if check_weights_dtype(dtype) == "float32":
        model.save_weights(path)
        return path
    import tempfile

    import h5py

    with tempfile.TemporaryDirectory() as tmp:
        full = Path(tmp) / "float32.weights.h5"
        model.save_weights(full)
        with h5py.File(full, "r") as source, h5py.File(path, "w") as target:
            _copy_as(source, target, np.dtype(dtype))
    return path


def _copy_as(source, target, dtype):
    """Copy an HDF5 group recursively, float32 datasets converted to ``dtype``."""
    import h5py

    target.attrs.update(source.attrs)
    for key, item in source.items():
        if isinstance(item, h5py.Group):
            _copy_as(item, target.create_group(key), dtype)
        else:
            data = item[()]
            copy = target.create_dataset(key, data=data.astype(dtype) if data.dtype == np.float32 else data)
            copy.attrs.update(item.attrs)


def load_weights_checked(model, weights):
    """Load a ``.weights.h5`` into ``model``; a missing, corrupt or mismatched file is one ValueError."""
    text = str(weights)
    if not text.strip():
        raise ValueError(f"empty weights path {text!r}: give a .weights.h5 file")
    if "://" in text:  # Path() would turn "s3://b/w.h5" into "s3:/b/w.h5" and call it missing
        raise ValueError(f"weights {text}: a URL, not a file (capszoo.load(name, weights=URL) fetches "
                         "http, https and file URLs)")
    path = Path(weights)
    if path.is_dir():
        raise ValueError(f"weights {path} is a folder, not a .weights.h5 file")
    if not path.is_file():
        raise ValueError(f"weights file {path} does not exist")
    try:
        model.load_weights(path)
    except Exception as err:  # h5py / Keras errors for truncated files and other architectures
        why = _architecture_difference(model, path) or _first_lines(err)
        raise ValueError(f"cannot load weights {path} into {model.name} ({model.model_config.routing} routing, "
                         f"capsules {list(model.model_config.capsules)}): {why}") from None
    return model


def _first_lines(err):
    """Keras' message on one line: its first three lines (the first alone can end in a dangling colon)."""
    text = " ".join(line.strip() for line in str(err).strip().splitlines()[:3] if line.strip())
    return text[:300] or type(err).__name__


def _array_shapes(source):
    """``{path: shape}`` of the weight arrays in a Keras weights file (``.weights.h5`` or ``.keras``).

    The optimizer's slots (a ``.keras`` checkpoint's) are left out; ``None`` where the file
    cannot be read as either.
    """
    import zipfile

    import h5py

    def shapes(h5):
        found = {}
        h5.visititems(lambda name, item: found.update({name: tuple(item.shape)})
                      if isinstance(item, h5py.Dataset) and not name.startswith("optimizer/") else None)
        return found

    try:
        if zipfile.is_zipfile(source):
            with zipfile.ZipFile(source) as archive, archive.open("model.weights.h5") as inner, \
                    h5py.File(inner, "r") as h5:
                return shapes(h5)
        with h5py.File(source, "r") as h5:
            return shapes(h5)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def _architecture_difference(model, path, shown=3):
    """Which weight arrays of ``path`` differ from ``model``'s, in words; ``None`` if none do or unreadable."""
    import tempfile

    given = _array_shapes(path)
    if given is None:
        return None
    with tempfile.TemporaryDirectory() as folder:  # the model's own layout, as Keras writes it
        mine = Path(folder) / "model.weights.h5"
        model.save_weights(mine)
        expected = _array_shapes(mine)

    differences = []
    for name in sorted(set(given) | set(expected)):
        if name not in expected:
            differences.append(f"{name} {given[name]} is in the file only")
        elif name not in given:
            differences.append(f"{name} {expected[name]} is missing from the file")
        elif given[name] != expected[name]:
            differences.append(f"{name} is {given[name]} in the file, {expected[name]} in the model")
    if not differences:
        return None
    more = f" and {len(differences) - shown} more" if len(differences) > shown else ""
    return ("the file holds the weights of another architecture: " + "; ".join(differences[:shown]) + more
            + f" ({len(differences)} of {len(set(given) | set(expected))} weight arrays differ)")


def load_trained(spec, weights=None):
    """``(model, config)`` from a run folder, a trained zoo entry, or a config/zoo name and ``weights``."""
    from capszoo.training import build_model, compile_model

    config = load_config(spec)
    folder = Path(str(spec))
    if zoo_entry_file(spec) is None and folder.is_dir():  # a bare entry name means the entry
        if weights is None and not (folder / "model.weights.h5").is_file():
            _unfinished(folder, config)
        weights = weights or folder / "model.weights.h5"
    elif weights is None:
        from capszoo import zoo

        if zoo_entry_file(spec) is None:
            raise ValueError(f"{spec} is a config, not a trained model: pass --weights FILE (or a run folder)")
        if zoo.read_card(spec) is None:
            raise zoo.untrained(spec, ", or pass --weights FILE")
        return zoo.load(spec), config
    model = load_weights_checked(build_model(config, compile=False), weights)
    if zoo_entry_file(spec) is not None:  # an entry's name with --weights: another entry's file?
        from capszoo.zoo import warn_if_another_entrys

        warn_if_another_entrys(config.name, weights, weights)
    return compile_model(model, config), config


def resume_command(folder):
    """The command that finishes the run in ``folder`` from its last checkpoint."""
    return f"capszoo train {Path(folder) / 'config.toml'} --resume --out {folder}"


def _unfinished(folder, config):
    """Refuse a run folder without final weights, saying how to finish it or use a checkpoint."""
    from capszoo.training import latest_checkpoint

    epochs, checkpoint = latest_checkpoint(folder / "checkpoints")
    if checkpoint is None:
        raise ValueError(f"{folder} holds no trained weights: no model.weights.h5 and no checkpoint (a run "
                         "stopped in its first epoch, or not a run folder)")
    raise ValueError(f"run {folder} has not finished: no model.weights.h5, and its last checkpoint is after epoch "
                     f"{epochs} of {config.training.epochs}. Finish it with `{resume_command(folder)}`, or use that "
                     f"checkpoint: --weights {checkpoint} (weights={str(checkpoint)!r} in Python)")


def check_background(image, path, dataset, inverted=False):
    """Refuse an image with a light border for a model of light objects on black
    (:data:`capszoo.data.DARK_BACKGROUND`). A digit in dark ink on white paper was classified
    without a word, and wrongly: ``ara-mnist`` gets 4.8 % of 500 MNIST test digits right once
    they are inverted, 99.6 % as they are."""
    from capszoo.data import DARK_BACKGROUND

    if dataset not in DARK_BACKGROUND:
        if inverted:
            raise ValueError(f"--invert is for models of images light on black ({', '.join(sorted(DARK_BACKGROUND))}), "
                             f"not {dataset}")
        return image
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]]).mean()
    if border > 0.5:
        state, remedy = ((" once inverted", "leave --invert out for it") if inverted
                         else ("", "pass --invert for dark-on-light images"))
        raise ValueError(f"{path} has a light background{state} (its border averages {border:.0%} of white); the "
                         f"model was trained on {dataset} images, light on black: {remedy}")
    return image


def load_image(path, input_shape):
    """An image file -> float32 ``input_shape`` in [0, 1] (channels converted, bilinear resize).

    An EXIF orientation (a phone photo's) is applied, as image viewers do. 16-bit grayscale is
    scaled by 65535, not clipped to 255. Images with transparent pixels are refused: what lies
    under them (often black, the zoo's background too) is not what a viewer sees, and a guess
    would classify a different picture silently.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    height, width, channels = input_shape
    try:
        with Image.open(path) as image:
            image.load()
            # A phone photo's pixels are stored sideways with an EXIF orientation that viewers apply:
            # read as stored, the model saw the picture rotated or mirrored, silently.
            image = ImageOps.exif_transpose(image)
            transparency = "A" in image.getbands() or "transparency" in image.info
            if transparency and np.asarray(image.convert("RGBA"))[..., 3].min() < 255:
                raise ValueError(f"{path} {TRANSPARENT}")
            # 16-bit grayscale ("I" from Pillow before 10 too; PNG has no 32-bit): "L" would clip it at 255
            if image.mode.startswith("I;16") or (image.mode == "I" and image.format == "PNG"):
                image, white = Image.fromarray(np.asarray(image, dtype=np.float32)), 65535.0
            elif image.mode in ("I", "F"):
                raise ValueError(f"{path} holds {'32-bit integer' if image.mode == 'I' else 'floating-point'} "
                                 "pixels with no fixed white level: save it as an 8- or 16-bit PNG or a JPEG")
            else:
                image, white = image.convert("L" if channels == 1 else "RGB"), 255.0
            if image.size != (width, height):
                image = image.resize((width, height), Image.BILINEAR)
            array = np.asarray(image, dtype=np.float32) / white
    except FileNotFoundError:
        raise ValueError(f"image file {path} does not exist") from None
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{path} is not a readable PNG/JPEG image ({type(err).__name__})") from None
    if array.ndim == 2:  # grayscale: one channel, or the same value in each of a colour model's three
        array = np.repeat(array[..., None], channels, axis=-1)
    return array
