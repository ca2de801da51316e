"""Training and evaluation: the paper's recipes, the trainer, metrics, and runs under torchrun."""
from .evaluate import EvaluationResult, evaluate_checkpoint, evaluate_model, write_eval_report
from .metrics import ClassificationReport, confusion_matrix
from .recipes import RECIPES, Recipe
from .train import Trainer, train

__all__ = ['RECIPES', 'ClassificationReport', 'EvaluationResult', 'Recipe', 'Trainer', 'confusion_matrix',
           'evaluate_checkpoint', 'evaluate_model', 'train', 'write_eval_report']
