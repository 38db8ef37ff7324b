"""A fully connected capsule layer whose routing algorithm is a pluggable strategy."""

from __future__ import annotations

import keras

from capszoo.routing import RoutingStrategy, get_routing, serialize_routing
from capszoo.routing.base import any_routing_parameters, check_count


@keras.saving.register_keras_serializable(package="capszoo")
class CapsuleLayer(keras.layers.Layer):
    """``n_in`` input capsules of ``d_in`` dims -> ``capsules`` output capsules of ``capsule_dim``.

    Every pair ``(i, j)`` has its own transformation matrix ``W_ij`` (``d_in x capsule_dim``),
    stored as one kernel of shape ``(n_in, d_in, capsules, capsule_dim)``. How the predictions
    ``W_ij u_i`` are combined into ``v_j`` is decided by ``routing``: a name from
    :func:`capszoo.routing.available_routings`, a serialized ``{"name", "config"}`` dict, or a
    :class:`capszoo.routing.RoutingStrategy` instance. With a name, the routing's hyperparameters
    may be given as keywords: ``CapsuleLayer(10, 16, routing="dynamic", iterations=3)``.

    ``call(inputs, return_routing_state=True)`` returns ``(v, state)`` with the strategy's
    per-iteration tensors (couplings, logits, outputs) for analysis.
    """

    def __init__(
        self,
        capsules,
        capsule_dim,
        routing="dynamic",
        kernel_initializer=None,
        kernel_regularizer=None,
        **kwargs,
    ):
        # Routing hyperparameters may be given beside the routing's name, as CapsNet2 takes them:
        # CapsuleLayer(10, 16, routing="adaptive_lambda", lam=3.0). They were Keras' "Unrecognized
        # keyword arguments"; get_routing checks them against the routing named.
        known = any_routing_parameters()
        options = {key: kwargs.pop(key) for key in list(kwargs) if key in known}
        super().__init__(**kwargs)
        self.capsules = check_count("CapsuleLayer capsules", capsules)
        self.capsule_dim = check_count("CapsuleLayer capsule_dim", capsule_dim)
        self.routing: RoutingStrategy = get_routing(routing, **options)
        # Small normal weights, the usual choice of public CapsNet implementations: the papers
        # do not give an initialiser.
        if kernel_initializer is None:
            kernel_initializer = keras.initializers.RandomNormal(stddev=0.01)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    def build(self, input_shape):
        if len(input_shape) != 3 or input_shape[1] is None or input_shape[2] is None:
            raise ValueError(
                f"CapsuleLayer {self.name!r} expects capsules of shape (batch, n_capsules, capsule_dim) "
                f"with known n_capsules and capsule_dim, got {tuple(input_shape)}"
            )
        _, n_in, d_in = input_shape
        self.kernel = self.add_weight(
            name="kernel",
            shape=(n_in, d_in, self.capsules, self.capsule_dim),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )

    def call(self, inputs, return_routing_state=False):
        return self.routing(inputs, self.kernel, return_state=return_routing_state)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.capsules, self.capsule_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            capsules=self.capsules,
            capsule_dim=self.capsule_dim,
            routing=serialize_routing(self.routing),
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer),
        )
        return config
