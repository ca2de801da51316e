"""FER dataset readers on tiny copies of each official layout, their error messages, and the paper's transforms."""
from pathlib import Path

import pytest
import torch
from helpers import REAL_FERPLUS
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torchvision import transforms

from timm_fer.constants import AFFECTNET7_LABELS, AFFECTNET8_LABELS, FERPLUS_LABELS, RAFDB_LABELS
from timm_fer.data import (
    AffectNet,
    DatasetError,
    DatasetFileNotFoundError,
    FerImageFolder,
    FerPlus,
    RafDb,
    create_fer_dataset,
    create_fer_transform,
    majority_vote,
    mix_original_labels,
)
from timm_fer.errors import ConfigError

VOTE_HEADER = 'neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF'
DATA_CONFIG = {'input_size': (3, 32, 32), 'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
               'interpolation': 'bilinear'}


def _save_image(path: Path, size: int = 16, value: int = 128, mode: str = 'RGB') -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (size, size), value if mode == 'L' else (value, 255 - value, value // 2)).save(path)


# RAF-DB ------------------------------------------------------------------------------------------------------------

RAFDB_ROWS = [('train_00001.jpg', 5), ('train_00002.jpg', 4), ('train_00003.jpg', 7), ('test_0001.jpg', 1),
              ('test_0002.jpg', 4)]


def _write_rafdb(root: Path, rows=RAFDB_ROWS) -> Path:
    (root / 'EmoLabel').mkdir(parents=True)
    (root / 'EmoLabel' / 'list_patition_label.txt').write_text(''.join(f'{name} {label}\n' for name, label in rows))
    for name, _ in rows:
        _save_image(root / 'Image' / 'aligned' / name.replace('.jpg', '_aligned.jpg'), size=100)
    return root


class TestRafDb:

    def test_splits_labels_and_aligned_paths(self, tmp_path):
        root = _write_rafdb(tmp_path)
        train, test = RafDb(str(root), 'train'), RafDb(str(root), 'test')
        assert train.classes == RAFDB_LABELS and len(train) == 3 and len(test) == 2
        assert train.targets == [4, 3, 6]
        assert [RAFDB_LABELS[t] for t in test.targets] == ['surprise', 'happiness']
        assert train.paths[0].endswith('Image/aligned/train_00001_aligned.jpg')
        assert train.class_counts == [0, 0, 0, 1, 1, 0, 1]
        assert train.soft_targets is None  # one label per image: no votes
        image, label = train[0]
        assert image.mode == 'RGB' and image.size == (100, 100) and label == 4
        assert 'RAF-DB train: 3 images in 7 classes' in train.summary()

    def test_missing_label_file_names_it_and_the_layout(self, tmp_path):
        with pytest.raises(DatasetFileNotFoundError, match=r'list_patition_label\.txt.*Image/aligned'):
            RafDb(str(tmp_path), 'train')

    def test_missing_image_is_an_error_that_counts_and_names_it(self, tmp_path):
        root = _write_rafdb(tmp_path)
        (root / 'Image' / 'aligned' / 'train_00002_aligned.jpg').unlink()
        with pytest.raises(FileNotFoundError, match=r'1 of the 3 RAF-DB train images .*train_00002_aligned\.jpg'):
            RafDb(str(root), 'train')

    def test_unreadable_image_names_the_file(self, tmp_path):
        root = _write_rafdb(tmp_path)
        (root / 'Image' / 'aligned' / 'test_0002_aligned.jpg').write_bytes(b'not a jpeg')
        dataset = RafDb(str(root), 'test')
        with pytest.raises(DatasetError, match=r'cannot read image .*test_0002_aligned\.jpg'):
            dataset[1]

    def test_unknown_split(self, tmp_path):
        with pytest.raises(DatasetError, match="splits 'train' and 'test'"):
            RafDb(str(_write_rafdb(tmp_path)), 'val')

    def test_label_file_that_is_not_utf8_names_the_line(self, tmp_path):
        root = _write_rafdb(tmp_path)
        label_file = root / 'EmoLabel' / 'list_patition_label.txt'
        label_file.write_bytes(label_file.read_bytes() + b'train_00004.jpg \xff\xfe\n')
        with pytest.raises(DatasetError, match=r'list_patition_label\.txt line 6: not UTF-8 text .*3 rows read'):
            RafDb(str(root), 'train')


# FERPlus -----------------------------------------------------------------------------------------------------------

# (usage, name, votes): labels neutral, happiness, a tie, unknown, NF, contempt, then a validation row
FERPLUS_ROWS = [
    ('Training', 'fer0000000.png', (6, 0, 0, 1, 3, 0, 0, 0, 0, 0)),
    ('Training', 'fer0000001.png', (0, 9, 0, 0, 0, 0, 0, 0, 1, 0)),
    ('Training', 'fer0000002.png', (5, 0, 0, 5, 0, 0, 0, 0, 0, 0)),
    ('Training', 'fer0000003.png', (1, 0, 0, 0, 0, 0, 0, 0, 9, 0)),
    ('Training', '', (0, 0, 0, 0, 0, 0, 0, 0, 0, 10)),
    ('Training', 'fer0000005.png', (0, 0, 0, 0, 1, 0, 0, 8, 0, 1)),
    ('PublicTest', 'fer0000006.png', (0, 0, 7, 0, 0, 0, 3, 0, 0, 0)),
    ('PrivateTest', 'fer0000007.png', (0, 0, 0, 0, 0, 8, 2, 0, 0, 0)),
]
FERPLUS_FOLDERS = {'Training': 'FER2013Train', 'PublicTest': 'FER2013Valid', 'PrivateTest': 'FER2013Test'}


def _write_ferplus_csv(root: Path, rows=FERPLUS_ROWS) -> None:
    lines = [f'Usage,Image name,{VOTE_HEADER}\n'] + [
        f'{usage},{name},{",".join(map(str, votes))}\n' for usage, name, votes in rows]
    (root / 'fer2013new.csv').write_text(''.join(lines))


def _write_ferplus_folders(root: Path, rows=FERPLUS_ROWS, label_csv: bool = True) -> Path:
    """Layout of Microsoft's generate_training_data.py: PNGs and a header-less label.csv per split folder."""
    _write_ferplus_csv(root, rows)
    for usage, folder in FERPLUS_FOLDERS.items():
        (root / folder).mkdir(parents=True)
        named = [(name, votes) for row_usage, name, votes in rows if row_usage == usage and name]
        for name, _ in named:
            _save_image(root / folder / name, size=48, mode='L')
        if label_csv:
            (root / folder / 'label.csv').write_text(''.join(
                f'{name},"(0, 0, 48, 48)",{",".join(map(str, votes))}\n' for name, votes in named))
    return root


def _write_fer2013_pixels(root: Path, rows=FERPLUS_ROWS) -> None:
    lines = ['emotion,pixels,Usage\n'] + [
        f'{i % 7},{" ".join(str((i * 37 + p) % 256) for p in range(48 * 48))},{usage}\n'
        for i, (usage, _, _) in enumerate(rows)]
    (root / 'fer2013.csv').write_text(''.join(lines))


class TestFerPlus:

    @pytest.mark.parametrize('votes, expected', [
        ((4, 0, 0, 1, 3, 2, 0, 0, 0, 0), (0, '')),
        ((0, 0, 0, 0, 0, 0, 0, 6, 4, 0), (7, '')),
        ((3, 3, 0, 0, 0, 0, 0, 0, 0, 0), (None, 'with a tied majority vote')),
        ((0, 0, 0, 0, 0, 0, 0, 0, 6, 4), (None, 'with majority vote unknown')),
        ((0, 0, 0, 0, 0, 0, 0, 0, 0, 10), (None, 'with majority vote not-a-face (NF)')),
    ])
    def test_majority_vote(self, votes, expected):
        assert majority_vote(votes) == expected

    def test_folders_with_label_csv(self, tmp_path):
        root = _write_ferplus_folders(tmp_path)
        train = FerPlus(str(root), 'train')
        assert train.classes == FERPLUS_LABELS and train.image_source == 'folders'
        assert [FERPLUS_LABELS[t] for t in train.targets] == ['neutral', 'happiness', 'contempt']
        assert train.skipped == {'with a tied majority vote': 1, 'with majority vote unknown': 1}
        # the FERPlus paper's probability labels: the emotion votes of each kept face, normalised (unknown, NF out)
        assert torch.allclose(train.soft_targets, torch.tensor([
            [0.6, 0, 0, 0.1, 0.3, 0, 0, 0], [0, 1, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 1 / 9, 0, 0, 8 / 9]]))
        image, _ = train[0]
        assert image.mode == 'RGB' and image.size == (48, 48)
        assert [FERPLUS_LABELS[t] for t in FerPlus(str(root), 'valid').targets] == ['surprise']
        assert [FERPLUS_LABELS[t] for t in FerPlus(str(root), 'test').targets] == ['disgust']

    def test_folders_with_fer2013new_skip_unnamed_and_overwritten_rows(self, tmp_path):
        rows = FERPLUS_ROWS[:2] + [('Training', 'fer0000000.png', (6, 0, 0, 1, 3, 0, 0, 0, 0, 0))] + FERPLUS_ROWS[2:]
        root = _write_ferplus_folders(tmp_path, rows, label_csv=False)
        train = FerPlus(str(root), 'train')
        assert [Path(path).name for path in train.paths] == ['fer0000001.png', 'fer0000000.png', 'fer0000005.png']
        assert train.skipped['without an image name in fer2013new.csv (not a face, removed by FERPlus)'] == 1
        absent = [reason for reason in train.skipped if reason.startswith('absent')]
        assert absent == ['absent (named again by a later row, whose image replaced theirs: fer0000000.png)']
        assert 'fer0000000.png' in train.summary()

    def test_missing_image_fails_unless_skipped(self, tmp_path):
        root = _write_ferplus_folders(tmp_path)
        (root / 'FER2013Train' / 'fer0000001.png').unlink()
        with pytest.raises(FileNotFoundError, match=r'1 of the 3 .*fer0000001\.png.*--skip-missing-images'):
            FerPlus(str(root), 'train')
        train = FerPlus(str(root), 'train', skip_missing=True)
        assert len(train) == 2 and train.skipped['with a missing image file'] == 1
        assert train.soft_targets.argmax(dim=1).tolist() == train.targets  # votes stay with their images

    def test_dropping_an_unreadable_face_drops_its_votes(self, tmp_path):
        root = _write_ferplus_folders(tmp_path)
        (root / 'FER2013Train' / 'fer0000001.png').write_bytes(b'not a png')
        train = FerPlus(str(root), 'train')
        (bad_path, _), = train.drop_unreadable_images(skip=True)
        assert Path(bad_path).name == 'fer0000001.png'
        assert [FERPLUS_LABELS[t] for t in train.targets] == ['neutral', 'contempt']
        assert train.soft_targets.argmax(dim=1).tolist() == train.targets

    def test_pixels_of_fer2013_csv(self, tmp_path):
        _write_ferplus_csv(tmp_path)
        _write_fer2013_pixels(tmp_path)
        train = FerPlus(str(tmp_path), 'train')
        assert train.image_source == 'fer2013.csv'
        assert [FERPLUS_LABELS[t] for t in train.targets] == ['neutral', 'happiness', 'contempt']
        assert train.soft_targets.argmax(dim=1).tolist() == train.targets
        image, _ = train[1]
        assert image.mode == 'RGB' and image.size == (48, 48)
        assert image.getpixel((0, 0)) == (37, 37, 37)

    def test_pixels_csv_cut_short_or_malformed(self, tmp_path):
        _write_ferplus_csv(tmp_path)
        _write_fer2013_pixels(tmp_path, FERPLUS_ROWS[:-1])
        with pytest.raises(DatasetError, match='different numbers of image rows'):
            FerPlus(str(tmp_path), 'train')
        pixels = tmp_path / 'fer2013.csv'
        _write_fer2013_pixels(tmp_path)
        lines = pixels.read_text().splitlines(keepends=True)
        lines[1] = '0,1 2 3,Training\n'
        pixels.write_text(''.join(lines))
        with pytest.raises(DatasetError, match=r'fer2013\.csv line 2: expected 2304 pixel values'):
            FerPlus(str(tmp_path), 'train')

    def test_missing_everything_names_the_layout(self, tmp_path):
        with pytest.raises(DatasetFileNotFoundError, match=r'fer2013new\.csv.*FER2013Train'):
            FerPlus(str(tmp_path), 'train')


@pytest.mark.skipif(not REAL_FERPLUS.is_dir(), reason=f'real FERPlus data not found at {REAL_FERPLUS}')
def test_real_ferplus_reads_and_loads_images():
    valid = FerPlus(str(REAL_FERPLUS), 'valid')
    assert valid.classes == FERPLUS_LABELS
    assert 3000 < len(valid) < 3579 and sum(valid.skipped.values()) + len(valid) == 3579
    assert all(count > 0 for count in valid.class_counts)
    for index in (0, 1, len(valid) // 2, len(valid) - 1):
        image, label = valid[index]
        assert image.mode == 'RGB' and image.size == (48, 48) and 0 <= label < 8
    train = FerPlus(str(REAL_FERPLUS), 'train', labels='fer2013new.csv')
    absent = [reason for reason in train.skipped if reason.startswith('absent')]
    assert len(absent) == 1 and all(name in absent[0] for name in ('fer0006953', 'fer0008403', 'fer0011785'))
    assert train.skipped[absent[0]] == 3


# AffectNet ---------------------------------------------------------------------------------------------------------

AFFECTNET_HEADER = ('subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,'
                    'arousal\n')
LANDMARKS = ';'.join(f'{10 + i}.5' for i in range(136))


def _write_affectnet(root: Path) -> Path:
    train_expressions = [0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    lines = [AFFECTNET_HEADER]
    for i, expression in enumerate(train_expressions):
        lines.append(f'{i % 3}/img{i}.jpg,8,4,40,48,{LANDMARKS},{expression},0.5,-0.25\n')
        _save_image(root / 'Manually_Annotated_Images' / str(i % 3) / f'img{i}.jpg', size=64)
    (root / 'Manually_Annotated_file_lists').mkdir(parents=True)
    (root / 'Manually_Annotated_file_lists' / 'training.csv').write_text(''.join(lines))
    _save_image(root / 'Manually_Annotated_Images' / '9' / 'val0.png', size=64)
    (root / 'Manually_Annotated_file_lists' / 'validation.csv').write_text(
        f'9/val0.png,0,0,64,64,{LANDMARKS},6,0.1,0.2\n')
    return root


CORRUPT_LABEL_ROWS = {
    'rafdb': (_write_rafdb, RafDb, 'train', 'EmoLabel/list_patition_label.txt', 'train_00004.jpg nine\n',
              r'list_patition_label\.txt line 6.*train_00004\.jpg nine'),
    'ferplus': (_write_ferplus_folders, FerPlus, 'valid', 'FER2013Valid/label.csv',
                'fer0000099.png,"(0, 0, 48, 48)",1,2,x\n', r'FER2013Valid/label\.csv line 2: expected 10 vote counts'),
}
"""Per dataset: its writer, reader, a split, its label file, a row that does not parse, and what the error says."""


@pytest.mark.parametrize('dataset', CORRUPT_LABEL_ROWS)
def test_corrupt_label_row_names_file_and_line(tmp_path, dataset):
    write, reader, split, label_path, row, message = CORRUPT_LABEL_ROWS[dataset]
    root = write(tmp_path)
    label_file = root / label_path
    label_file.write_text(label_file.read_text() + row)
    with pytest.raises(DatasetError, match=message):
        reader(str(root), split)


class TestAffectNet:

    def test_seven_classes_drop_contempt_and_non_expressions(self, tmp_path):
        train = AffectNet(str(_write_affectnet(tmp_path)), 'train')
        assert train.classes == AFFECTNET7_LABELS
        assert train.class_counts == [1, 2, 1, 1, 1, 1, 1]
        assert train.skipped == {'contempt (not one of the 7 classes)': 1, 'labelled none': 1,
                                 'labelled uncertain': 1, 'labelled non-face': 1}

    def test_eight_classes_crop_face_and_headerless_validation(self, tmp_path):
        root = _write_affectnet(tmp_path)
        train = AffectNet(str(root), 'train', num_classes=8)
        assert train.classes == AFFECTNET8_LABELS and train.class_counts[7] == 1 and len(train) == 9
        image, _ = train[0]
        assert image.size == (40, 48)
        val = AffectNet(str(root), 'val')
        assert val.targets == [6] and val[0][0].size == (64, 64)
        assert AffectNet(str(root), 'train', crop_faces=False)[0][0].size == (64, 64)

    def test_corrupt_row_and_missing_files(self, tmp_path):
        root = _write_affectnet(tmp_path)
        validation = root / 'Manually_Annotated_file_lists' / 'validation.csv'
        validation.write_text(validation.read_text() + f'9/val1.png,0,0,64,64,{LANDMARKS},11,0,0\n')
        with pytest.raises(DatasetError, match=r'validation\.csv line 2: .*expression 0\.\.10'):
            AffectNet(str(root), 'val')
        for box in ('inf,0,64,64', '0,0,nan,64', '0,0,64,-inf'):
            validation.write_text(f'9/val0.png,{box},{LANDMARKS},6,0.1,0.2\n')
            with pytest.raises(DatasetError, match=r'validation\.csv line 1: .*positive face size'):
                AffectNet(str(root), 'val')
        (root / 'Manually_Annotated_Images' / '1' / 'img4.jpg').unlink()
        with pytest.raises(FileNotFoundError, match=r'1 of the 8 AffectNet train images .*skipped 1 contempt.*img4'):
            AffectNet(str(root), 'train')
        with pytest.raises(DatasetFileNotFoundError, match=r'training\.csv'):
            AffectNet(str(tmp_path / 'elsewhere'), 'train')


# Class-per-folder --------------------------------------------------------------------------------------------------

def _write_folders(root: Path, counts: dict) -> Path:
    for name, count in counts.items():
        for i in range(count):
            _save_image(root / name / ('nested' if i % 2 else '') / f'{i}.png')
    return root


class TestImageFolder:

    def test_timm_split_layout_sorted_classes_and_skips(self, tmp_path):
        _write_folders(tmp_path / 'train', {'sad': 2, 'happy': 3})
        (tmp_path / 'train' / 'happy' / 'notes.txt').write_text('x')
        (tmp_path / 'train' / 'README').write_text('x')
        train = FerImageFolder(str(tmp_path), 'train')
        assert train.classes == ('happy', 'sad') and train.class_counts == [3, 2]
        assert train.skipped == {'files without an image extension': 1, 'files outside the class folders': 1}

    def test_torchvision_layout_with_given_class_order(self, tmp_path):
        _write_folders(tmp_path, {'sad': 1, 'happy': 2})
        dataset = FerImageFolder(str(tmp_path), classes=['sad', 'happy'])
        assert dataset.targets == [0, 1, 1]

    def test_class_mismatch_errors(self, tmp_path):
        _write_folders(tmp_path, {'sad': 1, 'happy': 1})
        with pytest.raises(DatasetFileNotFoundError, match=r"\['angry'\] not found"):
            FerImageFolder(str(tmp_path), classes=['sad', 'happy', 'angry'])
        with pytest.raises(DatasetError, match=r"folders \['sad'\] that are not among the classes"):
            FerImageFolder(str(tmp_path), classes=['happy'])
        with pytest.raises(DatasetFileNotFoundError, match='image folder not found'):
            FerImageFolder(str(tmp_path), 'val')

    def test_empty_split_is_an_error(self, tmp_path):
        (tmp_path / 'train' / 'happy').mkdir(parents=True)
        with pytest.raises(DatasetError, match='has no images left'):
            FerImageFolder(str(tmp_path), 'train')


def test_factory_names_and_options(tmp_path):
    root = _write_rafdb(tmp_path)
    assert isinstance(create_fer_dataset('rafdb', str(root), 'test'), RafDb)
    with pytest.raises(ConfigError, match="unknown dataset 'raf'; choose one of rafdb, ferplus"):
        create_fer_dataset('raf', str(root), 'train')
    with pytest.raises(ConfigError, match='--classes is for --dataset folder only'):
        create_fer_dataset('rafdb', str(root), 'train', classes=['a'])


# Transforms --------------------------------------------------------------------------------------------------------

class TestTransforms:

    def test_test_transform_resizes_and_normalises_only(self):
        image = Image.new('RGB', (48, 48), (124, 116, 104))
        tensor = create_fer_transform(DATA_CONFIG)(image)
        assert tensor.shape == (3, 32, 32)
        assert tensor.abs().max() < 0.01

    def test_uint8_transform_stops_before_normalising(self):
        image = Image.new('RGB', (48, 48), (124, 116, 104))
        tensor = create_fer_transform(DATA_CONFIG, to_uint8=True)(image)
        assert tensor.dtype == torch.uint8 and tensor.shape == (3, 32, 32)
        assert tensor[:, 0, 0].tolist() == [124, 116, 104]

    @pytest.mark.parametrize('to_uint8', [False, True])
    def test_one_channel_config_gives_grayscale_faces(self, to_uint8):
        config = dict(DATA_CONFIG, input_size=(1, 32, 32), mean=(0.5,), std=(0.5,))
        image = Image.new('RGB', (48, 48), (255, 0, 0))
        tensor = create_fer_transform(config, to_uint8=to_uint8)(image)
        assert tensor.shape == (1, 32, 32)
        red_luma = round(255 * 0.299)  # ITU-R 601-2 luma of pure red, PIL's grayscale conversion
        expected = torch.tensor(float(red_luma)) if to_uint8 else torch.tensor((red_luma / 255 - 0.5) / 0.5)
        assert torch.allclose(tensor.float(), expected, atol=1e-6)

    def test_other_channel_counts_are_rejected(self):
        with pytest.raises(ValueError, match='1- or 3-channel'):
            create_fer_transform(dict(DATA_CONFIG, input_size=(4, 32, 32)))

    def test_sample_seed_fixes_augmentation_and_keeps_global_generator(self, tmp_path):
        dataset = RafDb(str(_write_rafdb(tmp_path)), 'train',
                        transform=transforms.Compose([create_fer_transform(DATA_CONFIG), transforms.RandomErasing(1.)]))
        torch.manual_seed(1)
        state = torch.get_rng_state()
        first, _ = dataset[(0, 1234)]
        assert torch.equal(torch.get_rng_state(), state)
        assert torch.equal(dataset[(0, 1234)][0], first)
        assert not torch.equal(dataset[(0, 4321)][0], first)


# FER2013's original labels beside the FERPlus votes ---------------------------------------------------------------

def _write_original_labels(root: Path, labels, skip_rows=()) -> Path:
    """``fer2013_original_labels.csv`` for the rows of ``fer2013new.csv``: FER2013 label numbers 0-6 by row."""
    rows = list(FERPLUS_ROWS)
    lines = ['row,image,usage,fer2013_label,fer2013_name,pixel_check\n'] + [
        f'{row},{rows[row][1]},{rows[row][0]},{label},x,exact_local\n'
        for row, label in enumerate(labels) if row not in skip_rows]
    path = root / 'fer2013_original_labels.csv'
    path.write_text(''.join(lines))
    return path


class TestOriginalLabels:
    # FER2013 numbers: 0 angry, 1 disgust, 2 fear, 3 happy, 4 sad, 5 surprise, 6 neutral
    LABELS = (4, 3, 6, 6, 2, 0, 2, 1)

    def test_joined_by_row_in_folders_and_pixels(self, tmp_path):
        root = _write_ferplus_folders(tmp_path)
        path = _write_original_labels(root, self.LABELS)
        train = FerPlus(str(root), 'train', original_labels=str(path))
        # kept rows 0 (neutral), 1 (happiness), 5 (contempt): original sad, happy, angry
        assert [FERPLUS_LABELS[t] for t in train.original_targets] == ['sadness', 'happiness', 'anger']
        assert [FERPLUS_LABELS[t] for t in FerPlus(str(root), 'valid', original_labels=str(path)).original_targets] \
            == ['fear']
        assert 'original labels joined to every image' in train.summary()
        _write_fer2013_pixels(root)
        pixels = FerPlus(str(root), 'train', images='fer2013.csv', original_labels=str(path))
        assert pixels.original_targets == train.original_targets
        assert FerPlus(str(root), 'train').original_targets is None  # off by default: the paper's protocol

    def test_a_name_twice_takes_the_row_whose_image_the_folder_holds(self, tmp_path):
        # row 2 names fer0000000.png again: the folder holds that later row's image, so its label is row 2's
        rows = FERPLUS_ROWS[:2] + [('Training', 'fer0000000.png', (6, 0, 0, 1, 3, 0, 0, 0, 0, 0))] + FERPLUS_ROWS[2:]
        root = _write_ferplus_folders(tmp_path, rows, label_csv=False)
        lines = ['row,image,usage,fer2013_label,fer2013_name,pixel_check\n'] + [
            f'{row},{name},{usage},{label},x,y\n' for row, ((usage, name, _), label) in enumerate(zip(rows, (
                4, 3, 0, 6, 6, 2, 0, 2, 1)))]
        (root / 'labels.csv').write_text(''.join(lines))
        train = FerPlus(str(root), 'train', original_labels=str(root / 'labels.csv'))
        assert [Path(path).name for path in train.paths] == ['fer0000001.png', 'fer0000000.png', 'fer0000005.png']
        assert [FERPLUS_LABELS[t] for t in train.original_targets] == ['happiness', 'anger', 'anger']
        (tmp_path / 'label-csv').mkdir()
        with_label_csv = _write_ferplus_folders(tmp_path / 'label-csv', rows)
        (with_label_csv / 'labels.csv').write_text(''.join(lines))
        from_label_csv = FerPlus(str(with_label_csv), 'train', original_labels=str(with_label_csv / 'labels.csv'))
        assert from_label_csv.original_targets[
            [Path(p).name for p in from_label_csv.paths].index('fer0000000.png')] == FERPLUS_LABELS.index('anger')

    def test_a_missing_row_is_reported_and_keeps_its_votes(self, tmp_path):
        root = _write_ferplus_folders(tmp_path)
        path = _write_original_labels(root, self.LABELS, skip_rows={1})
        train = FerPlus(str(root), 'train', original_labels=str(path))
        assert train.original_targets == [FERPLUS_LABELS.index('sadness'), -1, FERPLUS_LABELS.index('anger')]
        assert '1 images without one' in train.summary()
        mixed = mix_original_labels(train.soft_targets, torch.tensor(train.original_targets), FERPLUS_LABELS, 1.)
        assert torch.equal(mixed[1], train.soft_targets[1])

    def test_bad_files_name_the_problem(self, tmp_path):
        root = _write_ferplus_folders(tmp_path)
        with pytest.raises(DatasetFileNotFoundError, match="original labels not found.*row,image,usage"):
            FerPlus(str(root), 'train', original_labels=str(root / 'nope.csv'))
        (root / 'bad.csv').write_text('row,image,usage,fer2013_label\n0,fer0000000.png,Training,9\n')
        with pytest.raises(DatasetError, match=r'bad\.csv line 2: .*label 0-6'):
            FerPlus(str(root), 'train', original_labels=str(root / 'bad.csv'))
        (root / 'shifted.csv').write_text('row,image,usage,fer2013_label\n0,fer0000000.png,PublicTest,1\n')
        with pytest.raises(DatasetError, match='row 0 is PublicTest there but Training.*join by row'):
            FerPlus(str(root), 'train', original_labels=str(root / 'shifted.csv'))
        with pytest.raises(ConfigError, match='for --dataset ferplus only'):
            create_fer_dataset('rafdb', str(root), 'train', original_labels=str(root / 'bad.csv'))

    def test_mixed_target_examples(self):
        votes = torch.tensor([[0.6, 0, 0, 0.1, 0.3, 0, 0, 0], [0, 0, 0, 0, 0.2, 0, 0, 0.8]])
        original = torch.tensor([FERPLUS_LABELS.index('sadness'), FERPLUS_LABELS.index('anger')])
        mixed = mix_original_labels(votes, original, FERPLUS_LABELS, 0.5)
        assert torch.allclose(mixed[0], torch.tensor([0.3, 0, 0, 0.55, 0.15, 0, 0, 0]))
        # contempt keeps its 0.8 of the votes; the original label takes half of the other 0.2
        assert torch.allclose(mixed[1], torch.tensor([0, 0, 0, 0, 0.2, 0, 0, 0.8]))
        assert torch.equal(mix_original_labels(votes, original, FERPLUS_LABELS, 0.), votes)
        with pytest.raises(ConfigError, match='between 0 and 1'):
            mix_original_labels(votes, original, FERPLUS_LABELS, 1.5)

    @given(st.lists(st.tuples(st.lists(st.integers(0, 10), min_size=8, max_size=8), st.integers(-1, 6)),
                    min_size=1, max_size=12), st.floats(0, 1))
    def test_mixed_target_invariants(self, faces, weight):
        """Sums to 1, contempt exactly its vote share, weight 0 or no original label gives the votes."""
        counts = torch.tensor([votes for votes, _ in faces], dtype=torch.float32)
        counts[:, 0] += counts.sum(dim=1) == 0  # every face has a vote
        votes = counts / counts.sum(dim=1, keepdim=True)
        original = torch.tensor([FERPLUS_LABELS.index(name) if i >= 0 else -1 for _, i in faces
                                 for name in [('anger', 'disgust', 'fear', 'happiness', 'sadness', 'surprise',
                                               'neutral')[i]]])
        mixed = mix_original_labels(votes, original, FERPLUS_LABELS, weight)
        contempt = FERPLUS_LABELS.index('contempt')
        assert torch.allclose(mixed.sum(dim=1), torch.ones(len(faces)), atol=1e-5)
        assert (mixed >= 0).all()
        assert torch.allclose(mixed[:, contempt], votes[:, contempt])
        assert torch.equal(mixed[original < 0], votes[original < 0])
        assert torch.allclose(mix_original_labels(votes, original, FERPLUS_LABELS, 0.), votes)
        if weight == 1:
            others = mixed.clone()
            others[:, contempt] = 0
            assert (others[original >= 0].argmax(dim=1) == original[original >= 0]).all()


@pytest.mark.skipif(not (REAL_FERPLUS / 'fer2013_original_labels.csv').is_file(), reason='needs the real FERPlus data '
                    f'with fer2013_original_labels.csv at {REAL_FERPLUS} (TIMM_FER_FERPLUS_DIR, tests/README.md)')
def test_real_original_labels_join_every_valid_face():
    valid = FerPlus(str(REAL_FERPLUS), 'valid', original_labels=str(REAL_FERPLUS / 'fer2013_original_labels.csv'))
    assert min(valid.original_targets) >= 0 and len(valid.original_targets) == len(valid)
    # the README's cross-tab: FERPlus validation has 56 faces FER2013 calls disgust; the majority protocol keeps some
    agree = sum(t == o for t, o in zip(valid.targets, valid.original_targets)) / len(valid)
    assert 0.6 < agree < 0.8
