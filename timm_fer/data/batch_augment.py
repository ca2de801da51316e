"""TransFER's training augmentation applied to a whole batch of uint8 faces at once, in tensor ops on its device."""
import math
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = ['FaceBatchAugment', 'normalize_faces', 'uniform_draws']


def normalize_faces(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (B, C, H, W) faces in 0..255 to float inputs normalised by ``mean`` and ``std`` (per channel, 0..1)."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f'expected a uint8 (B, C, H, W) batch, got {images.dtype} of shape {tuple(images.shape)}.')
    return _standardise(images.float() / 255, mean, std)


def _standardise(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(x - mean) / std per channel of a float (B, C, H, W) batch in 0..1."""
    channels = x.shape[1]
    return (x - x.new_tensor(mean)[:channels].view(1, -1, 1, 1)) / x.new_tensor(std)[:channels].view(1, -1, 1, 1)


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (xor-shift-multiply rounds) of int64 tensors holding values below 2 ** 32."""
    for _ in range(2):
        x = (((x >> 16) ^ x) * 0x45D9F3B) & 0xFFFFFFFF
    return (x >> 16) ^ x


def uniform_draws(seeds: torch.Tensor, count: int) -> torch.Tensor:
    """(B, count) numbers in [0, 1) that are a function of each row's integer seed only (a counter-based hash)."""
    seeds = seeds.long()
    folded = (seeds ^ (seeds >> 32)) & 0xFFFFFFFF
    counters = _mix32(torch.arange(1, count + 1, device=seeds.device) * 0x9E3779B9 & 0xFFFFFFFF)
    return (_mix32(_mix32(folded)[:, None] ^ counters[None, :]) >> 8).float() / 2 ** 24  # 24 bits: exact in fp32, < 1


class FaceBatchAugment:
    """Random rotation, random crop, horizontal flip and random erasing of a batch, each face with its own draw.

    Each face draws its own parameters from its own seed (:func:`uniform_draws`), in one vectorised pass. The same
    augmentation as TransFER's (section 4.2) per-image pipeline: the face is enlarged ``crop_scale`` times,
    rotated by up to ``rotation`` degrees about its centre (corners filled with black), a window of the input size
    is cut at a random offset, flipped with probability ``hflip``, normalised, and a random rectangle of 2-33 % of
    the face (aspect 0.3-3.3) is set to 0 with probability ``erase_prob``. Rotation, crop and flip are one affine
    resampling (``F.grid_sample``, bilinear); erasing draws one rectangle per face, clamped to the face, where
    torchvision's ``RandomErasing`` retries up to ten times.

    Args:
        mean: Normalisation mean per channel.
        std: Normalisation std per channel.
        rotation: Largest rotation in degrees, either way.
        crop_scale: Enlargement before the random crop; 1 crops without moving.
        hflip: Horizontal flip probability.
        erase_prob: Random erasing probability.
    """

    erase_scale: Tuple[float, float] = (0.02, 0.33)
    erase_ratio: Tuple[float, float] = (0.3, 3.3)

    def __init__(
            self,
            mean: Sequence[float],
            std: Sequence[float],
            rotation: float = 10.,
            crop_scale: float = 1.1,
            hflip: float = 0.5,
            erase_prob: float = 0.25,
    ) -> None:
        if crop_scale < 1:
            raise ValueError(f'crop_scale must be at least 1, got {crop_scale}.')
        self.mean, self.std = tuple(mean), tuple(std)
        self.rotation, self.crop_scale, self.hflip, self.erase_prob = rotation, crop_scale, hflip, erase_prob

    def __call__(self, images: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """Augmented, normalised float faces of the uint8 (B, C, H, W) batch ``images``.

        Args:
            images: Faces at the model's input size.
            seeds: (B,) integer seed of each face: its draws depend on its seed only, so a face is augmented the
                same in any batch, process or accumulation step.
        """
        _, _, height, width = images.shape
        draws = uniform_draws(seeds.to(images.device), 9)
        x = images.float() / 255
        angle = (2 * draws[:, 0] - 1) * math.radians(self.rotation)
        cos, sin = torch.cos(angle), torch.sin(angle)
        spare = (self.crop_scale - 1) / self.crop_scale  # the crop's centre moves up to this far, in input units
        shift_x, shift_y = (2 * draws[:, 1] - 1) * spare, (2 * draws[:, 2] - 1) * spare
        flip = torch.where(draws[:, 3] < self.hflip, -1., 1.)
        scale = 1 / self.crop_scale
        theta = torch.stack([
            torch.stack([cos * scale * flip, -sin * scale, cos * shift_x - sin * shift_y], dim=1),
            torch.stack([sin * scale * flip, cos * scale, sin * shift_x + cos * shift_y], dim=1),
        ], dim=1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode='bilinear', padding_mode='zeros', align_corners=False)
        x = _standardise(x, self.mean, self.std)
        return x.masked_fill(self._erase_mask(draws[:, 4:], height, width), 0.)

    def _erase_mask(self, draws: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """(B, 1, H, W) mask of the rectangle erased in each face (empty where it draws no erasing)."""
        low, high = self.erase_scale
        area = height * width * (low + (high - low) * draws[:, 0])
        log_low, log_high = math.log(self.erase_ratio[0]), math.log(self.erase_ratio[1])
        ratio = torch.exp(log_low + (log_high - log_low) * draws[:, 1])
        h = torch.sqrt(area * ratio).round().clamp(1, height)
        w = torch.sqrt(area / ratio).round().clamp(1, width)
        top = ((height - h + 1) * draws[:, 2]).floor()
        left = ((width - w + 1) * draws[:, 3]).floor()
        erase = draws[:, 4] < self.erase_prob
        rows = torch.arange(height, device=draws.device).view(1, -1)
        cols = torch.arange(width, device=draws.device).view(1, -1)
        in_rows = (rows >= top[:, None]) & (rows < (top + h)[:, None])
        in_cols = (cols >= left[:, None]) & (cols < (left + w)[:, None])
        return (in_rows[:, :, None] & in_cols[:, None, :] & erase[:, None, None])[:, None]
