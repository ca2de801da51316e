"""The paper's augmentation for aligned faces, and the test transform (resize only), from a timm data config."""
from typing import Any, Dict, Tuple

from timm.data.transforms import str_to_interp_mode
from torchvision import transforms

__all__ = ['create_fer_transform']


def create_fer_transform(
        data_config: Dict[str, Any],
        is_training: bool = False,
        rotation: float = 10.,
        crop_scale: float = 1.1,
        hflip: float = 0.5,
        erase_prob: float = 0.25,
) -> transforms.Compose:
    """Transform of an RGB PIL face to a normalised tensor of ``data_config['input_size']``.

    A one-channel input size (a model with ``in_chans=1``) converts the face to grayscale first.

    Training follows TransFER (section 4.2): random rotation, random crop (resize to ``crop_scale`` times the input
    size, rotate, crop back to the input size), horizontal flip and random erasing. Test: resize to the input size,
    no crop. Mean, std, size and interpolation come from ``timm.data.resolve_data_config({}, model=model)``.

    Args:
        data_config: timm data config with 'input_size', 'mean', 'std' and 'interpolation'.
        is_training: Build the augmenting training transform.
        rotation: Largest rotation in degrees, either way.
        crop_scale: Resize factor before the random crop; 1 crops without moving.
        hflip: Horizontal flip probability.
        erase_prob: Random erasing probability.
    """
    size: Tuple[int, int] = tuple(data_config['input_size'][-2:])
    interpolation = str_to_interp_mode(data_config.get('interpolation', 'bilinear'))
    channels = data_config['input_size'][0]
    if channels not in (1, 3):
        raise ValueError(f'FER transforms make 1- or 3-channel inputs, got input_size {data_config["input_size"]}.')
    to_channels = [transforms.Grayscale(1)] if channels == 1 else []
    normalize = [transforms.ToTensor(), transforms.Normalize(data_config['mean'], data_config['std'])]
    if not is_training:
        return transforms.Compose(to_channels + [transforms.Resize(size, interpolation=interpolation)] + normalize)
    if crop_scale < 1:
        raise ValueError(f'crop_scale must be at least 1, got {crop_scale}.')
    return transforms.Compose(to_channels + [
        transforms.Resize(tuple(round(s * crop_scale) for s in size), interpolation=interpolation),
        transforms.RandomRotation(rotation, interpolation=interpolation),
        transforms.RandomCrop(size),
        transforms.RandomHorizontalFlip(hflip),
        *normalize,
        transforms.RandomErasing(erase_prob),
    ])
