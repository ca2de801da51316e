"""Weights in and out: the loading API (any checkpoint or tag to a model), converters, Hub model folders."""
from .catalogue import list_and_classify
from .checkpoint import TRAIN_CHECKPOINT_FORMAT, Checkpoint, read_checkpoint, read_class_map
from .convert import (
    convert_checkpoint,
    convert_to_model,
    ensemble_weights,
    fold_logit_adjustment,
    fold_temperature,
    push_model,
)
from .folder import (
    HUB_FOLDER_FILES,
    check_hub_folder,
    default_repo_id,
    hub_folder_files,
    make_model_card,
    push_hub_folder,
    write_hub_folder,
)
from .loading import (
    DEFAULT_MODEL,
    PAPER_INIT_TAG,
    RANDOM_WEIGHTS,
    check_pretrained_tag,
    create_fer_model,
    create_named_model,
    load_model,
    resolve_face_template,
    resolve_fer_data_config,
)

__all__ = [
    'DEFAULT_MODEL',
    'HUB_FOLDER_FILES',
    'PAPER_INIT_TAG',
    'RANDOM_WEIGHTS',
    'TRAIN_CHECKPOINT_FORMAT',
    'Checkpoint',
    'check_hub_folder',
    'check_pretrained_tag',
    'convert_checkpoint',
    'convert_to_model',
    'create_fer_model',
    'create_named_model',
    'default_repo_id',
    'ensemble_weights',
    'fold_logit_adjustment',
    'fold_temperature',
    'hub_folder_files',
    'list_and_classify',
    'load_model',
    'make_model_card',
    'push_hub_folder',
    'push_model',
    'read_checkpoint',
    'read_class_map',
    'resolve_face_template',
    'resolve_fer_data_config',
    'write_hub_folder',
]
