"""Building blocks of the Tails model: the bi-directional feature pyramid (BiFPN) and its parts.

Everything here is written with ``keras`` and ``keras.ops`` only, so that it runs under the
TensorFlow, JAX and PyTorch backends.

The BiFPN follows EfficientDet (Tan, Pang & Le 2020, arXiv:1911.09070, Fig. 2d), as the original
Tails built it (github dmitryduev/tails, ``tails/efficientdet.py``): five levels P3..P7, fusion by
plain addition (``weighted=False``, as the original trained it) or by the "fast normalised fusion"
of EfficientDet (``weighted=True``), each fusion followed by swish, a 3x3 separable convolution and
batch normalisation.
"""

from __future__ import annotations

import keras
from keras import layers, ops

__all__ = [
    "BN_MOMENTUM",
    "BN_EPSILON",
    "WeightedAdd",
    "resample_block",
    "fusion_node",
    "bifpn_layer",
    "SoftArgmax2D",
]

#: Batch-normalisation momentum and epsilon of the BiFPN and the head (EfficientDet reference
#: implementation, as used by the original Tails).
BN_MOMENTUM = 0.997
BN_EPSILON = 1e-4


@keras.saving.register_keras_serializable(package="tails")
class WeightedAdd(layers.Layer):
    """EfficientDet's fast normalised fusion: ``sum_i relu(w_i) x_i / (sum_i relu(w_i) + eps)``.

    Parameters
    ----------
    epsilon : float
        Added to the sum of the weights to avoid a division by zero.
    """

    def __init__(self, epsilon: float = 1e-4, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape):
        n = len(input_shape)
        self.w = self.add_weight(
            name="fusion_weights",
            shape=(n,),
            initializer=keras.initializers.Constant(1.0 / n),
            trainable=True,
        )

    def call(self, inputs):
        w = ops.relu(self.w)
        total = inputs[0] * ops.cast(w[0], inputs[0].dtype)
        for i in range(1, len(inputs)):
            total = total + inputs[i] * ops.cast(w[i], inputs[i].dtype)
        return total / ops.cast(ops.sum(w) + self.epsilon, total.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        config = super().get_config()
        config.update({"epsilon": self.epsilon})
        return config


def resample_block(x, width: int, name: str):
    """Project a backbone feature map to ``width`` channels: 1x1 convolution and batch norm.

    Parameters
    ----------
    x : KerasTensor
        Input feature map (N, H, W, C).
    width : int
        Number of output channels.
    name : str
        Prefix of the layer names.
    """
    x = layers.Conv2D(width, 1, padding="same", use_bias=True, name=f"{name}_conv")(x)
    return layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=f"{name}_bn")(x)


def fusion_node(inputs: list, width: int, name: str, weighted: bool = False):
    """One BiFPN node: fuse same-sized inputs, then swish, 3x3 separable conv and batch norm.

    Parameters
    ----------
    inputs : list of KerasTensor
        Feature maps of equal shape (N, H, W, width).
    width : int
        Number of output channels.
    name : str
        Prefix of the layer names.
    weighted : bool
        Fast normalised fusion (:class:`WeightedAdd`) instead of a plain sum.
    """
    merge = WeightedAdd(name=f"{name}_add") if weighted else layers.Add(name=f"{name}_add")
    x = merge(inputs)
    x = layers.Activation("swish", name=f"{name}_act")(x)
    x = layers.SeparableConv2D(
        width, 3, strides=1, padding="same", use_bias=True, name=f"{name}_sepconv"
    )(x)
    return layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=f"{name}_bn")(x)


def _up(x, name: str):
    return layers.UpSampling2D(size=2, interpolation="nearest", name=name)(x)


def _down(x, name: str):
    return layers.MaxPooling2D(pool_size=3, strides=2, padding="same", name=name)(x)


def bifpn_layer(features: list, width: int, index: int, weighted: bool = False) -> list:
    """One BiFPN layer over five levels: a top-down path, then a bottom-up path.

    Parameters
    ----------
    features : list of KerasTensor
        ``[P3, P4, P5, P6, P7]``, each level half the size of the previous one. For
        ``index == 0``, P3..P5 are backbone maps of any width: they are projected to ``width``
        channels by :func:`resample_block` (P4 and P5 separately for either path, as in
        EfficientDet); P6 and P7 must already have ``width`` channels.
    width : int
        Number of channels of the pyramid.
    index : int
        Number of the layer (0 for the first one); prefixes the layer names (``bifpn{index}_``).
    weighted : bool
        Fast normalised fusion instead of plain sums.

    Returns
    -------
    list of KerasTensor
        ``[P3_out, P4_td, P5_td, P6_td, P7_out]``. As in the original Tails (and the EfficientDet
        port it derives from), the intermediate levels are passed on from the top-down path; the
        bottom-up nodes P4_out..P6_out feed P7_out. This keeps the published architecture.
    """
    p3, p4, p5, p6, p7 = features
    pre = f"bifpn{index}"
    if index == 0:
        p3_in = resample_block(p3, width, f"{pre}_p3_in")
        p4_in_td = resample_block(p4, width, f"{pre}_p4_in_td")
        p4_in_bu = resample_block(p4, width, f"{pre}_p4_in_bu")
        p5_in_td = resample_block(p5, width, f"{pre}_p5_in_td")
        p5_in_bu = resample_block(p5, width, f"{pre}_p5_in_bu")
    else:
        p3_in, p4_in_td, p4_in_bu, p5_in_td, p5_in_bu = p3, p4, p4, p5, p5

    # top-down path
    p6_td = fusion_node([p6, _up(p7, f"{pre}_p7_up")], width, f"{pre}_p6_td", weighted)
    p5_td = fusion_node([p5_in_td, _up(p6_td, f"{pre}_p6_up")], width, f"{pre}_p5_td", weighted)
    p4_td = fusion_node([p4_in_td, _up(p5_td, f"{pre}_p5_up")], width, f"{pre}_p4_td", weighted)
    p3_out = fusion_node([p3_in, _up(p4_td, f"{pre}_p4_up")], width, f"{pre}_p3_out", weighted)
    # bottom-up path
    p4_out = fusion_node(
        [p4_in_bu, p4_td, _down(p3_out, f"{pre}_p3_down")], width, f"{pre}_p4_out", weighted
    )
    p5_out = fusion_node(
        [p5_in_bu, p5_td, _down(p4_out, f"{pre}_p4_down")], width, f"{pre}_p5_out", weighted
    )
    p6_out = fusion_node(
        [p6, p6_td, _down(p5_out, f"{pre}_p5_down")], width, f"{pre}_p6_out", weighted
    )
    p7_out = fusion_node([p7, _down(p6_out, f"{pre}_p6_down")], width, f"{pre}_p7_out", weighted)
    return [p3_out, p4_td, p5_td, p6_td, p7_out]


@keras.saving.register_keras_serializable(package="tails")
class SoftArgmax2D(layers.Layer):
    """The expected position under a spatial softmax of a one-channel map (DSNT; Nibali et al.
    2018, arXiv:1801.07372): ``(sum_ij w_ij (j + 0.5) / W, sum_ij w_ij (i + 0.5) / H)``.

    Maps (N, H, W, 1) logits to (N, 2) = ``[x, y]`` in units of the map's width and height, x
    being the column.  Unlike a dense regression of the position, it is translation-equivariant
    and places the position between cells by the balance of their weights.  Computed in float32.
    """

    def call(self, logits):
        logits = ops.cast(logits, "float32")
        h, w = logits.shape[1], logits.shape[2]
        weights = ops.softmax(ops.reshape(logits, (-1, h * w)), axis=-1)
        weights = ops.reshape(weights, (-1, h, w))
        cols = (ops.arange(w, dtype="float32") + 0.5) / w
        rows = (ops.arange(h, dtype="float32") + 0.5) / h
        x = ops.sum(ops.sum(weights, axis=1) * cols, axis=-1)
        y = ops.sum(ops.sum(weights, axis=2) * rows, axis=-1)
        return ops.stack([x, y], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 2)
