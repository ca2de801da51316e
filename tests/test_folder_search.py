"""Folder search follows no symbolic link: a link to ``/`` or to a parent never widens or loops the search, and what
was left out (links leading out, link loops, broken links, FIFOs and sockets) is said, one line per kind with a
count."""
import os
import socket
from pathlib import Path

import pytest
from drawn_faces import draw_face
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import timm_fer.faces.io as io_module
from timm_fer.cli import main
from timm_fer.faces.io import find_images, find_media


@pytest.fixture(autouse=True)
def fence(monkeypatch, tmp_path_factory):
    """Fail a search that lists a folder outside the test folders through a link (one that followed a link to
    ``/``), at the first such folder rather than after a walk of the whole file system."""
    base = str(tmp_path_factory.getbasetemp())
    scandir = os.scandir

    def fenced(path):
        if str(path).startswith(base) and not os.path.realpath(path).startswith(base):
            raise AssertionError(f'the search left the test folders: it listed {path}')
        return scandir(path)
    monkeypatch.setattr(io_module.os, 'scandir', fenced)


def photo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    draw_face(48).save(path)
    return path


def test_a_link_to_the_root_is_left_out_and_said(tmp_path):
    x = photo(tmp_path / 's' / 'a' / 'x.png')
    os.symlink('/', tmp_path / 's' / 'root')
    files, problems = find_images([str(tmp_path / 's')])
    assert files == [x]
    assert problems == [(str(tmp_path / 's'), f'left out 1 symbolic link leading out of the folder ({tmp_path}/s/root '
                                               f'-> /): a folder search follows no link out of its folder; give the '
                                               f'targets by name to search them')]


def test_links_out_of_the_folder_are_left_out_but_links_inside_are_silent(tmp_path):
    inside = photo(tmp_path / 'in' / 'x.png')
    outside = photo(tmp_path / 'out' / 'y.png')
    os.symlink(outside, tmp_path / 'in' / 'y.png')
    os.symlink(tmp_path / 'out', tmp_path / 'in' / 'elsewhere')
    os.symlink(inside, tmp_path / 'in' / 'same.png')
    (tmp_path / 'in' / 'notes.txt').symlink_to(tmp_path / 'out' / 'y.png')  # not an image name: no note
    files, problems = find_images([str(tmp_path / 'in')])
    assert files == [inside]
    ((item, reason),) = problems
    assert item == str(tmp_path / 'in') and reason.startswith('left out 2 symbolic links leading out of the folder (')
    assert find_images([str(tmp_path / 'in'), str(tmp_path / 'in' / 'y.png')])[0] == [inside, tmp_path / 'in' / 'y.png']


def test_link_loops_and_broken_links_are_counted_and_the_search_ends(tmp_path):
    x = photo(tmp_path / 'a' / 'x.png')
    y = photo(tmp_path / 'a' / 'b' / 'y.png')
    os.symlink(tmp_path / 'a', tmp_path / 'a' / 'b' / 'up')
    os.symlink('..', tmp_path / 'a' / 'b' / 'parent')
    os.symlink('self', tmp_path / 'a' / 'self')
    os.symlink('missing.png', tmp_path / 'a' / 'gone.png')
    files, problems = find_images([str(tmp_path / 'a')])
    assert files == [x, y]
    reasons = [reason for _, reason in problems]
    assert len(reasons) == 2
    assert reasons[0].startswith('left out 3 symbolic-link loops (') and reasons[0].endswith(
        '; ...): each folder is searched once')
    assert reasons[1] == (f'left out 1 broken symbolic link ({tmp_path}/a/gone.png -> missing.png): the target '
                          f'does not exist')


def test_fifos_and_sockets_are_never_opened_and_said_once(tmp_path):
    photo(tmp_path / 'x.png')
    os.mkfifo(tmp_path / 'pipe.png')
    os.mkfifo(tmp_path / 'pipe.mp4')
    os.mkfifo(tmp_path / 'other')  # not a media name: no note
    with socket.socket(socket.AF_UNIX) as listening:
        listening.bind(str(tmp_path / 'sock.jpg'))
        images, videos, problems = find_media([str(tmp_path)])
    assert images == [tmp_path / 'x.png'] and videos == []
    assert problems == [(str(tmp_path), f'left out 3 special files ({tmp_path}/pipe.mp4, a FIFO; {tmp_path}/pipe.png, '
                                        f'a FIFO; ...): only regular files are read, never FIFOs, sockets or devices')]


def test_a_recursive_pattern_follows_no_link_either(tmp_path):
    x = photo(tmp_path / 's' / 'x.png')
    os.symlink('/', tmp_path / 's' / 'root')
    pattern = f'{tmp_path}/s/**/*.png'
    files, problems = find_images([pattern])
    assert files == [x] and len(problems) == 1 and problems[0][1].startswith('left out 1 symbolic link leading out')


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 4)), max_size=8))
def test_any_links_give_each_photo_inside_once_and_none_outside(tmp_path_factory, links):
    """Folders r, r/a, r/a/b, r/c (photos in each) and o outside; links from any of the four to any of the five."""
    base = tmp_path_factory.mktemp('tree')
    folders = [base / 'r', base / 'r' / 'a', base / 'r' / 'a' / 'b', base / 'r' / 'c', base / 'o']
    photos = [photo(folder / f'{i}.png') for i, folder in enumerate(folders)]
    for n, (source, target) in enumerate(links):
        os.symlink(folders[target], folders[source] / f'link{n}')
    files, _ = find_images([str(base / 'r')])
    assert sorted(files) == sorted(photos[:4])


def test_predict_says_what_the_folder_search_left_out(tmp_path, capsys, offline_hub):
    photo(tmp_path / 's' / 'face.png')
    os.symlink('/', tmp_path / 's' / 'root')
    assert main(['predict', str(tmp_path / 's'), '--aligned', '--backend', 'torch', '--threads', '1']) == 0
    out = capsys.readouterr().out
    assert 'face.png' in out
    assert f'{tmp_path}/s: left out 1 symbolic link leading out of the folder ({tmp_path}/s/root -> /)' in out
