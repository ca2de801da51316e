"""The page of ``timm-fer serve`` in a real browser: headless Chromium whose fake camera plays the shipped portrait
(a smiling face) draws a box labelled happiness and a frame rate in live mode, a chosen photo shows its table, the
model chosen in the selector answers photos and the camera, a server with an API key answers once the key is given,
and the page loads nothing from outside the server."""
import re
from pathlib import Path

import pytest

from live_page import (browser_missing, camera_frame, choose_photo, chromium, serving, start_live, wait_for,
                       write_fake_camera)

from timm_fer.constants import DEFAULT_MODEL, INTENDED_MODEL, SERVED_MODELS
from timm_fer.inference.predict import SAMPLE_IMAGE

STATIC = Path(__file__).resolve().parents[1] / 'timm_fer' / 'serve' / 'static'
LABEL = re.compile(r'^#\d+ (\w+) (0|1)\.\d\d$')


@pytest.fixture(scope='module')
def shipped_model_app():
    """The application of ``timm-fer serve`` for the shipped model on one thread, with classifier options."""
    missing = browser_missing()
    if missing:
        pytest.skip(missing)
    pytest.importorskip('fastapi', reason='the serve extra (fastapi) is not installed')
    pytest.importorskip('uvicorn', reason='the serve extra (uvicorn) is not installed')
    from timm_fer.inference.classifier import load_classifier
    from timm_fer.serve.app import create_app

    return lambda **options: create_app(load_classifier(threads=1, **options))


@pytest.fixture(scope='module')
def page_url(shipped_model_app):
    """The server (torch backend, explanations on) on a loopback port, for the module's tests."""
    with serving(shipped_model_app(backend='torch', explain=True)) as url:
        yield url


@pytest.fixture(scope='module')
def two_models_url(shipped_model_app):
    """The server of both shipped tags (torch backend), as ``timm-fer serve`` with no --model serves them."""
    from timm_fer.serve.app import create_app, load_classifiers

    with serving(create_app(load_classifiers(models=SERVED_MODELS, threads=1, backend='torch'))) as url:
        yield url


@pytest.fixture(scope='module')
def browser(tmp_path_factory):
    """Headless Chromium whose camera plays the shipped portrait on a 640x480 frame."""
    missing = browser_missing()
    if missing:
        pytest.skip(missing)
    clip = write_fake_camera(tmp_path_factory.mktemp('camera') / 'portrait.y4m')
    with chromium(clip) as driver:
        yield driver


def shown_number(driver, output_id: str) -> float:
    """The number an ``<output>`` of the page shows; 0 while it shows none ('–')."""
    from selenium.webdriver.common.by import By

    value = driver.find_element(By.ID, output_id).get_attribute('value')
    return float(value) if re.fullmatch(r'\d+(\.\d+)?', value) else 0.


def test_the_fake_camera_clip_is_yuv4mpeg2(tmp_path):
    clip = write_fake_camera(tmp_path / 'clip.y4m', seconds=0.2, fps=10)
    data = clip.read_bytes()
    header, _, rest = data.partition(b'\n')
    assert header == b'YUV4MPEG2 W640 H480 F10:1 Ip A1:1 C420jpeg'
    frame = len(b'FRAME\n') + 640 * 480 * 3 // 2
    assert len(rest) == 2 * frame and rest[:6] == rest[frame:frame + 6] == b'FRAME\n'


@pytest.mark.slow
def test_live_mode_draws_a_box_labelled_happiness_and_a_rate(page_url, browser, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(page_url)
    labels = start_live(browser).split('|')
    expressions = [LABEL.match(label).group(1) for label in labels]
    assert expressions == ['happiness'], labels
    fps = wait_for(lambda: shown_number(browser, 'fps'), 15, 'a frame rate')
    assert fps > 0 and 0 < shown_number(browser, 'latency-ms') < 10_000
    shot = tmp_path / 'live.png'
    assert browser.find_element(By.ID, 'live').screenshot(str(shot)) and shot.stat().st_size > 10_000
    browser.find_element(By.ID, 'live-toggle').click()
    assert browser.find_element(By.ID, 'live-toggle').get_attribute('aria-pressed') == 'false'


@pytest.mark.slow
def test_a_chosen_photo_shows_its_table_and_explanation(page_url, browser, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(page_url)
    browser.find_element(By.ID, 'explain').click()
    assert choose_photo(browser, SAMPLE_IMAGE) == ['happiness']
    rows = browser.find_elements(By.CSS_SELECTOR, '#results table.probabilities tbody tr')
    assert rows[0].find_element(By.TAG_NAME, 'th').text == 'happiness' and len(rows) == 8
    for selector, kind in (('img.annotated', 'jpeg'), ('img.explanation', 'png')):
        assert browser.find_element(By.CSS_SELECTOR, selector).get_attribute('src').startswith(
            f'data:image/{kind};base64,')
    shot = tmp_path / 'photo.png'
    assert browser.find_element(By.ID, 'photos').screenshot(str(shot)) and shot.stat().st_size > 10_000


@pytest.mark.slow
def test_a_chosen_clip_shows_its_face_track(page_url, browser, tmp_path):
    from selenium.webdriver.common.by import By

    pytest.importorskip('av', reason='the video extra (PyAV) is not installed')
    from timm_fer.faces.video_io import VideoWriter

    clip = tmp_path / 'portrait.mp4'
    with VideoWriter(clip, 10) as writer:
        for index in range(15):
            writer.write(camera_frame((320, 240), portrait_height=160), index / 10)
    browser.get(page_url)
    assert choose_photo(browser, clip) == ['happiness']
    caption = browser.find_element(By.CSS_SELECTOR, '#results table caption').text
    assert re.match(r'Track \d+: happiness, ', caption), caption


@pytest.mark.slow
def test_explanations_asked_of_a_server_without_them_show_its_message(shipped_model_app, browser):
    from selenium.webdriver.common.by import By

    with serving(shipped_model_app(backend='torch', int8=True)) as url:  # int8 layers: no explanation pictures
        browser.get(url)
        browser.find_element(By.ID, 'explain').click()
        browser.find_element(By.ID, 'file-input').send_keys(str(SAMPLE_IMAGE))
        message = wait_for(lambda: browser.find_element(By.ID, 'message').text, 20, "the server's message")
    assert message.startswith('400: ') and '--explain' in message, message
    assert not browser.find_elements(By.CSS_SELECTOR, '#results table')


@pytest.mark.slow
def test_the_page_loads_nothing_from_elsewhere(page_url, browser):
    browser.get(page_url)
    wait_for(lambda: browser.execute_script('return document.readyState') == 'complete', 15, 'the page to load')
    loaded = browser.execute_script(
        "return performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))"
        '.map((entry) => entry.name)')
    assert {name.split('/static/')[-1] for name in loaded if '/static/' in name} == {'app.js', 'style.css'}
    assert all(name.startswith(page_url + '/') for name in loaded), loaded
    for path in STATIC.iterdir():
        assert not re.search(r'(https?:)?//[\w-]+(\.[\w-]+)+', path.read_text()), f'{path.name} names another site'


def model_selector(driver):
    """The page's model selector once it lists the server's models, as a Selenium ``Select``."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select

    wait_for(lambda: driver.find_element(By.ID, 'model-info').text.startswith('Model '), 15, "the model's description")
    return Select(driver.find_element(By.ID, 'model'))


@pytest.mark.slow
def test_the_model_chosen_answers_photos_and_the_camera(two_models_url, browser):
    from selenium.webdriver.common.by import By

    browser.get(two_models_url)
    selector = model_selector(browser)
    assert browser.find_element(By.ID, 'model').is_displayed()
    assert browser.find_element(By.CSS_SELECTOR, 'label[for="model"]').text == 'Model'
    assert [option.get_attribute('value') for option in selector.options] == list(SERVED_MODELS)
    assert selector.first_selected_option.text == f'{DEFAULT_MODEL} (default)'
    description = browser.find_element(By.ID, 'model-description')
    assert description.text.startswith('Reads the perceived expression: ')
    selector.select_by_value(INTENDED_MODEL)
    assert browser.find_element(By.ID, 'model-info').text.startswith(f'Model {INTENDED_MODEL} (torch): ')
    assert description.text.startswith('Reads the intended expression: ') and description.text.endswith('labels).')
    assert description.get_attribute('title').startswith(description.text + ' Compact TransFER')
    assert choose_photo(browser, SAMPLE_IMAGE) == ['happiness']
    result = browser.find_element(By.CSS_SELECTOR, '#results article.result')
    assert result.find_element(By.CSS_SELECTOR, '.model').text == f'Model {INTENDED_MODEL}'
    assert result.get_attribute('data-model') == INTENDED_MODEL

    def live_model() -> str:
        return browser.find_element(By.ID, 'live-labels').get_attribute('data-model')

    start_live(browser)
    assert wait_for(live_model, 15, 'a frame answered') == INTENDED_MODEL
    assert browser.find_element(By.ID, 'live-model').get_attribute('value') == INTENDED_MODEL
    selector.select_by_value(DEFAULT_MODEL)  # the stream goes on, answered by the other model
    wait_for(lambda: live_model() == DEFAULT_MODEL, 15, 'a frame answered by the model chosen next')
    assert not browser.find_element(By.ID, 'message').is_displayed()
    browser.find_element(By.ID, 'live-toggle').click()


@pytest.mark.slow
def test_one_model_shows_no_selector_and_answers_with_it(page_url, browser):
    from selenium.webdriver.common.by import By

    browser.get(page_url)
    selector = model_selector(browser)
    assert [option.get_attribute('value') for option in selector.options] == [DEFAULT_MODEL]
    assert not browser.find_element(By.ID, 'model').is_displayed()
    assert choose_photo(browser, SAMPLE_IMAGE) == ['happiness']
    assert browser.find_element(By.CSS_SELECTOR, '#results .model').text == f'Model {DEFAULT_MODEL}'


@pytest.mark.slow
def test_a_server_with_a_key_answers_the_page_once_the_key_is_given(shipped_model_app, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from timm_fer.inference.classifier import load_classifier
    from timm_fer.serve.app import create_app

    with serving(create_app(load_classifier(threads=1, backend='torch'), api_key='page-key')) as url:
        browser.get(url)
        info = browser.find_element(By.ID, 'model-info')
        wait_for(lambda: info.text.startswith("The model's description is unavailable: "), 15, 'the refusal')
        assert 'API key' in info.text
        browser.find_element(By.CSS_SELECTOR, '#key-settings summary').click()
        browser.find_element(By.ID, 'api-key').send_keys('page-key', Keys.TAB)  # the change lists the models again
        wait_for(lambda: info.text.startswith(f'Model {DEFAULT_MODEL} (torch): '), 15, 'the models, with the key')
        assert choose_photo(browser, SAMPLE_IMAGE) == ['happiness']  # the form carries the key too
