"""Small Keras models whose answers are known exactly, for tests of the plumbing around a model.

Nothing here is a test; test modules import it (``from toy_models import peak_model``).
"""

from __future__ import annotations

import keras
from keras import ops


def peak_model(size: int = 256, threshold: float = 0.1, score: float = 1.0) -> keras.Model:
    """p = ``score`` where the normalised difference peaks above ``threshold``; (x, y) = that peak."""

    def peak(t):
        flat = ops.reshape(t[..., 2], (-1, size * size))
        idx = ops.argmax(flat, axis=1)
        p = score * ops.cast(ops.max(flat, axis=1) > threshold, "float32")
        col = ops.cast(idx % size, "float32") / size
        row = ops.cast(idx // size, "float32") / size
        return ops.stack([p, col, row], axis=1)

    inp = keras.Input((size, size, 3))
    return keras.Model(inp, keras.layers.Lambda(peak, output_shape=(3,))(inp), name="peak")
