"""Checkpoints in the layouts the converters meet, built from the facts file, and forward passes computed from them.

Nothing here uses timm-fer's modules, so the converter tests compare against an independent computation.
"""
import shutil
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F

IR50_UNITS = (3, 4, 14, 3)
IR_CHANNELS = (64, 128, 256, 512)


def _bn(prefix: str, chs: int, generator: torch.Generator) -> Dict[str, torch.Tensor]:
    return {
        f'{prefix}.weight': torch.rand(chs, generator=generator) + 0.5,
        f'{prefix}.bias': torch.randn(chs, generator=generator) * 0.1,
        f'{prefix}.running_mean': torch.randn(chs, generator=generator) * 0.1,
        f'{prefix}.running_var': torch.rand(chs, generator=generator) + 0.5,
        f'{prefix}.num_batches_tracked': torch.tensor(1000),
    }


def _conv(chs_out: int, chs_in: int, k: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(chs_out, chs_in, k, k, generator=generator) * (2 / (chs_in * k * k)) ** 0.5


def face_evolve_units(units: Sequence[int] = IR50_UNITS) -> List[Tuple[int, int, int]]:
    """(in channels, out channels, stride) of each unit, numbered flat as face.evoLVe does."""
    specs, in_chs = [], IR_CHANNELS[0]
    for depth, out_chs in zip(units, IR_CHANNELS):
        specs += [(in_chs, out_chs, 2)] + [(out_chs, out_chs, 1)] * (depth - 1)
        in_chs = out_chs
    return specs


def face_evolve_ir_state_dict(units: Sequence[int] = IR50_UNITS, se: bool = False, seed: int = 0) -> Dict:
    """A face.evoLVe ``Backbone(input_size=112, mode='ir' or 'ir_se')`` state dict with random tensors."""
    g = torch.Generator().manual_seed(seed)
    sd = {'input_layer.0.weight': _conv(64, 3, 3, g), **_bn('input_layer.1', 64, g),
          'input_layer.2.weight': torch.rand(64, generator=g) * 0.5}
    for n, (in_chs, out_chs, _) in enumerate(face_evolve_units(units)):
        p = f'body.{n}'
        sd.update(_bn(f'{p}.res_layer.0', in_chs, g))
        sd[f'{p}.res_layer.1.weight'] = _conv(out_chs, in_chs, 3, g)
        sd[f'{p}.res_layer.2.weight'] = torch.rand(out_chs, generator=g) * 0.5
        sd[f'{p}.res_layer.3.weight'] = _conv(out_chs, out_chs, 3, g)
        sd.update(_bn(f'{p}.res_layer.4', out_chs, g))
        if se:
            sd[f'{p}.res_layer.5.fc1.weight'] = _conv(out_chs // 16, out_chs, 1, g)
            sd[f'{p}.res_layer.5.fc2.weight'] = _conv(out_chs, out_chs // 16, 1, g)
        if in_chs != out_chs:
            sd[f'{p}.shortcut_layer.0.weight'] = _conv(out_chs, in_chs, 1, g)
            sd.update(_bn(f'{p}.shortcut_layer.1', out_chs, g))
    sd.update(_bn('output_layer.0', 512, g))
    sd['output_layer.3.weight'] = torch.randn(512, 512 * 7 * 7, generator=g) * 0.01
    sd['output_layer.3.bias'] = torch.zeros(512)
    sd.update(_bn('output_layer.4', 512, g))
    return sd


def _apply_bn(x: torch.Tensor, sd: Dict, prefix: str) -> torch.Tensor:
    return F.batch_norm(x, sd[f'{prefix}.running_mean'], sd[f'{prefix}.running_var'], sd[f'{prefix}.weight'],
                        sd[f'{prefix}.bias'], eps=1e-5)


def face_evolve_forward(sd: Dict, x: torch.Tensor, num_stages: int = 4, units: Sequence[int] = IR50_UNITS,
                        se: bool = False) -> torch.Tensor:
    """face.evoLVe's IR body in eval, computed from its tensors: the output of stage ``num_stages``."""
    x = F.prelu(_apply_bn(F.conv2d(x, sd['input_layer.0.weight'], padding=1), sd, 'input_layer.1'),
                sd['input_layer.2.weight'])
    last_unit = sum(units[:num_stages])
    for n, (in_chs, out_chs, stride) in enumerate(face_evolve_units(units)[:last_unit]):
        p = f'body.{n}'
        if in_chs == out_chs:
            shortcut = F.max_pool2d(x, 1, stride)
        else:
            shortcut = _apply_bn(F.conv2d(x, sd[f'{p}.shortcut_layer.0.weight'], stride=stride), sd,
                                 f'{p}.shortcut_layer.1')
        r = _apply_bn(x, sd, f'{p}.res_layer.0')
        r = F.prelu(F.conv2d(r, sd[f'{p}.res_layer.1.weight'], padding=1), sd[f'{p}.res_layer.2.weight'])
        r = _apply_bn(F.conv2d(r, sd[f'{p}.res_layer.3.weight'], stride=stride, padding=1), sd, f'{p}.res_layer.4')
        if se:
            w = F.relu(F.conv2d(r.mean((2, 3), keepdim=True), sd[f'{p}.res_layer.5.fc1.weight']))
            r = r * torch.sigmoid(F.conv2d(w, sd[f'{p}.res_layer.5.fc2.weight']))
        x = r + shortcut
    return x


def legacy_vit_small_state_dict(seed: int = 0, depth: int = 8, dim: int = 768, tokens: int = 197) -> Dict:
    """timm's legacy ``vit_small_patch16_224`` (``vit_small_p16_224-15ec54c9.pth``) layout with random tensors."""
    g = torch.Generator().manual_seed(seed)
    hidden = 3 * dim

    def rand(*shape: int, scale: float = 0.02) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    sd = {'cls_token': rand(1, 1, dim), 'pos_embed': rand(1, tokens, dim),
          'patch_embed.proj.weight': rand(dim, 3, 16, 16), 'patch_embed.proj.bias': rand(dim),
          'norm.weight': 1 + rand(dim), 'norm.bias': rand(dim), 'head.weight': rand(1000, dim), 'head.bias': rand(1000)}
    for i in range(depth):
        p = f'blocks.{i}'
        sd.update({
            f'{p}.norm1.weight': 1 + rand(dim), f'{p}.norm1.bias': rand(dim),
            f'{p}.attn.qkv.weight': rand(3 * dim, dim), f'{p}.attn.proj.weight': rand(dim, dim),
            f'{p}.attn.proj.bias': rand(dim), f'{p}.norm2.weight': 1 + rand(dim), f'{p}.norm2.bias': rand(dim),
            f'{p}.mlp.fc1.weight': rand(hidden, dim), f'{p}.mlp.fc1.bias': rand(hidden),
            f'{p}.mlp.fc2.weight': rand(dim, hidden), f'{p}.mlp.fc2.bias': rand(dim),
        })
    return sd


def legacy_vit_encoder_forward(sd: Dict, tokens: torch.Tensor, depth: int = 8, num_heads: int = 8) -> torch.Tensor:
    """The pre-norm ViT encoder with unfused softmax attention, computed from the checkpoint's tensors."""
    x = tokens
    batch, length, dim = x.shape
    for i in range(depth):
        p = f'blocks.{i}'
        h = F.layer_norm(x, (dim,), sd[f'{p}.norm1.weight'], sd[f'{p}.norm1.bias'], eps=1e-6)
        qkv = (h @ sd[f'{p}.attn.qkv.weight'].T).reshape(batch, length, 3, num_heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(dim=-1)
        h = (attn @ v).transpose(1, 2).reshape(batch, length, dim)
        x = x + h @ sd[f'{p}.attn.proj.weight'].T + sd[f'{p}.attn.proj.bias']
        h = F.layer_norm(x, (dim,), sd[f'{p}.norm2.weight'], sd[f'{p}.norm2.bias'], eps=1e-6)
        h = F.gelu(h @ sd[f'{p}.mlp.fc1.weight'].T + sd[f'{p}.mlp.fc1.bias'])
        x = x + h @ sd[f'{p}.mlp.fc2.weight'].T + sd[f'{p}.mlp.fc2.bias']
    return F.layer_norm(x, (dim,), sd['norm.weight'], sd['norm.bias'], eps=1e-6)


def make_hub_cache(cache: Path, repo_id: str, folder: Path, revision: str = 'a' * 40) -> None:
    """Lay ``folder`` out in a Hugging Face Hub cache as ``repo_id`` at ``revision`` (``refs/main`` points to it)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / 'snapshots' / revision
    snapshot.mkdir(parents=True)
    for file in folder.iterdir():
        shutil.copy(file, snapshot / file.name)
    (repo / 'refs').mkdir()
    (repo / 'refs' / 'main').write_text(revision)
