"""Calibration (expected calibration error, temperature fitting and folding) and the neutral vote weight."""
import math

import pytest
import timm
import torch
from helpers import TINY
from hypothesis import given, settings
from hypothesis import strategies as st

import timm_fer  # noqa: F401
from timm_fer.data import reweigh_votes
from timm_fer.engine import TrainConfig, expected_calibration_error, fit_temperature
from timm_fer.errors import ConfigError
from timm_fer.hub import fold_temperature

pytestmark = pytest.mark.usefixtures('one_torch_thread')

CLASSES = ('neutral', 'happiness', 'surprise', 'sadness', 'anger', 'disgust', 'fear', 'contempt')

probabilities = st.builds(
    lambda seed, n, k: torch.softmax(3 * torch.randn(n, k, generator=torch.Generator().manual_seed(seed)), dim=1),
    st.integers(0, 2 ** 31), st.integers(1, 200), st.integers(2, 8))


@given(probabilities, st.integers(0, 2 ** 31), st.integers(1, 30))
def test_ece_is_a_share_in_0_1(probs, seed, bins):
    labels = torch.randint(0, probs.shape[1], (len(probs),), generator=torch.Generator().manual_seed(seed))
    assert 0 <= expected_calibration_error(probs, labels, bins) <= 1


@given(probabilities)
def test_ece_is_one_minus_confidence_when_always_wrong_and_zero_for_sure_right_answers(probs):
    confidence, predicted = probs.max(dim=1)
    wrong = (predicted + 1) % probs.shape[1]
    assert expected_calibration_error(probs, wrong) == pytest.approx(float(confidence.double().mean()), abs=1e-9)
    one_hot = torch.nn.functional.one_hot(predicted, probs.shape[1]).float()
    assert expected_calibration_error(one_hot, predicted) == 0


def test_ece_refuses_mismatched_inputs():
    with pytest.raises(ValueError, match='expected'):
        expected_calibration_error(torch.rand(4, 3), torch.zeros(5, dtype=torch.long))


@settings(deadline=None, max_examples=10)
@given(st.floats(0.3, 3.), st.integers(0, 2 ** 31))
def test_fitted_temperature_recovers_the_one_that_made_the_labels(temperature, seed):
    """Labels drawn from softmax(z): logits z * T are best read at temperature T."""
    generator = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(20000, 5, generator=generator)
    labels = torch.multinomial(logits.softmax(1), 1, generator=generator)[:, 0]
    assert fit_temperature(logits * temperature, labels) == pytest.approx(temperature, rel=0.06)


@settings(deadline=None, max_examples=10)
@given(st.floats(0.2, 5.), st.integers(0, 1000))
def test_folded_temperature_divides_the_logits(temperature, seed):
    torch.manual_seed(seed)
    model = timm.create_model('transfer_fer_ir50', **TINY).eval()
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        before = model(x)
        fold_temperature(model, temperature)
        after = model(x)
    torch.testing.assert_close(after, before / temperature, atol=1e-4, rtol=1e-4)


def test_bad_temperatures_are_refused():
    model = timm.create_model('transfer_fer_ir50', **TINY)
    for temperature in (0., -1., math.nan, math.inf):
        with pytest.raises(ConfigError, match='positive number'):
            fold_temperature(model, temperature)


votes = st.lists(st.lists(st.integers(0, 10), min_size=8, max_size=8).filter(any), min_size=1, max_size=20).map(
    lambda rows: torch.tensor(rows, dtype=torch.float32) / torch.tensor(rows, dtype=torch.float32).sum(1, keepdim=True))


@given(votes, st.floats(0., 1.))
def test_reweighed_votes_stay_distributions_and_keep_pure_faces(targets, weight):
    out = reweigh_votes(targets, CLASSES, 'neutral', weight)
    torch.testing.assert_close(out.sum(dim=1), torch.ones(len(out)))
    pure = (targets.max(dim=1).values == 1)
    torch.testing.assert_close(out[pure], targets[pure])
    expressions = targets[:, 1:].sum(dim=1) > 0
    assert (out[expressions, 0] <= targets[expressions, 0] + 1e-6).all()  # neutral never gains on a mixed face
    torch.testing.assert_close(reweigh_votes(targets, CLASSES, 'neutral', 1.), targets)


def test_reweighing_a_mixed_face():
    mixed = torch.tensor([[0.6, 0, 0, 0, 0.4, 0, 0, 0]])
    assert reweigh_votes(mixed, CLASSES, 'neutral', 0.5)[0, [0, 4]].tolist() == pytest.approx([3 / 7, 4 / 7])
    with pytest.raises(ConfigError, match="'neutral'"):
        reweigh_votes(mixed, ('a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'), 'neutral', 0.5)


@pytest.mark.parametrize('settings_, match', [
    (dict(neutral_vote_weight=0.5), '--soft-labels'),
    (dict(soft_labels=True, neutral_vote_weight=1.5), 'neutral-vote-weight'),
    (dict(zoom=(1.2, 0.8)), '--zoom'),
    (dict(photometric=2.), '--photometric'),
    (dict(degrade=-0.1), '--degrade'),
])
def test_domain_settings_are_checked(settings_, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig.from_recipe('ferplus', 'data', **settings_)
