"""Primary capsules: a convolution whose channels are grouped into capsule vectors."""

from __future__ import annotations

import keras
from keras import ops

from capszoo.ops import squash
from capszoo.routing.base import check_count


def convolve(conv, inputs):
    """``conv(inputs)``, with the right empty result for a statically empty batch.

    TensorFlow's oneDNN convolution (TF 2.21 on CPUs where it turns oneDNN on, such as AVX-512
    ones) returns its input unchanged for an empty batch, and the bias add then fails deep in
    TensorFlow. So an empty batch runs the convolution on one blank image and keeps none of it:
    the right shape and dtype on every backend and CPU.
    """
    if inputs.shape[0] == 0:
        return conv(ops.zeros((1, *inputs.shape[1:]), inputs.dtype))[:0]
    return conv(inputs)


@keras.saving.register_keras_serializable(package="capszoo")
class PrimaryCapsule(keras.layers.Layer):
    """Conv2D with ``capsule_types * capsule_dim`` filters, reshaped to capsules and squashed.

    Input ``(batch, H, W, C)``; output ``(batch, H' * W' * capsule_types, capsule_dim)``. The
    paper's layer (32 types of 8-D capsules, 9x9 kernel, stride 2, no activation before the
    squash) gives 1152 capsules on 28x28 inputs after a 9x9 convolution, and 2048 on 32x32.
    """

    def __init__(
        self,
        capsule_types=32,
        capsule_dim=8,
        kernel_size=9,
        strides=2,
        padding="valid",
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.capsule_types = check_count("PrimaryCapsule capsule_types", capsule_types)
        self.capsule_dim = check_count("PrimaryCapsule capsule_dim", capsule_dim)
        self.kernel_size = kernel_size
        self.strides = strides
        self.padding = padding
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.conv = keras.layers.Conv2D(
            capsule_types * capsule_dim,
            kernel_size,
            strides=strides,
            padding=padding,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name="conv",
        )

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                "PrimaryCapsule expects feature maps of shape (batch, height, width, channels), "
                f"got {tuple(input_shape)}"
            )
        self.conv.build(input_shape)

    def call(self, inputs):
        features = convolve(self.conv, inputs)
        _, height, width, _ = features.shape
        capsules = ops.reshape(features, (-1, height * width * self.capsule_types, self.capsule_dim))
        # The squash, and the routing after it, in the variables' precision (float32 under a mixed
        # policy) whatever the convolution computed in.
        return squash(ops.cast(capsules, self.variable_dtype))

    def compute_output_shape(self, input_shape):
        _, height, width, _ = self.conv.compute_output_shape(input_shape)
        return (input_shape[0], height * width * self.capsule_types, self.capsule_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            capsule_types=self.capsule_types,
            capsule_dim=self.capsule_dim,
            kernel_size=self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config
