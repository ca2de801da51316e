"""Reading any checkpoint a user may have into weights plus what the file says about its model.

One reader for every command, for what training tools write:

- ``.safetensors`` files and ``.pth`` / ``.bin`` state dicts, plain or wrapped (``state_dict`` / ``model`` entries;
  DDP's ``module.`` and ``torch.compile``'s ``_orig_mod.`` prefixes are removed; a single wrapper prefix such as
  PyTorch Lightning's ``model.`` is found when the weights are fitted to a model, see
  :func:`~timm_fer.hub.load_model`);
- the run checkpoints of ``timm-fer train``, which carry their model name, constructor arguments, labels and
  preprocessing;
- the checkpoints of timm's ``train.py`` (``state_dict``, ``state_dict_ema``, ``arch``, ``args``): the model name, its
  constructor arguments and preprocessing come from ``arch`` and ``args``, the class names from the ``--class-map``
  file or the class folders of the ``--data-dir`` that ``args`` records, when they are still there;
- Hub model folders (``model.safetensors`` + timm's ``config.json``) and Hugging Face Trainer output folders
  (``model.safetensors`` or ``pytorch_model.bin``, with or without a ``config.json``).

Files are only read with ``torch.load(weights_only=True)``, which admits tensors and plain values, and
``argparse.Namespace`` (timm's ``args``) besides: any other pickled object is refused before anything runs.
"""
import json
import os
from argparse import Namespace
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
from timm.data.readers.class_map import load_class_map
from timm.models import clean_state_dict
from timm.utils import natural_key

from ..constants import DATASET_FACE_TEMPLATES
from ..errors import ConfigError, PretrainedWeightsError
from ..models import registered_models
from ..models._pretrained import read_checkpoint_file, tagged_name, unwrap_state_dict

__all__ = ['TRAIN_CHECKPOINT_FORMAT', 'WEIGHTS_FILES', 'Checkpoint', 'read_checkpoint', 'read_class_map']

WEIGHTS_FILES = ('model.safetensors', 'pytorch_model.bin')
"""The weights file of a Hub model folder or Hugging Face Trainer output folder, in the order they are looked for."""

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
        state_dict: Model tensors, unwrapped from containers and DDP / torch.compile prefixes (a ``timm-fer train``
            run that kept a weight average: the average's; a timm ``train.py`` checkpoint: the average's on request).
        model_name: Model name (with tag when known) the weights were saved from; None for a plain weights file.
        model_kwargs: Constructor arguments the weights need (e.g. ``num_branches``).
        labels: Class names in output order, when the file says them.
        data_config: Preprocessing the weights were trained with (input size, mean, std, interpolation).
        face_template: Name of the face template the weights' training faces were framed with (see
            :data:`timm_fer.constants.FACE_TEMPLATES`), when the file says it or the run's dataset fixes it.
        run_config: The whole configuration of a ``timm-fer train`` run, else None.
        training_state: The trained weights ('model'), optimiser, schedule, sampler and random states of a run
            checkpoint, else None.
        ema: The file holds a weight average (EMA) besides the trained weights.
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
    ema: bool = False

    @property
    def architecture(self) -> Optional[str]:
        """The model name without its tag."""
        return self.model_name.partition('.')[0] if self.model_name else None


def read_checkpoint(path: Union[str, Path], use_ema: bool = False) -> Checkpoint:
    """Read a checkpoint file or model folder, never unpickling arbitrary objects.

    Args:
        path: A checkpoint file, a Hub model folder or a Hugging Face Trainer output folder.
        use_ema: Read the weight average (EMA) the file holds beside the trained weights: timm ``train.py``'s
            ``state_dict_ema`` (written with ``--model-ema``). A ``timm-fer train`` checkpoint serves its average
            whenever it kept one.

    Raises:
        PretrainedWeightsError: the path is missing, unreadable, not a checkpoint, holds non-finite weights, or has
            no weight average though ``use_ema`` asks for it.
        CheckpointMismatchError: the file holds entries that are not tensors.
    """
    path = Path(path)
    if path.is_dir():
        checkpoint = _read_folder(path)
    else:
        raw = read_checkpoint_file(path)
        if raw.get('format') == TRAIN_CHECKPOINT_FORMAT:
            checkpoint = _from_run_checkpoint(path, raw)
        elif isinstance(raw.get('state_dict'), dict) and ('arch' in raw or 'args' in raw or 'state_dict_ema' in raw):
            checkpoint = _from_timm_train_checkpoint(path, raw, use_ema)
        else:
            checkpoint = Checkpoint(path, clean_state_dict(unwrap_state_dict(raw)))
    if use_ema and not checkpoint.ema:
        raise PretrainedWeightsError(
            f'{path} holds no weight average (EMA): timm\'s train.py writes one as state_dict_ema with --model-ema, '
            f'timm-fer train with --model-ema; drop --ema (use_ema) to load the trained weights.')
    _check_finite(checkpoint)
    return checkpoint


def read_class_map(path: Union[str, Path], root: Union[str, Path] = '') -> Tuple[str, ...]:
    """The class names of a timm class map file (``--class-map`` of timm's scripts), in label order.

    Args:
        path: A ``.txt`` file with one class name per line, in label order, or a ``.pkl`` dict of name to label.
        root: The folder a relative ``path`` is also looked for in (timm looks in the dataset folder).

    Raises:
        ConfigError: the file is missing, of another kind, or does not give each label one name.
    """
    try:
        class_to_idx = load_class_map(str(path), str(root))
    except (AssertionError, OSError, ValueError, EOFError) as e:
        raise ConfigError(f'cannot read the class map {path} ({type(e).__name__}: {e}); give a .txt file with one '
                          f'class name per line, in label order.') from e
    names = sorted(class_to_idx, key=lambda name: class_to_idx[name])
    if [class_to_idx[name] for name in names] != list(range(len(names))):
        raise ConfigError(f'the class map {path} does not give the labels 0 to {len(names) - 1} one name each; give '
                          f'one class name per line, in label order.')
    return tuple(str(name) for name in names)


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
        face_template=face_template, run_config=config, training_state=training_state, ema='model_ema' in raw)


def _from_timm_train_checkpoint(path: Path, raw: Dict[str, Any], use_ema: bool) -> Checkpoint:
    """A checkpoint of timm's ``train.py``: its weights (or their average) and what its ``args`` say."""
    args = raw.get('args')
    args = vars(args) if isinstance(args, Namespace) else dict(args) if isinstance(args, dict) else {}
    weights = raw['state_dict_ema'] if use_ema and isinstance(raw.get('state_dict_ema'), dict) else raw['state_dict']
    name = raw.get('arch') or args.get('model')
    in_chans = args.get('in_chans') or (args['input_size'][0] if args.get('input_size') else 3)
    model_kwargs = dict(args.get('model_kwargs') or {}, **({'in_chans': in_chans} if in_chans != 3 else {}))
    data_config = {key: tuple(value) if isinstance(value, list) else value for key, value in args.items()
                   if key in DATA_CONFIG_KEYS and value not in (None, '')}
    if 'input_size' not in data_config and args.get('img_size'):
        data_config['input_size'] = (in_chans, args['img_size'], args['img_size'])
    return Checkpoint(
        path, clean_state_dict(unwrap_state_dict(weights)),
        model_name=name if isinstance(name, str) and name.partition('.')[0] in registered_models() else None,
        model_kwargs=model_kwargs, labels=_timm_train_labels(args), data_config=data_config,
        ema=isinstance(raw.get('state_dict_ema'), dict))


def _timm_train_labels(args: Dict[str, Any]) -> Optional[Tuple[str, ...]]:
    """The class names of a timm ``train.py`` run: its ``--class-map`` file, else the class folders of its training
    split (sorted as timm sorts them), when they are still on this machine; else None."""
    data_dir = args.get('data_dir') or args.get('data') or ''
    if args.get('class_map'):
        try:
            return read_class_map(args['class_map'], data_dir)
        except ConfigError:
            pass
    if not data_dir or not os.path.isdir(data_dir):
        return None
    split = os.path.join(data_dir, args.get('train_split') or 'train')
    folder = split if os.path.isdir(split) else data_dir
    classes = sorted((entry.name for entry in os.scandir(folder) if entry.is_dir()), key=natural_key)
    return tuple(classes) or None


def _read_folder(folder: Path) -> Checkpoint:
    """A Hub model folder (weights + timm's ``config.json``) or a Hugging Face Trainer output folder (weights, and a
    ``config.json`` of transformers when the model was one: its ``id2label`` names the classes; transformers'
    ``TimmWrapper`` configs name their timm model as ``architecture``)."""
    weights = next((folder / name for name in WEIGHTS_FILES if (folder / name).is_file()), None)
    if weights is None:
        raise PretrainedWeightsError(
            f'{folder} is a folder without weights: a Hub model folder needs model.safetensors and config.json, a '
            f'Hugging Face Trainer output folder {" or ".join(WEIGHTS_FILES)}; give the checkpoint file itself, or a '
            f'folder written by timm-fer convert / push or by the Trainer.')
    config_file = folder / 'config.json'
    if not config_file.is_file():
        return Checkpoint(folder, clean_state_dict(unwrap_state_dict(read_checkpoint_file(weights))))
    try:
        config = json.loads(config_file.read_text(encoding='utf-8'))
        architecture = config.get('architecture') if 'model_type' in config else config['architecture']
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise PretrainedWeightsError(f'{config_file} is not a timm config.json ({type(e).__name__}: {e}).') from e
    state_dict = clean_state_dict(unwrap_state_dict(read_checkpoint_file(weights)))
    if not isinstance(architecture, str):  # a transformers model's config: the Trainer saved weights of its own model
        labels = _id2label(config.get('id2label'))
        return Checkpoint(folder, state_dict, labels=tuple(labels) if labels else None)
    cfg = config.get('pretrained_cfg') or {}
    model_kwargs = {k: v for k, v in (config.get('model_args') or {}).items() if k != 'num_classes'}
    if isinstance(model_kwargs.get('img_size'), list):
        model_kwargs['img_size'] = tuple(model_kwargs['img_size'])
    labels = cfg.get('label_names') or _id2label(config.get('id2label'))
    return Checkpoint(
        folder, state_dict, model_name=tagged_name(architecture, cfg.get('tag')), model_kwargs=model_kwargs,
        labels=tuple(labels) if labels else None,
        data_config={k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items() if k in DATA_CONFIG_KEYS},
        face_template=config.get('face_template'))


def _id2label(id2label: Any) -> Optional[Sequence[str]]:
    """The class names of a transformers config's ``id2label`` (``{"0": "name", ...}``), when it names them all."""
    if not isinstance(id2label, dict) or not id2label:
        return None
    try:
        names = {int(index): str(name) for index, name in id2label.items()}
    except (TypeError, ValueError):
        return None
    return [names[i] for i in range(len(names))] if sorted(names) == list(range(len(names))) else None


def _check_finite(checkpoint: Checkpoint) -> None:
    broken = [k for k, v in checkpoint.state_dict.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        shown = ', '.join(broken[:5]) + (f' (and {len(broken) - 5} more)' if len(broken) > 5 else '')
        raise PretrainedWeightsError(
            f'{checkpoint.path} holds NaN or infinite weights in {shown}: it is damaged or from a diverged run; use '
            f'another checkpoint (e.g. best.pth of the run).')
