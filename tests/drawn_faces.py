"""Faces made for the tests and benchmarks: a cartoon face that RetinaFace detects, stand-in detections, and
generated faces whose class is their brightness."""
from typing import Tuple

import torch
from PIL import Image, ImageDraw

from timm_fer.faces import ARCFACE_TEMPLATE_112, DetectedFace


def draw_face(size: int = 240) -> Image.Image:
    """A cartoon face (skin oval, eyes, brows, nose, mouth) that RetinaFace detects."""
    image = Image.new('RGB', (size, size), (90, 120, 160))
    draw = ImageDraw.Draw(image)
    s = size / 240
    draw.ellipse([60 * s, 30 * s, 180 * s, 200 * s], fill=(224, 180, 150))
    for x in (95, 145):
        draw.ellipse([(x - 12) * s, 95 * s, (x + 12) * s, 107 * s], fill=(255, 255, 255))
        draw.ellipse([(x - 5) * s, 96 * s, (x + 5) * s, 106 * s], fill=(40, 30, 20))
        draw.line([(x - 14) * s, 86 * s, (x + 14) * s, 84 * s], fill=(80, 50, 30), width=max(1, int(4 * s)))
    draw.polygon([(120 * s, 105 * s), (110 * s, 140 * s), (130 * s, 140 * s)], fill=(200, 150, 125))
    draw.chord([95 * s, 150 * s, 145 * s, 175 * s], 0, 180, fill=(150, 40, 50))
    return image


def stub_face(x: float, y: float, scale: float) -> DetectedFace:
    """A face whose landmarks are the template scaled by ``scale`` and moved to (x, y)."""
    return DetectedFace(box=(x, y, x + 112 * scale, y + 112 * scale),
                        landmarks=ARCFACE_TEMPLATE_112 * scale + [x, y], score=0.99)


def generated_faces(n: int, generator: torch.Generator, size: int = 32) -> Tuple[torch.Tensor, torch.Tensor]:
    """``n`` generated face tensors (3 x ``size`` x ``size``) and their labels (7 classes): each class is a
    brightness, plus noise. A model learns them in a few steps, so its margins mean something when two ways of running
    it are compared."""
    labels = torch.randint(7, (n,), generator=generator)
    brightness = torch.linspace(-1, 1, 7)[labels].view(n, 1, 1, 1)
    return brightness + 0.3 * torch.randn(n, 3, size, size, generator=generator), labels
