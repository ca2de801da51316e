"""Shared pretrained-weight plumbing of the model families: building with clear errors, checking state dicts."""
import argparse
import re
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

import safetensors.torch
import timm
import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError
from timm.models import build_model_with_cfg
from timm.models._builder import resolve_pretrained_cfg
from torch import nn

from ..constants import HF_HUB_ORG, PUBLISHED_ON_HUB
from ..errors import CheckpointMismatchError, ConfigError, FerError, PretrainedWeightsError

__all__ = ['SAFE_GLOBALS', 'adaptable_prefixes', 'build_fer_model', 'check_state_dict_fits', 'loadable_tags',
           'no_weights_reason', 'published_hub_id', 'read_checkpoint_file', 'shipped_weights', 'tagged_name',
           'unwrap_state_dict']

SAFE_GLOBALS = [argparse.Namespace]
"""The only objects besides tensors and plain values that checkpoints may hold: timm's ``train.py`` saves its
parsed arguments (an ``argparse.Namespace``) in every checkpoint."""

SHIPPED_WEIGHTS_DIR = Path(__file__).resolve().parent.parent / 'weights'
"""Hub model folders shipped inside the package (weights, config.json, model card), one per tag."""


def _local_file_hint(name: str) -> str:
    return (f"To load a weights file of your own: timm.create_model('{name}', pretrained=True, "
            f"pretrained_cfg_overlay=dict(file='path/to/model.safetensors')).")


def tagged_name(architecture: str, tag: Optional[str]) -> str:
    """The name of a model with its pretrained tag, ``architecture.tag``, or the architecture alone when untagged."""
    return f'{architecture}.{tag}' if tag else architecture


def published_hub_id(name: str) -> Optional[str]:
    """The Hub repo of a model tag whose weights are published (:data:`~timm_fer.constants.PUBLISHED_ON_HUB`), else
    None."""
    return f'{HF_HUB_ORG}/{name}' if name in PUBLISHED_ON_HUB else None


def shipped_weights(name: str) -> Path:
    """The ``model.safetensors`` of model tag ``name`` (``architecture.tag``) shipped inside the package."""
    return SHIPPED_WEIGHTS_DIR / name / 'model.safetensors'


def loadable_tags() -> List[str]:
    """The timm-fer model tags whose weights load: shipped with the package or published on the Hub."""
    return timm.list_models(module=['irnet', 'transfer'], pretrained=True, include_tags=True)


def no_weights_reason(name: str) -> str:
    """Why ``name`` (a model with its tag) has no weights to load, naming the tags that do load."""
    return (f'no weights have been published for {name} yet; the tags whose weights load are '
            f'{", ".join(loadable_tags()) or "none"}')


def build_fer_model(model_cls: type, variant: str, pretrained: bool = False,
                    label_names: Optional[Sequence[str]] = None, **kwargs: Any) -> nn.Module:
    """``timm.models.build_model_with_cfg`` with errors that say which weights are missing and what to do, and
    label names that fit the head.

    A head of another size than the pretrained cfg's (``num_classes=7`` on an 8-class tag) makes the tag's label
    names wrong: the model's pretrained cfg then gets ``label_names`` (or none) and the head's ``num_classes``.

    Args:
        model_cls: The model family.
        variant: The registered model name.
        pretrained: Load the tag's weights.
        label_names: The classes of the head, in output order; ``num_classes`` defaults to their number.
        kwargs: timm's ``build_model_with_cfg`` arguments and the model's constructor arguments.

    Raises:
        ConfigError: ``label_names`` do not match ``num_classes``.
    """
    if label_names is not None:
        kwargs.setdefault('num_classes', len(label_names))
        if len(label_names) != kwargs['num_classes']:
            raise ConfigError(f'{len(label_names)} label_names for a head of {kwargs["num_classes"]} classes: give '
                              f'one name per class.')
    model = _build(model_cls, variant, pretrained, **kwargs)
    num_classes = getattr(model, 'num_classes', None)
    if num_classes is None:  # features_only: no head to name
        return model
    cfg = model.pretrained_cfg
    names = cfg.get('label_names')
    stale = cfg.get('num_classes') != num_classes or (names is not None and len(names) != num_classes)
    if label_names is not None or stale:
        cfg['label_names'] = tuple(label_names) if label_names is not None else None
        cfg['num_classes'] = num_classes
    return model


def _build(model_cls: type, variant: str, pretrained: bool, **kwargs: Any) -> nn.Module:
    """:func:`build_fer_model` without the label names."""
    if not pretrained:
        return build_model_with_cfg(model_cls, variant, pretrained, **kwargs)
    cfg = resolve_pretrained_cfg(
        variant,
        pretrained_cfg=kwargs.get('pretrained_cfg'),
        pretrained_cfg_overlay=kwargs.get('pretrained_cfg_overlay'),
    )
    name = tagged_name(variant, cfg.tag)
    if not (cfg.state_dict or cfg.file or cfg.url or cfg.hf_hub_id):
        raise PretrainedWeightsError(f'{no_weights_reason(name)}. {_local_file_hint(name)}')
    if cfg.file and not cfg.state_dict and not Path(cfg.file).exists():
        raise PretrainedWeightsError(f'no checkpoint file at {cfg.file}: check the path.')
    try:
        return build_model_with_cfg(model_cls, variant, pretrained, **kwargs)
    except (EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError) as e:
        offline = 'this machine is offline (HF_HUB_OFFLINE is set) and the weights are not in the local Hub cache' \
            if hf_constants.HF_HUB_OFFLINE else 'the Hub could not be reached or has no such file'
        raise PretrainedWeightsError(
            f"could not fetch the weights of {name} from the Hugging Face Hub repo '{cfg.hf_hub_id}': {offline} "
            f"({type(e).__name__}). {_local_file_hint(name)}") from e
    except FerError:
        raise
    except Exception as e:  # a damaged pickle fails with almost any exception type, depending on its bytes
        if not cfg.file:
            raise
        try:
            read_checkpoint_file(cfg.file)
        except PretrainedWeightsError:
            raise PretrainedWeightsError(
                f'{cfg.file} is not a tensor checkpoint that loads with torch.load(weights_only=True) or safetensors '
                f'(arbitrary pickled objects are never loaded): {type(e).__name__}: {_first_line(e)}') from e
        raise


def _first_line(error: Exception) -> str:
    """What is wrong, in one line: torch.load's refusal of a pickle spans paragraphs and advises torch calls
    (``weights_only=False``, which would run it, or allow-listing the global); only the refused global is named."""
    text = str(error)
    refused = re.search(r'GLOBAL ([\w.]+)', text)
    if refused:
        return f'it refers to GLOBAL {refused[1]}, which is neither a tensor nor a plain value'
    detail = text.rpartition('WeightsUnpickler error:')[2]
    lines = [line.strip() for line in detail.splitlines() if line.strip() and 'weights_only' not in line]
    return lines[0] if lines else f'{type(error).__name__}: its bytes are not a checkpoint'


def read_checkpoint_file(path: Path) -> Dict[str, Any]:
    """Read a ``.safetensors`` or ``.pth``/``.bin`` checkpoint as it was saved, never unpickling arbitrary objects.

    safetensors files are read as such; anything else only through ``torch.load(..., weights_only=True)``, which
    admits tensors, plain containers and values, and :data:`SAFE_GLOBALS` (the ``args`` of timm's ``train.py``).

    Raises:
        PretrainedWeightsError: the file is missing, or is not a checkpoint dict of tensors and plain values.
    """
    path = Path(path)
    if not path.is_file():
        raise PretrainedWeightsError(f'checkpoint not found: no file at {path}; check the path.')
    try:
        return safetensors.torch.load_file(path)
    except safetensors.SafetensorError:
        pass
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError or ValueError depending on the damage
        raise PretrainedWeightsError(
            f'{path} is neither a safetensors file nor a tensor checkpoint (tensors and plain values; arbitrary '
            f'pickled objects are never loaded): {_first_line(e)}; give the weights file itself (e.g. the state dict '
            f'saved alone, or .safetensors).') from e
    if not isinstance(checkpoint, dict):
        raise PretrainedWeightsError(f'{path} holds a {type(checkpoint).__name__}, not a dict of tensors.')
    return checkpoint


def unwrap_state_dict(checkpoint: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    """The tensors of a checkpoint: unwraps ``state_dict`` / ``model`` entries and DataParallel ``module.`` prefixes."""
    for key in ('state_dict', 'model'):
        if isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
            break
    state_dict = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in checkpoint.items()}
    not_tensors = sorted(k for k, v in state_dict.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise CheckpointMismatchError(f'checkpoint entries that are not tensors: {_short_list(not_tensors)}')
    return state_dict


def _short_list(keys: Iterable[str], limit: int = 12) -> str:
    keys = list(keys)
    shown = ', '.join(keys[:limit])
    return f'{shown} (and {len(keys) - limit} more)' if len(keys) > limit else shown


def adaptable_prefixes(model: nn.Module) -> tuple:
    """Keys whose shapes timm's ``load_pretrained`` adapts: the first conv (``in_chans``), and the classifier when
    the model has another number of classes than its pretrained cfg (timm then drops it from the checkpoint)."""
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    prefixes = [cfg.get('first_conv')]
    if getattr(model, 'num_classes', None) != cfg.get('num_classes'):
        prefixes.append(cfg.get('classifier'))
    return tuple(p for p in prefixes if p)


def check_state_dict_fits(
        state_dict: Dict[str, torch.Tensor],
        model: nn.Module,
        source: str,
        adaptable: Iterable[str] = (),
        allow_missing: bool = False,
) -> None:
    """Raise :class:`CheckpointMismatchError` listing unexpected, missing and wrongly shaped keys.

    Args:
        state_dict: Converted tensors, named as in ``model``.
        model: The model they are for.
        source: What the tensors came from, for the message.
        adaptable: Key prefixes whose shapes timm adapts on load (see :func:`adaptable_prefixes`).
        allow_missing: Accept keys that the checkpoint lacks (they keep the model's initialisation).
    """
    expected = model.state_dict()
    adaptable = tuple(adaptable)
    unexpected = sorted(k for k in state_dict if k not in expected)
    missing = [] if allow_missing else sorted(
        k for k in expected if k not in state_dict and not k.startswith(adaptable) and
        not k.endswith('num_batches_tracked'))
    wrong_shape = sorted(
        f'{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}' for k, v in state_dict.items()
        if k in expected and v.shape != expected[k].shape and not k.startswith(adaptable))
    problems = [f'{label}: {_short_list(keys)}' for label, keys in (
        ('unexpected keys', unexpected), ('missing keys', missing), ('shape mismatches', wrong_shape)) if keys]
    if problems:
        raise CheckpointMismatchError(
            f'{source} does not fit {type(model).__name__}: ' + '; '.join(problems) +
            '. Is it a checkpoint of this architecture (and of these constructor arguments)?')
