"""Hugging Face Hub model folders: atomic writing, model cards, checking and pushing.

A Hub model folder is what timm's ``save_for_hf`` writes (``model.safetensors``, ``config.json``) plus a model card
``README.md``; ``timm.create_model('hf-hub:ORG/NAME', pretrained=True)`` loads it back. ``config.json`` also names the
face template the weights were trained with ('face_template', at its top level, which timm ignores: its pretrained
cfg takes no such field); :func:`~timm_fer.hub.read_checkpoint` reads it back.
"""
import json
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from timm.models import save_for_hf
from timm.models._hub import generate_readme
from torch import nn

from ..constants import HF_HUB_ORG
from ..errors import ConfigError
from ..models import tagged_name
from ..utils import count_macs, count_params
from ..utils.atomic import staging_folder
from .loading import resolve_face_template

__all__ = ['HUB_FOLDER_FILES', 'check_hub_folder', 'default_repo_id', 'hub_folder_files', 'make_model_card',
           'push_hub_folder', 'write_hub_folder']

HUB_FOLDER_FILES = ('model.safetensors', 'config.json', 'README.md')


def default_repo_id(architecture: str, tag: Optional[str] = None) -> str:
    """The Hub repo of a model tag: ``{HF_HUB_ORG}/{architecture}.{tag}``, as in the pretrained cfgs."""
    return f'{HF_HUB_ORG}/{tagged_name(architecture, tag)}'


def make_model_card(
        model: nn.Module,
        command: str,
        metrics: Optional[Sequence[str]] = None,
        dataset: Optional[str] = None,
        sources: Optional[Sequence[str]] = None,
        training: Optional[Sequence[str]] = None,
) -> str:
    """A model card (README.md) with timm's front matter, the model's details, metrics, licence and provenance.

    Args:
        model: The model whose weights the folder holds.
        command: The command that produced the weights.
        metrics: Measured results, one line each; the cfg's notes (paper results) are added.
        dataset: Training dataset of the weights.
        sources: Files or repos the weights came from.
        training: How the weights were trained (protocol, command, time), one line each.
    """
    cfg = model.pretrained_cfg
    repo_id = default_repo_id(cfg['architecture'], cfg.get('tag'))
    details: Dict[str, Any] = {
        'Model Type': 'Facial expression classification' if model.num_classes else 'Face feature backbone',
        'Model Stats': {
            'Params (M)': f'{count_params(model) / 1e6:.2f}',
            'MACs (G)': f'{count_macs(model) / 1e9:.2f}',
            'Image size': 'x'.join(map(str, cfg['input_size'][1:])),
        },
        'Face alignment': f"similarity transform of five landmarks onto the '{resolve_face_template(model)}' template "
                          '(timm_fer.faces.FACE_TEMPLATES), as timm-fer predict does',
        'Papers': [f"{cfg['paper_name']}: {cfg['paper_ids']}"] if cfg.get('paper_name') else [],
    }
    if dataset:
        details['Dataset'] = dataset
    if cfg.get('label_names'):
        details['Classes (in output order)'] = ', '.join(cfg['label_names'])
    card = {
        'license': cfg.get('license') or 'apache-2.0',
        'tags': ['image-classification', 'timm', 'timm-fer', 'facial-expression-recognition'],
        'description': cfg.get('description') or f'{repo_id} weights for timm-fer.',
        'details': details,
        'usage': (
            '```python\nimport timm\nimport timm_fer  # registers the model with timm\n\n'
            f"model = timm.create_model('hf-hub:{repo_id}', pretrained=True).eval()\n"
            'config = timm.data.resolve_data_config({}, model=model)\n'
            'transform = timm.data.create_transform(**config)  # aligned face (PIL) -> normalised tensor\n'
            '```\n'),
    }
    text = generate_readme(card, repo_id.split('/')[-1])
    lines = ['', '## Metrics'] + [f'- {line}' for line in list(metrics or []) + list(cfg.get('notes') or [])]
    if len(lines) == 2:
        lines.append('- none measured for these weights')
    if training:
        lines += ['', '## Training'] + [f'- {line}' for line in training]
    lines += ['', '## Provenance', f'Produced with `{command}`.']
    lines += [f'- source: {source}' for source in sources or []]
    lines += ['', '## Licence', f"Weights: {card['license']}. Training datasets keep their own terms; RAF-DB, "
              'FERPlus (FER2013) and AffectNet are for non-commercial research only.', '']
    return text.rstrip('\n') + '\n' + '\n'.join(lines)


def _refuse_unsafe_target(out_dir: Path) -> None:
    """Refuse folders whose replacement would delete what timm-fer did not write."""
    target = out_dir.resolve()
    cwd = Path.cwd().resolve()
    if target == Path(target.anchor) or target == Path.home().resolve() or target == cwd or target in cwd.parents:
        raise ConfigError(f'refusing to write a Hub model folder at {out_dir}: it is the root, the home folder, the '
                          f'current folder or one of its parents; give a new folder, e.g. --out hub/MODEL.TAG.')
    if not target.exists():
        return
    if not target.is_dir():
        raise ConfigError(f'{out_dir} exists and is not a folder; choose another --out.')
    names = {p.name for p in target.iterdir()}
    if names and not (names <= set(HUB_FOLDER_FILES) and _is_timm_config(target / 'config.json')):
        raise ConfigError(
            f'{out_dir} holds files that are not a Hub model folder written by timm-fer ({", ".join(sorted(names)[:5])}'
            f'{", ..." if len(names) > 5 else ""}); nothing was changed: choose another --out.')


def _is_timm_config(path: Path) -> bool:
    try:
        return 'architecture' in json.loads(path.read_text(encoding='utf-8'))
    except (OSError, ValueError, TypeError):
        return False


def write_hub_folder(model: nn.Module, out_dir: Path, model_card: str, overwrite: bool = False) -> Path:
    """Write ``model`` as a Hub model folder, atomically: a failure leaves ``out_dir`` as it was.

    The folder is written beside ``out_dir`` and swapped in; only a Hub model folder that timm-fer wrote (its three
    files and nothing else) is ever replaced, and never the root, home or current folder or a parent of it.

    Args:
        model: The model to save (weights as safetensors, timm's ``config.json``).
        out_dir: The folder to create.
        model_card: Text of ``README.md``.
        overwrite: Replace a Hub model folder that timm-fer wrote at ``out_dir``; otherwise an existing, non-empty
            ``out_dir`` is an error.
    """
    out_dir = Path(out_dir)
    _refuse_unsafe_target(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise ConfigError(f'{out_dir} already exists: choose another --out or pass --overwrite.')
    staging = Path(staging_folder(str(out_dir)))
    retired = None
    try:
        save_for_hf(model, staging, model_config=dict(face_template=resolve_face_template(model)),
                    safe_serialization=True)
        (staging / 'README.md').write_text(model_card, encoding='utf-8')
        for file in staging.iterdir():  # readable by all, like any published file (mkdtemp made the folder private)
            file.chmod(0o644)
        staging.chmod(0o755)
        if out_dir.exists():
            retired = staging.with_name(staging.name + '.old')
            out_dir.rename(retired)
        staging.rename(out_dir)
    except BaseException:
        if retired is not None and not out_dir.exists():
            retired.rename(out_dir)
            retired = None
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        if retired is not None:  # the folder timm-fer wrote before, checked above to hold only its own files
            shutil.rmtree(retired, ignore_errors=True)
    return out_dir


def check_hub_folder(folder: Path) -> Dict[str, Any]:
    """Check that ``folder`` holds a complete Hub model folder and return its ``config.json``."""
    folder = Path(folder)
    missing = [name for name in HUB_FOLDER_FILES if not (folder / name).is_file()]
    if missing:
        raise ConfigError(
            f'{folder} is not a complete Hub model folder: missing {", ".join(missing)}; write it with '
            f'`timm-fer convert` or `timm-fer push --model ... --checkpoint ...`.')
    return json.loads((folder / 'config.json').read_text())


def push_hub_folder(folder: Path, repo_id: str, private: bool = False, token: Optional[str] = None,
                    commit_message: str = 'Add timm-fer weights') -> str:
    """Create ``repo_id`` on the Hub if needed and upload ``folder`` to it; returns the commit URL."""
    from huggingface_hub import HfApi

    check_hub_folder(folder)
    api = HfApi(token=token, library_name='timm-fer')
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    return str(api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=commit_message))


def hub_folder_files(folder: Path) -> List[str]:
    """The files of a Hub folder with their sizes, for printing."""
    return [f'{p.name} ({p.stat().st_size / 2 ** 20:.1f} MiB)' for p in sorted(Path(folder).iterdir())]
