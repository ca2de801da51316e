"""``timm-fer predict`` and ``timm_fer.predict``: photos in, one prediction per face out, bad inputs reported."""
import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from drawn_faces import draw_face, stub_face
from helpers import TINY
from PIL import Image

from timm_fer.cli import main
from timm_fer.constants import RAFDB_LABELS
from timm_fer.errors import CheckpointMismatchError, ConfigError
from timm_fer.faces import read_image
from timm_fer.hub import RANDOM_WEIGHTS, load_model
from timm_fer.inference.predict import SAMPLE_IMAGE, PredictionReport, predict, write_report

pytestmark = pytest.mark.usefixtures('offline_hub')


@pytest.fixture()
def no_detector(monkeypatch):
    """Make the face extra look uninstalled."""
    monkeypatch.setitem(sys.modules, 'retinaface', None)


def outcomes(report: PredictionReport) -> dict:
    """File name -> number of faces predicted, or the first words of why it was skipped."""
    result = {}
    for face in report.faces:
        name = face.file.replace('\\', '/').rpartition('/')[2]
        result[name] = result.get(name, 0) + 1
    for skipped in report.skipped:
        name = skipped.file.replace('\\', '/').rpartition('/')[2]
        result.setdefault(name, ' '.join(skipped.reason.split()[:3]))
    return result


def test_several_faces_each_with_its_box_and_tiny_faces_skipped(model, tmp_path):
    draw_face(480).save(tmp_path / 'group.png')
    faces = [stub_face(250, 10, 2.), stub_face(5, 10, 2.), stub_face(200, 400, 0.2)]  # given right to left
    report = predict([tmp_path / 'group.png'], model=model, detector=lambda image: faces)
    assert [(f.face, f.box) for f in report.faces] == [(0, (5, 10, 229, 234)), (2, (250, 10, 474, 234))]
    assert [f.detector_score for f in report.faces] == [0.99, 0.99]
    for face in report.faces:
        assert face.expression in RAFDB_LABELS and list(face.probabilities) == list(RAFDB_LABELS)
        assert sum(face.probabilities.values()) == pytest.approx(1., abs=1e-5)
        assert face.expression == max(face.probabilities, key=face.probabilities.get)
    assert len(report.skipped) == 1 and 'face 1 at (200, 400, 222, 422) is 22 px, below the minimum face size' \
        in report.skipped[0].reason
    assert predict([tmp_path / 'group.png'], model=model, detector=lambda image: []).skipped[0].reason.startswith(
        'no face found; if the image is an aligned face crop, pass --aligned')


def test_aligned_crops_need_no_detector(model, tmp_path, no_detector):
    draw_face(100).save(tmp_path / 'a.png')
    draw_face(20).save(tmp_path / 'tiny.png')
    report = predict([tmp_path], model=model, aligned=True)
    assert [(f.face, f.box, f.detector_score) for f in report.faces] == [(0, (0, 0, 100, 100), None)]
    assert outcomes(report) == {'a.png': 1, 'tiny.png': 'the aligned crop'}


def test_batches_give_the_same_results_as_one_batch(model, tmp_path, no_detector):
    for i in range(5):
        draw_face(112 + 8 * i).save(tmp_path / f'{i}.png')
    one_batch = predict([tmp_path], model=model, aligned=True, batch_size=32)
    batches = predict([tmp_path], model=model, aligned=True, batch_size=2)
    assert [f.file for f in batches.faces] == [f.file for f in one_batch.faces] and len(batches.faces) == 5
    for a, b in zip(one_batch.faces, batches.faces):
        np.testing.assert_allclose(list(a.probabilities.values()), list(b.probabilities.values()), atol=1e-5)
    with pytest.raises(ConfigError, match='--batch-size must be an integer >= 1, got 0'):
        predict([tmp_path], model=model, aligned=True, batch_size=0)


def test_flip_tta_averages_a_face_with_its_mirror_image(model, tmp_path, no_detector):
    face = draw_face(112).rotate(8)  # not symmetric
    face.save(tmp_path / 'a.png')
    face.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(tmp_path / 'b.png')
    plain = predict([tmp_path], model=model, aligned=True, amp='none', backend='torch')
    averaged = predict([tmp_path], model=model, aligned=True, amp='none', backend='torch', tta_flip=True)
    one_view = [np.array(list(f.probabilities.values())) for f in plain.faces]
    assert not np.allclose(one_view[0], one_view[1], atol=1e-4)
    for f in averaged.faces:
        np.testing.assert_allclose(list(f.probabilities.values()), (one_view[0] + one_view[1]) / 2, atol=1e-5)


def test_cli_flip_tta_gives_the_python_result(tmp_path, capsys, no_detector):
    draw_face(112).rotate(8).save(tmp_path / 'a.png')
    assert main(['predict', str(tmp_path / 'a.png'), '--aligned', '--random-weights', '--amp', 'none', '--backend',
                 'torch', '--tta-flip', '--output', str(tmp_path / 'rows.json')]) == 0
    row = json.loads((tmp_path / 'rows.json').read_text())['faces'][0]
    expected = predict([tmp_path / 'a.png'], aligned=True, random_weights=True, amp='none', backend='torch',
                       tta_flip=True).faces[0]
    assert row['probabilities'] == pytest.approx(expected.probabilities, abs=1e-6)


@pytest.mark.usefixtures('detector')  # the default one predict makes
def test_the_shipped_sample_face_by_default(model):
    report = predict(model=model)
    assert len(report.faces) == 1 and not report.skipped
    face = report.faces[0]
    assert Path(face.file).resolve() == SAMPLE_IMAGE  # shown relative to the current folder when inside it
    np.testing.assert_allclose(face.box, (66, 56, 159, 177), atol=4)
    assert SAMPLE_IMAGE.stat().st_size < 100_000 and Image.open(SAMPLE_IMAGE).size == (224, 224)
    assert (SAMPLE_IMAGE.parent / 'LICENSE.txt').read_text().count('public domain') >= 1


@pytest.mark.usefixtures('detector')  # the default one predict makes
def test_bad_inputs_are_reported_one_by_one_while_the_others_go_on(model, tmp_path):
    sample = read_image(SAMPLE_IMAGE)
    photos = tmp_path / 'photos'
    photos.mkdir()
    draw_face().save(photos / 'drawn.jpg')
    sample.convert('L').save(photos / 'gray.png')
    rgba = sample.convert('RGBA')
    rgba.putalpha(Image.new('L', sample.size, 255).crop((0, 0, 224, 224)))
    rgba.save(photos / 'rgba.png')
    exif = Image.Exif()
    exif[0x0112] = 8  # stored rotated 90 degrees clockwise; viewers turn it back
    sample.rotate(-90, expand=True).save(photos / 'turned.jpg', exif=exif, quality=95)
    pair = Image.new('RGB', (500, 260), (90, 120, 160))
    pair.paste(draw_face(), (0, 10))
    pair.paste(draw_face(), (255, 10))
    pair.save(photos / 'pair.png')
    small = Image.new('RGB', (400, 260))
    small.paste(sample.resize((67, 67)), (300, 100))
    small.save(photos / 'small.png')
    Image.new('RGB', (160, 120), (90, 120, 160)).save(photos / 'wall.png')
    (photos / 'notes.txt').write_text('not a picture')
    (photos / 'broken.jpg').write_bytes((photos / 'drawn.jpg').read_bytes()[:600])

    report = predict([photos, photos / 'notes.txt', tmp_path / 'missing.jpg', str(tmp_path / '*.gif')], model=model)
    assert outcomes(report) == {
        'drawn.jpg': 1, 'gray.png': 1, 'rgba.png': 1, 'turned.jpg': 1, 'pair.png': 2,
        'small.png': 'face 0 at', 'wall.png': 'no face found;', 'notes.txt': 'not an image',
        'broken.jpg': 'the image is', 'missing.jpg': 'no such file', '*.gif': 'no file matches',
    }
    upright = {f.file.rpartition('/')[2]: f.box for f in report.faces}
    np.testing.assert_allclose(upright['turned.jpg'], upright['gray.png'], atol=4)  # EXIF rotation undone
    assert [f.box[0] < 250 for f in report.faces if f.file.endswith('pair.png')] == [True, False]


def test_json_and_csv_outputs(model, tmp_path, no_detector):
    draw_face(112).save(tmp_path / 'a.png')
    (tmp_path / 'b.png').write_text('text')
    report = predict([tmp_path / 'a.png', tmp_path / 'b.png'], model=model, aligned=True)
    saved = json.loads(write_report(report, tmp_path / 'out' / 'r.json').read_text())
    assert saved['labels'] == list(RAFDB_LABELS) and saved['meaningful'] is True
    assert [f['box'] for f in saved['faces']] == [[0, 0, 112, 112]] and saved['skipped'][0]['file'].endswith('b.png')
    with open(write_report(report, tmp_path / 'r.csv'), newline='') as f:
        rows = list(csv.DictReader(f))
    assert [row['expression'] for row in rows] == [report.faces[0].expression, '']
    assert float(rows[0]['p_happiness']) == pytest.approx(report.faces[0].probabilities['happiness'], abs=1e-6)
    assert rows[1]['skipped'].startswith('not an image') and rows[1]['weights'] == 'the given model'
    with pytest.raises(ConfigError, match=r'\.json or \.csv'):
        write_report(report, tmp_path / 'r.txt')


def test_save_viz_writes_one_picture_per_face(model, tmp_path, no_detector):
    for folder in ('x', 'y'):
        (tmp_path / folder).mkdir()
        draw_face(112).save(tmp_path / folder / 'face.png')
    report = predict([tmp_path / 'x', tmp_path / 'y'], model=model, aligned=True, save_viz=tmp_path / 'viz')
    names = sorted(p.name for p in (tmp_path / 'viz').iterdir())
    assert names == ['face_1_face0.viz.png', 'face_face0.viz.png']
    assert sorted(f.visualization.rpartition('/')[2] for f in report.faces) == names
    assert Image.open(tmp_path / 'viz' / names[0]).width == 3 * 224  # face, LANet map, relevance


def test_checkpoint_file_gives_the_weights_and_a_mismatch_says_what_to_check(model, tmp_path):
    safetensors.torch.save_file(model.state_dict(), tmp_path / 'tiny.safetensors')
    loaded, weights = load_model('transfer_fer_ir50', tmp_path / 'tiny.safetensors', model_kwargs=TINY)
    assert weights == f'checkpoint {tmp_path / "tiny.safetensors"}' and not loaded.training
    x = torch.randn(2, 3, 112, 112)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), model(x))
    with pytest.raises(CheckpointMismatchError, match='does not fit transfer_fer_ir50 .*unexpected keys.*Pass --model'):
        load_model('transfer_fer_ir50', tmp_path / 'tiny.safetensors', model_kwargs=dict(TINY, depth=1))


def test_cli_without_weights_fails_in_one_line_naming_the_tags_that_load_and_checkpoint(capsys):
    assert main(['predict', '--model', 'transfer_fer_ir50', '--aligned', str(SAMPLE_IMAGE)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count('\n') == 0
    assert error.startswith('timm-fer predict: error: no weights have been published for transfer_fer_ir50.rafdb yet; '
                            'the tags whose weights load are transfer_fer_compact.fer2013, '
                            'transfer_fer_compact.ferplus;')
    assert '--checkpoint' in error and '--random-weights' in error and 'timm.create_model' not in error


def test_cli_random_weights_demo_is_labelled_meaningless(tmp_path, capsys):
    out = tmp_path / 'r.json'
    argv = ['predict', '--model', 'transfer_fer_ir50', '--aligned', '--random-weights', str(SAMPLE_IMAGE)]
    assert main([*argv, '--output', str(out)]) == 0
    printed = capsys.readouterr().out
    assert 'meaningless' in printed and 'astronaut.png' in printed
    saved = json.loads(out.read_text())
    assert saved['weights'] == RANDOM_WEIGHTS and saved['meaningful'] is False and len(saved['faces']) == 1


def test_cli_says_how_to_get_the_detector_and_checks_the_output_suffix(tmp_path, capsys, no_detector):
    assert main(['predict', str(SAMPLE_IMAGE)]) == 2
    assert 'pip install "timm-fer[face]"' in capsys.readouterr().err
    assert main(['predict', '--aligned', str(SAMPLE_IMAGE), '--output', str(tmp_path / 'r.xlsx')]) == 2
    assert '.json or .csv' in capsys.readouterr().err


def test_crops_annotated_images_and_top_k(model, tmp_path):
    from timm_fer.inference import format_table
    from timm_fer.inference.annotate import BOX_COLOUR

    draw_face(480).save(tmp_path / 'group.png')
    faces = [stub_face(250, 10, 2.), stub_face(5, 10, 2.)]
    report = predict([tmp_path / 'group.png'], model=model, detector=lambda image: faces,
                     save_crops=tmp_path / 'crops', save_annotated=tmp_path / 'annotated')
    assert sorted(p.name for p in (tmp_path / 'crops').iterdir()) == ['group_face0.crop.png', 'group_face1.crop.png']
    assert [Path(f.crop).name for f in report.faces] == ['group_face0.crop.png', 'group_face1.crop.png']
    assert Image.open(report.faces[0].crop).size == (112, 112)
    assert report.annotated == [str(tmp_path / 'annotated' / 'group.annotated.png')]
    annotated = np.asarray(Image.open(report.annotated[0]))
    assert annotated.shape == (480, 480, 3)
    for x0, y0, x1, y1 in (f.box for f in report.faces):  # each box's bottom edge is drawn in the box colour
        assert (annotated[y1, x0 + 5:x1 - 5] == BOX_COLOUR).all()
    table = format_table(report, top_k=2).splitlines()
    assert table[1].split()[-2:] == ['top', '2']
    for line, face in zip(table[2:], report.faces):
        ranked = sorted(face.probabilities, key=face.probabilities.get, reverse=True)[:2]
        assert line.split()[-4::2] == ranked
    with pytest.raises(ConfigError, match='--top-k must be between 1 and the 7 labels'):
        format_table(report, top_k=8)


def test_annotated_photos_keep_the_input_format(model, tmp_path):
    noise = np.random.default_rng(0).normal(0, 12, (480, 480, 3))  # grain, as photos have: PNG gains nothing on it
    photo = Image.fromarray(np.clip(np.asarray(draw_face(480), float) + noise, 0, 255).astype(np.uint8))
    photo.save(tmp_path / 'shot.jpg', quality=90)
    photo.save(tmp_path / 'scan.png')

    def detector(image: Image.Image) -> list:
        return [stub_face(100, 60, 2.)]

    report = predict([tmp_path / 'shot.jpg', tmp_path / 'scan.png'], model=model, detector=detector,
                     save_annotated=tmp_path / 'same')
    assert [Path(p).name for p in report.annotated] == ['shot.annotated.jpg', 'scan.annotated.png']
    assert [Image.open(p).format for p in report.annotated] == ['JPEG', 'PNG']
    as_png = predict([tmp_path / 'shot.jpg'], model=model, detector=detector, save_annotated=tmp_path / 'png',
                     annotated_format='png').annotated[0]
    assert Path(as_png).name == 'shot.annotated.png' and Image.open(as_png).format == 'PNG'
    assert Path(report.annotated[0]).stat().st_size < Path(as_png).stat().st_size / 2
    difference = np.abs(np.asarray(Image.open(report.annotated[0]), float) - np.asarray(Image.open(as_png), float))
    assert difference.mean() < 4  # a good quality: close to the lossless copy
    with pytest.raises(ConfigError, match='same, png, jpeg'):
        predict([tmp_path / 'shot.jpg'], model=model, detector=detector, annotated_format='gif')


def test_cli_writes_crops_and_annotated_images(tmp_path, capsys):
    args = ['predict', '--aligned', str(SAMPLE_IMAGE), '--save-crops', str(tmp_path / 'c'),
            '--save-annotated', str(tmp_path / 'a'), '--top-k', '3']
    assert main(args) == 0
    out = capsys.readouterr().out
    assert 'wrote 1 aligned face to' in out and 'wrote 1 annotated image to' in out and ' top 3' in out
    assert main(['predict', '--aligned', str(SAMPLE_IMAGE), '--top-k', '0']) == 2
