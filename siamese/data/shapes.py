"""A seeded synthetic data set: six kinds of 40x50 grayscale objects at random position,
scale and rotation, with pixel noise. Fast to make, hard enough to need a real network."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from siamese.config import IMAGE_HEIGHT, IMAGE_WIDTH
from siamese.data.images import ImageSet

SHAPE_CLASSES = ("circle", "square", "triangle", "cross", "ring", "star")
IMAGES_PER_CLASS = 200
NOISE_STD = 0.08


def polygon(
    center: tuple[float, float], radius: float, sides: int, angle: float
) -> list[tuple[float, float]]:
    cx, cy = center
    return [
        (
            cx + radius * math.cos(angle + 2 * math.pi * k / sides),
            cy + radius * math.sin(angle + 2 * math.pi * k / sides),
        )
        for k in range(sides)
    ]


def draw(shape_points: list[list[tuple[float, float]]], outline_only: bool = False) -> np.ndarray:
    canvas = Image.new("L", (IMAGE_WIDTH, IMAGE_HEIGHT), 0)
    pen = ImageDraw.Draw(canvas)
    for points in shape_points:
        if outline_only:
            pen.polygon(points, outline=255, width=2)
        else:
            pen.polygon(points, fill=255)
    return np.asarray(canvas, np.float32) / 255.0


def _star(center: tuple[float, float], radius: float, angle: float) -> list[tuple[float, float]]:
    outer = polygon(center, radius, 5, angle)
    inner = polygon(center, radius * 0.45, 5, angle + math.pi / 5)
    return [p for pair in zip(outer, inner, strict=True) for p in pair]


def _cross(
    center: tuple[float, float], radius: float, angle: float
) -> list[list[tuple[float, float]]]:
    arms = []
    for arm_angle in (angle, angle + math.pi / 2):
        c, s = math.cos(arm_angle), math.sin(arm_angle)
        half_len, half_w = radius, radius * 0.28
        corners = [
            (-half_len, -half_w),
            (half_len, -half_w),
            (half_len, half_w),
            (-half_len, half_w),
        ]
        arms.append([(center[0] + x * c - y * s, center[1] + x * s + y * c) for x, y in corners])
    return arms


def render_shape(kind: str, rng: np.random.Generator) -> np.ndarray:
    radius = float(rng.uniform(7.0, 15.0))
    center = (
        float(rng.uniform(radius, IMAGE_WIDTH - radius)),
        float(rng.uniform(radius, IMAGE_HEIGHT - radius)),
    )
    angle = float(rng.uniform(0, 2 * math.pi))
    if kind == "circle":
        image = draw([polygon(center, radius, 32, angle)])
    elif kind == "ring":
        image = draw([polygon(center, radius, 32, angle)], outline_only=True)
    elif kind == "square":
        image = draw([polygon(center, radius, 4, angle)])
    elif kind == "triangle":
        image = draw([polygon(center, radius, 3, angle)])
    elif kind == "star":
        image = draw([_star(center, radius, angle)])
    else:
        image = draw(_cross(center, radius, angle))
    noisy = image * rng.uniform(0.6, 1.0) + rng.normal(0.0, NOISE_STD, image.shape)
    return np.clip(noisy, 0.0, 1.0).astype(np.float32)


def load_shapes_set(seed: int = 0, per_class: int = IMAGES_PER_CLASS) -> ImageSet:
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label, kind in enumerate(SHAPE_CLASSES):
        for _ in range(per_class):
            images.append(render_shape(kind, rng))
            labels.append(label)
    origins = tuple(f"shapes[{i}]" for i in range(len(labels)))
    return ImageSet(
        np.stack(images), np.asarray(labels, np.int64), SHAPE_CLASSES, origins, "shapes"
    )
