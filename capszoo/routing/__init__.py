"""Interchangeable routing strategies for :class:`capszoo.layers.CapsuleLayer`.

Add one by subclassing :class:`RoutingStrategy` and decorating it with
``@register_routing("name")``; it is then available to layers, configs and tuners by name.
"""

from capszoo.routing.adaptive import AdaptiveLambdaRouting, AdaptiveRouting
from capszoo.routing.base import (
    RoutingStrategy,
    available_routings,
    get_routing,
    predictions,
    register_routing,
    serialize_routing,
    summed_predictions,
)
from capszoo.routing.dynamic import DynamicRouting
from capszoo.routing.uniform import UniformRouting

__all__ = [
    "AdaptiveLambdaRouting",
    "AdaptiveRouting",
    "DynamicRouting",
    "RoutingStrategy",
    "UniformRouting",
    "available_routings",
    "get_routing",
    "predictions",
    "register_routing",
    "serialize_routing",
    "summed_predictions",
]
