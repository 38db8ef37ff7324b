"""The routing-strategy protocol, its registry, and the two ways of forming predictions.

A routing strategy turns the input capsules ``u`` of one capsule layer and that layer's
transformation matrices ``W`` into the output capsules ``v``. Strategies are small stateless
objects (hyperparameters only; the weights belong to the layer), registered by name so that a
layer, a config file or a tuner can ask for one by name. Adding an algorithm means writing one
subclass with ``@register_routing("name")``: neither the layer nor the models change.

Kernel layout: ``(n_in, d_in, n_out, d_out)``. Keeping ``d_in`` next to ``n_in`` makes the
flattened ``(n_in * d_in, n_out * d_out)`` view a free reshape, which is what the fast
(prediction-free) strategies multiply with.
"""

from __future__ import annotations

import inspect
import math
import numbers

from keras import ops

_REGISTRY: dict[str, type[RoutingStrategy]] = {}


def register_routing(name):
    """Class decorator: make a :class:`RoutingStrategy` subclass available under ``name``."""

    def decorate(cls):
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"routing name {name!r} is already registered to {_REGISTRY[name].__name__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def available_routings():
    """Names of the registered routing strategies, sorted."""
    return sorted(_REGISTRY)


def unknown_routing_error(name, key=None):
    """The ``ValueError`` for a routing name nobody registered: the close spellings, else the
    registered names and how a routing of one's own gets its name (a saved model that uses one
    loads only where the same ``register_routing`` has run first)."""
    import difflib

    where = f"{key}: " if key else ""
    close = difflib.get_close_matches(str(name), available_routings(), n=2)
    if close:
        hint = f"did you mean {' or '.join(map(repr, close))}?"
    else:
        hint = (f"available: {', '.join(available_routings())}; a routing of your own is one "
                f"@capszoo.routing.register_routing({name!r}) class, which must run (be imported) "
                "before a model that uses it is built or loaded")
    return ValueError(f"{where}unknown routing {name!r}; {hint}")


def get_routing(identifier, **kwargs):
    """Resolve a routing strategy from a name, a serialized dict, or an instance.

    ``get_routing("dynamic", iterations=3)``, ``get_routing({"name": "adaptive_lambda",
    "config": {"lam": 3.0}})`` and ``get_routing(DynamicRouting())`` all work. Keyword
    arguments are only accepted with a name.
    """
    if isinstance(identifier, RoutingStrategy):
        if kwargs:
            raise ValueError("routing hyperparameters can only be given together with a routing name")
        return identifier
    if isinstance(identifier, dict):
        unknown = set(identifier) - {"name", "config"}
        if "name" not in identifier or unknown:
            raise ValueError(f"a serialized routing is {{'name': ..., 'config': {{...}}}}, got {identifier!r}")
        return get_routing(identifier["name"], **{**identifier.get("config", {}), **kwargs})
    if isinstance(identifier, str):
        if identifier not in _REGISTRY:
            raise unknown_routing_error(identifier)
        cls = _REGISTRY[identifier]
        accepted = routing_parameters(identifier)
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            raise ValueError(f"routing {identifier!r} takes no argument(s) {', '.join(unknown)}; "
                             f"it takes: {', '.join(accepted) or 'nothing'}")
        return cls(**kwargs)
    raise ValueError(f"routing must be a name, a dict or a RoutingStrategy, got {type(identifier).__name__}")


def routing_parameters(name):
    """The hyperparameter names that the routing registered as ``name`` accepts."""
    params = inspect.signature(_REGISTRY[name].__init__).parameters
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [name for name, p in params.items() if name != "self" and p.kind in named]


def any_routing_parameters():
    """Every hyperparameter name that some registered routing accepts (``iterations``, ``lam``, ...)."""
    return {option for name in _REGISTRY for option in routing_parameters(name)}


def serialize_routing(strategy):
    """The dict form that :func:`get_routing` reads back."""
    return {"name": strategy.name, "config": strategy.get_config()}


def check_count(name, value, minimum=1):
    """``value`` as an int if it is an integer >= ``minimum`` (NumPy's too, bools not), else one ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_iterations(iterations):
    return check_count("routing iterations", iterations)


def check_positive(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


class RoutingStrategy:
    """Base class of routing strategies.

    Subclasses implement :meth:`route` and, when they take hyperparameters, validate them in
    ``__init__`` and return them from :meth:`get_config`.
    """

    name: str = "abstract"

    def route(self, inputs, kernel, return_state):
        """Return ``v`` of shape ``(batch, n_out, d_out)``, or ``(v, state)`` if asked.

        ``inputs``: ``(batch, n_in, d_in)``; ``kernel``: ``(n_in, d_in, n_out, d_out)``.
        ``state`` is a dict of per-iteration tensors (see each strategy); it is only built when
        ``return_state`` is true, so it costs nothing otherwise.
        """
        raise NotImplementedError

    def __call__(self, inputs, kernel, return_state=False):
        return self.route(inputs, kernel, return_state)

    def get_config(self):
        return {}

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash((type(self), tuple(sorted(self.get_config().items()))))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def predictions(inputs, kernel):
    """All prediction vectors ``u_hat_j|i = W_ij u_i``: shape ``(batch, n_in, n_out, d_out)``.

    This is the large tensor that coupling-based routing cannot avoid.
    """
    return ops.einsum("bmi,mino->bmno", inputs, kernel)


def summed_predictions(inputs, kernel):
    """``sum_i u_hat_j|i`` as ONE matrix product, without forming the prediction tensor.

    ``sum_i W_ij u_i`` is the flattened input capsules ``(batch, n_in * d_in)`` times the kernel
    viewed as ``(n_in * d_in, n_out * d_out)``. Shape ``(batch, n_out, d_out)``.
    """
    n_in, d_in, n_out, d_out = kernel.shape
    flat_inputs = ops.reshape(inputs, (-1, n_in * d_in))
    flat_kernel = ops.reshape(kernel, (n_in * d_in, n_out * d_out))
    return ops.reshape(ops.matmul(flat_inputs, flat_kernel), (-1, n_out, d_out))
