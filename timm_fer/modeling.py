"""Create the model of a FER run: paper initialisation when published, local initial checkpoints, data config."""
import argparse
import ast
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import timm
import torch
from timm.data import resolve_data_config
from timm.layers import to_2tuple
from timm.models import get_pretrained_cfg_value

from .checkpoint import load_weights
from .errors import ConfigError

__all__ = ['PAPER_INIT_TAG', 'add_model_arguments', 'create_fer_model', 'parse_model_kwargs', 'resolve_fer_data_config']

PAPER_INIT_TAG = 'ms1m_in1k'
"""Pretrained tag of the paper's initialisation: IR-50 stem trained on MS-Celeb-1M, encoder from ImageNet ViT-S."""


def parse_model_kwargs(items: Optional[Sequence[str]]) -> Dict[str, Any]:
    """``key=value`` strings to a dict; values are Python literals (``(1, 1, 1)``, ``0.5``), else strings."""
    kwargs = {}
    for item in items or ():
        key, separator, value = item.partition('=')
        if not separator or not key.isidentifier():
            raise ConfigError(f"--model-kwargs takes key=value pairs, got '{item}'.")
        try:
            kwargs[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            kwargs[key] = value
    return kwargs


def add_model_arguments(parser: argparse._ActionsContainer) -> None:
    """Options that shape the model (``--model-kwargs``, ``--img-size``), shared by ``train`` and ``eval``."""
    parser.add_argument('--model-kwargs', nargs='*', default=[], metavar='KEY=VALUE',
                        help='extra model arguments, values parsed as Python literals, e.g. depth=4 '
                             'stem_layers="(1, 1, 1)"')
    parser.add_argument('--img-size', type=int, default=None,
                        help="square input size (default: the model's, 112 for TransFER)")


def create_fer_model(
        name: str,
        num_classes: int,
        img_size: Optional[int] = None,
        model_kwargs: Optional[Dict[str, Any]] = None,
        pretrained_tag: Optional[str] = None,
        initial_checkpoint: Optional[str] = None,
        seed: int = 0,
        log: Callable[[str], None] = print,
) -> Tuple[torch.nn.Module, str]:
    """Create ``name`` for ``num_classes`` classes, and say where its weights came from.

    With ``initial_checkpoint``, weights come from that local file (through timm's ``pretrained_cfg_overlay``); its
    classifier is kept when it has ``num_classes`` outputs and dropped (re-initialised) otherwise.
    Else, with ``pretrained_tag``, from ``name.pretrained_tag`` when timm can load it; when it cannot (weights not
    published, offline, tag unknown) a line says so and the model starts from scratch. The random initialisation
    is seeded with ``seed``, so every process of a run starts from the same weights.
    """
    if not timm.is_model(name):
        raise ConfigError(f"unknown model '{name}'; 'timm-fer models' lists the FER models, timm.list_models() all.")
    kwargs = dict(model_kwargs or {}, num_classes=num_classes)
    if img_size is not None:
        kwargs['img_size'] = img_size
    if initial_checkpoint:
        overlay = dict(file=initial_checkpoint, num_classes=_classifier_rows(name, initial_checkpoint))
        torch.manual_seed(seed)
        try:
            model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
        except (RuntimeError, OSError, ValueError, KeyError) as e:
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


def _classifier_rows(name: str, path: str) -> Optional[int]:
    """Classes of the classifier saved in ``path``, so that timm keeps it when the count matches and drops it else."""
    classifier = get_pretrained_cfg_value(name, 'classifier')
    weight = load_weights(path)[0].get(f'{classifier}.weight') if isinstance(classifier, str) else None
    return weight.shape[0] if weight is not None else None


def resolve_fer_data_config(model: torch.nn.Module, img_size: Optional[int] = None) -> Dict[str, Any]:
    """timm data config (channels, mean, std, interpolation) of ``model``, at ``img_size`` when the model was built for
    it."""
    config = resolve_data_config({}, model=model)
    if img_size is not None:
        config['input_size'] = (config['input_size'][0], *to_2tuple(img_size))
    return config
