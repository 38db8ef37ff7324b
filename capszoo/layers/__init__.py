"""Keras layers of capsule networks (``keras.ops`` only: any Keras backend)."""

from capszoo.layers.capsule import CapsuleLayer
from capszoo.layers.decoder import CapsuleDecoder
from capszoo.layers.length import Length, Mask
from capszoo.layers.primary import PrimaryCapsule

__all__ = ["CapsuleDecoder", "CapsuleLayer", "Length", "Mask", "PrimaryCapsule"]
