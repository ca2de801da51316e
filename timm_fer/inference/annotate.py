"""Photos with their faces marked: each face's box with its top expression and confidence drawn on the image."""
from pathlib import Path
from typing import Optional, Sequence, Tuple

from PIL import Image, ImageDraw, ImageFont

from ..constants import ANNOTATED_FORMATS
from ..errors import ConfigError

__all__ = ['ANNOTATED_FORMATS', 'FaceLabel', 'annotate_image', 'annotated_suffix', 'save_annotated_image']

FaceLabel = Tuple[Tuple[int, int, int, int], str]
"""A face's box (x0, y0, x1, y1) in pixels and the text drawn above it."""

BOX_COLOUR = (255, 210, 0)
TEXT_COLOUR = (0, 0, 0)
LOSSY_QUALITY = 90
"""JPEG/WebP quality of annotated photos: hard to tell from the input, a fraction of a PNG's size."""
_LOSSY_SUFFIXES = ('.jpg', '.jpeg', '.webp')


def annotate_image(image: Image.Image, faces: Sequence[FaceLabel], line_width: Optional[int] = None) -> Image.Image:
    """A copy of ``image`` with each face's box drawn and its text on a filled tag above the box (inside the image)."""
    annotated = image.convert('RGB')
    draw = ImageDraw.Draw(annotated)
    scale = max(annotated.size) / 640
    width = line_width or max(2, round(2 * scale))
    font = ImageFont.load_default(size=max(12, round(14 * scale)))
    for (x0, y0, x1, y1), text in faces:
        draw.rectangle([x0, y0, x1, y1], outline=BOX_COLOUR, width=width)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tag_height = bottom - top + 2 * width
        tag_top = y0 - tag_height if y0 >= tag_height else min(y1, annotated.height - tag_height)
        draw.rectangle([x0, tag_top, x0 + right - left + 2 * width, tag_top + tag_height], fill=BOX_COLOUR)
        draw.text((x0 + width - left, tag_top + width - top), text, fill=TEXT_COLOUR, font=font)
    return annotated


def annotated_suffix(input_path: Path, image_format: str = 'same') -> str:
    """The file suffix of ``input_path``'s annotated copy.

    Args:
        input_path: The photo that was annotated.
        image_format: One of :data:`ANNOTATED_FORMATS`: 'same' keeps a JPEG or WebP input's suffix (PNG for any other
            input), 'png' and 'jpeg' write that format whatever the input.
    """
    if image_format not in ANNOTATED_FORMATS:
        raise ConfigError(f"annotated image format must be one of {', '.join(ANNOTATED_FORMATS)}, got "
                          f"'{image_format}'.")
    if image_format == 'same':
        suffix = input_path.suffix.lower()
        return suffix if suffix in _LOSSY_SUFFIXES else '.png'
    return '.jpg' if image_format == 'jpeg' else '.png'


def save_annotated_image(image: Image.Image, path: Path) -> None:
    """Write an annotated photo in the format its suffix names, lossy ones at :data:`LOSSY_QUALITY`."""
    options = {'quality': LOSSY_QUALITY} if path.suffix.lower() in _LOSSY_SUFFIXES else {}
    image.save(path, **options)
