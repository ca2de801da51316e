"""Confusion matrix picture (PNG, drawn with Pillow): row-normalised cells with percentages and counts."""
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from ..utils import write_atomic

__all__ = ['draw_confusion_matrix']

_CELL = 76
_FONT_SIZE = 13


def _cell_colour(fraction: float) -> tuple:
    """White for 0, dark blue for 1."""
    start, end = (247, 251, 255), (8, 48, 107)
    return tuple(round(a + (b - a) * fraction) for a, b in zip(start, end))


def draw_confusion_matrix(confusion: Sequence[Sequence[int]], classes: Sequence[str], path: str, title: str) -> None:
    """Write the confusion matrix as a PNG: true class per row, predicted class per column.

    Each cell shows the share of its row (the per-class accuracy on the diagonal) and the image count; the colour
    follows the share.

    Args:
        confusion: Counts, row = true class.
        classes: Class names, in label order.
        path: PNG file to write (atomically).
        title: Line drawn above the matrix.
    """
    font = ImageFont.load_default(size=_FONT_SIZE)
    bold = ImageFont.load_default(size=_FONT_SIZE + 3)
    measure = ImageDraw.Draw(Image.new('RGB', (1, 1)))
    label_width = max(int(measure.textlength(name, font=font)) for name in classes) + 24
    num_classes = len(classes)
    top = 64
    width = label_width + num_classes * _CELL + 16
    height = top + num_classes * _CELL + 56
    image = Image.new('RGB', (max(width, int(measure.textlength(title, font=bold)) + 24), height), 'white')
    draw = ImageDraw.Draw(image)
    draw.text((12, 10), title, fill='black', font=bold)
    draw.text((label_width, top - 22), 'predicted', fill='dimgray', font=font)
    for row, counts in enumerate(confusion):
        total = sum(counts)
        y = top + row * _CELL
        draw.text((label_width - 12, y + _CELL // 2), classes[row], fill='black', font=font, anchor='rm')
        for column, count in enumerate(counts):
            fraction = count / total if total else 0.
            x = label_width + column * _CELL
            draw.rectangle((x, y, x + _CELL - 1, y + _CELL - 1), fill=_cell_colour(fraction), outline='lightgray')
            ink = 'white' if fraction > 0.5 else 'black'
            centre = (x + _CELL // 2, y + _CELL // 2)
            draw.text((centre[0], centre[1] - 8), f'{100 * fraction:.1f}%', fill=ink, font=font, anchor='mm')
            draw.text((centre[0], centre[1] + 10), str(count), fill=ink, font=font, anchor='mm')
    bottom = top + num_classes * _CELL + 8
    for column, name in enumerate(classes):
        x = label_width + column * _CELL + _CELL // 2
        draw.text((x, bottom + (column % 2) * 16), name, fill='black', font=font, anchor='mt')
    draw.text((12, top - 22), 'true', fill='dimgray', font=font)
    write_atomic(path, lambda temporary_path: image.save(temporary_path, format='PNG'))
