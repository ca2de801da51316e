"""Calibration of a classifier's probabilities: expected calibration error and post-hoc temperature scaling."""
import torch
import torch.nn.functional as F

__all__ = ['expected_calibration_error', 'fit_temperature']


def expected_calibration_error(probabilities: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """Expected calibration error (Guo et al., ICML 2017): the gap between confidence and accuracy, averaged over
    ``bins`` equal-width confidence bins weighted by the share of samples in each.

    Args:
        probabilities: (N, classes) probabilities; the confidence of a sample is its largest probability.
        labels: (N,) true class of each sample.
        bins: Number of confidence bins over [0, 1].
    """
    if probabilities.dim() != 2 or labels.shape != probabilities.shape[:1] or not len(labels):
        raise ValueError(f'expected (N, classes) probabilities and (N,) labels with N > 0, got '
                         f'{tuple(probabilities.shape)} and {tuple(labels.shape)}.')
    confidence, predicted = probabilities.double().max(dim=1)
    correct = (predicted == labels).double()
    which = (confidence * bins).ceil().long().clamp(1, bins) - 1  # bin b holds confidences in (b / bins, (b+1) / bins]
    count = torch.bincount(which, minlength=bins).double()
    gap = torch.bincount(which, weights=confidence, minlength=bins) - torch.bincount(which, weights=correct,
                                                                                      minlength=bins)
    return float(gap.abs().sum() / count.sum())


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, steps: int = 100) -> float:
    """The temperature T > 0 that minimises the cross-entropy of ``softmax(logits / T)`` on ``labels``.

    Dividing the logits by T changes no prediction, only how sure they are; fit it on held-out data and fold it
    into the classifier (:func:`timm_fer.hub.fold_temperature`).
    """
    logits, labels = logits.detach().double(), labels.long()
    log_temperature = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_temperature], lr=0.5, max_iter=steps, line_search_fn='strong_wolfe')

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_temperature.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_temperature.detach().exp())
