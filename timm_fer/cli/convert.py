"""``timm-fer convert`` and ``timm-fer push``: Hub model folders from the paper's sources or trained checkpoints."""
import argparse
from pathlib import Path

from . import COMMANDS
from .common import CHECKPOINT_HELP, add_checkpoint_arguments, add_command, label_names_of

__all__ = ['add_convert_parser', 'add_push_parser']


def _convert(args: argparse.Namespace) -> int:
    from ..hub import convert_checkpoint, default_repo_id, hub_folder_files
    from ..utils.outputs import OutputPlan

    plan = OutputPlan([args.face_evolve, args.vit, args.checkpoint], overwrite=args.overwrite)
    plan.folder(args.out, '--out')  # before the conversion: no input in it, nothing there without --overwrite
    model = convert_checkpoint(args.model, args.out, args.face_evolve, args.vit, args.checkpoint, args.seed,
                               overwrite=args.overwrite, command=args.command_line)
    cfg = model.pretrained_cfg
    print(f'Wrote {args.out}: {", ".join(hub_folder_files(args.out))}; Hub repo id: '
          f'{default_repo_id(cfg["architecture"], cfg.get("tag"))}')
    return 0


def _push(args: argparse.Namespace) -> int:
    from ..engine import training_class_prior
    from ..hub import push_model
    from ..inference.backends import note
    from ..utils.outputs import OutputPlan

    if args.model or args.checkpoint:  # the folder is written first
        plan = OutputPlan([args.checkpoint, args.ensemble_base], overwrite=args.overwrite)
        plan.folder(args.folder, 'the folder')
    prior = training_class_prior(args.checkpoint) if args.logit_adjustment and args.checkpoint else None
    lines = push_model(
        args.folder, model=args.model, checkpoint=args.checkpoint, metrics=args.metric, dataset=args.dataset,
        training=args.training, repo_id=args.repo_id, private=args.private, overwrite=args.overwrite,
        dry_run=args.dry_run, logit_adjustment=args.logit_adjustment, class_prior=prior,
        temperature=args.temperature, ensemble_base=args.ensemble_base, ensemble_weight=args.ensemble_weight,
        command=args.command_line, label_names=label_names_of(args), use_ema=args.ema, log=note)
    print('\n'.join(lines))
    return 0


def add_convert_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``timm-fer convert``."""
    parser = add_command(
        subparsers, 'convert', _convert, COMMANDS['convert'].help,
        examples=('timm-fer convert --model ir_50.ms1m --face-evolve backbone_ir50_ms1m_epoch120.pth --out '
                  'hub/ir_50.ms1m',
                  'timm-fer convert --model transfer_fer_ir50.ms1m_in1k --face-evolve backbone_ir50_ms1m_epoch120.pth '
                  '--vit vit_small_p16_224-15ec54c9.pth --out hub/transfer_fer_ir50.ms1m_in1k'))
    parser.add_argument('--model', required=True, help='target model and tag, e.g. transfer_fer_ir50.ms1m_in1k')
    parser.add_argument('--face-evolve', type=Path, help='face.evoLVe IR / IR-SE checkpoint (.pth)')
    parser.add_argument('--vit', type=Path, help="timm legacy ViT-S checkpoint (vit_small_p16_224-15ec54c9.pth)")
    parser.add_argument('--checkpoint', type=Path, help='a checkpoint already in timm-fer layout')
    parser.add_argument('--out', type=Path, required=True, help='Hub model folder to write')
    parser.add_argument('--seed', type=int, default=0, help='seed of the parts no source covers')
    parser.add_argument('--overwrite', action='store_true', help='replace a Hub model folder timm-fer wrote at --out')


def add_push_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``timm-fer push``."""
    parser = add_command(subparsers, 'push', _push, COMMANDS['push'].help)
    parser.add_argument('folder', type=Path, help='Hub model folder to push (written first with --model/--checkpoint)')
    parser.add_argument('--model', help='model and tag of --checkpoint, e.g. transfer_fer_ir50.rafdb (default: the '
                                        'model the checkpoint names)')
    parser.add_argument('--checkpoint', type=Path, help=f'{CHECKPOINT_HELP}; written into the folder first')
    add_checkpoint_arguments(parser)
    parser.add_argument('--metric', action='append', help='a measured result for the model card (repeatable)')
    parser.add_argument('--dataset', help='training dataset, for the model card')
    parser.add_argument('--training', action='append',
                        help='how the weights were trained (protocol, command, time), for the model card (repeatable)')
    parser.add_argument('--logit-adjustment', type=float, default=0., metavar='TAU',
                        help='fold post-hoc logit adjustment (logits - TAU x log training prior) into the classifier '
                             'written from --checkpoint: more recall on rare classes')
    parser.add_argument('--ensemble-base', type=Path, metavar='CHECKPOINT',
                        help='write the weight-space ensemble of --checkpoint and the CHECKPOINT it was fine-tuned '
                             'from (WiSE-FT): robust to faces unlike the fine-tuning data, accurate on it')
    parser.add_argument('--ensemble-weight', type=float, default=0.5, metavar='W',
                        help='share of the fine-tuned weights in the ensemble (default: 0.5)')
    parser.add_argument('--temperature', type=float, default=1., metavar='T',
                        help='divide the logits of the classifier written from --checkpoint by T (after the logit '
                             'adjustment): probabilities that match how often they are right, predictions unchanged; '
                             'benchmarks/robustness_proxies.py fits T')
    parser.add_argument('--repo-id', help="target repo (default: the tag's hf_hub_id)")
    parser.add_argument('--private', action='store_true', help='create the repo as private')
    parser.add_argument('--overwrite', action='store_true', help='replace a Hub model folder timm-fer wrote')
    parser.add_argument('--dry-run', action='store_true', help='only write and check the folder; push nothing')
