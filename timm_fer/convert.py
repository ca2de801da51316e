"""Convert the paper's initialisation sources into timm-fer checkpoints, and publish Hub model folders.

``timm-fer convert`` turns face.evoLVe IR / IR-SE checkpoints and timm's legacy ViT-S checkpoint into
``ir_50.ms1m``, the stem or encoder of ``transfer_fer_ir50``, or the combined ``transfer_fer_ir50.ms1m_in1k``.
``timm-fer push`` uploads a Hub model folder (or writes one from a trained checkpoint first).
"""
import argparse
from pathlib import Path
from typing import Dict, Optional

import timm
import torch
from huggingface_hub import constants as hf_constants
from torch import nn

from .errors import ConfigError
from .hub import (
    check_hub_folder,
    default_repo_id,
    hub_folder_files,
    load_checkpoint_file,
    make_model_card,
    push_hub_folder,
    write_hub_folder,
)
from .models import IRNet, TransFER, irnet, registered_models, transfer
from .models._pretrained import CheckpointMismatchError, PretrainedWeightsError

__all__ = ['convert_to_model', 'create_named_model']

_FILTERS = {IRNet: irnet.checkpoint_filter_fn, TransFER: transfer.checkpoint_filter_fn}


def create_named_model(name: str, **kwargs) -> nn.Module:
    """``timm.create_model`` for a timm-fer model name with an optional tag; unknown names and tags say what exists."""
    architecture, _, tag = name.partition('.')
    if architecture not in registered_models():
        raise ConfigError(f"unknown timm-fer model '{architecture}'; known: {', '.join(registered_models())}.")
    known_tags = [n.partition('.')[2] for n in timm.models.get_arch_pretrained_cfgs(architecture) if '.' in n]
    if tag and tag not in known_tags:
        raise ConfigError(f"unknown tag '{tag}' for {architecture}; known tags: {', '.join(known_tags) or 'none'}.")
    return timm.create_model(name, **kwargs)


def _sources_of(paths: Dict[str, Optional[Path]]) -> Dict[str, torch.Tensor]:
    """Load every given source file and merge their tensors, refusing files of the wrong layout."""
    merged: Dict[str, torch.Tensor] = {}
    for kind, path in paths.items():
        if path is None:
            continue
        state_dict = load_checkpoint_file(path)
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


def _run_convert(args: argparse.Namespace) -> int:
    model = convert_to_model(args.model, args.face_evolve, args.vit, args.checkpoint, args.seed)
    sources = [str(p) for p in (args.face_evolve, args.vit, args.checkpoint) if p]
    card = make_model_card(model, command=args.command_line, sources=sources)
    out = write_hub_folder(model, args.out, card, overwrite=args.overwrite)
    cfg = model.pretrained_cfg
    print(f'Wrote {out}: {", ".join(hub_folder_files(out))}; Hub repo id: '
          f'{default_repo_id(cfg["architecture"], cfg.get("tag"))}')
    return 0


def _run_push(args: argparse.Namespace) -> int:
    if args.model or args.checkpoint:
        if not (args.model and args.checkpoint):
            raise ConfigError('--model and --checkpoint go together: the checkpoint is loaded into that model.')
        model = convert_to_model(args.model, checkpoint=args.checkpoint)
        card = make_model_card(model, command=args.command_line, metrics=args.metric, dataset=args.dataset,
                               sources=[str(args.checkpoint)], training=args.training)
        write_hub_folder(model, args.folder, card, overwrite=args.overwrite)
        cfg = model.pretrained_cfg
        repo_id = args.repo_id or default_repo_id(cfg['architecture'], cfg.get('tag'))
    else:
        config = check_hub_folder(args.folder)
        repo_id = args.repo_id or default_repo_id(config['architecture'], config['pretrained_cfg'].get('tag'))
    files = ', '.join(hub_folder_files(args.folder))
    if args.dry_run:
        print(f'Dry run: {args.folder} ({files}) is ready; it would be pushed to https://huggingface.co/{repo_id}')
        return 0
    if hf_constants.HF_HUB_OFFLINE:
        raise PretrainedWeightsError(f'cannot push {args.folder} to {repo_id}: HF_HUB_OFFLINE is set.')
    print(f'Pushed {args.folder} ({files}): {push_hub_folder(args.folder, repo_id, private=args.private)}')
    return 0


def add_convert_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``timm-fer convert``."""
    parser = subparsers.add_parser(
        'convert', help='convert face.evoLVe IR and timm ViT-S checkpoints into a Hub model folder',
        description='Examples:\n  timm-fer convert --model ir_50.ms1m --face-evolve backbone_ir50_ms1m_epoch120.pth '
                    '--out hub/ir_50.ms1m\n  timm-fer convert --model transfer_fer_ir50.ms1m_in1k --face-evolve '
                    'backbone_ir50_ms1m_epoch120.pth --vit vit_small_p16_224-15ec54c9.pth '
                    '--out hub/transfer_fer_ir50.ms1m_in1k',
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', required=True, help='target model and tag, e.g. transfer_fer_ir50.ms1m_in1k')
    parser.add_argument('--face-evolve', type=Path, help='face.evoLVe IR / IR-SE checkpoint (.pth)')
    parser.add_argument('--vit', type=Path, help="timm legacy ViT-S checkpoint (vit_small_p16_224-15ec54c9.pth)")
    parser.add_argument('--checkpoint', type=Path, help='a checkpoint already in timm-fer layout')
    parser.add_argument('--out', type=Path, required=True, help='Hub model folder to write')
    parser.add_argument('--seed', type=int, default=0, help='seed of the parts no source covers')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing --out folder')
    parser.set_defaults(func=_run_convert)


def add_push_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``timm-fer push``."""
    parser = subparsers.add_parser(
        'push', help='push a Hub model folder to the Hugging Face Hub (writing it from a checkpoint first)')
    parser.add_argument('folder', type=Path, help='Hub model folder to push (written first with --model/--checkpoint)')
    parser.add_argument('--model', help='model and tag of --checkpoint, e.g. transfer_fer_ir50.rafdb')
    parser.add_argument('--checkpoint', type=Path, help='trained weights to write into the folder first')
    parser.add_argument('--metric', action='append', help='a measured result for the model card (repeatable)')
    parser.add_argument('--dataset', help='training dataset, for the model card')
    parser.add_argument('--training', action='append',
                        help='how the weights were trained (protocol, command, time), for the model card (repeatable)')
    parser.add_argument('--repo-id', help='target repo (default: the tag\'s hf_hub_id)')
    parser.add_argument('--private', action='store_true', help='create the repo as private')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing folder')
    parser.add_argument('--dry-run', action='store_true', help='only write and check the folder; push nothing')
    parser.set_defaults(func=_run_push)

