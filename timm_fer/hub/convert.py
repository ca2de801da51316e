"""Convert the paper's initialisation sources into timm-fer Hub model folders, and publish folders.

:func:`convert_checkpoint` (``timm-fer convert``) turns face.evoLVe IR / IR-SE checkpoints and timm's legacy ViT-S
checkpoint into ``ir_50.ms1m``, the stem or encoder of ``transfer_fer_ir50``, or the combined
``transfer_fer_ir50.ms1m_in1k``. :func:`push_model` (``timm-fer push``) uploads a Hub model folder, writing it from a
trained checkpoint first if asked (optionally with :func:`fold_logit_adjustment` applied).
"""
import logging
import math
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
from huggingface_hub import constants as hf_constants
from torch import nn

from ..errors import CheckpointMismatchError, ConfigError, PretrainedWeightsError
from ..models import IRNet, TransFER, irnet, tagged_name, transfer
from .checkpoint import read_checkpoint
from .folder import (
    check_hub_folder,
    default_repo_id,
    hub_folder_files,
    make_model_card,
    push_hub_folder,
    write_hub_folder,
)
from .loading import create_named_model, load_model

__all__ = ['convert_checkpoint', 'convert_to_model', 'ensemble_weights', 'fold_logit_adjustment', 'fold_temperature',
           'push_model']

_FILTERS = {IRNet: irnet.checkpoint_filter_fn, TransFER: transfer.checkpoint_filter_fn}

_logger = logging.getLogger(__name__)


def _sources_of(paths: Dict[str, Optional[Path]]) -> Dict[str, torch.Tensor]:
    """Load every given source file and merge their tensors, refusing files of the wrong layout."""
    merged: Dict[str, torch.Tensor] = {}
    for kind, path in paths.items():
        if path is None:
            continue
        state_dict = read_checkpoint(path).state_dict
        if kind == 'face_evolve' and not irnet.is_face_evolve_state_dict(state_dict):
            raise CheckpointMismatchError(
                f'{path} is not a face.evoLVe IR checkpoint (no input_layer.* or body.* keys; it has '
                f'{", ".join(list(state_dict)[:5])}, ...).')
        if kind == 'vit' and not transfer.is_timm_vit_state_dict(state_dict):
            raise CheckpointMismatchError(
                f'{path} is not a timm ViT checkpoint (no patch_embed.proj.weight and blocks.*; it has '
                f'{", ".join(list(state_dict)[:5])}, ...).')
        overlap = sorted(set(merged) & set(state_dict))
        if overlap:
            raise CheckpointMismatchError(f'{path} repeats tensors of another source: {", ".join(overlap[:5])}')
        merged.update(state_dict)
    if not merged:
        raise ConfigError('give at least one source: --face-evolve, --vit or --checkpoint.')
    return merged


def convert_to_model(
        name: str,
        face_evolve: Optional[Path] = None,
        vit: Optional[Path] = None,
        checkpoint: Optional[Path] = None,
        seed: int = 0,
) -> nn.Module:
    """Build ``name`` (e.g. ``transfer_fer_ir50.ms1m_in1k``) with weights from the given source files.

    Parts no source covers keep a seeded initialisation. Every source tensor must land in the model and every
    model tensor must be covered (or be such a part), else :class:`CheckpointMismatchError` lists what does not fit.
    """
    torch.manual_seed(seed)
    model = create_named_model(name, pretrained=False)
    sources = _sources_of(dict(face_evolve=face_evolve, vit=vit, checkpoint=checkpoint))
    state_dict = _FILTERS[type(model)](sources, model)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def convert_checkpoint(
        name: str,
        out: Path,
        face_evolve: Optional[Path] = None,
        vit: Optional[Path] = None,
        checkpoint: Optional[Path] = None,
        seed: int = 0,
        overwrite: bool = False,
        command: str = 'timm_fer.hub.convert_checkpoint',
) -> nn.Module:
    """Write ``name`` with weights from the given source files as a Hub model folder at ``out``; returns the model.

    Args:
        name: Target model and tag, e.g. ``transfer_fer_ir50.ms1m_in1k``.
        out: Hub model folder to write.
        face_evolve: face.evoLVe IR / IR-SE checkpoint.
        vit: timm legacy ViT-S checkpoint.
        checkpoint: A checkpoint already in timm-fer layout.
        seed: Seed of the parts no source covers.
        overwrite: Replace a Hub model folder that timm-fer wrote at ``out``.
        command: The command that produced the folder, for the model card.
    """
    model = convert_to_model(name, face_evolve, vit, checkpoint, seed)
    sources = [str(p) for p in (face_evolve, vit, checkpoint) if p]
    write_hub_folder(model, out, make_model_card(model, command=command, sources=sources), overwrite=overwrite)
    return model


def fold_logit_adjustment(model: nn.Module, class_prior: Sequence[float], tau: float) -> None:
    """Subtract ``tau * log(class_prior)`` from the classifier's bias, in place: post-hoc logit adjustment.

    A classifier trained on imbalanced data learns the training prior; lowering each logit by ``tau`` times its
    class's log-prior trades accuracy on frequent classes for recall on rare ones (Menon et al., "Long-tail learning
    via logit adjustment", ICLR 2021; ``tau`` 1 targets balanced accuracy). Folded into the bias, the adjustment
    needs no change to inference, export or timm.

    Raises:
        ConfigError: the prior does not fit the classifier, has a class without images, or ``tau`` is negative.
    """
    head = model.get_classifier()
    if not isinstance(head, nn.Linear) or head.bias is None:
        raise ConfigError(f'logit adjustment needs a linear classifier with a bias, {type(model).__name__} has '
                          f'{type(head).__name__}.')
    if len(class_prior) != head.out_features or min(class_prior) <= 0 or not math.isfinite(tau) or tau < 0:
        raise ConfigError(f'logit adjustment needs a positive share for each of the {head.out_features} classes and '
                          f'tau >= 0, got {list(class_prior)} and tau {tau}.')
    with torch.no_grad():
        head.bias -= tau * torch.tensor(class_prior, dtype=head.bias.dtype).log()


def ensemble_weights(model: nn.Module, base: nn.Module, weight: float) -> None:
    """Set ``model``'s weights to ``(1 - weight) * base + weight * model``, in place: a weight-space ensemble.

    For a model fine-tuned from ``base`` (WiSE-FT, Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR
    2022): the average of the two sets of weights keeps most of what the fine-tuning gained away from the training
    domain and most of the base's accuracy on it, with one model's cost. Every floating-point parameter and buffer
    (BatchNorm statistics too) is averaged; integer buffers keep ``model``'s.

    Raises:
        ConfigError: ``weight`` is outside [0, 1], or the two models do not have the same weights.
    """
    if not 0 <= weight <= 1:
        raise ConfigError(f'the ensemble weight of the fine-tuned model is in [0, 1] (1: it alone), got {weight}.')
    tuned, source = model.state_dict(), base.state_dict()
    if tuned.keys() != source.keys() or any(tuned[k].shape != source[k].shape for k in tuned):
        raise ConfigError(f'cannot average {type(model).__name__} with a base of other weights: give the checkpoint '
                          f'the model was fine-tuned from as the ensemble base.')
    with torch.no_grad():
        for key, value in tuned.items():
            if value.is_floating_point():
                value.lerp_(source[key].to(value.dtype), 1 - weight)


def fold_temperature(model: nn.Module, temperature: float) -> None:
    """Divide the classifier's weight and bias by ``temperature``, in place: post-hoc temperature scaling.

    The logits become ``logits / temperature``: the same predictions, with probabilities that match how often they
    are right when ``temperature`` was fitted on held-out faces (:func:`timm_fer.engine.fit_temperature`).

    Raises:
        ConfigError: the classifier is not linear, or ``temperature`` is not a positive number.
    """
    head = model.get_classifier()
    if not isinstance(head, nn.Linear):
        raise ConfigError(f'temperature scaling needs a linear classifier, {type(model).__name__} has '
                          f'{type(head).__name__}.')
    if not math.isfinite(temperature) or temperature <= 0:
        raise ConfigError(f'the temperature is a positive number (1 changes nothing), got {temperature}.')
    with torch.no_grad():
        head.weight /= temperature
        if head.bias is not None:
            head.bias /= temperature


def push_model(
        folder: Path,
        model: Optional[str] = None,
        checkpoint: Optional[Path] = None,
        metrics: Optional[Sequence[str]] = None,
        dataset: Optional[str] = None,
        training: Optional[Sequence[str]] = None,
        repo_id: Optional[str] = None,
        private: bool = False,
        overwrite: bool = False,
        dry_run: bool = False,
        logit_adjustment: float = 0.,
        class_prior: Optional[Sequence[float]] = None,
        temperature: float = 1.,
        ensemble_base: Optional[Path] = None,
        ensemble_weight: float = 0.5,
        command: str = 'timm_fer.hub.push_model',
        label_names: Optional[Sequence[str]] = None,
        use_ema: bool = False,
        log: Callable[[str], None] = _logger.warning,
) -> List[str]:
    """Push a Hub model folder to the Hugging Face Hub, writing it from ``checkpoint`` into ``model`` first if given.

    ``logit_adjustment`` > 0 folds that post-hoc logit adjustment, with ``class_prior`` (the share of each class
    among the training images, e.g. :func:`timm_fer.engine.training_class_prior` of the checkpoint), into the
    classifier (:func:`fold_logit_adjustment`) before writing the folder; ``temperature`` other than 1 then divides
    the (adjusted) logits by it (:func:`fold_temperature`), fitted on held-out faces so probabilities read true.
    With ``ensemble_base`` (the checkpoint that ``checkpoint`` was fine-tuned from), the weights written are first
    their weight-space ensemble, ``ensemble_weight`` of the fine-tuned ones (:func:`ensemble_weights`).

    ``checkpoint`` is any that :func:`~timm_fer.hub.load_model` loads (a run of ``timm-fer train`` or of timm's
    ``train.py``, a PyTorch Lightning, DDP, ``torch.compile`` or Hugging Face Trainer checkpoint, a plain state dict);
    ``model`` defaults to the one it names. ``label_names`` name the classes of one that names none (else ``log``
    says they are called ``class_0`` ...), and ``use_ema`` takes its weight average (timm's ``state_dict_ema``).

    Returns the lines to report: what the folder holds, and the commit URL (or where a dry run would push).
    """
    if logit_adjustment and not (checkpoint and class_prior):
        raise ConfigError('--logit-adjustment changes the weights written from --checkpoint, with the class prior of '
                          'its training set: give --model and --checkpoint (from Python, also class_prior).')
    if (temperature != 1 or ensemble_base) and not checkpoint:
        raise ConfigError('--temperature and --ensemble-base change the weights written from --checkpoint: give '
                          '--model and --checkpoint.')
    if model and not checkpoint:
        raise ConfigError('--model names the model of --checkpoint: give the checkpoint to write into the folder, or '
                          'neither to push a folder already written.')
    if checkpoint:
        built, _ = load_model(model, checkpoint, label_names=label_names, use_ema=use_ema, log=log)
        name = tagged_name(built.pretrained_cfg['architecture'], built.pretrained_cfg.get('tag'))
        if ensemble_base:
            ensemble_weights(built, load_model(name, ensemble_base)[0], ensemble_weight)
            training = [*(training or []), f'weight-space ensemble with the weights it was fine-tuned from: '
                        f'{ensemble_weight:g} x fine-tuned + {1 - ensemble_weight:g} x {Path(ensemble_base).name}']
        if logit_adjustment:
            fold_logit_adjustment(built, class_prior, logit_adjustment)
            training = [*(training or []), f'post-hoc logit adjustment folded into the classifier bias: tau '
                        f'{logit_adjustment:g}, training class prior {", ".join(f"{p:.4f}" for p in class_prior)}']
        if temperature != 1:
            fold_temperature(built, temperature)
            training = [*(training or []), f'temperature scaling folded into the classifier: logits / {temperature:g}']
        card = make_model_card(built, command=command, metrics=metrics, dataset=dataset,
                               sources=[str(checkpoint)], training=training)
        write_hub_folder(built, folder, card, overwrite=overwrite)
        cfg = built.pretrained_cfg
        repo_id = repo_id or default_repo_id(cfg['architecture'], cfg.get('tag'))
    else:
        config = check_hub_folder(folder)
        repo_id = repo_id or default_repo_id(config['architecture'], config['pretrained_cfg'].get('tag'))
    files = ', '.join(hub_folder_files(folder))
    if dry_run:
        return [f'Dry run: {folder} ({files}) is ready; it would be pushed to https://huggingface.co/{repo_id}']
    if hf_constants.HF_HUB_OFFLINE:
        raise PretrainedWeightsError(f'cannot push {folder} to {repo_id}: HF_HUB_OFFLINE is set.')
    return [f'Pushed {folder} ({files}): {push_hub_folder(folder, repo_id, private=private)}']
