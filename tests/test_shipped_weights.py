"""The FERPlus weights of transfer_fer_compact that ship inside the package: file, Hub folder, offline loading and
predictions on generated and (where the data is present) real faces."""
import json

import pytest
import safetensors.torch
import timm
import torch
from helpers import REAL_FERPLUS
from PIL import Image, ImageDraw
from source_layouts import make_hub_cache

from timm_fer.cli import main
from timm_fer.constants import FERPLUS_LABELS, HF_HUB_ORG
from timm_fer.data import FerPlus, create_fer_transform
from timm_fer.hub import DEFAULT_MODEL, check_hub_folder, resolve_fer_data_config
from timm_fer.inference import predict
from timm_fer.inference.predict import SAMPLE_IMAGE
from timm_fer.models._pretrained import shipped_weights
from timm_fer.models.transfer import LUMA_WEIGHTS

TAG = 'transfer_fer_compact.ferplus'
COMPACT_FERPLUS_WEIGHTS = shipped_weights(TAG)
FOLDER = COMPACT_FERPLUS_WEIGHTS.parent

pytestmark = pytest.mark.usefixtures('offline_hub')


def _weights_equal(model: torch.nn.Module, tensors: dict) -> bool:
    state = model.state_dict()
    return state.keys() == tensors.keys() and all(torch.equal(state[k], tensors[k]) for k in state)


def draw_face(mouth_curve: float, brow_tilt: float, size: int = 96) -> Image.Image:
    """A grayscale cartoon face: oval head, eyes, brows tilted by ``brow_tilt`` and a mouth bent by ``mouth_curve``."""
    image = Image.new('L', (size, size), 40)
    draw = ImageDraw.Draw(image)
    s = size / 96
    draw.ellipse((14 * s, 6 * s, 82 * s, 92 * s), fill=170)
    for x in (34, 62):
        draw.ellipse(((x - 6) * s, 36 * s, (x + 6) * s, 44 * s), fill=30)
        inner = x + (4 if x < 48 else -4)
        outer = x - (8 if x < 48 else -8)
        draw.line((outer * s, 28 * s, inner * s, (28 + brow_tilt) * s), fill=50, width=max(1, round(2 * s)))
    mouth = [(x * s, (70 - mouth_curve * (1 - ((x - 48) / 14) ** 2)) * s) for x in range(34, 63, 2)]
    draw.line(mouth, fill=60, width=max(1, round(3 * s)))
    return image.convert('RGB')


def test_shipped_file_is_a_small_safetensors_of_the_registered_architecture():
    assert COMPACT_FERPLUS_WEIGHTS.is_file() and COMPACT_FERPLUS_WEIGHTS.stat().st_size <= 10_000_000
    tensors = safetensors.torch.load_file(COMPACT_FERPLUS_WEIGHTS)
    reference = timm.create_model('transfer_fer_compact').state_dict()
    assert {k: v.shape for k, v in tensors.items()} == {k: v.shape for k, v in reference.items()}
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in tensors.values() if v.is_floating_point())
    assert 2.1e6 < sum(v.numel() for k, v in tensors.items() if 'running' not in k and 'num_batches' not in k) < 2.3e6


def test_shipped_state_dict_keys_load_strictly_into_the_renamed_modules():
    """The dropping modules renamed for one name per concept (``branch_drop``, ``attn_head_drop``) hold no
    parameters or buffers: the shipped weights load with ``strict=True`` and every key is the model's."""
    tensors = safetensors.torch.load_file(COMPACT_FERPLUS_WEIGHTS)
    model = timm.create_model('transfer_fer_compact', num_classes=len(FERPLUS_LABELS))
    renamed = [model.local_cnn.branch_drop] + [block.attn.attn_head_drop for block in model.blocks]
    assert not any(module.state_dict() for module in renamed)
    result = model.load_state_dict(tensors, strict=True)
    assert not result.missing_keys and not result.unexpected_keys and set(model.state_dict()) == set(tensors)


def test_pretrained_loads_the_shipped_file_with_no_network():
    tensors = safetensors.torch.load_file(COMPACT_FERPLUS_WEIGHTS)
    model = timm.create_model('transfer_fer_compact', pretrained=True)
    assert model.pretrained_cfg['tag'] == 'ferplus' and model.pretrained_cfg['label_names'] == FERPLUS_LABELS
    assert model.pretrained_cfg['input_size'] == (3, 48, 48) and model.num_classes == 8
    assert model.stem.conv.in_channels == 3 and len(model.blocks) == 4 and len(model.local_cnn.branches) == 2
    assert _weights_equal(model, tensors)
    assert DEFAULT_MODEL == TAG


def test_shipped_folder_is_the_hub_folder_of_the_tag(offline_hub):
    config = check_hub_folder(FOLDER)
    assert config['architecture'] == 'transfer_fer_compact' and config['num_classes'] == 8
    assert tuple(config['pretrained_cfg']['label_names']) == FERPLUS_LABELS
    assert 'file' not in config['pretrained_cfg']  # no path of the machine that wrote it
    card = (FOLDER / 'README.md').read_text()
    for needed in ('license: cc-by-nc-4.0', 'FERPlus', 'majority', 'validation accuracy', 'timm-fer train',
                   '--sampler uniform', 'Licence'):
        assert needed in card, needed
    tensors = safetensors.torch.load_file(COMPACT_FERPLUS_WEIGHTS)
    assert _weights_equal(timm.create_model(f'local-dir:{FOLDER}', pretrained=True), tensors)
    make_hub_cache(offline_hub, f'{HF_HUB_ORG}/{TAG}', FOLDER)
    assert _weights_equal(timm.create_model(f'hf-hub:{HF_HUB_ORG}/{TAG}', pretrained=True), tensors)

    usage = card.split('```python\n', 1)[1].split('```', 1)[0]  # the card's usage snippet runs as written
    namespace: dict = {}
    exec(usage, namespace)
    assert _weights_equal(namespace['model'], tensors)
    with torch.no_grad():
        logits = namespace['model'](namespace['transform'](draw_face(8, 0)).unsqueeze(0))
    assert logits.shape == (1, 8)


def test_generated_faces_are_classified_deterministically(tmp_path, one_torch_thread):
    for i, (mouth, brow) in enumerate([(8, 0), (-8, 0), (0, 6), (0, -6), (12, -4)]):
        draw_face(mouth, brow).save(tmp_path / f'face{i}.png')
    runs = [predict(tmp_path, aligned=True, batch_size=batch_size, amp='none') for batch_size in (5, 5, 2)]
    first = runs[0]
    assert first.weights == f'pretrained {TAG} (shipped with timm-fer)' and first.meaningful
    assert len(first.faces) == 5 and first.labels == list(FERPLUS_LABELS)
    for face in first.faces:
        assert face.expression in FERPLUS_LABELS and abs(sum(face.probabilities.values()) - 1) < 1e-4
    assert runs[1].faces == first.faces
    for batched, alone in zip(first.faces, runs[2].faces):
        assert batched.expression == alone.expression
        for label in FERPLUS_LABELS:
            assert batched.probabilities[label] == pytest.approx(alone.probabilities[label], abs=1e-4)


def test_predict_command_uses_the_shipped_weights_by_default(tmp_path, capsys, one_torch_thread):
    out = tmp_path / 'report.json'
    assert main(['predict', '--aligned', str(SAMPLE_IMAGE), '--output', str(out)]) == 0
    printed = capsys.readouterr().out
    assert f'weights: pretrained {TAG} (shipped with timm-fer)' in printed and 'meaningless' not in printed
    report = json.loads(out.read_text())
    assert report['meaningful'] and report['model'] == TAG and report['faces'][0]['expression'] in FERPLUS_LABELS


def test_first_conv_folds_the_gray_conversion_in_and_in_chans_1_gives_it_back():
    rgb = timm.create_model(TAG, pretrained=True).eval()
    gray = timm.create_model(TAG, pretrained=True, in_chans=1).eval()
    weight = rgb.stem.conv.weight
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    torch.testing.assert_close(weight, weight.sum(dim=1, keepdim=True) * luma)  # one gray kernel, split by luma
    torch.testing.assert_close(gray.stem.conv.weight, weight.sum(dim=1, keepdim=True))
    faces = torch.rand(4, 3, 48, 48)
    luma_faces = (faces * luma).sum(dim=1, keepdim=True)
    with torch.no_grad():  # exact in the normalised space: mean and std are the same on every channel
        torch.testing.assert_close(rgb((faces - 0.5) / 0.5), gray((luma_faces - 0.5) / 0.5), atol=1e-4, rtol=1e-4)


def test_grayscale_weights_load_into_the_rgb_model_through_the_filter(tmp_path):
    """What produced the shipped file: a run on grayscale faces (in_chans=1) loaded into the RGB model."""
    torch.manual_seed(3)
    gray = timm.create_model('transfer_fer_compact', in_chans=1).eval()
    torch.save(gray.state_dict(), tmp_path / 'gray.pth')
    rgb = timm.create_model('transfer_fer_compact', pretrained=True,
                            pretrained_cfg_overlay=dict(file=str(tmp_path / 'gray.pth'))).eval()
    faces = torch.rand(3, 3, 48, 48)
    luma = torch.tensor(LUMA_WEIGHTS).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(rgb((faces - 0.5) / 0.5), gray(((faces * luma).sum(1, keepdim=True) - 0.5) / 0.5),
                                   atol=1e-4, rtol=1e-4)


def test_timms_own_data_path_classifies_rgb_faces_as_predict_aligned_does(tmp_path, one_torch_thread):
    model = timm.create_model(TAG, pretrained=True).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    faces = [draw_face(mouth, brow).convert('RGB') for mouth, brow in [(8, 0), (-8, 0), (0, 6), (0, -6), (12, -4)]]
    faces += [Image.merge('RGB', (face.getchannel(0), face.getchannel(1).point(lambda v: v // 2),
                                  face.getchannel(2))) for face in faces[:2]]  # colour faces, not only gray ones
    for i, face in enumerate(faces):
        face.save(tmp_path / f'face{i}.png')
    report = predict(tmp_path, aligned=True, amp='none')
    with torch.no_grad():
        probabilities = model(torch.stack([transform(face) for face in faces])).softmax(dim=1)
    for face, probs in zip(report.faces, probabilities):
        assert face.expression == FERPLUS_LABELS[int(probs.argmax())]
        assert [face.probabilities[label] for label in FERPLUS_LABELS] == pytest.approx(probs.tolist(), abs=0.01)


@pytest.mark.skipif(not REAL_FERPLUS.is_dir(), reason=f'real FERPlus data not found at {REAL_FERPLUS}')
def test_timms_data_path_agrees_with_predict_on_real_validation_faces(one_torch_thread):
    model = timm.create_model(TAG, pretrained=True).eval()
    timm_path = FerPlus(str(REAL_FERPLUS), 'valid',
                        transform=timm.data.create_transform(**timm.data.resolve_data_config({}, model=model)))
    fer_path = FerPlus(str(REAL_FERPLUS), 'valid', transform=create_fer_transform(
        resolve_fer_data_config(timm.create_model(TAG, pretrained=True, in_chans=1))))
    gray = timm.create_model(TAG, pretrained=True, in_chans=1).eval()
    indices = range(0, len(timm_path), 3)
    with torch.no_grad():
        rgb_top = model(torch.stack([timm_path[i][0] for i in indices])).argmax(dim=1)
        gray_top = gray(torch.stack([fer_path[i][0] for i in indices])).argmax(dim=1)
    agreement = (rgb_top == gray_top).float().mean().item()
    assert agreement >= 0.99, f'{agreement:.4f} of {len(indices)} validation faces'


@pytest.mark.skipif(not REAL_FERPLUS.is_dir(), reason=f'real FERPlus data not found at {REAL_FERPLUS}')
def test_real_ferplus_validation_faces_are_mostly_right(one_torch_thread):
    model = timm.create_model(TAG, pretrained=True).eval()
    valid = FerPlus(str(REAL_FERPLUS), 'valid', transform=create_fer_transform(resolve_fer_data_config(model)))
    indices = range(0, len(valid), len(valid) // 300)
    images, labels = zip(*(valid[i] for i in indices))
    with torch.no_grad():
        predictions = model(torch.stack(images)).argmax(dim=1)
    accuracy = (predictions == torch.tensor(labels)).float().mean().item()
    assert accuracy > 0.7, f'{accuracy:.3f} on {len(labels)} validation faces'
    summary = json.loads((FOLDER / 'config.json').read_text())
    assert summary['pretrained_cfg']['num_classes'] == len(valid.classes) == 8
