"""FER datasets in their official layouts, the class-balanced sampler and the paper's transforms."""
from ..errors import DatasetError, DatasetFileNotFoundError
from .affectnet import AffectNet
from .batch_augment import FaceBatchAugment, normalize_faces, uniform_draws
from .dataset import FerDataset, ImageFileDataset, SampleKey
from .factory import DATASET_NAMES, EVAL_SPLITS, create_fer_dataset
from .ferplus import FER2013_LABELS, FerPlus, majority_vote, mix_original_labels, read_original_labels, reweigh_votes
from .image_folder import FerImageFolder
from .rafdb import RafDb
from .sampler import ClassBalancedSampler
from .transforms import create_fer_transform

__all__ = [
    'AffectNet',
    'ClassBalancedSampler',
    'DATASET_NAMES',
    'DatasetError',
    'DatasetFileNotFoundError',
    'EVAL_SPLITS',
    'FER2013_LABELS',
    'FaceBatchAugment',
    'FerDataset',
    'FerImageFolder',
    'FerPlus',
    'ImageFileDataset',
    'RafDb',
    'SampleKey',
    'create_fer_dataset',
    'create_fer_transform',
    'majority_vote',
    'mix_original_labels',
    'normalize_faces',
    'read_original_labels',
    'reweigh_votes',
    'uniform_draws',
]
