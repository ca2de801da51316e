"""The page of ``timm-fer serve`` in headless Chromium, for the tests and the benchmark: a fake camera clip made from
the shipped portrait, the server on a loopback port in a thread, and the browser driven by Selenium (the system's
chromium and chromedriver, never a download)."""
import contextlib
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
from PIL import Image

from timm_fer.inference.predict import SAMPLE_IMAGE

CHROMIUM = Path('/usr/bin/chromium')
CHROMEDRIVER = Path('/usr/bin/chromedriver')
CAMERA_SIZE = (640, 480)


def browser_missing() -> Optional[str]:
    """Why the page cannot be driven here (no chromium, chromedriver or selenium), or None when it can."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.is_file()]
    if missing:
        return f'{" and ".join(missing)} missing: apt-get install chromium chromium-driver'
    try:
        import selenium  # noqa: F401
    except ImportError:
        return 'selenium is not installed: pip install -e ".[test]"'
    return None


def camera_frame(size: tuple = CAMERA_SIZE, portrait_height: int = 320) -> Image.Image:
    """The shipped portrait (a smiling face) scaled to ``portrait_height`` and centred on a grey camera frame."""
    frame = Image.new('RGB', size, (118, 122, 128))
    portrait = Image.open(SAMPLE_IMAGE).convert('RGB').resize((portrait_height, portrait_height), Image.BICUBIC)
    frame.paste(portrait, ((size[0] - portrait_height) // 2, (size[1] - portrait_height) // 2))
    return frame


def write_fake_camera(path: Path, seconds: float = 1.0, fps: int = 30) -> Path:
    """A YUV4MPEG2 clip (4:2:0, what Chromium's fake camera plays in a loop) of :func:`camera_frame`, still."""
    width, height = CAMERA_SIZE
    luma, blue, red = (np.asarray(plane) for plane in camera_frame().convert('YCbCr').split())
    half = (width // 2, height // 2)
    chroma = [np.asarray(Image.fromarray(plane).resize(half, Image.BOX)) for plane in (blue, red)]
    frame = b'FRAME\n' + luma.tobytes() + chroma[0].tobytes() + chroma[1].tobytes()
    with open(path, 'wb') as clip:
        clip.write(f'YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n'.encode())
        for _ in range(max(1, round(seconds * fps))):
            clip.write(frame)
    return path


def wait_for(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.1):
    """Poll ``condition`` until it returns something true, for at most ``timeout`` seconds; its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f'{what}: not within {timeout:.0f} s')
        time.sleep(interval)


@contextlib.contextmanager
def serving(app, timeout: float = 60.0) -> Iterator[str]:
    """Serve the ASGI ``app`` with uvicorn on 127.0.0.1 and a free port, in a thread; yields its base URL."""
    import uvicorn

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(('127.0.0.1', 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level='warning', ws_ping_interval=None))
    thread = threading.Thread(target=server.run, kwargs={'sockets': [listener]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), timeout, 'the server to start')
        if not server.started:
            raise RuntimeError('the server stopped while starting (see its log above)')
        yield f'http://127.0.0.1:{listener.getsockname()[1]}'
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()


@contextlib.contextmanager
def chromium(camera_clip: Path, width: int = 1280, height: int = 1000) -> Iterator:
    """Headless Chromium (Selenium WebDriver) whose camera plays ``camera_clip``, in a throwaway profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix='timm-fer-chromium-') as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in ('--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                     '--disable-background-networking', '--disable-component-update', '--disable-sync',
                     '--disable-dev-shm-usage', f'--user-data-dir={profile}', f'--window-size={width},{height}',
                     '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
                     f'--use-file-for-fake-video-capture={camera_clip}'):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
        try:
            driver.set_page_load_timeout(30)
            driver.set_script_timeout(30)
            yield driver
        finally:
            driver.quit()


def start_live(driver, timeout: float = 20.0) -> str:
    """Click the page's live button and wait until a box is drawn; the labels drawn (``#track expression p``)."""
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, 'live-toggle').click()

    def drawn_labels() -> str:
        message = driver.find_element(By.ID, 'message')
        if message.is_displayed():
            raise RuntimeError(f'the page says: {message.text}')
        return driver.find_element(By.ID, 'live-labels').get_attribute('data-labels')

    return wait_for(drawn_labels, timeout, 'a box drawn on the live video')


def choose_photo(driver, photo: Path, timeout: float = 30.0) -> list:
    """Choose ``photo`` (or a clip) in the page's file input; the expressions of the tables shown, one per face (per
    face track for a clip)."""
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, 'file-input').send_keys(str(Path(photo).resolve()))

    def tables() -> list:
        message = driver.find_element(By.ID, 'message')
        if message.is_displayed():
            raise RuntimeError(f'the page says: {message.text}')
        return [table.get_attribute('data-expression')
                for table in driver.find_elements(By.CSS_SELECTOR, '#results table.probabilities')]

    return wait_for(tables, timeout, 'the table of a chosen photo')
