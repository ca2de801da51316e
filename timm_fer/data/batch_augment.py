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

    Two additions, off by default, move training faces toward other datasets and cameras. ``zoom`` frames the face
    tighter or looser (a scale drawn log-uniformly from the range; below 1 the face shrinks inside a black border,
    as a looser crop would show it). With probability ``photometric`` a face gets its own contrast (x0.6-1.4),
    brightness (+-0.15) and gamma (0.7-1.5); with probability ``degrade`` each of three camera degradations is
    applied on its own draw: Gaussian blur (sigma 0.5-1.5), down-up sampling (by 2 or 3, area then bilinear) and
    Gaussian noise (std 0.01-0.06 of the range).

    Args:
        mean: Normalisation mean per channel.
        std: Normalisation std per channel.
        rotation: Largest rotation in degrees, either way.
        crop_scale: Enlargement before the random crop; 1 crops without moving.
        hflip: Horizontal flip probability.
        erase_prob: Random erasing probability.
        zoom: Range of the framing scale; (1, 1) keeps the face's size.
        photometric: Probability of contrast, brightness and gamma jitter.
        degrade: Probability of each of blur, down-up sampling and noise.
    """

    erase_scale: Tuple[float, float] = (0.02, 0.33)
    erase_ratio: Tuple[float, float] = (0.3, 3.3)
    contrast: Tuple[float, float] = (0.6, 1.4)
    brightness: float = 0.15
    gamma: Tuple[float, float] = (0.7, 1.5)
    blur_sigma: Tuple[float, float] = (0.5, 1.5)
    noise_std: Tuple[float, float] = (0.01, 0.06)

    def __init__(
            self,
            mean: Sequence[float],
            std: Sequence[float],
            rotation: float = 10.,
            crop_scale: float = 1.1,
            hflip: float = 0.5,
            erase_prob: float = 0.25,
            zoom: Tuple[float, float] = (1., 1.),
            photometric: float = 0.,
            degrade: float = 0.,
    ) -> None:
        if crop_scale < 1:
            raise ValueError(f'crop_scale must be at least 1, got {crop_scale}.')
        if len(zoom) != 2 or not 0 < zoom[0] <= zoom[1]:
            raise ValueError(f'zoom is a range (low, high) with 0 < low <= high, got {tuple(zoom)}.')
        self.mean, self.std = tuple(mean), tuple(std)
        self.rotation, self.crop_scale, self.hflip, self.erase_prob = rotation, crop_scale, hflip, erase_prob
        self.zoom, self.photometric, self.degrade = (float(zoom[0]), float(zoom[1])), photometric, degrade

    def __call__(self, images: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """Augmented, normalised float faces of the uint8 (B, C, H, W) batch ``images``.

        Args:
            images: Faces at the model's input size.
            seeds: (B,) integer seed of each face: its draws depend on its seed only, so a face is augmented the
                same in any batch, process or accumulation step.
        """
        _, _, height, width = images.shape
        seeds = seeds.to(images.device)
        draws = uniform_draws(seeds, 20)  # 0-3 geometry, 4-8 erasing, 9 zoom, 10-13 photometric, 14-19 degradation
        x = images.float() / 255
        angle = (2 * draws[:, 0] - 1) * math.radians(self.rotation)
        cos, sin = torch.cos(angle), torch.sin(angle)
        spare = (self.crop_scale - 1) / self.crop_scale  # the crop's centre moves up to this far, in input units
        shift_x, shift_y = (2 * draws[:, 1] - 1) * spare, (2 * draws[:, 2] - 1) * spare
        flip = torch.where(draws[:, 3] < self.hflip, -1., 1.)
        log_low, log_high = math.log(self.zoom[0]), math.log(self.zoom[1])
        scale = torch.exp(-(log_low + (log_high - log_low) * draws[:, 9])) / self.crop_scale
        theta = torch.stack([
            torch.stack([cos * scale * flip, -sin * scale, cos * shift_x - sin * shift_y], dim=1),
            torch.stack([sin * scale * flip, cos * scale, sin * shift_x + cos * shift_y], dim=1),
        ], dim=1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode='bilinear', padding_mode='zeros', align_corners=False)
        if self.photometric > 0:
            x = self._photometric(x, draws[:, 10:14])
        if self.degrade > 0:
            x = self._degrade(x, draws[:, 14:20], seeds)
        x = _standardise(x, self.mean, self.std)
        return x.masked_fill(self._erase_mask(draws[:, 4:], height, width), 0.)

    def _photometric(self, x: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
        """Contrast about each face's mean, brightness and gamma, on the faces that draw them; 0..1 in and out."""
        on = (draws[:, 0] < self.photometric).view(-1, 1, 1, 1)
        contrast = (self.contrast[0] + (self.contrast[1] - self.contrast[0]) * draws[:, 1]).view(-1, 1, 1, 1)
        brightness = (self.brightness * (2 * draws[:, 2] - 1)).view(-1, 1, 1, 1)
        log_gamma = math.log(self.gamma[0]) + (math.log(self.gamma[1]) - math.log(self.gamma[0])) * draws[:, 3]
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        jittered = ((x - mean) * contrast + mean + brightness).clamp(0, 1)
        jittered = jittered.clamp_min(1e-6).pow(torch.exp(log_gamma).view(-1, 1, 1, 1))
        return torch.where(on, jittered, x)

    def _degrade(self, x: torch.Tensor, draws: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """Blur, down-up sampling and noise, each on the faces that draw it; 0..1 in and out."""
        batch, channels, height, width = x.shape
        blur = (draws[:, 0] < self.degrade).view(-1, 1, 1, 1)
        sigma = self.blur_sigma[0] + (self.blur_sigma[1] - self.blur_sigma[0]) * draws[:, 1]
        taps = torch.arange(-2, 3, device=x.device, dtype=x.dtype)
        kernel = torch.exp(-taps[None] ** 2 / (2 * sigma[:, None] ** 2))
        kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(channels, dim=0)  # (B * C, 5)
        planes = F.pad(x.reshape(1, batch * channels, height, width), (2, 2, 2, 2), mode='replicate')
        planes = F.conv2d(planes, kernel.view(-1, 1, 1, 5), groups=batch * channels)
        planes = F.conv2d(planes, kernel.view(-1, 1, 5, 1), groups=batch * channels)
        x = torch.where(blur, planes.view_as(x), x)
        resample = (draws[:, 2] < self.degrade).view(-1, 1, 1, 1)
        by_three = (draws[:, 3] < 0.5).view(-1, 1, 1, 1)
        halved, thirds = (F.interpolate(F.adaptive_avg_pool2d(x, (height // f, width // f)), size=(height, width),
                                        mode='bilinear', align_corners=False) for f in (2, 3))
        x = torch.where(resample, torch.where(by_three, thirds, halved), x)
        noisy = (draws[:, 4] < self.degrade).view(-1, 1, 1, 1)
        std = (self.noise_std[0] + (self.noise_std[1] - self.noise_std[0]) * draws[:, 5]).view(-1, 1, 1, 1)
        pixels = uniform_draws(seeds ^ 0x5DEECE66D, 2 * height * width).view(batch, 2, 1, height, width)
        normal = torch.sqrt(-2 * torch.log1p(-pixels[:, 0])) * torch.cos(2 * math.pi * pixels[:, 1])  # Box-Muller
        return torch.where(noisy, (x + std * normal).clamp(0, 1), x)

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
