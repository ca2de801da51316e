"""Micro-batching: the faces of concurrent callers classified in one forward pass.

A server answers many small requests at once, each with a face or two. Run one by one, each request pays for a
forward pass of its own; :class:`BatchingClassifier` gathers the faces that callers hand it within a few
milliseconds into one batch, runs the model once on a worker thread, and gives each caller exactly its own
predictions back.
"""
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Deque, Iterator, List, Optional

from ..inference.classifier import FaceClassifier, FaceCrop, FacePrediction
from ..inference.report import UniqueNames
from ..utils.options import Range, option_ranges

__all__ = ['BatchingClassifier']


@dataclass
class _Request:
    """One caller's faces, and what it waits for: its predictions or the error they raised."""
    crops: List[FaceCrop]
    done: threading.Event = field(default_factory=threading.Event)
    predictions: List[FacePrediction] = field(default_factory=list)
    error: Optional[BaseException] = None


class BatchingClassifier(FaceClassifier):
    """A :class:`~timm_fer.inference.classifier.FaceClassifier` whose calls from many threads share forward passes.

    It goes wherever a FaceClassifier goes (``predict``, ``predict_video``, a stream's frame tracker): every
    attribute (``labels``, ``size``, ``model_name``, ``crop_faces``, ...) is the wrapped classifier's. A call waits
    at most ``max_wait_ms`` for other callers' faces, then one worker thread classifies up to ``max_batch`` faces
    in one pass; a call with more faces than that is classified in several. Callers that announce themselves
    before their faces are ready (:meth:`caller`, as the server does for each request while it decodes and detects)
    make the wait adaptive: a batch waits only while some announced caller has not handed its faces yet, so a lone
    request is never kept waiting for company that does not come. If a batch fails, each caller's faces
    are classified again on their own, so that one caller's failure is never another's. Calls that write pictures
    (``viz_names``, ``crop_names``) run alone, between batches.

    Use it as a context manager, or call :meth:`close`, to stop the worker thread.

    Args:
        classifier: The classifier that runs the model.
        max_batch: Most faces per forward pass; 1 turns batching off (every face alone).
        max_wait_ms: Most milliseconds the first caller of a batch waits for others.
    """

    @option_ranges(max_batch=Range(1, 4096, integer=True), max_wait_ms=Range(0, 1000))
    def __init__(self, classifier: FaceClassifier, max_batch: int = 32, max_wait_ms: float = 5.) -> None:
        if isinstance(classifier, BatchingClassifier) or not isinstance(classifier, FaceClassifier):
            raise TypeError(f'BatchingClassifier wraps a FaceClassifier (from load_classifier), got '
                            f'{type(classifier).__name__}.')
        self.__dict__['classifier'] = classifier  # before anything else: attribute lookups fall through to it
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.model_lock = threading.Lock()  # one forward pass at a time, batched or alone
        self._pending: Deque[_Request] = deque()
        self._wakeup = threading.Condition()
        self._closed = False
        self._announced = 0  # callers inside caller(): those whose faces a batch may wait for
        self._worker = threading.Thread(target=self._run, name='timm-fer-batching', daemon=True)
        self._worker.start()

    def __getattr__(self, name: str) -> Any:
        """Every attribute it does not set itself is the wrapped classifier's."""
        return getattr(self.__dict__['classifier'], name)

    def __enter__(self) -> 'BatchingClassifier':
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker thread once the calls already waiting are answered; later calls raise RuntimeError."""
        with self._wakeup:
            self._closed = True
            self._wakeup.notify_all()
        if self._worker is not threading.current_thread():
            self._worker.join()

    @contextmanager
    def caller(self) -> Iterator[None]:
        """Announce, for the block, a caller that will hand over faces: while announced callers are about, a batch
        waits (at most ``max_wait_ms``) only until each of them has queued its faces or left the block; without
        any, the full ``max_wait_ms``."""
        with self._wakeup:
            self._announced += 1
        try:
            yield
        finally:
            with self._wakeup:
                self._announced -= 1
                self._wakeup.notify_all()

    def __call__(self, crops: List[FaceCrop], viz_names: Optional[UniqueNames] = None,
                 crop_names: Optional[UniqueNames] = None) -> List[FacePrediction]:
        """The prediction of each face, as the wrapped classifier gives it (see
        :meth:`~timm_fer.inference.classifier.FaceClassifier.__call__`)."""
        if not crops:
            return []
        if viz_names is not None or crop_names is not None:
            with self.model_lock:
                return self.classifier(crops, viz_names, crop_names)
        request = _Request(list(crops))
        with self._wakeup:
            if self._closed:
                raise RuntimeError('the BatchingClassifier is closed: make a new one.')
            self._pending.append(request)
            self._wakeup.notify_all()
        request.done.wait()
        if request.error is not None:
            raise request.error
        return request.predictions

    def _run(self) -> None:
        """The worker: gather the pending requests into batches and answer them, until closed."""
        while True:
            with self._wakeup:
                while not self._pending and not self._closed:
                    self._wakeup.wait()
                if not self._pending:
                    return
                deadline = time.monotonic() + self.max_wait
                while (sum(len(r.crops) for r in self._pending) < self.max_batch and not self._closed
                       and self._others_coming() and time.monotonic() < deadline):
                    self._wakeup.wait(deadline - time.monotonic())
                requests, faces = [], 0
                while self._pending and (not requests or faces + len(self._pending[0].crops) <= self.max_batch):
                    request = self._pending.popleft()
                    requests.append(request)
                    faces += len(request.crops)
            try:
                self._answer(requests)
            finally:  # whatever happened, no caller waits forever
                for request in requests:
                    if not request.done.is_set():
                        request.error = request.error or RuntimeError('the batch was not classified')
                        request.done.set()

    def _others_coming(self) -> bool:
        """Whether other callers' faces may still join the pending batch (called holding the lock): some announced
        caller has not queued yet, or nobody announced anything."""
        return self._announced == 0 or len(self._pending) < self._announced

    def _answer(self, requests: List[_Request]) -> None:
        """Classify the faces of ``requests`` in passes of at most ``max_batch`` and hand each its predictions; when
        a pass fails, each of its requests on its own."""
        try:
            crops = [crop for request in requests for crop in request.crops]
            predictions = self._classify(crops)
            start = 0
            for request in requests:
                request.predictions = predictions[start:start + len(request.crops)]
                start += len(request.crops)
        except Exception as e:
            if len(requests) == 1:
                requests[0].error = e
            else:
                for request in requests:
                    self._answer([request])
                return
        for request in requests:
            request.done.set()

    def _classify(self, crops: List[FaceCrop]) -> List[FacePrediction]:
        """The wrapped classifier's predictions of ``crops``, ``max_batch`` at a time."""
        predictions: List[FacePrediction] = []
        with self.model_lock:
            for start in range(0, len(crops), self.max_batch):
                predictions.extend(self.classifier(crops[start:start + self.max_batch]))
        return predictions
