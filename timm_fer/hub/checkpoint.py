"""Reading any checkpoint a user may have into weights plus what the file says about its model.

One reader for every command: ``.safetensors`` files, ``.pth`` / ``.bin`` state dicts (read only with
``torch.load(weights_only=True)``), the run checkpoints of ``timm-fer train`` (which carry their model name,
constructor arguments, labels and preprocessing) and Hub model folders (``model.safetensors`` + timm's
``config.json``).
"""
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
from timm.models import clean_state_dict

from ..constants import DATASET_FACE_TEMPLATES
from ..errors import PretrainedWeightsError
from ..models._pretrained import read_checkpoint_file, tagged_name, unwrap_state_dict

__all__ = ['TRAIN_CHECKPOINT_FORMAT', 'Checkpoint', 'read_checkpoint']

TRAIN_CHECKPOINT_FORMAT = 'timm-fer-train-v1'
"""Value of the 'format' key of the checkpoints that ``timm-fer train`` writes."""

DATA_CONFIG_KEYS = ('input_size', 'mean', 'std', 'interpolation', 'crop_pct', 'crop_mode')
"""Preprocessing entries that travel from a run checkpoint or Hub folder into the model's pretrained cfg (the face
template travels beside them: timm's pretrained cfgs have no field for it)."""


@dataclass
class Checkpoint:
    """Weights read from a file or Hub folder, with what the file says about the model they belong to.

    Attributes:
        path: The file or folder read.
        state_dict: Model tensors, unwrapped from containers and DDP / torch.compile prefixes (a run that kept a
            weight average: the average's).
        model_name: Model name (with tag when known) the weights were saved from; None for a plain weights file.
        model_kwargs: Constructor arguments the weights need (e.g. ``num_branches``).
        labels: Class names in output order, when the file says them.
        data_config: Preprocessing the weights were trained with (input size, mean, std, interpolation).
        face_template: Name of the face template the weights' training faces were framed with (see
            :data:`timm_fer.constants.FACE_TEMPLATES`), when the file says it or the run's dataset fixes it.
        run_config: The whole configuration of a ``timm-fer train`` run, else None.
        training_state: The trained weights ('model'), optimiser, schedule, sampler and random states of a run
            checkpoint, else None.
    """
    path: Path
    state_dict: Dict[str, torch.Tensor]
    model_name: Optional[str] = None
    model_kwargs: Dict[str, Any] = field(default_factory=dict)
    labels: Optional[Tuple[str, ...]] = None
    data_config: Dict[str, Any] = field(default_factory=dict)
    face_template: Optional[str] = None
    run_config: Optional[Dict[str, Any]] = None
    training_state: Optional[Dict[str, Any]] = None

    @property
    def architecture(self) -> Optional[str]:
        """The model name without its tag."""
        return self.model_name.partition('.')[0] if self.model_name else None


def read_checkpoint(path: Union[str, Path]) -> Checkpoint:
    """Read a checkpoint file or Hub model folder, never unpickling arbitrary objects.

    Raises:
        PretrainedWeightsError: the path is missing, unreadable, not a checkpoint, or holds non-finite weights.
        CheckpointMismatchError: the file holds entries that are not tensors.
    """
    path = Path(path)
    if path.is_dir():
        checkpoint = _read_hub_folder(path)
    else:
        raw = read_checkpoint_file(path)
        if raw.get('format') == TRAIN_CHECKPOINT_FORMAT:
            checkpoint = _from_run_checkpoint(path, raw)
        else:
            checkpoint = Checkpoint(path, clean_state_dict(unwrap_state_dict(raw)))
    _check_finite(checkpoint)
    return checkpoint


def _from_run_checkpoint(path: Path, raw: Dict[str, Any]) -> Checkpoint:
    config = raw['config']
    model_kwargs = dict(config.get('model_kwargs') or {})
    if config.get('img_size') is not None:
        model_kwargs.setdefault('img_size', config['img_size'])
    saved = config.get('data_config') or {}
    data_config = {k: v for k, v in saved.items() if k in DATA_CONFIG_KEYS}
    face_template = DATASET_FACE_TEMPLATES.get(config.get('dataset'), saved.get('face_template'))
    training_state = {k: v for k, v in raw.items() if k not in ('format', 'config')}
    served = raw.get('model_ema', raw['model'])  # timm's convention: a run's weight average, when it kept one
    return Checkpoint(
        path, clean_state_dict(unwrap_state_dict(served)), model_name=config['model'], model_kwargs=model_kwargs,
        labels=tuple(config['classes']) if config.get('classes') else None, data_config=data_config,
        face_template=face_template, run_config=config, training_state=training_state)


def _read_hub_folder(folder: Path) -> Checkpoint:
    weights, config_file = folder / 'model.safetensors', folder / 'config.json'
    if not weights.is_file() or not config_file.is_file():
        raise PretrainedWeightsError(
            f'{folder} is a folder but not a Hub model folder (it needs model.safetensors and config.json); give '
            f'the checkpoint file itself, or a folder written by timm-fer convert / push.')
    try:
        config = json.loads(config_file.read_text(encoding='utf-8'))
        architecture = config['architecture']
    except (ValueError, KeyError, TypeError) as e:
        raise PretrainedWeightsError(f'{config_file} is not a timm config.json ({type(e).__name__}: {e}).') from e
    cfg = config.get('pretrained_cfg') or {}
    model_kwargs = {k: v for k, v in (config.get('model_args') or {}).items() if k != 'num_classes'}
    if isinstance(model_kwargs.get('img_size'), list):
        model_kwargs['img_size'] = tuple(model_kwargs['img_size'])
    return Checkpoint(
        folder, clean_state_dict(unwrap_state_dict(read_checkpoint_file(weights))),
        model_name=tagged_name(architecture, cfg.get('tag')), model_kwargs=model_kwargs,
        labels=tuple(cfg['label_names']) if cfg.get('label_names') else None,
        data_config={k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items() if k in DATA_CONFIG_KEYS},
        face_template=config.get('face_template'))


def _check_finite(checkpoint: Checkpoint) -> None:
    broken = [k for k, v in checkpoint.state_dict.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        shown = ', '.join(broken[:5]) + (f' (and {len(broken) - 5} more)' if len(broken) > 5 else '')
        raise PretrainedWeightsError(
            f'{checkpoint.path} holds NaN or infinite weights in {shown}: it is damaged or from a diverged run; use '
            f'another checkpoint (e.g. best.pth of the run).')
