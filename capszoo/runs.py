"""Loading what training produced: a run folder, or a config plus a weights file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from capszoo.config import load_config, zoo_names


def load_weights_checked(model, weights):
    """Load a ``.weights.h5`` into ``model``; a missing, corrupt or mismatched file is one ValueError."""
    path = Path(weights)
    if not path.is_file():
        raise ValueError(f"weights file {path} does not exist")
    try:
        model.load_weights(path)
    except Exception as err:  # h5py / Keras errors for truncated files and other architectures
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise ValueError(f"cannot load weights {path} into {model.name} ({model.model_config.routing} routing, "
                         f"capsules {list(model.model_config.capsules)}): {first}") from None
    return model


def load_trained(spec, weights=None):
    """``(model, config)`` from a run folder, a trained zoo entry, or a config/zoo name and ``weights``."""
    from capszoo.training import build_model, compile_model

    folder = Path(str(spec))
    if folder.is_dir():
        config = load_config(folder)
        weights = weights or folder / "model.weights.h5"
    else:
        config = load_config(spec)
        if weights is None:
            from capszoo import zoo

            if str(spec) in zoo_names() and zoo.read_card(str(spec)) is not None:
                return zoo.load(str(spec)), config
            raise ValueError(f"{spec} is a config, not a trained model: pass --weights FILE (or a run folder)")
    model = load_weights_checked(build_model(config, compile=False), weights)
    return compile_model(model, config), config


def load_image(path, input_shape):
    """An image file -> float32 ``input_shape`` in [0, 1] (channels converted, bilinear resize)."""
    from PIL import Image, UnidentifiedImageError

    height, width, channels = input_shape
    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            if image.size != (width, height):
                image = image.resize((width, height), Image.BILINEAR)
            array = np.asarray(image, dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise ValueError(f"image file {path} does not exist") from None
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{path} is not a readable PNG/JPEG image ({type(err).__name__})") from None
    return array.reshape(height, width, channels)
