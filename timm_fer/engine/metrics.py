"""Classification metrics of FER papers from a confusion matrix: accuracy, mean class accuracy, per-class accuracy."""
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import torch

__all__ = ['ClassificationReport', 'confusion_matrix']


def confusion_matrix(targets: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) counts; row = true class, column = predicted class."""
    flat = targets.long() * num_classes + predictions.long()
    return torch.bincount(flat, minlength=num_classes ** 2).reshape(num_classes, num_classes)


@dataclass(frozen=True)
class ClassificationReport:
    """Accuracies of a confusion matrix. Mean class accuracy averages the classes that have images.

    Args:
        classes: Class names, in label order.
        confusion: Confusion matrix as nested lists (row = true class).
    """
    classes: Sequence[str]
    confusion: List[List[int]]

    @classmethod
    def from_confusion(cls, confusion: torch.Tensor, classes: Sequence[str]) -> 'ClassificationReport':
        return cls(tuple(classes), confusion.long().tolist())

    @property
    def class_counts(self) -> List[int]:
        return [sum(row) for row in self.confusion]

    @property
    def num_images(self) -> int:
        return sum(self.class_counts)

    @property
    def accuracy(self) -> float:
        correct = sum(self.confusion[i][i] for i in range(len(self.classes)))
        return correct / max(self.num_images, 1)

    @property
    def per_class_accuracy(self) -> List[Optional[float]]:
        """Recall of each class; None for a class without images."""
        counts = self.class_counts
        return [self.confusion[i][i] / counts[i] if counts[i] else None for i in range(len(self.classes))]

    @property
    def mean_class_accuracy(self) -> float:
        present = [accuracy for accuracy in self.per_class_accuracy if accuracy is not None]
        return sum(present) / max(len(present), 1)

    def share_called(self, name: str) -> float:
        """Share of the images of every other class that are predicted as class ``name`` (e.g. expressive faces
        called neutral)."""
        index = list(self.classes).index(name)
        others = [row for i, row in enumerate(self.confusion) if i != index]
        return sum(row[index] for row in others) / max(sum(sum(row) for row in others), 1)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready summary."""
        return {
            'num_images': self.num_images,
            'accuracy': self.accuracy,
            'mean_class_accuracy': self.mean_class_accuracy,
            'per_class_accuracy': dict(zip(self.classes, self.per_class_accuracy)),
            'class_counts': dict(zip(self.classes, self.class_counts)),
            'classes': list(self.classes),
            'confusion_matrix': self.confusion,
        }

    def format_table(self) -> str:
        """Per-class table and overall lines, for printing."""
        width = max(len(name) for name in (*self.classes, 'mean class accuracy')) + 2
        lines = [f'{"class":<{width}}{"images":>8}{"accuracy":>10}']
        for name, count, accuracy in zip(self.classes, self.class_counts, self.per_class_accuracy):
            shown = f'{100 * accuracy:.2f}' if accuracy is not None else '-'
            lines.append(f'{name:<{width}}{count:>8}{shown:>10}')
        lines.append(f'{"accuracy":<{width}}{self.num_images:>8}{100 * self.accuracy:>10.2f}')
        lines.append(f'{"mean class accuracy":<{width}}{"":>8}{100 * self.mean_class_accuracy:>10.2f}')
        return '\n'.join(lines)
