"""From a model name and/or a checkpoint to a model with its weights: the one loading API of timm-fer.

:func:`load_model` gives a trained model for inference, export and evaluation: from a pretrained tag (shipped with
the package or on the Hugging Face Hub), or from any checkpoint :func:`~timm_fer.hub.read_checkpoint` reads. A
checkpoint written by ``timm-fer train``, or a Hub model folder, names its model, constructor arguments, labels and
preprocessing, so no model name is needed for it. :func:`create_fer_model` starts a training run: from the paper's
initialisation when it can be loaded, from a local initial checkpoint, or from scratch.
"""
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import timm
import torch
from timm.data import resolve_data_config
from timm.layers import to_2tuple
from timm.models import get_pretrained_cfg_value
from timm.models._builder import resolve_pretrained_cfg
from torch import nn

from ..constants import DEFAULT_FACE_TEMPLATE, DEFAULT_MODEL, PAPER_INIT_TAG, TAG_FACE_TEMPLATES
from ..errors import CheckpointMismatchError, ConfigError, NonFiniteOutputError, PretrainedWeightsError
from ..models import registered_models
from ..models._pretrained import no_weights_reason, tagged_name
from ..utils import first_conv_channels
from .checkpoint import Checkpoint, read_checkpoint

__all__ = ['DEFAULT_MODEL', 'PAPER_INIT_TAG', 'PROBE_BATCH_SIZE', 'RANDOM_WEIGHTS', 'check_finite_outputs',
           'check_pretrained_tag', 'create_fer_model', 'create_named_model', 'load_model', 'resolve_face_template',
           'resolve_fer_data_config']

RANDOM_WEIGHTS = 'random (the predictions are meaningless: a demo of the pipeline only)'
"""What :func:`load_model` reports as the weights' source when it went on with random weights."""
PROBE_BATCH_SIZE = 2
"""Random faces that :func:`check_finite_outputs` runs through a model once it is loaded."""

_logger = logging.getLogger(__name__)


def create_named_model(name: str, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` for a timm-fer model name with an optional tag; unknown names and tags say what exists."""
    architecture, _, tag = name.partition('.')
    if architecture not in registered_models():
        raise ConfigError(f"unknown timm-fer model '{architecture}'; known: {', '.join(registered_models())}.")
    known_tags = [n.partition('.')[2] for n in timm.models.get_arch_pretrained_cfgs(architecture) if '.' in n]
    if tag and tag not in known_tags:
        raise ConfigError(f"unknown tag '{tag}' for {architecture}; known tags: {', '.join(known_tags) or 'none'}.")
    return timm.create_model(name, **kwargs)


def load_model(
        model: Optional[str] = None,
        checkpoint: Optional[Union[str, Path, Checkpoint]] = None,
        *,
        num_classes: Optional[int] = None,
        model_kwargs: Optional[Dict[str, Any]] = None,
        random_weights: bool = False,
        default_model: str = DEFAULT_MODEL,
        label_names: Optional[Sequence[str]] = None,
        use_ema: bool = False,
        log: Callable[[str], None] = _logger.warning,
) -> Tuple[nn.Module, str]:
    """A timm-fer model with trained weights, in eval mode, and a description of where the weights came from.

    The model's ``pretrained_cfg['label_names']`` always names its classes: ``label_names``, else those the checkpoint
    carries (:func:`~timm_fer.hub.read_checkpoint`), else the tag's when the head has the tag's size, else generic
    names ``class_0``, ``class_1``, ... (``log`` says so, once).

    Args:
        model: Model name with an optional tag (the tag sets labels and preprocessing). Default: the name the
            checkpoint carries, else ``default_model``.
        checkpoint: A checkpoint file or model folder (or one already read); without it the tag's published or
            shipped weights load. The weights may sit under one wrapper prefix (PyTorch Lightning's ``model.``,
            transformers' ``timm_model.``, ...): the prefix under which they fit the model is removed.
        num_classes: Classes the model must have; a checkpoint with another number of classes is an error.
        model_kwargs: Constructor arguments, over those the checkpoint carries.
        random_weights: When the tag's weights cannot be loaded, go on with random weights (demo only).
        default_model: The model tried when neither ``model`` nor the checkpoint names one.
        label_names: The class names of the model's outputs, in order, over those of the checkpoint and the tag.
        use_ema: Load the weight average (EMA) that the checkpoint holds (timm ``train.py``'s ``state_dict_ema``).
        log: Says that the outputs were given generic names.

    Raises:
        PretrainedWeightsError: the weights cannot be read or loaded (and ``random_weights`` is off).
        CheckpointMismatchError: the checkpoint does not fit the model; the message names the model tried.
        ConfigError: unknown model name or tag, or ``label_names`` not one per output.
    """
    if checkpoint is not None:
        if not isinstance(checkpoint, Checkpoint):
            checkpoint = read_checkpoint(checkpoint, use_ema=use_ema)
        loaded = _model_from_checkpoint(checkpoint, model or checkpoint.model_name, default_model, num_classes,
                                        model_kwargs)
        source = f'checkpoint {checkpoint.path}'
    else:
        name = model or default_model
        kwargs = dict(model_kwargs or {})
        if num_classes is not None:
            kwargs['num_classes'] = num_classes
        try:
            loaded = create_named_model(name, pretrained=True, **kwargs).eval()
        except PretrainedWeightsError as e:
            if not random_weights:
                raise PretrainedWeightsError(
                    f'{_no_weights_reason(name, e)}; pass --checkpoint FILE with trained weights, or --random-weights '
                    f'for a demo whose predictions are meaningless.') from e
            loaded, source = create_named_model(name, pretrained=False, **kwargs).eval(), RANDOM_WEIGHTS
        else:
            cfg = loaded.pretrained_cfg
            where = 'shipped with timm-fer' if cfg.get('file') else cfg.get('hf_hub_id')
            source = f"pretrained {cfg['architecture']}.{cfg['tag']} ({where})"
    _name_classes(loaded, label_names, source, log)
    return loaded, source


def _name_classes(model: nn.Module, label_names: Optional[Sequence[str]], source: str,
                  log: Callable[[str], None]) -> None:
    """Set the model's label names: ``label_names``, else those it has, else generic ones (and say so)."""
    classes = getattr(model, 'num_classes', 0)
    if not classes:
        return
    cfg = model.pretrained_cfg
    if label_names is not None:
        if len(label_names) != classes:
            raise ConfigError(f'{len(label_names)} label names ({", ".join(label_names)}) for a model of {classes} '
                              f'classes: give one name per class, in output order.')
        cfg['label_names'] = tuple(label_names)
    elif not cfg.get('label_names'):
        cfg['label_names'] = tuple(f'class_{i}' for i in range(classes))
        log(f'the weights ({source}) name none of their {classes} classes, so they are called class_0 to '
            f'class_{classes - 1}; name them with --label-names (label_names=) or --class-map FILE.')


def _no_weights_reason(name: str, error: Exception) -> str:
    architecture, _, tag = name.partition('.')
    cfg = resolve_pretrained_cfg(architecture, pretrained_cfg=tag or None)
    tagged = tagged_name(architecture, cfg.tag)
    if not (cfg.hf_hub_id or cfg.file or cfg.url):
        return no_weights_reason(tagged)
    return (f'no weights for {tagged} could be loaded from the Hugging Face Hub repo {cfg.hf_hub_id} (unreachable, '
            f'or this machine is offline: {type(error.__cause__ or error).__name__})')


def _classifier_rows(architecture: str, state_dict: Dict[str, torch.Tensor]) -> Optional[int]:
    """Classes of the classifier in ``state_dict``, or None when it has none."""
    classifier = get_pretrained_cfg_value(architecture, 'classifier')
    weight = state_dict.get(f'{classifier}.weight') if isinstance(classifier, str) else None
    return int(weight.shape[0]) if weight is not None and weight.ndim == 2 else None


def _model_from_checkpoint(
        checkpoint: Checkpoint,
        model: Optional[str],
        default_model: str,
        num_classes: Optional[int],
        model_kwargs: Optional[Dict[str, Any]],
) -> nn.Module:
    """Build the model a checkpoint belongs to and load its weights strictly (classifier included)."""
    if model is not None:
        name, why = model, 'given' if model != checkpoint.model_name else 'named by the checkpoint'
    else:
        name, why = default_model, 'the default; the file does not say which model it holds'
    architecture = name.partition('.')[0]
    if architecture not in registered_models():
        raise CheckpointMismatchError(
            f'{checkpoint.path} is for the model {name!r} ({why}), which timm-fer does not have; known: '
            f"{', '.join(registered_models())}. Pass --model with the architecture the checkpoint was trained as.")
    kwargs = dict(checkpoint.model_kwargs) if architecture == checkpoint.architecture else {}
    kwargs.update(model_kwargs or {})
    checkpoint = _without_wrapper_prefix(checkpoint, architecture, kwargs)
    rows = _classifier_rows(architecture, checkpoint.state_dict)
    if num_classes is not None and rows is not None and rows != num_classes:
        raise CheckpointMismatchError(
            f'{checkpoint.path} has a classifier for {rows} classes, but {num_classes} are needed here; use a '
            f'checkpoint trained on these classes.')
    overlay: Dict[str, Any] = dict(state_dict=checkpoint.state_dict, tag=name.partition('.')[2] or None,
                                   **checkpoint.data_config)
    if rows is not None:
        overlay['num_classes'] = kwargs['num_classes'] = rows
    if checkpoint.labels is not None and len(checkpoint.labels) == rows:
        overlay['label_names'] = list(checkpoint.labels)
    try:
        loaded = _create_with_state_dict(create_named_model, name, overlay, kwargs)
    except (CheckpointMismatchError, TypeError, RuntimeError) as e:
        raise CheckpointMismatchError(
            f'{checkpoint.path} does not fit {name} ({why}{_kwargs_text(kwargs)}): {e} Pass --model with the '
            f'architecture and tag the checkpoint was trained as (e.g. --model transfer_fer_ir50.ferplus for 8 '
            f'FERPlus classes) and --model-kwargs for non-default constructor arguments.') from e
    _check_dtypes(checkpoint, loaded)
    if checkpoint.face_template is not None:  # not a timm pretrained cfg field: kept beside it
        loaded.face_template = checkpoint.face_template
    return loaded.eval()


def _without_wrapper_prefix(checkpoint: Checkpoint, architecture: str, kwargs: Dict[str, Any]) -> Checkpoint:
    """The checkpoint with its weights' single wrapper prefix removed: the prefix under which every weight of the
    architecture is found (PyTorch Lightning's ``model.``, transformers' ``timm_model.``, a ``net.`` of your own).

    Entries outside the prefix (a loss's buffers, say) are left out. A checkpoint whose keys already name weights of
    the architecture, or that fits under no prefix, is returned as it is (loading it says what does not fit).

    Raises:
        CheckpointMismatchError: the weights fit under more than one prefix (two copies of the model).
    """
    keys = checkpoint.state_dict
    if _classifier_rows(architecture, keys) is not None:  # the classifier is named as in the model: no wrapper
        return checkpoint
    try:
        with torch.device('meta'):  # the names of the weights, without their memory
            expected = {k for k in create_named_model(architecture, **kwargs).state_dict()
                        if not k.endswith('num_batches_tracked')}
    except (TypeError, ValueError, RuntimeError):  # unknown constructor arguments: loading says so
        return checkpoint
    if not expected or expected & set(keys):
        return checkpoint
    prefixes = sorted({key[:i + 1] for key in keys for i, char in enumerate(key) if char == '.'})
    fitting: List[str] = [p for p in prefixes if expected <= {k[len(p):] for k in keys if k.startswith(p)}]
    if len(fitting) > 1:
        raise CheckpointMismatchError(
            f'{checkpoint.path} holds the weights of {architecture} under several prefixes ({", ".join(fitting)}); '
            f'save the state dict of the one model you want.')
    if not fitting:
        return checkpoint
    prefix = fitting[0]
    state_dict = {k[len(prefix):]: v for k, v in keys.items() if k.startswith(prefix)}
    return replace(checkpoint, state_dict=state_dict)


def _create_with_state_dict(
        create: Callable[..., nn.Module], name: str, overlay: Dict[str, Any], kwargs: Dict[str, Any]) -> nn.Module:
    """Create ``name`` with the weights of ``overlay['state_dict']`` through timm's pretrained path (checkpoint filters,
    classifier reset), and keep the tensors out of the model's pretrained cfg."""
    model = create(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    model.pretrained_cfg.pop('state_dict', None)
    return model


def _kwargs_text(kwargs: Dict[str, Any]) -> str:
    shown = {k: v for k, v in kwargs.items() if k != 'num_classes'}
    return f', with {shown}' if shown else ''


def _check_dtypes(checkpoint: Checkpoint, model: nn.Module) -> None:
    """Refuse integer or boolean tensors where the model has floating-point weights (timm would cast them)."""
    expected = model.state_dict()
    wrong = [k for k, v in checkpoint.state_dict.items()
             if k in expected and expected[k].is_floating_point() and not v.is_floating_point()]
    if wrong:
        raise PretrainedWeightsError(
            f'{checkpoint.path} stores {", ".join(wrong[:5])} as {checkpoint.state_dict[wrong[0]].dtype}, not '
            f'floating point: it is not a checkpoint of trained weights; use the file the training run wrote.')


def check_pretrained_tag(name: str, tag: Optional[str]) -> None:
    """Refuse a pretrained tag that timm does not know for the model ``name``.

    A known tag whose weights cannot be loaded is no error (:func:`create_fer_model` falls back and says so), nor is
    :data:`PAPER_INIT_TAG`, the default of every model, for a model that has no such weights; nor a tag given with
    a name that carries its own, or a model timm does not know (creating it says so).

    Raises:
        ConfigError: ``tag`` is unknown for ``name``; the message lists the known tags.
    """
    if not tag or tag == PAPER_INIT_TAG or '.' in name or not timm.is_model(name):
        return
    known = [n.partition('.')[2] for n in timm.models.get_arch_pretrained_cfgs(name) if '.' in n]
    if tag not in known:
        raise ConfigError(f"unknown --pretrained-tag '{tag}' for {name}; its tags are {', '.join(known) or 'none'} "
                          f'(or --no-pretrained for a random initialisation).')


def create_fer_model(
        name: str,
        num_classes: int,
        img_size: Optional[int] = None,
        model_kwargs: Optional[Dict[str, Any]] = None,
        pretrained_tag: Optional[str] = None,
        initial_checkpoint: Optional[Union[str, Path]] = None,
        seed: int = 0,
        log: Callable[[str], None] = print,
) -> Tuple[nn.Module, str]:
    """Create ``name`` for ``num_classes`` classes to start a training run, and say where its weights came from.

    With ``initial_checkpoint``, weights come from that file (any that :func:`~timm_fer.hub.read_checkpoint`
    reads); its classifier is kept when it has ``num_classes`` outputs and re-initialised otherwise.
    Else, with ``pretrained_tag``, from ``name.pretrained_tag`` when timm can load it; when it cannot (weights not
    published, offline) a line says so and the model starts from scratch; a tag the model does not have is an error
    (:func:`check_pretrained_tag`). The random initialisation
    is seeded with ``seed``, so every process of a run starts from the same weights.
    """
    if not timm.is_model(name):
        raise ConfigError(f"unknown model '{name}'; 'timm-fer models' lists the FER models, timm.list_models() all.")
    check_pretrained_tag(name, pretrained_tag)
    kwargs = dict(model_kwargs or {}, num_classes=num_classes)
    if img_size is not None:
        kwargs['img_size'] = img_size
    if initial_checkpoint:
        state_dict = read_checkpoint(initial_checkpoint).state_dict
        overlay = dict(state_dict=state_dict, num_classes=_classifier_rows(name.partition('.')[0], state_dict))
        torch.manual_seed(seed)
        try:
            model = _create_with_state_dict(timm.create_model, name, overlay, kwargs)
        except (RuntimeError, ValueError, KeyError) as e:
            raise ConfigError(
                f'cannot initialise {name} from --initial-checkpoint {initial_checkpoint} ({type(e).__name__}: '
                f'{e}); check the file and that --model/--model-kwargs/--img-size match it.') from e
        return model, f'initial checkpoint {initial_checkpoint}'
    if pretrained_tag and '.' not in name:
        tagged = f'{name}.{pretrained_tag}'
        torch.manual_seed(seed)
        try:
            return timm.create_model(tagged, pretrained=True, **kwargs), f'pretrained {tagged}'
        except (RuntimeError, OSError, ValueError, KeyError) as e:
            log(f'No {tagged} weights ({type(e).__name__}: {e}); starting from scratch, so expect lower accuracy '
                f'than the paper, which starts from IR-50 on MS-Celeb-1M and ViT-S on ImageNet.')
    torch.manual_seed(seed)
    try:
        return timm.create_model(name, **kwargs), 'random initialisation'
    except (RuntimeError, TypeError, ValueError) as e:
        raise ConfigError(f'cannot create {name} with {kwargs}: {e}; check --model-kwargs and --img-size.') from e


def resolve_face_template(model: nn.Module) -> str:
    """Name of the face template (:data:`timm_fer.constants.FACE_TEMPLATES`) that ``model``'s training faces were
    framed with: the one its checkpoint or Hub folder named (:func:`load_model` keeps it as ``model.face_template``),
    else its tag's (:data:`~timm_fer.constants.TAG_FACE_TEMPLATES`), else the default (ArcFace's)."""
    own = getattr(model, 'face_template', None)
    if own is not None:
        return own
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    return TAG_FACE_TEMPLATES.get(tagged_name(cfg.get('architecture', ''), cfg.get('tag')), DEFAULT_FACE_TEMPLATE)


def resolve_fer_data_config(model: nn.Module, img_size: Optional[int] = None) -> Dict[str, Any]:
    """timm data config (channels, mean, std, interpolation) of ``model``: the channels of its first conv (timm keeps
    the pretrained cfg's three for a model made with ``in_chans=1``), at ``img_size`` when the model was built for it,
    plus 'face_template': the name of the template photos are aligned to (:func:`resolve_face_template`).
    """
    config = resolve_data_config({}, model=model)
    channels = first_conv_channels(model) or config['input_size'][0]
    size = to_2tuple(img_size) if img_size is not None else config['input_size'][1:]
    config['input_size'] = (channels, *size)
    if len(config['mean']) != channels:  # a one-channel model of a three-channel cfg: the channels' mean
        config['mean'] = (sum(config['mean']) / len(config['mean']),) * channels
        config['std'] = (sum(config['std']) / len(config['std']),) * channels
    config['face_template'] = resolve_face_template(model)
    return config


def check_finite_outputs(model: nn.Module, input_size: Sequence[int], source: str) -> None:
    """Run a probe batch of :data:`PROBE_BATCH_SIZE` random normalised faces through ``model`` (in eval mode, on its
    device) and refuse NaN or infinite logits: weights that are finite but overflow in the forward pass give them for
    every face, and a prediction or a score made of them means nothing.

    Args:
        model: The loaded model.
        input_size: (channels, height, width) of its input (:func:`resolve_fer_data_config`).
        source: Where the weights came from (``checkpoint PATH``, ``pretrained NAME``), for the message.

    Raises:
        NonFiniteOutputError: the probe batch gave a logit that is not finite.
    """
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device('cpu')
    faces = torch.randn(PROBE_BATCH_SIZE, *input_size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        logits = model(faces.to(device))
    if not bool(torch.isfinite(logits).all()):
        raise NonFiniteOutputError(
            f'the weights of {source} give NaN or infinite logits on a probe batch of {PROBE_BATCH_SIZE} random '
            f'faces: they overflow in the forward pass (or are damaged), so no prediction can be made with them; '
            f'use the checkpoint of a run whose loss stayed finite.')
