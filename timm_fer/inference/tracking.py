"""Face tracks across video frames: the same person keeps one id while they stay in view.

Each new frame's faces are matched to the open tracks greedily, best pair first. A pair's score adds three terms in
[0, 1]: the overlap (IoU) of the face's box with the box the track predicts for this time (its last box moved at
its recent speed), how close the two centres are relative to the face size, and how alike the two faces look (the
cosine similarity of small, mirror-symmetrised grayscale thumbnails of the aligned faces). A pair is a candidate only
when the boxes overlap or the centres are close, and when the faces look alike enough or the boxes overlap by half
or more (a face that stays in place is the same face, whatever its lighting); faces left over open new tracks. A
track that finds no face (a missed detection, a turned head, a frame without faces) waits up to ``max_gap``
seconds, its reach growing with each frame missed, before it ends.
"""
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

__all__ = ['FaceTracker', 'appearance', 'box_iou']

Box = Tuple[float, float, float, float]

THUMBNAIL = 16
"""Side of the grayscale thumbnail that describes a face's appearance."""


def appearance(face: Image.Image) -> np.ndarray:
    """A unit vector that describes an aligned face: its 16x16 grayscale thumbnail, made mirror-symmetric (so a
    mirrored face matches), less its mean."""
    pixels = np.asarray(face.convert('L').resize((THUMBNAIL, THUMBNAIL), Image.Resampling.BOX), dtype=np.float64)
    vector = (pixels + pixels[:, ::-1]).ravel()
    vector -= vector.mean()
    norm = np.linalg.norm(vector)
    return vector / norm if norm > 0 else vector


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box of ``a`` (N, 4) with every box of ``b`` (M, 4): (N, M)."""
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    intersection = np.clip(bottom_right - top_left, 0, None).prod(axis=-1)
    area_a = (a[:, 2:] - a[:, :2]).prod(axis=-1)
    area_b = (b[:, 2:] - b[:, :2]).prod(axis=-1)
    return intersection / np.maximum(area_a[:, None] + area_b[None, :] - intersection, 1e-9)


@dataclass
class _Track:
    id: int
    box: np.ndarray
    velocity: np.ndarray
    look: Optional[np.ndarray]
    time: float
    missed: int = 0

    def predicted(self, time: float) -> np.ndarray:
        """The box moved at the track's speed to ``time``."""
        shift = self.velocity * (time - self.time)
        return self.box + np.concatenate([shift, shift])


class FaceTracker:
    """Give the faces of consecutive frames track ids, stable while a face stays in view.

    Call :meth:`update` once per frame, in time order, with that frame's faces (an empty list for a frame without
    faces).

    Args:
        max_gap: Seconds a track waits for its face before it ends.
        min_iou: Boxes overlapping at least this much are candidates whatever their distance.
        max_distance: Centres at most this many face sizes apart are candidates (times one plus the frames the
            track missed).
        min_appearance: Faces whose thumbnails are less alike than this (cosine similarity) are matched only when
            their boxes overlap by ``same_place_iou`` or more. The same person's aligned faces score about 0.85,
            two people's about 0.45.
        same_place_iou: Boxes that overlap this much match whatever the faces look like.
    """

    def __init__(self, max_gap: float = 1., min_iou: float = 0.1, max_distance: float = 1.,
                 min_appearance: float = 0.3, same_place_iou: float = 0.5) -> None:
        self.max_gap = max_gap
        self.min_iou = min_iou
        self.max_distance = max_distance
        self.min_appearance = min_appearance
        self.same_place_iou = same_place_iou
        self.tracks: List[_Track] = []
        self.next_id = 0

    def update(self, time: float, boxes: Sequence[Box], looks: Optional[Sequence[np.ndarray]] = None) -> List[int]:
        """The track id of each face of the frame at ``time``.

        Args:
            time: The frame's time in seconds.
            boxes: The faces' boxes (x0, y0, x1, y1).
            looks: The faces' :func:`appearance` vectors; None matches by position alone.
        """
        self.tracks = [t for t in self.tracks if time - t.time <= self.max_gap]
        boxes_array = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        ids: List[Optional[int]] = [None] * len(boxes_array)
        for track_index, face in self._matches(time, boxes_array, looks):
            track = self.tracks[track_index]
            self._follow(track, time, boxes_array[face], None if looks is None else looks[face])
            ids[face] = track.id
        matched = set(ids)
        for track in self.tracks:
            if track.id not in matched:
                track.missed += 1
        for face, box in enumerate(boxes_array):
            if ids[face] is None:
                self.tracks.append(_Track(self.next_id, box, np.zeros(2), None if looks is None else looks[face], time))
                ids[face] = self.next_id
                self.next_id += 1
        return ids

    def _matches(self, time: float, boxes: np.ndarray, looks: Optional[Sequence[np.ndarray]]) -> List[Tuple[int, int]]:
        """(track index, face index) pairs, best score first, each track and face used once."""
        if not self.tracks or not len(boxes):
            return []
        predicted = np.stack([t.predicted(time) for t in self.tracks])
        iou = box_iou(predicted, boxes)
        centres_t = (predicted[:, :2] + predicted[:, 2:]) / 2
        centres_f = (boxes[:, :2] + boxes[:, 2:]) / 2
        sizes_t = np.sqrt((predicted[:, 2:] - predicted[:, :2]).prod(axis=-1))
        sizes_f = np.sqrt((boxes[:, 2:] - boxes[:, :2]).prod(axis=-1))
        distance = np.linalg.norm(centres_t[:, None] - centres_f[None], axis=-1) / np.maximum(
            (sizes_t[:, None] + sizes_f[None]) / 2, 1e-9)
        reach = self.max_distance * (1 + np.array([t.missed for t in self.tracks], dtype=np.float64))[:, None]
        closeness = np.clip(1 - distance / reach, 0, None)
        candidate = (iou >= self.min_iou) | (closeness > 0)
        score = iou + closeness
        if looks is not None:
            similarity = np.array([[float(t.look @ look) if t.look is not None else 1. for look in looks]
                                   for t in self.tracks])
            candidate &= (similarity >= self.min_appearance) | (iou >= self.same_place_iou)
            score = score + similarity
        pairs, used_tracks, used_faces = [], set(), set()
        for flat in np.argsort(-np.where(candidate, score, -np.inf), axis=None):
            track, face = np.unravel_index(flat, score.shape)
            if not candidate[track, face]:
                break
            if track not in used_tracks and face not in used_faces:
                pairs.append((int(track), int(face)))
                used_tracks.add(track)
                used_faces.add(face)
        return pairs

    @staticmethod
    def _follow(track: _Track, time: float, box: np.ndarray, look: Optional[np.ndarray]) -> None:
        """Move the track to its newly matched face."""
        elapsed = time - track.time
        if elapsed > 0:
            shift = (box[:2] + box[2:]) / 2 - (track.box[:2] + track.box[2:]) / 2
            track.velocity = 0.5 * track.velocity + 0.5 * shift / elapsed
        track.box, track.time, track.missed = box, time, 0
        if look is not None:
            blended = look if track.look is None else 0.7 * track.look + 0.3 * look
            track.look = blended / max(np.linalg.norm(blended), 1e-12)
