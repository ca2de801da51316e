"""Accuracy against mean class accuracy of a trained FERPlus model under post-hoc logit adjustment.

For each ``tau`` the logits become ``logits - tau * log(prior)``, with the class prior of the run's training set:
what ``timm-fer push --checkpoint RUN/last.pth --logit-adjustment TAU`` folds into the classifier bias. The logits
are computed once, on the validation faces with the model's own preprocessing, in fp32. A Hub model folder (such as
one ``timm-fer push --dry-run`` wrote) takes the prior of the FERPlus training split under ROOT::

    python benchmarks/logit_adjustment_study.py runs/ferplus-transfer_fer_compact/last.pth path/to/ferplus
"""
import argparse
from typing import List, Sequence

import torch

from timm_fer.data import FerPlus, create_fer_transform
from timm_fer.engine import training_class_prior
from timm_fer.errors import ConfigError
from timm_fer.hub import load_model, resolve_fer_data_config


def validation_logits(checkpoint: str, root: str, batch_size: int = 256) -> tuple:
    """fp32 logits of the checkpoint's model on the FERPlus validation faces, their labels, and the class names."""
    model, _ = load_model(checkpoint=checkpoint)
    valid = FerPlus(root, 'valid', transform=create_fer_transform(resolve_fer_data_config(model)))
    images = torch.stack([valid[index][0] for index in range(len(valid))])
    with torch.inference_mode():
        logits = torch.cat([model(images[begin:begin + batch_size]) for begin in range(0, len(images), batch_size)])
    return logits.float(), torch.tensor(valid.targets), valid.classes


def sweep(logits: torch.Tensor, labels: torch.Tensor, prior: Sequence[float], taus: Sequence[float]) -> List[dict]:
    """Accuracy, mean class accuracy and recall per class of the adjusted logits, for each tau."""
    log_prior = torch.tensor(prior).log()
    rows = []
    for tau in taus:
        predicted = (logits - tau * log_prior).argmax(dim=1)
        recall = [float((predicted[labels == c] == c).float().mean()) for c in range(logits.shape[1])]
        rows.append(dict(tau=tau, accuracy=float((predicted == labels).float().mean()),
                         mean_class_accuracy=sum(recall) / len(recall), recall=recall))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('checkpoint', help='a timm-fer train run checkpoint (names its training set), or a Hub folder')
    parser.add_argument('root', help='FERPlus folder')
    parser.add_argument('--taus', type=float, nargs='+', default=[0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0])
    args = parser.parse_args()
    logits, labels, classes = validation_logits(args.checkpoint, args.root)
    try:
        prior = training_class_prior(args.checkpoint)
    except ConfigError:  # a Hub model folder names no training run: the FERPlus training split's prior
        counts = FerPlus(args.root, 'train').class_counts
        prior = [count / sum(counts) for count in counts]
    print(f'{args.checkpoint}: {len(labels)} FERPlus validation faces; training prior '
          + ', '.join(f'{name} {share:.3f}' for name, share in zip(classes, prior)) + '\n')
    print('| tau | accuracy | mean class accuracy | ' + ' | '.join(classes) + ' |')
    print('|---' * (3 + len(classes)) + '|')
    for row in sweep(logits, labels, prior, args.taus):
        print(f"| {row['tau']:g} | {100 * row['accuracy']:.2f} | {100 * row['mean_class_accuracy']:.2f} | "
              + ' | '.join(f'{100 * r:.1f}' for r in row['recall']) + ' |')


if __name__ == '__main__':
    main()
