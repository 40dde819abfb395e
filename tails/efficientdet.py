"""The Tails model: an EfficientDet-D0-style comet detector and locator.

Architecture (Duev et al. 2021, arXiv:2102.13352; github dmitryduev/tails; summarised in
``shared/ZTF.md``, "The original Tails"):

* input: a 256x256x3 triplet (science, reference re-projected onto the science frame, difference),
  preprocessed by :func:`tails.preprocess.preprocess_tiles`, then multiplied by 256 inside the
  model (a weightless ``Rescaling``) so that each channel has unit rms, which the stem's batch
  normalisation needs (an addition to the original; the model's input contract is unchanged);
* backbone: EfficientNet-B0 (Tan & Le 2019, arXiv:1905.11946), random initialisation, no
  classification top; its feature maps C3, C4, C5 (strides 8, 16, 32) are used;
* P6 = maxpool(BN(conv1x1(C5))), P7 = maxpool(P6) (strides 64 and 128);
* an unweighted BiFPN of width 64 and 3 layers (:mod:`tails.layers`);
* a shared head: 3 x (3x3 conv of 64 filters, batch norm per level, swish), then a 3x3 conv with
  one sigmoid filter on each of P3..P7; flattened and concatenated (1364 values for 256x256);
* ``Dense(3, sigmoid)`` giving ``[p_comet, x/256, y/256]``, x being the column and y the row of the
  comet in the tile.

An addition, ``Tails(localisation="heatmap")``: ``[x, y]`` come instead from the soft-argmax of a
heatmap computed from P3 at a stride of 4 px (:func:`position_head`), the Dense layer still giving
p_comet. The output contract is the same; ``load_model`` recognises either kind of checkpoint.

Only ``keras`` and ``keras.ops`` are used, so that the model builds, trains and loads under the
TensorFlow, JAX and PyTorch backends. Weights are stored in Keras ``.weights.h5`` files.
"""

from __future__ import annotations

import logging
import math
import re
import string
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
from keras import layers

from .atomic import atomic_path
from .layers import BN_EPSILON, BN_MOMENTUM, SoftArgmax2D, bifpn_layer

__all__ = [
    "Tails",
    "LOCALISATIONS",
    "efficientnet_backbone",
    "position_head",
    "transfer_weights",
    "average_checkpoints",
    "load_model",
    "model_name",
    "find_bundled_checkpoint",
    "predict_tiles",
    "DEFAULT_MODELS_DIR",
    "CHECKPOINT_FILENAME",
]

logger = logging.getLogger(__name__)

#: Folder of the bundled models: ``models/`` beside the ``tails`` package, one sub-folder
#: ``tails-YYYYMMDD`` per trained model, holding ``tails.weights.h5`` and a model card.
DEFAULT_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
#: File name of the weights inside a bundled model's folder.
CHECKPOINT_FILENAME = "tails.weights.h5"

# EfficientNet-B0 stages (Tan & Le 2019, Table 1): kernel size, repeats, input filters,
# output filters, expansion ratio, stride of the first block, squeeze-and-excitation ratio.
B0_STAGES = (
    (3, 1, 32, 16, 1, 1, 0.25),
    (3, 2, 16, 24, 6, 2, 0.25),
    (5, 2, 24, 40, 6, 2, 0.25),
    (3, 3, 40, 80, 6, 2, 0.25),
    (5, 3, 80, 112, 6, 1, 0.25),
    (5, 4, 112, 192, 6, 2, 0.25),
    (3, 1, 192, 320, 6, 1, 0.25),
)
# stages whose outputs are C3 (stride 8), C4 (stride 16) and C5 (stride 32)
_FEATURE_STAGES = (2, 4, 6)

# EfficientNet's initialisers (reference implementation): He-normal with fan-out for convolutions.
CONV_KERNEL_INITIALIZER = {
    "class_name": "VarianceScaling",
    "config": {"scale": 2.0, "mode": "fan_out", "distribution": "untruncated_normal"},
}
# Head: N(0, 0.01) kernels for the intermediate convolutions (RetinaNet, Lin et al. 2017,
# arXiv:1708.02002, section 4.1), as the original Tails.  RetinaNet also starts the prediction
# convolution at p = 0.01 (bias -4.6, N(0, 0.01) kernel), which suits a focal loss on the head's
# own outputs; here they are features for the Dense layer, and at p = 0.01 the sigmoid passes 1 %
# of the gradient: training on 2 CPU cores stalled (head outputs constant across tiles to 1e-7
# after 200 steps).  So the prediction convolution starts at p = 0.5 with Glorot kernels.
HEAD_KERNEL_STDDEV = 0.01
HEAD_PRIOR_PROBABILITY = 0.5

# Levels P3..P7 of the pyramid: P_l has stride 2**l.
LEVELS = (3, 4, 5, 6, 7)


def round_filters(filters: int, width_coefficient: float, divisor: int = 8) -> int:
    """Scale a number of filters by ``width_coefficient``, rounded to a multiple of ``divisor``.

    The rounding never goes down by more than 10 % (EfficientNet reference implementation).
    """
    filters *= width_coefficient
    new = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    if new < 0.9 * filters:
        new += divisor
    return int(new)


def round_repeats(repeats: int, depth_coefficient: float) -> int:
    """Scale a number of block repeats by ``depth_coefficient``, rounded up."""
    return int(math.ceil(depth_coefficient * repeats))


def mb_conv_block(
    x,
    filters_in: int,
    filters_out: int,
    kernel_size: int,
    strides: int,
    expand_ratio: int,
    se_ratio: float,
    drop_rate: float,
    name: str,
):
    """Mobile inverted bottleneck (MBConv) with squeeze-and-excitation, EfficientNet's block.

    Parameters
    ----------
    x : KerasTensor
        Input (N, H, W, filters_in).
    filters_in, filters_out : int
        Input and output channels.
    kernel_size, strides : int
        Of the depthwise convolution.
    expand_ratio : int
        Expansion of the channels by the first 1x1 convolution.
    se_ratio : float
        Squeeze-and-excitation bottleneck, as a fraction of ``filters_in``.
    drop_rate : float
        Stochastic-depth ("drop connect") rate of the residual branch.
    name : str
        Prefix of the layer names, e.g. ``"block2a_"``.
    """
    inputs = x
    filters = filters_in * expand_ratio
    if expand_ratio != 1:
        x = layers.Conv2D(
            filters,
            1,
            padding="same",
            use_bias=False,
            kernel_initializer=CONV_KERNEL_INITIALIZER,
            name=name + "expand_conv",
        )(x)
        x = layers.BatchNormalization(name=name + "expand_bn")(x)
        x = layers.Activation("swish", name=name + "expand_activation")(x)

    x = layers.DepthwiseConv2D(
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        depthwise_initializer=CONV_KERNEL_INITIALIZER,
        name=name + "dwconv",
    )(x)
    x = layers.BatchNormalization(name=name + "bn")(x)
    x = layers.Activation("swish", name=name + "activation")(x)

    if 0 < se_ratio <= 1:
        reduced = max(1, int(filters_in * se_ratio))
        se = layers.GlobalAveragePooling2D(keepdims=True, name=name + "se_squeeze")(x)
        se = layers.Conv2D(
            reduced,
            1,
            activation="swish",
            padding="same",
            kernel_initializer=CONV_KERNEL_INITIALIZER,
            name=name + "se_reduce",
        )(se)
        se = layers.Conv2D(
            filters,
            1,
            activation="sigmoid",
            padding="same",
            kernel_initializer=CONV_KERNEL_INITIALIZER,
            name=name + "se_expand",
        )(se)
        x = layers.Multiply(name=name + "se_excite")([x, se])

    x = layers.Conv2D(
        filters_out,
        1,
        padding="same",
        use_bias=False,
        kernel_initializer=CONV_KERNEL_INITIALIZER,
        name=name + "project_conv",
    )(x)
    x = layers.BatchNormalization(name=name + "project_bn")(x)
    if strides == 1 and filters_in == filters_out:
        if drop_rate > 0:
            x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=name + "drop")(x)
        x = layers.Add(name=name + "add")([x, inputs])
    return x


def efficientnet_backbone(
    x,
    width_coefficient: float = 1.0,
    depth_coefficient: float = 1.0,
    drop_connect_rate: float = 0.2,
) -> list:
    """EfficientNet feature extractor (B0 for coefficients 1.0, 1.0), without the top.

    Parameters
    ----------
    x : KerasTensor
        Input image (N, H, W, C). No rescaling or normalisation is applied: Tails' inputs are
        already preprocessed.
    width_coefficient, depth_coefficient : float
        Scaling of the channels and of the number of blocks (B0: 1.0 and 1.0).
    drop_connect_rate : float
        Maximum stochastic-depth rate, growing linearly over the blocks (B0: 0.2).

    Returns
    -------
    list of KerasTensor
        ``[C3, C4, C5]``, feature maps of strides 8, 16 and 32.
    """
    x = layers.Conv2D(
        round_filters(32, width_coefficient),
        3,
        strides=2,
        padding="same",
        use_bias=False,
        kernel_initializer=CONV_KERNEL_INITIALIZER,
        name="stem_conv",
    )(x)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.Activation("swish", name="stem_activation")(x)

    total = sum(round_repeats(s[1], depth_coefficient) for s in B0_STAGES)
    features, block = [], 0
    for i, (kernel, repeats, f_in, f_out, expand, stride, se_ratio) in enumerate(B0_STAGES):
        f_in = round_filters(f_in, width_coefficient)
        f_out = round_filters(f_out, width_coefficient)
        for j in range(round_repeats(repeats, depth_coefficient)):
            x = mb_conv_block(
                x,
                filters_in=f_in if j == 0 else f_out,
                filters_out=f_out,
                kernel_size=kernel,
                strides=stride if j == 0 else 1,
                expand_ratio=expand,
                se_ratio=se_ratio,
                drop_rate=drop_connect_rate * block / total,
                name=f"block{i + 1}{string.ascii_lowercase[j]}_",
            )
            block += 1
        if i in _FEATURE_STAGES:
            features.append(x)
    return features


def pyramid_inputs(c5, width: int) -> tuple:
    """P6 and P7 from C5: P6 = maxpool(BN(conv1x1(C5))), P7 = maxpool(P6), both stride 2."""
    p6 = layers.Conv2D(width, 1, padding="same", name="p6_resample_conv")(c5)
    p6 = layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name="p6_resample_bn")(p6)
    p6 = layers.MaxPooling2D(pool_size=3, strides=2, padding="same", name="p6_resample_pool")(p6)
    p7 = layers.MaxPooling2D(pool_size=3, strides=2, padding="same", name="p7_resample_pool")(p6)
    return p6, p7


def location_head(features: Sequence, width: int = 64, depth: int = 3):
    """Shared head over the pyramid levels, flattened to one vector per image.

    Each level goes through ``depth`` x (3x3 conv shared by all levels, batch norm of its own,
    swish), then a shared 3x3 conv with one sigmoid filter; the maps are flattened and
    concatenated, P3 first.

    Parameters
    ----------
    features : sequence of KerasTensor
        ``[P3, ..., P7]``.
    width, depth : int
        Filters and number of the intermediate convolutions.

    Returns
    -------
    KerasTensor
        (N, sum of H_l * W_l), 1364 for 256x256 inputs.
    """
    init = keras.initializers.RandomNormal(mean=0.0, stddev=HEAD_KERNEL_STDDEV)
    convs = [
        layers.Conv2D(width, 3, padding="same", kernel_initializer=init, name=f"head_conv{i}")
        for i in range(depth)
    ]
    prior = -math.log((1 - HEAD_PRIOR_PROBABILITY) / HEAD_PRIOR_PROBABILITY)
    predict = layers.Conv2D(
        1,
        3,
        padding="same",
        activation="sigmoid",
        kernel_initializer="glorot_uniform",
        bias_initializer=keras.initializers.Constant(prior),
        name="head_predict",
    )
    outputs = []
    for level, x in zip(LEVELS, features):
        for i, conv in enumerate(convs):
            x = conv(x)
            x = layers.BatchNormalization(
                momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=f"head_bn{i}_p{level}"
            )(x)
            x = layers.Activation("swish", name=f"head_act{i}_p{level}")(x)
        x = predict(x)
        outputs.append(layers.Flatten(name=f"head_flatten_p{level}")(x))
    return layers.Concatenate(axis=1, name="head_features")(outputs)


def position_head(p3, width: int = 64):
    """The comet's position from P3 as the soft-argmax of a heatmap at stride 4.

    P3 (stride 8) goes through a 3x3 conv, batch norm and swish, is upsampled twice (bilinear)
    and turned into one logit per 4x4 px by a 3x3 conv; :class:`tails.layers.SoftArgmax2D` gives
    the expected position. The logits start at zero (a uniform heatmap: the tile's centre).

    Returns
    -------
    KerasTensor
        (N, 2) = ``[x/W, y/H]``.
    """
    x = layers.Conv2D(width, 3, padding="same", kernel_initializer=CONV_KERNEL_INITIALIZER, name="xy_conv")(p3)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name="xy_bn")(x)
    x = layers.Activation("swish", name="xy_act")(x)
    x = layers.UpSampling2D(2, interpolation="bilinear", name="xy_upsample")(x)
    logits = layers.Conv2D(1, 3, padding="same", kernel_initializer="zeros", name="xy_logits")(x)
    return SoftArgmax2D(name="xy_softargmax")(logits)


#: The ways :func:`Tails` can locate the comet: ``dense`` (the original's Dense layer over the
#: head's maps) and ``heatmap`` (:func:`position_head`).
LOCALISATIONS = ("dense", "heatmap")


def Tails(
    input_shape: tuple[int, int, int] = (256, 256, 3),
    *,
    localisation: str = "dense",
    bifpn_width: int = 64,
    bifpn_layers: int = 3,
    head_depth: int = 3,
    width_coefficient: float = 1.0,
    depth_coefficient: float = 1.0,
    drop_connect_rate: float = 0.2,
    weighted_bifpn: bool = False,
    name: str = "tails",
) -> keras.Model:
    """Build the Tails model (not compiled).

    The defaults give the published architecture (about 3.95 M parameters). The other values are
    meant for quick tests (e.g. ``width_coefficient=0.25, depth_coefficient=0.34, bifpn_width=16,
    bifpn_layers=1, head_depth=1`` on 128x128 inputs).

    Parameters
    ----------
    input_shape : tuple of int
        (height, width, channels); height and width must be multiples of 128 (the stride of P7).
    bifpn_width : int
        Channels of the BiFPN and the head (EfficientDet-D0: 64).
    bifpn_layers : int
        Number of BiFPN layers (D0: 3).
    head_depth : int
        Number of 3x3 convolutions of the head before the prediction (D0: 3).
    width_coefficient, depth_coefficient : float
        EfficientNet scaling of the backbone (B0: 1.0, 1.0).
    drop_connect_rate : float
        Stochastic depth of the backbone (B0: 0.2).
    weighted_bifpn : bool
        Fast normalised fusion in the BiFPN; the original Tails uses plain sums.
    localisation : {"dense", "heatmap"}
        Where ``[x, y]`` come from: the original's ``Dense(3, sigmoid)`` (``dense``), or the
        soft-argmax of a heatmap on P3 (:func:`position_head`), p_comet still coming from the
        Dense layer (``heatmap``). A ``heatmap`` model has every layer of a ``dense`` one, so a
        ``dense`` checkpoint can start its training (:func:`transfer_weights`).
    name : str
        Name of the model.

    Returns
    -------
    keras.Model
        Maps (N, H, W, C) float32 triplets to (N, 3) = ``[p_comet, x/W, y/H]``, x being the column
        and y the row of the comet inside the tile.

    Raises
    ------
    ValueError
        If the input size is not a multiple of 128 or a size parameter is not positive.
    """
    if len(input_shape) != 3 or any(int(s) <= 0 for s in input_shape):
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape!r}")
    if input_shape[0] % 128 or input_shape[1] % 128:
        raise ValueError(
            f"input height and width must be multiples of 128 (the stride of P7), got {input_shape!r}"
        )
    if localisation not in LOCALISATIONS:
        raise ValueError(f"localisation must be one of {', '.join(LOCALISATIONS)}, got {localisation!r}")
    for key, value in (("bifpn_width", bifpn_width), ("bifpn_layers", bifpn_layers), ("head_depth", head_depth)):
        if int(value) < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")

    triplet = keras.Input(shape=tuple(int(s) for s in input_shape), name="triplet")
    # Preprocessing divides each channel by its L2 norm, leaving a root-mean-square of
    # 1 / sqrt(H * W) per pixel (1/256 for 256-px tiles). Scaled back to unit rms here, so that
    # the stem's batch normalisation sees variances well above its epsilon (1e-3): at 1/256 the
    # stem's output variance is ~2e-6 and normalisation divided the signal by ~25.
    scaled = layers.Rescaling(float(np.sqrt(input_shape[0] * input_shape[1])), name="unit_rms")(triplet)
    c3, c4, c5 = efficientnet_backbone(
        scaled,
        width_coefficient=width_coefficient,
        depth_coefficient=depth_coefficient,
        drop_connect_rate=drop_connect_rate,
    )
    p6, p7 = pyramid_inputs(c5, bifpn_width)
    features = [c3, c4, c5, p6, p7]
    for i in range(bifpn_layers):
        features = bifpn_layer(features, bifpn_width, i, weighted=weighted_bifpn)
    x = location_head(features, width=bifpn_width, depth=head_depth)
    # float32 output also under a mixed-precision policy
    outputs = layers.Dense(3, activation="sigmoid", dtype="float32", name="loc")(x)
    if localisation == "heatmap":
        xy = position_head(features[0], bifpn_width)
        outputs = layers.Concatenate(axis=-1, dtype="float32", name="p_xy")([outputs[:, :1], xy])
    return keras.Model(inputs=triplet, outputs=outputs, name=name)


def transfer_weights(source: keras.Model, target: keras.Model) -> int:
    """Copy the weights of a ``dense`` Tails model into a ``heatmap`` one (or between equals).

    Layers are paired in order, skipping the target's position head (``xy_*``), and every pair
    must have the same weight shapes; the position head keeps its initial weights.

    Returns
    -------
    int
        The number of layers whose weights were copied.

    Raises
    ------
    ValueError
        If the two models do not fit each other.
    """
    src, dst = ([layer for layer in m.layers if layer.weights and not layer.name.startswith("xy_")]
                for m in (source, target))
    if len(src) != len(dst):
        raise ValueError(f"the models do not fit: {len(src)} layers with weights against {len(dst)}")
    for a, b in zip(src, dst):
        wa = a.get_weights()
        if [w.shape for w in wa] != [tuple(w.shape) for w in b.weights]:
            raise ValueError(f"the models do not fit: layer {a.name} against {b.name}")
        b.set_weights(wa)
    return len(dst)


def average_checkpoints(checkpoints: Sequence[str | Path], output: str | Path, **kwargs) -> Path:
    """Average the weights of several checkpoints of one model into one (a "model soup").

    Every variable is the plain mean over the checkpoints, batch-norm statistics included.  It
    helps when the checkpoints are fine-tunings of one common ancestor, which keeps them in one
    basin of the loss (Wortsman et al. 2022, "Model soups", ICML, arXiv:2203.05482); averaging
    models trained apart gives nonsense.  Only the model's variables are written, no optimizer.

    Parameters
    ----------
    checkpoints : sequence of path
        Two or more weights files of Tails models of one kind (``dense`` or ``heatmap``).
    output : path
        The ``.weights.h5`` file to write; it must not exist yet.
    **kwargs
        Passed to :func:`load_model` for each checkpoint (the model's options, when not the
        defaults).

    Returns
    -------
    Path
        ``output``.

    Raises
    ------
    ValueError
        If fewer than two checkpoints are given, or they are not of one kind of model.
    FileNotFoundError
        If a checkpoint does not exist.
    FileExistsError
        If ``output`` exists.
    """
    output = Path(output)
    if len(checkpoints) < 2:
        raise ValueError(f"give two or more checkpoints to average, got {len(checkpoints)}")
    if not output.name.endswith(".weights.h5"):
        raise ValueError(f"the output must be a .weights.h5 file, got {str(output)!r}")
    if output.exists():
        raise FileExistsError(f"{output} exists; remove it or choose another output")
    for path in checkpoints:
        if not Path(path).is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist; give the .weights.h5 files to average")
    models = [load_model(path, **kwargs) for path in checkpoints]
    weights = [m.get_weights() for m in models]
    for path, ws in zip(checkpoints[1:], weights[1:]):
        if [w.shape for w in ws] != [w.shape for w in weights[0]]:
            raise ValueError(f"{path} is not the same kind of model as {checkpoints[0]} "
                             "(dense against heatmap localisation?); average only checkpoints of one kind")
    models[0].set_weights([np.mean(g, axis=0, dtype=np.float64).astype(g[0].dtype) for g in zip(*weights)])
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output) as tmp:
        models[0].save_weights(tmp)
    logger.info("averaged %d checkpoints into %s", len(models), output)
    return output


#: Tiles per call of a Keras model in :func:`predict_tiles` (``scripts/profile_model.py``:
#: batches of 32 were a little faster than 64 or 169 in Keras on 2 cores).
DEFAULT_BATCH_SIZE = 32


def predict_tiles(
    model: keras.Model,
    tiles: np.ndarray,
    batch_size: int | None = None,
    jit_compile: bool | None = None,
) -> np.ndarray:
    """Run the model on preprocessed tiles, in batches.

    Uses ``model.predict_on_batch``, which calls the model through its cached compiled predict
    function (a ``tf.function`` under TensorFlow, ``jax.jit`` under JAX) without the per-call
    set-up of ``model.predict``. Every batch but the last has ``batch_size`` tiles.

    Measured with ``scripts/profile_model.py`` (TensorFlow backend, 2 CPU cores shared with other
    jobs): about 12 to 15 CPU-seconds per 169 tiles (one ccd-quadrant), batches of 32 being a little
    faster than 64 or 169; the first call adds the tracing of the predict function (some 15 CPU-s).
    XLA (``jit_compile=True``) is 4 to 5 times slower on CPU; ``mixed_bfloat16`` is about as fast,
    even on cores with AVX512-BF16 (README, *Speed*); eager calls of the model are about 1.5 times
    slower.

    Parameters
    ----------
    model : keras.Model
        A :func:`Tails` model.
    tiles : ndarray, shape (N, H, W, C)
        Preprocessed triplets (:func:`tails.preprocess.preprocess_tiles`).
    batch_size : int, optional
        Tiles per model call; default: the model's ``preferred_batch_size`` if it has one
        (:class:`tails.litert.LiteRTModel`: 2), else :data:`DEFAULT_BATCH_SIZE`.
    jit_compile : bool or None
        Compile the predict function with XLA. None keeps the model's setting (Keras' default:
        off for TensorFlow on CPU); a value sets ``model.jit_compile`` and rebuilds the predict
        function when it changes.

    Returns
    -------
    ndarray, shape (N, 3), float32
        ``[p_comet, x/W, y/H]`` per tile.

    Raises
    ------
    ValueError
        If the tiles do not have the model's input shape, or batch_size is not positive.
    """
    tiles = np.asarray(tiles, dtype=np.float32)
    expected = tuple(model.input_shape[1:])
    if tiles.ndim != 4 or tuple(tiles.shape[1:]) != expected:
        raise ValueError(f"tiles must have shape (N, {', '.join(map(str, expected))}), got {tiles.shape}")
    if batch_size is None:
        batch_size = getattr(model, "preferred_batch_size", DEFAULT_BATCH_SIZE)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer or null, got {batch_size!r}")
    if len(tiles) == 0:
        return np.zeros((0, 3), dtype=np.float32)
    if jit_compile is not None and bool(model.jit_compile) != bool(jit_compile):
        model.jit_compile = bool(jit_compile)
        model.predict_function = None  # rebuilt on the next call
    out = [
        np.asarray(model.predict_on_batch(tiles[i : i + batch_size]), dtype=np.float32)
        for i in range(0, len(tiles), batch_size)
    ]
    return np.concatenate(out, axis=0)


_STEM_SUFFIXES = (".weights.h5", ".h5", ".keras")


def find_bundled_checkpoint(models_dir: str | Path | None = None) -> Path:
    """The newest bundled model: ``models/tails-*/tails.weights.h5``, the latest by folder name.

    Folder names carry the date (``tails-YYYYMMDD``, and a letter for a later model of the same
    day: ``tails-YYYYMMDDb``), so the lexically last one is the newest.

    Parameters
    ----------
    models_dir : str or Path, optional
        Where to look; :data:`DEFAULT_MODELS_DIR` by default.

    Raises
    ------
    FileNotFoundError
        If no bundled model exists.
    """
    models_dir = Path(models_dir) if models_dir is not None else DEFAULT_MODELS_DIR
    found = sorted(models_dir.glob(f"tails-*/{CHECKPOINT_FILENAME}"), key=lambda p: p.parent.name)
    if not found:
        raise FileNotFoundError(
            f"no bundled Tails model found (looked for {models_dir}/tails-*/{CHECKPOINT_FILENAME}); "
            "train one with `tails train` or pass --checkpoint=PATH to a .weights.h5 file"
        )
    return found[-1]


def model_name(checkpoint: str | Path | None = None) -> str:
    """The name of a model, written as ``tails_v`` in the outputs.

    Parameters
    ----------
    checkpoint : str or Path, optional
        A ``.weights.h5`` file; None means the bundled model.

    Returns
    -------
    str
        The folder name for a bundled-style checkpoint (``.../tails-20261124/tails.weights.h5``
        gives ``"tails-20261124"``), otherwise the file name without its ``.weights.h5`` suffix.
    """
    path = find_bundled_checkpoint() if checkpoint is None else Path(checkpoint)
    if path.name == CHECKPOINT_FILENAME and path.parent.name.startswith("tails-"):
        return path.parent.name
    name = path.name
    for suffix in _STEM_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return path.stem


def load_model(checkpoint: str | Path | None = None, **kwargs) -> keras.Model:
    """Build :func:`Tails` and load its weights.

    Parameters
    ----------
    checkpoint : str or Path, optional
        A Keras ``.weights.h5`` file; None means the bundled model
        (:func:`find_bundled_checkpoint`).
    **kwargs
        Passed to :func:`Tails` (input shape, sizes); they must match the checkpoint's. Without
        ``localisation``, the one that fits the file is used.

    Returns
    -------
    keras.Model
        The model, ready for :func:`predict_tiles`.

    Raises
    ------
    FileNotFoundError
        If the checkpoint does not exist, or there is no bundled model.
    ValueError
        If the checkpoint is not a ``.weights.h5`` file, or was made for a different architecture.
    """
    path = find_bundled_checkpoint() if checkpoint is None else Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist; pass --checkpoint=PATH to a .weights.h5 file "
            "or train a model with `tails train`"
        )
    if not path.name.endswith(".weights.h5"):
        raise ValueError(
            f"checkpoint {path} is not a Keras weights file: its name must end with .weights.h5 "
            "(as written by model.save_weights and `tails train`)"
        )
    try:
        model = _model_for(path, kwargs)
        model.load_weights(path)
    except (ValueError, KeyError) as err:
        raise ValueError(
            f"checkpoint {path} was made for a different architecture than Tails({_kwargs_repr(kwargs)}): "
            f"its weights do not fit ({_first_line(err)}). Pass the model options it was trained "
            "with, or use a checkpoint trained for this version of Tails."
        ) from err
    except OSError as err:
        raise ValueError(f"checkpoint {path} cannot be read as an HDF5 weights file: {err}") from err
    logger.info("loaded Tails weights from %s (%d parameters)", path, model.count_params())
    return model


def _model_for(path: Path, kwargs: dict) -> keras.Model:
    """The :func:`Tails` model whose variables the weights file holds.

    Without ``localisation`` in ``kwargs``, each of :data:`LOCALISATIONS` is tried in turn.
    """
    *others, last = [kwargs["localisation"]] if "localisation" in kwargs else list(LOCALISATIONS)
    for localisation in others:
        model = Tails(**{**kwargs, "localisation": localisation})
        try:
            _check_weights_file(path, model)
            return model
        except ValueError:
            pass
    model = Tails(**{**kwargs, "localisation": last})
    _check_weights_file(path, model)
    return model


def _check_weights_file(path: Path, model: keras.Model) -> None:
    """Raise ValueError unless the file holds exactly the model's variables (by number and shape).

    Keras loads a ``.weights.h5`` file layer by layer and ignores layers that the file has but the
    model lacks, so a checkpoint of a deeper model would load silently without this check.
    """
    import h5py  # a dependency of keras' weights format

    shapes: list[tuple] = []
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda name, obj: shapes.append(tuple(obj.shape))
            if isinstance(obj, h5py.Dataset) and name.startswith("layers/")
            else None
        )
    expected = sorted(tuple(int(d) for d in w.shape) for w in model.weights)
    if sorted(shapes) != expected:
        n_params = sum(int(np.prod(s)) for s in shapes)
        raise ValueError(
            f"the file has {len(shapes)} variables ({n_params} values), "
            f"the model {len(expected)} ({model.count_params()} values)"
        )


def _kwargs_repr(kwargs: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def _first_line(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    text = " ".join(lines[:3]) if lines else type(err).__name__
    return re.sub(r"\s+", " ", text)[:400]
