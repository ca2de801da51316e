"""Expressions over time: one PNG per video, drawn with Pillow, with a panel per face track.

Each panel stacks the track's expression probabilities over time (they add up to 1, so the height of each colour is
that expression's probability), smoothed by a centred moving average over a window of seconds, and has a band
underneath coloured by the top expression of the smoothed probabilities. Stretches where the track was not seen
(longer than 2.5 sampling intervals) are left blank.

Live sources cannot wait for the samples after the present: :class:`TrackSmoother` smooths their tracks one frame at
a time with the same moving average, ending at each sample rather than centred on it (the causal form of
:func:`smooth_probabilities`).
"""
from collections import deque
from typing import Deque, Dict, List, Mapping, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..utils import write_atomic

__all__ = ['TrackSmoother', 'draw_timeline', 'label_colours', 'smooth_probabilities', 'track_segments']

KNOWN_COLOURS = {
    'neutral': (150, 150, 150), 'happiness': (240, 190, 20), 'happy': (240, 190, 20), 'surprise': (255, 127, 14),
    'sadness': (31, 119, 180), 'sad': (31, 119, 180), 'anger': (214, 39, 40), 'angry': (214, 39, 40),
    'disgust': (44, 160, 44), 'fear': (148, 103, 189), 'contempt': (140, 86, 75),
}
"""Colours of the usual expression names, the same whatever the dataset's label order."""
OTHER_COLOURS = ((23, 190, 207), (227, 119, 194), (188, 189, 34), (127, 127, 127), (31, 119, 180), (255, 127, 14))
MAX_PANELS = 12
"""At most this many tracks are drawn (those seen in most frames)."""
GAP_INTERVALS = 2.5
"""A track's samples further apart than this many sampling intervals are drawn as separate stretches."""

_WIDTH, _LEFT, _RIGHT = 1000, 150, 24
_PANEL, _BAND, _BELOW = 110, 14, 30


def label_colours(labels: Sequence[str]) -> List[Tuple[int, int, int]]:
    """A colour per label: fixed ones for the usual expression names, others in turn."""
    others = iter(OTHER_COLOURS * (len(labels) // len(OTHER_COLOURS) + 1))
    return [KNOWN_COLOURS.get(label.lower()) or next(others) for label in labels]


def track_segments(times: np.ndarray, interval: float) -> List[slice]:
    """The stretches of a track's sorted sample times without a gap longer than ``GAP_INTERVALS`` intervals."""
    breaks = np.flatnonzero(np.diff(times) > GAP_INTERVALS * interval) + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks, [len(times)]])
    return [slice(int(s), int(e)) for s, e in zip(starts, ends)]


def smooth_probabilities(times: np.ndarray, probabilities: np.ndarray, window: float,
                         causal: bool = False) -> np.ndarray:
    """The moving average of (N, C) probabilities at sorted sample times over ``window`` seconds (no smoothing for a
    window of 0). Call it per stretch, so that averages do not reach across gaps.

    Args:
        times: Sample times in seconds (N,), sorted.
        probabilities: Probabilities (N, C).
        window: Width of the window in seconds.
        causal: Average the samples of the ``window`` seconds up to each sample, not those within ``window`` / 2
            seconds of it: the same average, ``window`` / 2 seconds late, which needs no sample after the present.
    """
    if window <= 0 or len(times) < 2:
        return probabilities
    before, after = (window, 0.) if causal else (window / 2, window / 2)
    low = np.searchsorted(times, times - before - 1e-9, side='left')
    high = np.searchsorted(times, times + after + 1e-9, side='right')
    cumulative = np.concatenate([np.zeros((1, probabilities.shape[1])), np.cumsum(probabilities, axis=0)])
    return (cumulative[high] - cumulative[low]) / (high - low)[:, None]


class TrackSmoother:
    """Smooth the probabilities of live face tracks as their frames come: each track's newest sample is averaged with
    its samples of the last ``window`` seconds (the causal :func:`smooth_probabilities`).

    Args:
        window: Seconds of the moving average (0: none); it may be changed between frames.
    """

    def __init__(self, window: float) -> None:
        self.window = window
        self._samples: Dict[int, Deque[Tuple[float, np.ndarray]]] = {}

    def __call__(self, time: float, tracks: Mapping[int, Sequence[float]]) -> Dict[int, np.ndarray]:
        """The smoothed probabilities of each track seen in the frame at ``time`` seconds, from its probabilities
        there (track id -> probabilities in label order). Tracks unseen for longer than the window are forgotten."""
        smoothed = {}
        for track, probabilities in tracks.items():
            samples = self._samples.setdefault(track, deque())
            if samples and time < samples[-1][0]:  # a clock that went back: start the track's average again
                samples.clear()
            samples.append((time, np.asarray(probabilities, dtype=np.float64)))
            while samples[0][0] < time - self.window - 1e-9:
                samples.popleft()
            times = np.array([t for t, _ in samples])
            smoothed[track] = smooth_probabilities(times, np.stack([p for _, p in samples]), self.window, True)[-1]
        for track in [t for t, samples in self._samples.items() if samples[-1][0] < time - self.window - 1e-9]:
            del self._samples[track]
        return smoothed


def _tick_step(duration: float) -> float:
    """A round step giving at most about ten ticks."""
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600):
        if duration / step <= 10:
            return step
    return 3600. * np.ceil(duration / 36000.)


def draw_timeline(
        tracks: Dict[int, Tuple[np.ndarray, np.ndarray]],
        labels: Sequence[str],
        duration: float,
        interval: float,
        path: str,
        title: str,
        window: float,
) -> None:
    """Write the expression timeline of one video as a PNG.

    Args:
        tracks: Track id -> (sample times in seconds (N,), probabilities (N, C) in label order).
        labels: The label names.
        duration: Length of the time axis in seconds.
        interval: The sampling interval in seconds (the frame interval when every frame was sampled).
        path: PNG file to write (atomically).
        title: First line of the picture.
        window: Smoothing window in seconds (0: none).
    """
    font, bold = ImageFont.load_default(size=13), ImageFont.load_default(size=15)
    shown = sorted(sorted(tracks, key=lambda t: -len(tracks[t][0]))[:MAX_PANELS])
    colours = label_colours(labels)
    top = 84
    height = top + max(1, len(shown)) * (_PANEL + _BAND + _BELOW) + 24
    image = Image.new('RGB', (_WIDTH, height), 'white')
    draw = ImageDraw.Draw(image)
    smoothing = f'smoothed with a centred {window:g} s moving average' if window > 0 else 'not smoothed'
    note = f'; {len(shown)} of {len(tracks)} tracks shown (those seen longest)' if len(shown) < len(tracks) else ''
    draw.text((12, 8), title, fill='black', font=bold)
    draw.text((12, 30), f'stacked expression probabilities per face track, {smoothing}; band: top expression{note}',
              fill='dimgray', font=font)
    x = 12
    for label, colour in zip(labels, colours):
        draw.rectangle((x, 56, x + 12, 68), fill=colour)
        draw.text((x + 16, 62), label, fill='black', font=font, anchor='lm')
        x += 16 + int(draw.textlength(label, font=font)) + 18
    plot_width = _WIDTH - _LEFT - _RIGHT
    span = max(duration, 1e-6)

    def to_x(t: np.ndarray) -> np.ndarray:
        return _LEFT + np.clip(t, 0, span) / span * plot_width

    if not shown:
        draw.text((_LEFT, top + _PANEL // 2), 'no face was tracked in this video', fill='black', font=font)
    step = _tick_step(span)
    for row, track in enumerate(shown):
        y0 = top + row * (_PANEL + _BAND + _BELOW)
        y1 = y0 + _PANEL
        times, probabilities = tracks[track]
        order = np.argsort(times, kind='stable')
        times, probabilities = times[order], probabilities[order]
        draw.rectangle((_LEFT, y0, _LEFT + plot_width, y1 + _BAND), outline='lightgray')
        for tick in np.arange(0., span + 1e-9, step):
            tx = float(to_x(np.array(tick)))
            draw.line((tx, y0, tx, y1 + _BAND + 4), fill=(225, 225, 225))
            draw.text((tx, y1 + _BAND + 6), f'{tick:g}', fill='dimgray', font=font, anchor='mt')
        for value in (0., 0.5, 1.):
            draw.text((_LEFT - 4, y1 - value * _PANEL), f'{value:g}', fill='dimgray', font=font, anchor='rm')
        for part in track_segments(times, interval):
            t = times[part]
            smoothed = smooth_probabilities(t, probabilities[part], window)
            xs = to_x(np.concatenate([[t[0] - interval / 2], t, [t[-1] + interval / 2]]))
            values = np.concatenate([smoothed[:1], smoothed, smoothed[-1:]])
            cumulative = np.concatenate([np.zeros((len(values), 1)), np.cumsum(values, axis=1)], axis=1)
            for c, colour in enumerate(colours):
                upper = list(zip(xs, y1 - cumulative[:, c + 1] * _PANEL))
                lower = list(zip(xs[::-1], y1 - cumulative[::-1, c] * _PANEL))
                draw.polygon(upper + lower, fill=colour)
            edges = to_x(np.concatenate([[t[0] - interval / 2], (t[1:] + t[:-1]) / 2, [t[-1] + interval / 2]]))
            best = smoothed.argmax(axis=1)
            for left, right, c in zip(edges[:-1], edges[1:], best):
                draw.rectangle((left, y1 + 4, max(left, right - 1), y1 + _BAND), fill=colours[c])
        tops = np.bincount(probabilities.argmax(axis=1), minlength=len(labels))
        leading = int(tops.argmax())
        draw.text((12, y0 + 4), f'track {track}', fill='black', font=bold)
        draw.text((12, y0 + 26), f'{len(times)} frame{"s" if len(times) != 1 else ""}', fill='dimgray', font=font)
        draw.text((12, y0 + 44), f'{100 * tops[leading] / len(times):.0f}% {labels[leading]}', fill='dimgray',
                  font=font)
    draw.text((_LEFT + plot_width, height - 8), 'time (s)', fill='dimgray', font=font, anchor='rb')
    write_atomic(path, lambda temporary_path: image.save(temporary_path, format='PNG'))
