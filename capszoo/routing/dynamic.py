"""Dynamic routing by agreement (Sabour, Frosst & Hinton 2017, Procedure 1)."""

from __future__ import annotations

from keras import ops

from capszoo.ops import squash
from capszoo.routing.base import RoutingStrategy, check_iterations, predictions, register_routing


@register_routing("dynamic")
class DynamicRouting(RoutingStrategy):
    """Sabour's routing: ``c_i = softmax_j(b_i)``, ``v_j = squash(sum_i c_ij u_hat_j|i)``,
    ``b_ij += u_hat_j|i . v_j``, ``iterations`` times.

    The softmax runs over the output capsules ``j`` for each input capsule ``i``, so every row of
    the coupling matrix sums to one. This is mirror descent on the concave energy
    :func:`capszoo.ops.routing_energy`, which therefore never increases from one iteration to the
    next.

    Args:
        iterations: number of routing iterations ``r >= 1``; ``r = 1`` is uniform coupling.
        stop_gradient: if true, the iterations before the last one see ``stop_gradient(u_hat)``,
            so the couplings are treated as constants in back-propagation and gradients reach
            ``W`` only through the final ``sum_i c_ij u_hat_j|i`` (the common practice of many
            public implementations; cheaper backward pass). If false (default, as in the paper's
            equations), gradients also flow through the agreement updates.

    State (``return_state=True``): ``predictions`` ``(batch, n_in, n_out, d_out)``; ``logits`` and
    ``couplings`` ``(iterations, batch, n_in, n_out)``, the ``b`` and ``c`` used by each iteration;
    ``outputs`` ``(iterations, batch, n_out, d_out)``, the ``v`` each iteration produced.
    """

    def __init__(self, iterations=3, stop_gradient=False):
        self.iterations = check_iterations(iterations)
        if not isinstance(stop_gradient, bool):
            raise ValueError(f"stop_gradient must be True or False, got {stop_gradient!r}")
        self.stop_gradient = stop_gradient

    def route(self, inputs, kernel, return_state):
        u_hat = predictions(inputs, kernel)
        u_hat_routing = ops.stop_gradient(u_hat) if self.stop_gradient else u_hat
        n_out = u_hat.shape[2]
        logits = None
        history = {"logits": [], "couplings": [], "outputs": []}
        for t in range(self.iterations):
            last = t == self.iterations - 1
            u = u_hat if last else u_hat_routing
            if logits is None:
                # b = 0: the softmax is exactly 1/n_out, so skip it and the weighted sum.
                couplings = None
                s = ops.sum(u, axis=1) / n_out
            else:
                couplings = ops.softmax(logits, axis=-1)
                s = ops.einsum("bmn,bmno->bno", couplings, u)
            v = squash(s)
            if return_state:
                if couplings is None:
                    zeros = ops.zeros_like(u_hat[..., 0])
                    logits_t, couplings = zeros, zeros + 1.0 / n_out
                else:
                    logits_t = logits
                history["logits"].append(logits_t)
                history["couplings"].append(couplings)
                history["outputs"].append(v)
            if not last:
                agreement = ops.einsum("bmno,bno->bmn", u, v)
                logits = agreement if logits is None else logits + agreement
        if not return_state:
            return v
        state = {key: ops.stack(values, axis=0) for key, values in history.items()}
        state["predictions"] = u_hat
        return v, state

    def get_config(self):
        return {"iterations": self.iterations, "stop_gradient": self.stop_gradient}
