"""TensorFlow, imported once with its C++ INFO and WARNING logs off (they flood stderr)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf

__all__ = ["tf"]
