"""The per-image transform of FER faces (resize only) from a timm data config; training augments whole batches
(:class:`~timm_fer.data.batch_augment.FaceBatchAugment`)."""
from typing import Any, Dict, Tuple

from timm.data.transforms import str_to_interp_mode
from torchvision import transforms

__all__ = ['create_fer_transform']


def create_fer_transform(data_config: Dict[str, Any], to_uint8: bool = False) -> transforms.Compose:
    """Transform of an RGB PIL face to a tensor of ``data_config['input_size']``: resized, then normalised.

    A one-channel input size (a model with ``in_chans=1``) converts the face to grayscale first. Mean, std, size
    and interpolation come from ``timm.data.resolve_data_config({}, model=model)``.

    Args:
        data_config: timm data config with 'input_size', 'mean', 'std' and 'interpolation'.
        to_uint8: Stop before normalising: a uint8 tensor in 0..255, as training batches start
            (:class:`~timm_fer.data.batch_augment.FaceBatchAugment` augments and normalises them).
    """
    size: Tuple[int, int] = tuple(data_config['input_size'][-2:])
    interpolation = str_to_interp_mode(data_config.get('interpolation', 'bilinear'))
    channels = data_config['input_size'][0]
    if channels not in (1, 3):
        raise ValueError(f'FER transforms make 1- or 3-channel inputs, got input_size {data_config["input_size"]}.')
    steps = [transforms.Grayscale(1)] if channels == 1 else []
    steps.append(transforms.Resize(size, interpolation=interpolation))
    if to_uint8:
        return transforms.Compose(steps + [transforms.PILToTensor()])
    return transforms.Compose(steps + [transforms.ToTensor(), transforms.Normalize(data_config['mean'],
                                                                                   data_config['std'])])
