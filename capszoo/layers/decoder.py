"""Sabour et al.'s reconstruction decoder."""

from __future__ import annotations

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="capszoo")
class CapsuleDecoder(keras.layers.Layer):
    """Masked class capsules -> image: Dense 512 ReLU, Dense 1024 ReLU, Dense pixels sigmoid.

    Input ``(batch, n_classes * capsule_dim)`` (the output of :class:`Mask`); output
    ``(batch, *image_shape)`` in [0, 1].
    """

    def __init__(self, image_shape, units=(512, 1024), **kwargs):
        super().__init__(**kwargs)
        self.image_shape = tuple(int(d) for d in image_shape)
        self.units = tuple(int(u) for u in units)
        if len(self.image_shape) != 3 or min(self.image_shape) < 1 or min(self.units, default=1) < 1:
            raise ValueError(f"CapsuleDecoder needs a (height, width, channels) image shape and positive units, "
                             f"got image_shape={image_shape!r}, units={units!r}")
        self.hidden = [
            keras.layers.Dense(u, activation="relu", dtype=self.dtype_policy, name=f"dense_{k}")
            for k, u in enumerate(self.units)
        ]
        self.pixels = keras.layers.Dense(
            math.prod(self.image_shape), activation="sigmoid", dtype=self.dtype_policy, name="pixels"
        )

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.hidden:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.pixels.build(shape)

    def call(self, inputs):
        x = inputs
        for layer in self.hidden:
            x = layer(x)
        return ops.reshape(self.pixels(x), (-1, *self.image_shape))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.image_shape)

    def get_config(self):
        config = super().get_config()
        config.update(image_shape=self.image_shape, units=self.units)
        return config
