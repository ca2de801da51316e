"""The live WebSocket ``/v1/live``: a camera's frames in, each frame's tracked faces and expressions out.

The client sends binary messages, each a 4-byte big-endian frame id followed by one JPEG-encoded frame, and gets one
JSON text message per frame id; a classified frame's names the model that answered it (``model``). Every connection
keeps its own :class:`~timm_fer.inference.stream.FrameTracker` (track ids stay with their faces across frames) over
the shared :class:`~timm_fer.serve.batching.BatchingClassifier` of the model it chose (the query parameter ``model``,
else the server's default), so the faces of all connections to one model share forward passes.
When frames arrive faster than the model answers, the newest waiting frame is classified and the older ones are
answered ``{"id": n, "dropped": total, "skipped": true}``, so that no client waits forever.

Each face's answer carries its track's probabilities smoothed over the last seconds (``smoothed``, and their top
``smoothed_expression``, as ``timm-fer predict`` smooths a live source's rows), and each frame's answer the window
(``smoothing``, 1 s at first); a text message ``{"smoothing": SECONDS}`` sets it for the connection's next frames
(0: none) and is answered ``{"id": null, "smoothing": SECONDS}``.
"""
import asyncio
import io
import json
import math
import struct
import time
from collections import deque
from typing import Any, Deque, Dict, Optional, Tuple

from fastapi import WebSocket, WebSocketDisconnect
from PIL import Image
from starlette.concurrency import run_in_threadpool

from ..errors import InputFileError
from ..faces import read_image
from ..inference.stream import FrameTracker

__all__ = ['FRAME_ID', 'MAX_SMOOTHING', 'LiveSession']

FRAME_ID = struct.Struct('>I')
"""The header of every frame message: its id, a big-endian unsigned 32-bit integer."""
MAX_SMOOTHING = 30.
"""Longest smoothing window, in seconds, a client may set (each track keeps its samples of the window)."""


class LiveSession:
    """One WebSocket connection of ``/v1/live``: reads frames as they come, answers the newest, skips the rest.

    Args:
        websocket: The accepted connection.
        tracker: The connection's own frame tracker; text messages set its smoothing window.
        max_pixels: Largest frame, in pixels, checked from its header before decoding.
        max_bytes: Largest message in bytes.
        model: The name of the tracker's model, which every frame's answer gives.
    """

    def __init__(self, websocket: WebSocket, tracker: FrameTracker, max_pixels: int, max_bytes: int,
                 model: str) -> None:
        self.websocket = websocket
        self.tracker = tracker
        self.model = model
        self.max_pixels = max_pixels
        self.max_bytes = max_bytes
        self.pending: Deque[Tuple[int, bytes, float]] = deque()  # (frame id, JPEG, arrival) oldest first
        self.arrived = asyncio.Event()
        self.closed = False
        self.dropped = 0
        self.started = time.monotonic()

    async def run(self) -> None:
        """Serve the connection until the client closes it."""
        reader = asyncio.ensure_future(self._receive())
        try:
            await self._answer()
        finally:
            reader.cancel()

    async def _send(self, message: Dict[str, Any]) -> None:
        """Send one answer; a client that left while it was computed ends the session quietly (no error log)."""
        if self.closed:
            return
        try:
            await self.websocket.send_json(message)
        except WebSocketDisconnect:
            self.closed = True

    async def _receive(self) -> None:
        """Queue every frame message; answer a malformed one with an error at once."""
        try:
            while True:
                message = await self.websocket.receive()
                if message['type'] == 'websocket.disconnect':
                    return
                if message.get('text') is not None:
                    await self._send(self._setting(message['text']))
                    continue
                data = message.get('bytes')
                problem = self._problem(data)
                if problem is not None:
                    frame_id = FRAME_ID.unpack_from(data)[0] if data is not None and len(data) >= 4 else None
                    await self._send({'id': frame_id, 'error': problem})
                    continue
                self.pending.append((FRAME_ID.unpack_from(data)[0], data[FRAME_ID.size:], time.monotonic()))
                self.arrived.set()
        except WebSocketDisconnect:
            return
        finally:
            self.closed = True
            self.arrived.set()

    def _setting(self, text: str) -> Dict[str, Any]:
        """Apply a text message's setting (``{"smoothing": SECONDS}``); the answer: the setting, or why not."""
        try:
            setting = json.loads(text)
        except ValueError:
            setting = None
        value = setting.get('smoothing') if isinstance(setting, dict) and setting.keys() == {'smoothing'} else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and \
                0 <= value <= MAX_SMOOTHING:
            self.tracker.smoother.window = float(value)
            return {'id': None, 'smoothing': float(value)}
        return {'id': None, 'error': f'text messages set the smoothing, {{"smoothing": SECONDS}} with SECONDS from 0 '
                                     f'to {MAX_SMOOTHING:g}, got {text[:40]!r}; send frames as binary messages: a '
                                     f'4-byte big-endian frame id, then the JPEG'}

    def _problem(self, data: Optional[bytes]) -> Optional[str]:
        """Why a binary message is no frame message, or None."""
        if data is None:
            return 'send frames as binary messages: a 4-byte big-endian frame id, then the frame as JPEG'
        if len(data) <= FRAME_ID.size:
            return f'a message of {len(data)} bytes holds no frame: send a 4-byte big-endian frame id, then a JPEG'
        if len(data) > self.max_bytes:
            return (f'a frame of {len(data)} bytes is larger than this server takes ({self.max_bytes} bytes); send '
                    f'smaller JPEGs')
        return None

    async def _answer(self) -> None:
        """Classify the newest waiting frame, answer the older ones as skipped, until the connection closes."""
        while True:
            await self.arrived.wait()
            self.arrived.clear()
            if self.closed:
                return
            while self.pending and not self.closed:
                frame_id, jpeg, arrival = self.pending.pop()
                skipped = list(self.pending)
                self.pending.clear()
                for skipped_id, _, _ in skipped:
                    self.dropped += 1
                    await self._send({'id': skipped_id, 'dropped': self.dropped, 'skipped': True})
                if self.closed:
                    return
                await self._send(await run_in_threadpool(self._frame_answer, frame_id, jpeg, arrival))

    def _frame_answer(self, frame_id: int, jpeg: bytes, arrival: float) -> Dict[str, Any]:
        """The answer to one frame (on a worker thread): its tracked faces, or why it could not be read."""
        began = time.perf_counter()
        try:
            with Image.open(io.BytesIO(jpeg)) as opened:
                width, height = opened.size
        except Exception as e:
            return {'id': frame_id, 'error': f'frame {frame_id} is not an image Pillow can read ({type(e).__name__}); '
                                             f'send JPEG frames'}
        if width * height > self.max_pixels:
            return {'id': frame_id, 'error': f'frame {frame_id} is {width}x{height}, above this server\'s '
                                             f'{self.max_pixels / 1e6:.1f} megapixels; send smaller frames'}
        try:
            image = read_image(io.BytesIO(jpeg))  # Pillow reads from memory as from a file
        except InputFileError as e:
            return {'id': frame_id, 'error': f'frame {frame_id}: {e.reason}'}
        smoothing = self.tracker.smoother.window
        frame = self.tracker(image, arrival - self.started, frame_id)
        faces = [{'track': face.track, 'box': list(face.box), 'expression': face.expression,
                  'probabilities': face.probabilities, 'smoothed': frame.smoothed[face.track],
                  'smoothed_expression': frame.smoothed_expression(face.track)} for face in frame.faces]
        return {'id': frame_id, 'model': self.model, 'width': image.width, 'height': image.height, 'faces': faces,
                'smoothing': smoothing, 'server_ms': (time.perf_counter() - began) * 1000, 'dropped': self.dropped}
