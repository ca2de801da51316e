"""The fast path: channels-last memory, bf16 autocast and torch.compile keep every layer's semantics."""
import pytest
import timm
import torch
import torch.nn.functional as F
from drawn_faces import generated_faces
from helpers import TINY, TINY_TRANSFER, train_args, write_toy_folder

import timm_fer  # noqa: F401
from timm_fer.cli.train import main as train_main
from timm_fer.layers import LocalCNN, MultiAttentionDropping, MultiHeadSelfAttentionDropping
from timm_fer.models.irnet import BottleneckIR
from timm_fer.utils import runtime

# Stem channels stay >= 16: torch 2.14.1's CPU channels-last backward of a strided 1x1 conv with <= 8 input
# channels corrupts memory.


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize('make_module', [
    lambda: BottleneckIR(16, 32, stride=2), lambda: BottleneckIR(32, 32, stride=2, use_se=True),
    lambda: LocalCNN(32, drop_prob=1.)])
def test_channels_last_gives_the_same_outputs_and_gradients(make_module):
    # Seeded: PReLU and ReLU have a kink at 0, where a pre-activation within round-off of 0 takes the other slope in
    # the other memory format (an unseeded draw once put one at 4e-8 and moved an input gradient by 0.1).
    torch.manual_seed(0)
    module = make_module()
    x = torch.randn(4, module.bn1.num_features if isinstance(module, BottleneckIR) else 32, 14, 14)
    outputs = []
    for fmt in (torch.contiguous_format, torch.channels_last):
        module = module.to(memory_format=fmt).train()
        inp = x.contiguous(memory_format=fmt).detach().requires_grad_()
        torch.manual_seed(0)
        out = module(inp)
        out.square().sum().backward()
        outputs.append((out.detach(), inp.grad))
    assert torch.allclose(outputs[0][0], outputs[1][0], atol=1e-5)
    assert torch.allclose(outputs[0][1], outputs[1][1], atol=1e-4)


def test_transfer_in_channels_last_matches_contiguous():
    model = timm.create_model('transfer_fer_ir50', **TINY).eval()
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        expected = model(x)
        model = model.to(memory_format=torch.channels_last)
        assert torch.allclose(model(_channels_last(x)), expected, atol=1e-5)


def test_mad_under_bf16_autocast_keeps_dtype_and_drops_one_whole_branch():
    torch.manual_seed(0)
    x = torch.rand(64, 3, 5, 5, dtype=torch.bfloat16) + 0.5
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = MultiAttentionDropping(1.).train()(x)
    assert y.dtype == torch.bfloat16
    zero = y.flatten(2).eq(0).all(dim=-1)
    assert zero.sum(dim=1).eq(1).all() and torch.equal(y[~zero], x[~zero])


def test_msad_under_bf16_autocast_is_close_to_fp32_and_drops_whole_heads():
    torch.manual_seed(0)
    attn = MultiHeadSelfAttentionDropping(64, num_heads=4, attn_head_drop_prob=1.)
    x = torch.randn(8, 10, 64)
    expected = attn.eval()(x)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = attn(x)
        assert out.dtype == torch.bfloat16
        captured = []
        attn.attn_head_drop.register_forward_hook(lambda _, args, output: captured.append(output))
        attn.train()(x)
    assert torch.allclose(out.float(), expected, atol=0.05, rtol=0.05)
    zero = captured[0].flatten(2).eq(0).all(dim=-1)
    assert zero.sum(dim=1).eq(1).all()


def test_training_graph_has_no_breaks_with_mad_and_msad_active():
    model = timm.create_model('transfer_fer_ir50', mad_drop_prob=0.6, msad_drop_prob=0.3, **TINY).train()
    explanation = torch._dynamo.explain(model)(torch.randn(2, 3, 112, 112))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_bf16_predictions_agree_with_fp32_on_at_least_99_percent():
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = timm.create_model('transfer_fer_ir50', img_size=32, **dict(TINY, num_heads=4))  # learns in 20 steps
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(20):
        images, labels = generated_faces(32, generator)
        optimizer.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()
    model = model.eval().to(memory_format=torch.channels_last)
    images, labels = generated_faces(256, generator)
    images = _channels_last(images)
    with torch.inference_mode():
        fp32 = model(images).argmax(dim=-1)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            bf16 = model(images).argmax(dim=-1)
    assert (fp32 == labels).float().mean() > 0.5  # the model learned the task, so its margins mean something
    assert (fp32 == bf16).float().mean() >= 0.99


def test_auto_amp_picks_bf16_only_where_it_is_fast(monkeypatch):
    cpu = torch.device('cpu')
    monkeypatch.setattr(runtime, '_cpu_has_bf16_instructions', lambda: True)
    monkeypatch.setattr(runtime, 'cpu_capability', lambda: 'AVX512')
    assert runtime.resolve_amp_dtype('auto', cpu) == torch.bfloat16
    monkeypatch.setattr(runtime, 'cpu_capability', lambda: 'AVX2')  # bf16 on reference kernels: slow
    assert runtime.resolve_amp_dtype('auto', cpu) is None
    monkeypatch.setattr(runtime, 'cpu_capability', lambda: 'AVX512')
    monkeypatch.setattr(runtime, '_cpu_has_bf16_instructions', lambda: False)
    assert runtime.resolve_amp_dtype('auto', cpu) is None
    assert runtime.resolve_amp_dtype('bf16', cpu) == torch.bfloat16
    assert runtime.resolve_amp_dtype('none', cpu) is None


@pytest.mark.slow
def test_train_command_runs_compiled_in_channels_last(tmp_path, capsys):
    data = write_toy_folder(tmp_path / 'toy', train_per_class=8, val_per_class=2)
    argv = train_args(data, tmp_path / 'run', *TINY_TRANSFER, '--epochs', '1', '--no-eval', '--compile')
    assert train_main(argv) == 0  # bf16 where the CPU runs it fast: elsewhere its reference kernels take minutes
    assert 'amp auto, channels-last True, compile True' in capsys.readouterr().out
    assert (tmp_path / 'run' / 'last.pth').is_file()
