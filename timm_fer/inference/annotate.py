"""Photos with their faces marked: each face's box with its top expression and confidence drawn on the image."""
from typing import Optional, Sequence, Tuple

from PIL import Image, ImageDraw, ImageFont

__all__ = ['FaceLabel', 'annotate_image']

FaceLabel = Tuple[Tuple[int, int, int, int], str]
"""A face's box (x0, y0, x1, y1) in pixels and the text drawn above it."""

BOX_COLOUR = (255, 210, 0)
TEXT_COLOUR = (0, 0, 0)


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
