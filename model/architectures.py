"""The CNNs we train: the seed reference design and our default.

Both take float32 (None, 28, 28, 1) pixels in [0, 255] and scale them inside the model, so the
scaling is defined exactly once and travels with the exported SavedModel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
from keras import layers, ops

from app.model_format import INPUT_NAME, INPUT_SHAPE

PIXEL_SCALE = 1 / 255


@keras.saving.register_keras_serializable(package="cnn_serve")
class RandomStrokeWidth(layers.Layer):  # type: ignore[misc]
    """Randomly thickens or thins strokes (a soft grey-scale dilation or erosion), training only.

    Uploads drawn with a thick brush or a fine pen end up with strokes unlike MNIST's pen after
    preprocessing; this teaches the model not to care.
    """

    def __init__(self, strength: float = 0.6, seed: int | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.strength = strength
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images: Any, training: bool | None = None) -> Any:
        if not training:
            return images
        thick = ops.max_pool(images, pool_size=3, strides=1, padding="same")
        thin = -ops.max_pool(-images, pool_size=3, strides=1, padding="same")
        amount = keras.random.uniform(
            (ops.shape(images)[0], 1, 1, 1),
            minval=-self.strength,
            maxval=self.strength,
            seed=self.seed_generator,
        )
        return ops.where(
            amount > 0, images + amount * (thick - images), images - amount * (thin - images)
        )

    def get_config(self) -> dict[str, object]:
        return {**super().get_config(), "strength": self.strength, "seed": self.seed}


def build_seed(num_classes: int = 10) -> keras.Model:
    """The seed design, layer for layer: the reference every figure is compared with."""
    return keras.Sequential(
        [
            keras.Input(shape=INPUT_SHAPE, name=INPUT_NAME),
            layers.Rescaling(PIXEL_SCALE),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dense(64, activation="relu"),
            layers.Dense(num_classes, activation="softmax"),
        ],
        name="seed",
    )


def build_augmentation(seed: int | None = None) -> keras.Sequential:
    """Random rotations, shifts, zooms and stroke widths, on [0, 255] pixels.

    Kept out of the exported model: Keras 3's random layers augment whenever `training` is not
    explicitly False, which is how a SavedModel's serving function calls them.
    """
    return keras.Sequential(
        [
            layers.RandomRotation(0.035, fill_mode="constant", seed=seed),  # about +-12 degrees
            layers.RandomTranslation(0.08, 0.08, fill_mode="constant", seed=seed),
            layers.RandomZoom((-0.12, 0.12), fill_mode="constant", seed=seed),
            RandomStrokeWidth(0.6, seed=seed),
        ],
        name="augmentation",
    )


def build_default(num_classes: int = 10) -> keras.Model:
    """Three conv stages with batch norm and dropout: about 3x the seed's FLOPs.

    Trained behind `build_augmentation()`.
    """

    def conv_block(filters: int) -> list[layers.Layer]:
        return [
            layers.Conv2D(filters, 3, padding="same", use_bias=False),
            layers.BatchNormalization(momentum=0.9),
            layers.ReLU(),
            layers.MaxPooling2D(2),
        ]

    return keras.Sequential(
        [
            keras.Input(shape=INPUT_SHAPE, name=INPUT_NAME),
            layers.Rescaling(PIXEL_SCALE),
            *conv_block(32),
            *conv_block(64),
            *conv_block(128),
            layers.Flatten(),
            layers.Dropout(0.3),
            layers.Dense(128, use_bias=False),
            layers.BatchNormalization(momentum=0.9),
            layers.ReLU(),
            layers.Dropout(0.4),
            layers.Dense(num_classes, activation="softmax"),
        ],
        name="default",
    )


ARCHITECTURES: dict[str, Callable[..., keras.Model]] = {
    "seed": build_seed,
    "default": build_default,
}


def inference_flops(model: keras.Model) -> int:
    """Multiply-adds x 2 of the convolution and dense layers for one image (what dominates)."""
    flops = 0
    for layer in _leaf_layers(model):
        if isinstance(layer, layers.Conv2D):
            kernel_height, kernel_width, in_channels, out_channels = layer.kernel.shape
            _, out_height, out_width, _ = layer.output.shape
            multiply_adds = out_height * out_width * kernel_height * kernel_width
            flops += 2 * multiply_adds * in_channels * out_channels
        elif isinstance(layer, layers.Dense):
            in_features, out_features = layer.kernel.shape
            flops += 2 * in_features * out_features
    return int(flops)


def _leaf_layers(model: keras.Model) -> list[layers.Layer]:
    leaves: list[layers.Layer] = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            leaves.extend(_leaf_layers(layer))
        else:
            leaves.append(layer)
    return leaves
