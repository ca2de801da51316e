"""Invariants of the batch augmentation of training faces (``FaceBatchAugment``) and of ``normalize_faces``."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from timm_fer.data import FaceBatchAugment, normalize_faces, uniform_draws

MEAN, STD = (0.5,), (0.5,)
NO_AUGMENTATION = dict(rotation=0., crop_scale=1., hflip=0., erase_prob=0.)

faces = st.builds(
    lambda seed, batch, size, channels: torch.randint(
        0, 256, (batch, channels, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)),
    st.integers(0, 2 ** 31), st.integers(1, 6), st.sampled_from([8, 17, 48]), st.sampled_from([1, 3]))
seeds = st.integers(0, 2 ** 62 - 8)


def augment(images: torch.Tensor, seed: int, **settings_) -> torch.Tensor:
    """Augment with face i's seed ``seed + i``."""
    channels = images.shape[1]
    seeds = seed + torch.arange(len(images))
    return FaceBatchAugment(MEAN * channels, STD * channels, **settings_)(images, seeds)


@given(faces, seeds)
def test_without_augmentation_it_only_normalises(images, seed):
    expected = normalize_faces(images, MEAN * images.shape[1], STD * images.shape[1])
    assert torch.allclose(augment(images, seed, **NO_AUGMENTATION), expected, atol=1e-5)
    assert torch.equal(expected, (images.float() / 255 - 0.5) / 0.5)


@given(faces, seeds)
def test_a_flip_mirrors_every_face(images, seed):
    flipped = augment(images, seed, **dict(NO_AUGMENTATION, hflip=1.))
    assert torch.allclose(flipped, augment(images.flip(-1), seed, **NO_AUGMENTATION), atol=1e-5)


@settings(deadline=None)
@given(faces, seeds, st.floats(0, 30), st.floats(1, 1.5), st.floats(0, 1), st.floats(0, 1))
def test_draws_depend_on_the_seeds_only_and_stay_in_range(images, seed, rotation, crop_scale, hflip, erase):
    settings_ = dict(rotation=rotation, crop_scale=crop_scale, hflip=hflip, erase_prob=erase)
    first = augment(images, seed, **settings_)
    assert first.shape == images.shape and first.dtype == torch.float32
    assert torch.equal(first, augment(images, seed, **settings_))
    assert first.min() >= -1 - 1e-6 and first.max() <= 1 + 1e-6  # black corners, erased 0, or resampled pixels


@settings(deadline=None)
@given(faces, seeds)
def test_a_face_is_augmented_the_same_in_any_batch(images, seed):
    """What makes a run independent of batch splits: gradient accumulation and processes see the same faces."""
    whole = augment(images, seed, rotation=20., crop_scale=1.2, hflip=0.5, erase_prob=0.5)
    for i in range(len(images)):
        torch.testing.assert_close(augment(images[i:i + 1], seed + i, rotation=20., crop_scale=1.2, hflip=0.5,
                                           erase_prob=0.5), whole[i:i + 1])


@given(st.lists(seeds, min_size=1, max_size=64, unique=True), st.integers(1, 12))
def test_uniform_draws_are_a_function_of_each_seed_in_0_1(values, count):
    draws = uniform_draws(torch.tensor(values), count)
    assert draws.shape == (len(values), count) and draws.min() >= 0 and draws.max() < 1
    torch.testing.assert_close(draws[-1:], uniform_draws(torch.tensor(values[-1:]), count))


def test_uniform_draws_look_uniform():
    draws = uniform_draws(torch.arange(20000) * 7919, 9)
    assert draws.mean().item() == pytest.approx(0.5, abs=0.01) and draws.std().item() == pytest.approx(0.2887, abs=0.01)
    assert torch.corrcoef(draws.T).fill_diagonal_(0).abs().max() < 0.05  # the draws of a face are not tied


@given(seeds, st.floats(1, 30))
def test_each_face_of_a_batch_draws_its_own_transform(seed, rotation):
    face = torch.randint(0, 256, (1, 1, 24, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed % 97))
    out = augment(face.repeat(8, 1, 1, 1), seed, rotation=rotation, crop_scale=1.2, hflip=0.5, erase_prob=0.)
    assert len({tuple(o.flatten().tolist()) for o in out}) == 8


@given(seeds)
def test_a_rotation_moves_a_pixel_by_its_angle_about_the_centre(seed):
    """A single bright pixel off the centre lands where a rotation of at most ``rotation`` degrees can take it."""
    size, rotation = 33, 20.
    image = torch.zeros(1, 1, size, size, dtype=torch.uint8)
    image[0, 0, 16, 28] = 255  # 12 px right of the centre pixel (16, 16)
    out = augment(image, seed, **dict(NO_AUGMENTATION, rotation=rotation))
    row, col = divmod(int(out.flatten().argmax()), size)
    angle = math.degrees(math.atan2(row - 16, col - 16))
    assert math.hypot(row - 16, col - 16) == pytest.approx(12, abs=1.5)
    assert abs(angle) <= rotation + 6  # a pixel's width at 12 px is about 5 degrees


@given(faces, seeds)
def test_erasing_zeroes_one_rectangle_of_at_most_a_third_of_the_face(images, seed):
    images = images.clamp(min=1)  # no pixel normalises to 0 on its own
    out = augment(images, seed, **dict(NO_AUGMENTATION, erase_prob=1.))
    height, width = images.shape[-2:]
    for face in (out == 0).all(dim=1):
        rows, cols = face.any(dim=1).nonzero().flatten(), face.any(dim=0).nonzero().flatten()
        assert rows.numel() and cols.numel()
        assert face.sum() == rows.numel() * cols.numel()  # a full rectangle
        assert rows.numel() * cols.numel() <= 0.33 * height * width + height + width + 1  # rounding to whole rows


def test_bad_settings_and_inputs():
    with pytest.raises(ValueError, match='crop_scale must be at least 1'):
        FaceBatchAugment(MEAN, STD, crop_scale=0.9)
    with pytest.raises(ValueError, match='expected a uint8'):
        normalize_faces(torch.zeros(2, 1, 8, 8), MEAN, STD)


DOMAIN_SHIFT = dict(zoom=(0.8, 1.25), photometric=1., degrade=1.)


@settings(deadline=None)
@given(faces, seeds, st.floats(0.5, 1.), st.floats(1., 1.5), st.floats(0, 1), st.floats(0, 1))
def test_domain_shift_stays_in_range_and_depends_on_the_seeds_only(images, seed, low, high, photometric, degrade):
    settings_ = dict(zoom=(low, high), photometric=photometric, degrade=degrade)
    first = augment(images, seed, **settings_)
    assert first.shape == images.shape and torch.isfinite(first).all()
    assert torch.equal(first, augment(images, seed, **settings_))
    assert first.min() >= -1 - 1e-6 and first.max() <= 1 + 1e-6


@settings(deadline=None)
@given(faces, seeds)
def test_domain_shift_augments_a_face_the_same_in_any_batch(images, seed):
    whole = augment(images, seed, **DOMAIN_SHIFT)
    for i in range(len(images)):
        torch.testing.assert_close(augment(images[i:i + 1], seed + i, **DOMAIN_SHIFT), whole[i:i + 1])


@given(faces, seeds)
def test_domain_shift_off_is_the_paper_augmentation(images, seed):
    """The defaults draw the first nine numbers as before, so runs without the new options are unchanged."""
    paper = dict(rotation=10., crop_scale=1.1, hflip=0.5, erase_prob=0.25)
    torch.testing.assert_close(augment(images, seed, **paper, zoom=(1., 1.), photometric=0., degrade=0.),
                               augment(images, seed, **paper), rtol=0, atol=0)


@pytest.mark.parametrize('zoom', [1.25, 0.8])
def test_zoom_frames_the_face_tighter_or_looser(zoom):
    """A bright square in the middle covers more of the input when zoomed in, less when zoomed out."""
    images = torch.zeros(1, 1, 80, 80, dtype=torch.uint8)
    images[:, :, 20:60, 20:60] = 255
    out = augment(images, 0, **dict(NO_AUGMENTATION, zoom=(zoom, zoom)))
    bright = float((out > 0).float().mean())
    assert bright == pytest.approx(0.25 * zoom ** 2, abs=0.03)


def test_degradation_keeps_the_mean_and_photometric_jitter_changes_it():
    images = torch.randint(60, 200, (64, 1, 48, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    plain = augment(images, 0, **NO_AUGMENTATION)
    degraded = augment(images, 0, **dict(NO_AUGMENTATION, degrade=1.))
    assert not torch.equal(degraded, plain)
    torch.testing.assert_close(degraded.mean(dim=(1, 2, 3)), plain.mean(dim=(1, 2, 3)), atol=0.02, rtol=0)
    jittered = augment(images, 0, **dict(NO_AUGMENTATION, photometric=1.))
    assert (jittered.mean(dim=(1, 2, 3)) - plain.mean(dim=(1, 2, 3))).abs().max() > 0.05


def test_bad_zoom_is_refused():
    for zoom in [(0., 1.), (1.2, 0.8), (1.,)]:
        with pytest.raises(ValueError, match='zoom'):
            FaceBatchAugment(MEAN, STD, zoom=zoom)
