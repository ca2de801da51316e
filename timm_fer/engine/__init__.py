"""Training and evaluation: the paper's recipes, the trainer, metrics, and runs under torchrun."""
from .calibration import expected_calibration_error, fit_temperature
from .evaluate import EvaluationResult, evaluate_checkpoint, evaluate_model, write_eval_report
from .metrics import ClassificationReport, confusion_matrix
from .optimizer import create_sgd
from .recipes import RECIPES, Recipe
from .train import TrainResult, train
from .train_config import TrainConfig
from .train_state import training_class_prior
from .trainer import Trainer

__all__ = ['RECIPES', 'ClassificationReport', 'EvaluationResult', 'Recipe', 'TrainConfig', 'TrainResult', 'Trainer',
           'confusion_matrix', 'create_sgd', 'evaluate_checkpoint', 'evaluate_model', 'expected_calibration_error',
           'fit_temperature', 'train', 'training_class_prior', 'write_eval_report']
