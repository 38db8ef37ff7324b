"""Adaptive routing (Ren et al., "Adaptive Routing Between Capsules"), Algorithms 1 and 2.

Neither algorithm has coupling coefficients, so both are computed without the
``(batch, n_in, n_out, d_out)`` prediction tensor:

* Algorithm 1 updates every prediction by the same ``v_j``: ``u_hat_j|i <- u_hat_j|i + v_j``.
  Summed over the ``n_in`` inputs that is ``s_j <- s_j + n_in * v_j``, so each iteration is one
  squash and one axpy on ``(batch, n_out, d_out)`` after a single matrix product.
* Algorithm 2 is ``v_j = squash(lam * sum_i u_hat_j|i)``: one matrix product and one squash.
"""

from __future__ import annotations

from keras import ops

from capszoo.ops import squash
from capszoo.routing.base import (
    RoutingStrategy,
    check_iterations,
    check_positive,
    register_routing,
    summed_predictions,
)


@register_routing("adaptive")
class AdaptiveRouting(RoutingStrategy):
    """ARA Algorithm 1: ``s_j = sum_i u_hat_j|i``, ``v_j = squash(s_j)``,
    ``u_hat_j|i <- u_hat_j|i + v_j``, ``iterations`` times; returns the last ``v``.

    With one iteration this is ``squash(sum_i u_hat_j|i)``.

    State (``return_state=True``): ``outputs`` ``(iterations, batch, n_out, d_out)``.
    """

    def __init__(self, iterations=3):
        self.iterations = check_iterations(iterations)

    def route(self, inputs, kernel, return_state):
        n_in = kernel.shape[0]
        s = summed_predictions(inputs, kernel)
        outputs = []
        for t in range(self.iterations):
            v = squash(s)
            outputs.append(v)
            if t < self.iterations - 1:
                s = s + n_in * v
        if return_state:
            return v, {"outputs": ops.stack(outputs, axis=0)}
        return v

    def get_config(self):
        return {"iterations": self.iterations}


@register_routing("adaptive_lambda")
class AdaptiveLambdaRouting(RoutingStrategy):
    """ARA Algorithm 2: ``v_j = squash(lam * sum_i u_hat_j|i)`` with gradient coefficient ``lam``.

    The paper finds ``lam`` in {1, 2, 3, 4} best; ``lam <= 1e-4`` collapses 2-layer networks and
    ``lam <= 0.1`` collapses 3- and 4-layer ones.

    State (``return_state=True``): ``outputs`` ``(1, batch, n_out, d_out)``.
    """

    def __init__(self, lam=1.0):
        self.lam = check_positive("lam (the gradient coefficient λ)", lam)

    def route(self, inputs, kernel, return_state):
        v = squash(self.lam * summed_predictions(inputs, kernel))
        if return_state:
            return v, {"outputs": v[None]}
        return v

    def get_config(self):
        return {"lam": self.lam}
