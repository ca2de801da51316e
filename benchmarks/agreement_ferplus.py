"""Top-1 agreement of every backend and precision with torch fp32 on FERPlus validation faces, compact model.

Runs ``transfer_fer_compact.ferplus`` on every FERPlus validation face (majority-vote labels, read with
:class:`timm_fer.data.FerPlus` and the model's test transform) in torch fp32, torch under bf16 autocast, torch
with int8 Linear layers, ONNX Runtime fp32 and ONNX Runtime with int8 MatMuls, and prints the share of faces whose
top-1 equals torch fp32's, each variant's accuracy and the largest probability difference from torch fp32.

    python benchmarks/agreement_ferplus.py path/to/ferplus
"""
import argparse
import tempfile
from pathlib import Path
from typing import Callable, Dict

import timm
import torch

from timm_fer.data import FerPlus
from timm_fer.data.transforms import create_fer_transform
from timm_fer.hub import resolve_fer_data_config
from timm_fer.inference.backends import OnnxRuntimeModel, cached_onnx, quantize_linear
from timm_fer.utils.runtime import cpu_capability

MODEL = 'transfer_fer_compact.ferplus'


def torch_runner(model: torch.nn.Module, amp_dtype=None) -> Callable[[torch.Tensor], torch.Tensor]:
    """Logits of ``model`` in channels-last memory, under autocast to ``amp_dtype`` when given."""
    def run(images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), torch.autocast('cpu', dtype=amp_dtype or torch.bfloat16,
                                                    enabled=amp_dtype is not None):
            return model(images.contiguous(memory_format=torch.channels_last)).float()
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('root', type=Path, help='FERPlus folder')
    parser.add_argument('--batch-size', type=int, default=256)
    args = parser.parse_args()
    model = timm.create_model(MODEL, pretrained=True).eval()
    data = FerPlus(str(args.root), 'valid', transform=create_fer_transform(resolve_fer_data_config(model)))
    loader = torch.utils.data.DataLoader(data, batch_size=args.batch_size)
    channels_last = model.to(memory_format=torch.channels_last)
    with tempfile.TemporaryDirectory() as folder:
        fp32_file = cached_onnx(model, MODEL, cache_dir=Path(folder))
        int8_file = cached_onnx(model, MODEL, int8=True, cache_dir=Path(folder))
        variants: Dict[str, Callable] = {
            'torch fp32': torch_runner(channels_last),
            'torch bf16 autocast': torch_runner(channels_last, torch.bfloat16),
            'torch int8 Linear': torch_runner(quantize_linear(channels_last)),
            'onnxruntime fp32': OnnxRuntimeModel(fp32_file, torch.get_num_threads()),
            'onnxruntime int8 MatMul': OnnxRuntimeModel(int8_file, torch.get_num_threads()),
        }
        probabilities = {name: [] for name in variants}
        labels = []
        for images, targets in loader:
            labels.append(targets)
            for name, run in variants.items():
                probabilities[name].append(run(images).softmax(-1))
    labels = torch.cat(labels)
    reference = torch.cat(probabilities['torch fp32'])
    print(f'{MODEL} on {len(labels)} FERPlus validation faces; torch cpu capability {cpu_capability()}\n')
    print('| variant | top-1 = torch fp32 | accuracy | largest probability difference |\n|---|---|---|---|')
    for name, chunks in probabilities.items():
        probs = torch.cat(chunks)
        agreement = (probs.argmax(-1) == reference.argmax(-1)).float().mean()
        accuracy = (probs.argmax(-1) == labels).float().mean()
        print(f'| {name} | {100 * agreement:.2f} % | {100 * accuracy:.2f} % | '
              f'{(probs - reference).abs().max():.1e} |')


if __name__ == '__main__':
    main()
