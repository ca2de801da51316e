"""From photos to expressions: prediction, pictures of where the model looked, and export for deployment."""
from .classifier import ClassifierOptions, FaceClassifier, load_classifier
from .export import EXPORT_FORMATS, METADATA_KEY, check_export, export_checked, export_metadata, export_model
from .predict import SAMPLE_IMAGE, FacePrediction, PredictionReport, SkippedInput, format_table, predict, write_report
from .stream import FrameStream, FrameTracker, StreamFrame, predict_stream, stream
from .visualize import explain, recorded_attention, render_explanation

__all__ = ['EXPORT_FORMATS', 'METADATA_KEY', 'SAMPLE_IMAGE', 'ClassifierOptions', 'FaceClassifier', 'FacePrediction',
           'FrameStream', 'FrameTracker', 'PredictionReport', 'SkippedInput', 'StreamFrame', 'check_export', 'explain',
           'export_checked', 'export_metadata', 'export_model', 'format_table', 'load_classifier', 'predict',
           'predict_stream', 'recorded_attention', 'render_explanation', 'stream', 'write_report']
