"""The no-routing baseline: every input capsule is coupled equally to every output capsule."""

from __future__ import annotations

from capszoo.ops import squash
from capszoo.routing.base import RoutingStrategy, register_routing, summed_predictions


@register_routing("uniform")
class UniformRouting(RoutingStrategy):
    """``c_ij = 1 / n_out`` and no iterations: ``v_j = squash(sum_i u_hat_j|i / n_out)``.

    Identical to dynamic routing with one iteration, but computed with one matrix product and no
    prediction tensor.

    State (``return_state=True``): ``outputs`` ``(1, batch, n_out, d_out)``.
    """

    def route(self, inputs, kernel, return_state):
        n_out = kernel.shape[2]
        v = squash(summed_predictions(inputs, kernel) / n_out)
        if return_state:
            return v, {"outputs": v[None]}
        return v
