"""Backend-neutral test helpers (the layer tests also run under KERAS_BACKEND=jax and =torch)."""

import keras
import numpy as np


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def value_and_grad(fn, x):
    """``fn(x)`` (a scalar) and its gradient with respect to ``x``, on the active backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
        return to_numpy(y), to_numpy(tape.gradient(y, x))
    if backend == "jax":
        import jax

        y, g = jax.value_and_grad(fn)(jax.numpy.asarray(x))
        return np.asarray(y), np.asarray(g)
    if backend == "torch":
        import torch

        x = torch.tensor(np.asarray(x), requires_grad=True)
        y = fn(x)
        y.backward()
        return y.detach().numpy(), x.grad.numpy()
    raise NotImplementedError(backend)


def random_capsules(rng, batch, n_in, d_in, n_out, d_out, scale=1.0):
    u = np.asarray(reference_squash(rng.normal(size=(batch, n_in, d_in))), dtype="float32")
    W = (scale * rng.normal(size=(n_in, d_in, n_out, d_out))).astype("float32")
    return u, W


def reference_squash(s):
    from tests.reference import squash

    return squash(s)
