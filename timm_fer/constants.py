"""Settings every part of timm-fer shares: label names of the FER benchmarks (in each dataset's own label order),
where weights are published, the five-point face templates with the one each tag and dataset uses (the one home
of the face-template settings: :mod:`timm_fer.faces`, :mod:`timm_fer.hub` and the trainer read them here), and the
choices and defaults of the command-line options. Importing it costs no torch, so the command line builds its
parsers (``--help``, argument errors) at once; the modules that act on these settings import them from here."""
from typing import Dict, Tuple

import numpy as np

RAFDB_LABELS = ('surprise', 'fear', 'disgust', 'happiness', 'sadness', 'anger', 'neutral')
"""RAF-DB basic: labels 1..7 of ``list_patition_label.txt``, shifted to 0..6."""

FERPLUS_LABELS = ('neutral', 'happiness', 'surprise', 'sadness', 'anger', 'disgust', 'fear', 'contempt')
"""FERPlus: the first eight vote columns of ``fer2013new.csv`` (unknown and not-a-face are dropped)."""

AFFECTNET7_LABELS = ('neutral', 'happiness', 'sadness', 'surprise', 'fear', 'disgust', 'anger')
"""AffectNet expression labels 0..6 of ``training.csv`` / ``validation.csv``."""

AFFECTNET8_LABELS = AFFECTNET7_LABELS + ('contempt',)
"""AffectNet expression labels 0..7 (label 7 is contempt)."""

DEFAULT_MODEL = 'transfer_fer_compact.ferplus'
"""Model of ``predict`` and ``export`` when none is named: its weights ship with timm-fer, so it runs offline."""
INTENDED_MODEL = 'transfer_fer_compact.fer2013'
"""The shipped tag that reads the expression a face was meant to show (FER2013's original labels: posed faces, faces
pulled at a camera), where :data:`DEFAULT_MODEL` reads the expression people perceive in it."""
SERVED_MODELS = (DEFAULT_MODEL, INTENDED_MODEL)
"""Models ``serve`` loads when none is named: both shipped tags, the default first, so that its page offers the
choice."""
PAPER_INIT_TAG = 'ms1m_in1k'
"""Pretrained tag of the paper's initialisation: IR-50 stem trained on MS-Celeb-1M, encoder from ImageNet ViT-S."""

HF_HUB_ORG = 'timm-fer'
"""Hugging Face Hub organisation that holds timm-fer's weights: each tag lives at ``{HF_HUB_ORG}/{model}.{tag}``."""

PUBLISHED_ON_HUB = frozenset()
"""Tags whose weights have been pushed to ``{HF_HUB_ORG}/{model}.{tag}``: only these get an ``hf_hub_id``, so
``timm.list_pretrained()`` lists only weights that load, and ``pretrained=True`` on another tag fails at once
instead of asking the Hub. Add a tag here in the commit that publishes it."""

ARCFACE_TEMPLATE_112 = np.array([
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
], dtype=np.float64)
"""Where the five landmarks of an aligned 112x112 face lie (insightface's ``arcface_dst``), as (x, y) rows."""

FER2013_TEMPLATE_48 = np.array([
    [14.625, 18.375],
    [32.375, 18.125],
    [23.625, 28.375],
    [16.625, 36.125],
    [30.875, 36.125],
], dtype=np.float64)
"""Where the five landmarks of a FER2013 (FERPlus) 48x48 face lie, as (x, y) rows: the per-point median of the
landmarks that :class:`~timm_fer.faces.RetinaFaceDetector` finds on 4931 of 5000 random FERPlus training faces,
upsampled x4 (``python benchmarks/face_template_study.py FER2013Train --limit 5000``). Next to ArcFace's template
the face is larger (eye distance 17.5 px, ArcFace's 15.1 px) and higher (eyes at y 18.2, ArcFace's 22.1); a face's
landmarks lie a median 3.3 px from these points (2.2 to 3.0 px per coordinate, as a robust std)."""

FACE_TEMPLATES: Dict[str, Tuple[np.ndarray, Tuple[int, int]]] = {
    'arcface': (ARCFACE_TEMPLATE_112, (112, 112)),
    'fer2013': (FER2013_TEMPLATE_48, (48, 48)),
}
"""The templates a model's data config can name, each with the (height, width) of the face its points refer to."""

DEFAULT_FACE_TEMPLATE = 'arcface'
"""The face template of models whose tag or checkpoint names none."""

TAG_FACE_TEMPLATES = {'transfer_fer_compact.ferplus': 'fer2013', 'transfer_fer_compact.fer2013': 'fer2013'}
"""The face template each pretrained tag's training faces were framed with, where not the default; timm's pretrained
cfgs have no field for it."""

DATASET_FACE_TEMPLATES = {'ferplus': 'fer2013', 'rafdb': 'arcface', 'affectnet7': 'arcface', 'affectnet8': 'arcface'}
"""The face template of a run on each dataset: its images fix how the faces are framed. FERPlus keeps FER2013's
48x48 crops; the others get ArcFace's, predict's default. Runs on a folder dataset keep the template they saved."""

EVAL_SPLITS = {'rafdb': 'test', 'ferplus': 'valid', 'affectnet7': 'val', 'affectnet8': 'val', 'folder': 'val'}
"""The split each dataset's accuracy is reported on."""
DATASET_NAMES = tuple(EVAL_SPLITS)
"""The datasets that training and evaluation read by name."""

SAMPLER_DESCRIPTIONS = {'balanced': 'class-balanced up-sampling', 'uniform': 'every image once per epoch'}
"""Epoch samplers of a training run."""
AMP_CHOICES = ('auto', 'bf16', 'none')
"""Values of ``--amp``: bf16 autocast where it is fast, always, or never (fp32)."""
TRAIN_CHOICES = {
    'sched': ('step', 'cosine'),
    'sampler': tuple(SAMPLER_DESCRIPTIONS),
    'metric': ('accuracy', 'mean_class_accuracy', 'intended_accuracy', 'intended_mean_class_accuracy'),
    'amp': AMP_CHOICES,
}
"""Values that the training settings with a fixed set of them take."""

BACKENDS = ('auto', 'torch', 'onnxruntime')
"""Where a classifier runs: ``auto`` picks, or torch, or ONNX Runtime (on a cached ONNX export)."""
EXPORT_FORMATS = ('onnx', 'torch-export')
"""File formats of ``timm-fer export``."""
ONNX_OPSET_BOUNDS = (18, 25)
"""Lowest and highest ONNX opset that export: 18, the lowest torch's dynamo exporter writes (asked for less, it wrote
18 and said nothing), to 25, the highest whose graphs onnxruntime loaded when measured (26 and up: INVALID_GRAPH)."""

OUTPUT_SUFFIXES = ('.json', '.csv')
"""The file types prediction reports are written as."""
ANNOTATED_FORMATS = ('same', 'png', 'jpeg')
"""Formats of annotated photos: the input's own (JPEG and WebP stay so, any other becomes PNG), or one for all."""
DEFAULT_FPS = 5.
"""Frames sampled per second of video unless told otherwise."""
DEFAULT_SMOOTHING = 1.
"""Seconds of the centred moving average that smooths the timeline's probabilities."""
DEFAULT_MIN_TRACK = 0.5
"""Seconds a face track must be seen for to be kept. A false face (a patterned shirt, a poster) is typically
detected in a frame or two, while a real face stays on screen for longer: 0.5 s is three sampled frames at the
default 5 frames/s, and no track of a single detection is ever kept (unless the video gives no more frames)."""
DEFAULT_STALL_TIMEOUT = 10.
"""Seconds a live source (camera, network stream, pipe) may take to open, or give no frame, before it counts as
stalled."""
