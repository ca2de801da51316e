"""Hostile input loses nothing: Hub folders never delete other files, one bad image never stops a run, a failed
export check leaves no file, and listing inputs survives link loops."""
import io
import json
import os

import pytest
import timm
import torch
from drawn_faces import draw_face, stub_face
from helpers import TINY
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from timm_fer.cli import main
from timm_fer.errors import ConfigError, FerError
from timm_fer.faces import find_images
from timm_fer.hub import make_model_card, write_hub_folder
from timm_fer.inference import predict
from timm_fer.inference.export import export_checked


@pytest.fixture(scope='module')
def ir18():
    return timm.create_model('ir_18').eval()


def card(model) -> str:
    return make_model_card(model, command='test')


def test_a_folder_of_other_files_is_refused_and_kept(ir18, tmp_path):
    victim = tmp_path / 'victim'
    (victim / 'thesis').mkdir(parents=True)
    (victim / 'thesis' / 'chapter1.tex').write_text('years of work')
    with pytest.raises(ConfigError, match='not a Hub model folder written by timm-fer.*nothing was changed'):
        write_hub_folder(ir18, victim, card(ir18), overwrite=True)
    assert (victim / 'thesis' / 'chapter1.tex').read_text() == 'years of work'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['victim']  # no staging folder left behind


@pytest.mark.parametrize('where', ['.', 'home', 'root', 'parent'])
def test_root_home_current_and_parent_folders_are_refused(ir18, tmp_path, monkeypatch, where):
    work = tmp_path / 'work' / 'repo'
    work.mkdir(parents=True)
    (work / 'notes.txt').write_text('keep')
    monkeypatch.chdir(work)
    monkeypatch.setenv('HOME', str(tmp_path / 'work'))
    out = {'.': '.', 'home': str(tmp_path / 'work'), 'root': '/', 'parent': '..'}[where]
    with pytest.raises(ConfigError, match='refusing to write a Hub model folder'):
        write_hub_folder(ir18, out, card(ir18), overwrite=True)
    assert (work / 'notes.txt').read_text() == 'keep'


def test_cli_overwrite_of_an_unrelated_folder_fails_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'victim').mkdir()
    (tmp_path / 'victim' / 'data.csv').write_text('1,2')
    assert main(['push', 'victim', '--model', 'ir_18', '--checkpoint', 'missing.pth', '--overwrite',
                 '--dry-run']) == 2
    assert main(['convert', '--model', 'ir_18', '--checkpoint', 'x.pth', '--out', '.', '--overwrite']) == 2
    assert (tmp_path / 'victim' / 'data.csv').read_text() == '1,2'


def test_overwrite_replaces_our_own_folder_and_a_failure_keeps_the_old_one(ir18, tmp_path, monkeypatch):
    out = tmp_path / 'hub' / 'ir_18'
    write_hub_folder(ir18, out, card(ir18))
    before = (out / 'model.safetensors').read_bytes()
    with pytest.raises(ConfigError, match='already exists'):
        write_hub_folder(ir18, out, card(ir18))
    torch.manual_seed(1)  # other weights than the fixture's
    other = timm.create_model('ir_18').eval()
    write_hub_folder(other, out, 'new card', overwrite=True)
    assert (out / 'README.md').read_text() == 'new card' and (out / 'model.safetensors').read_bytes() != before

    def broken_save(*args, **kwargs):
        raise OSError('disk full')
    monkeypatch.setattr('timm_fer.hub.folder.save_for_hf', broken_save)
    with pytest.raises(OSError, match='disk full'):
        write_hub_folder(ir18, out, 'lost card', overwrite=True)
    assert (out / 'README.md').read_text() == 'new card'
    assert sorted(p.name for p in out.parent.iterdir()) == ['ir_18']


def jpeg_with_exif(orientation: int = 6) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = 'camera maker'
    buffer = io.BytesIO()
    draw_face(96).save(buffer, 'JPEG', exif=exif, quality=90)
    return buffer.getvalue()


JPEG = jpeg_with_exif()
EXIF_START = JPEG.index(b'Exif\x00\x00')


@pytest.mark.slow
@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(offset=st.integers(0, 80), value=st.integers(0, 255))
@example(offset=11, value=0)  # Pillow's EXIF parser raises struct.error
@example(offset=11, value=26)  # ... and TypeError
def test_malformed_exif_or_any_byte_never_stops_predict(model, tmp_path, offset, value):
    damaged = bytearray(JPEG)
    damaged[EXIF_START + 6 + offset] = value
    (tmp_path / 'damaged.jpg').write_bytes(bytes(damaged))
    draw_face(96).save(tmp_path / 'good.png')
    report = predict([tmp_path / 'damaged.jpg', tmp_path / 'good.png'], model=model, aligned=True)
    done = {f.file.rpartition('/')[2] for f in report.faces} | {s.file.rpartition('/')[2] for s in report.skipped}
    assert done == {'damaged.jpg', 'good.png'} and 'good.png' in {f.file.rpartition('/')[2] for f in report.faces}


def test_a_failing_detector_or_classifier_skips_that_file_only(model, tmp_path):
    draw_face(240).save(tmp_path / 'a.png')
    Image.new('RGB', (5000, 1)).save(tmp_path / 'b.png')
    draw_face(240).save(tmp_path / 'c.png')

    def detector(image):
        if image.height < 2:
            raise ValueError('height and width must be > 0')
        return [stub_face(10, 10, 1.5)]
    report = predict([tmp_path], model=model, detector=detector, batch_size=2)
    assert [f.file.rpartition('/')[2] for f in report.faces] == ['a.png', 'c.png']
    assert len(report.skipped) == 1 and 'ValueError: height and width must be > 0' in report.skipped[0].reason

    class FailsOnGreen(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model
            self.pretrained_cfg = model.pretrained_cfg
            self.num_classes = model.num_classes

        def forward(self, x):
            if (x[:, 1].mean(dim=(1, 2)) > 1.5).any():
                raise RuntimeError('kernel failure')
            return self.inner(x)
    Image.new('RGB', (112, 112), (0, 255, 0)).save(tmp_path / 'green.png')
    report = predict([tmp_path / 'a.png', tmp_path / 'green.png', tmp_path / 'c.png'], model=FailsOnGreen(),
                     aligned=True, batch_size=3)
    assert [f.file.rpartition('/')[2] for f in report.faces] == ['a.png', 'c.png']
    assert 'face 0 could not be classified (RuntimeError: kernel failure)' in report.skipped[0].reason


def test_a_failed_export_check_leaves_the_previous_file(model, tmp_path):
    out = tmp_path / 'model.pt2'
    out.write_bytes(b'the deployed model')
    broken = timm.create_model('transfer_fer_ir50', **TINY).eval()
    with torch.no_grad():
        broken.head.bias.fill_(float('nan'))
    with pytest.raises(FerError, match='differs from the eager one by inf.*was not written'):
        export_checked(broken, out, 'torch-export')
    with pytest.raises(ConfigError, match='--atol must be a number >= 0'):
        export_checked(model, out, 'torch-export', atol=float('nan'))
    assert out.read_bytes() == b'the deployed model' and sorted(p.name for p in tmp_path.iterdir()) == ['model.pt2']
    path, difference = export_checked(model, out, 'torch-export')
    assert path == out and difference < 1e-4 and out.read_bytes() != b'the deployed model'


def test_link_loops_are_cut_and_files_listed_once(tmp_path):
    (tmp_path / 'a' / 'b').mkdir(parents=True)
    for name in ('a/x.png', 'a/b/y.png'):
        draw_face(40).save(tmp_path / name)
    os.symlink(tmp_path / 'a', tmp_path / 'a' / 'b' / 'up')
    os.symlink(tmp_path / 'a' / 'b', tmp_path / 'a' / 'down')
    expected = [tmp_path / 'a' / 'x.png', tmp_path / 'a' / 'b' / 'y.png']
    loop = f'left out 1 symbolic-link loop ({tmp_path}/a/b/up -> {tmp_path}/a): each folder is searched once'
    assert find_images([str(tmp_path / 'a')]) == (expected, [(str(tmp_path / 'a'), loop)])
    pattern = f'{tmp_path}/**/*.png'
    assert find_images([pattern, str(tmp_path / 'a' / 'down' / 'y.png')]) == (expected, [(pattern, loop)])
    assert find_images([f'{tmp_path}/a/*.png']) == (expected[:1], [])


def test_many_files_are_listed_once_each_in_order(tmp_path):
    for i in range(300):
        (tmp_path / f'{i:04d}.png').write_bytes(b'')
    (tmp_path / 'notes.txt').write_text('')
    (tmp_path / 'clip.mpeg').write_bytes(b'')
    files, problems = find_images([str(tmp_path), f'{tmp_path}/*.png', f'{tmp_path}/0001.png'])
    assert [p.name for p in files] == [f'{i:04d}.png' for i in range(300)] and problems == []


def test_report_json_survives(model, tmp_path):
    draw_face(96).save(tmp_path / 'ok.png')
    (tmp_path / 'bad.png').write_bytes(b'\x89PNG broken')
    out = tmp_path / 'r.json'
    assert main(['predict', str(tmp_path), '--aligned', '--model', 'transfer_fer_compact.ferplus',
                 '--output', str(out)]) == 0
    saved = json.loads(out.read_text())
    assert [f['file'].rpartition('/')[2] for f in saved['faces']] == ['ok.png']
    assert [s['file'].rpartition('/')[2] for s in saved['skipped']] == ['bad.png']
