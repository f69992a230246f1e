"""The server's web page in a real browser: headless Chromium plays a WAV into a fake microphone,
the page captures it in an AudioWorklet, resamples it to 16 kHz s16le and streams it; the test
reads the transcript from the DOM."""
from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
import soundfile as sf

from tests.clients.conftest import server_thread
from tests.server.conftest import audio

pytestmark = pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")),
                                reason="chromium and chromium-driver not installed (make test installs them)")


def _browser(wav):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--use-fake-ui-for-media-stream",
                 "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={wav}%noloop",
                 "--autoplay-policy=no-user-gesture-required", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=DriverService(shutil.which("chromedriver")))


def _wait(driver, condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; page status: "
                         f"{driver.find_element('id', 'status').text!r}")


def test_page_streams_the_fake_microphone_and_shows_finals(tmp_path, recognizer):
    wav = tmp_path / "speech.wav"
    x = np.concatenate([audio(2.5, seed=4), np.zeros(8000, np.float32)])
    sf.write(wav, x, 16000, subtype="PCM_16")
    with server_thread(recognizer) as service:
        driver = _browser(wav)
        try:
            driver.get(f"http://127.0.0.1:{service.websocket.port}/")
            options = lambda: [o.get_attribute("value") for o in driver.find_elements("css selector", "#granularity option")]
            _wait(driver, lambda: "coarse" in options(), 20, "the granularity list")
            assert options() == ["auto", "full", "coarse"]
            driver.find_element("css selector", "#granularity option[value='full']").click()
            state = lambda: driver.find_element("tag name", "body").get_attribute("data-state")
            driver.find_element("id", "record").click()
            _wait(driver, lambda: state() == "recording", 20, "recording to start")
            started = time.monotonic()
            _wait(driver, lambda: driver.find_element("id", "partial").text, 20, "a partial result")
            time.sleep(max(0.0, 3.5 - (time.monotonic() - started)))
            driver.find_element("id", "record").click()
            recorded = time.monotonic() - started
            _wait(driver, lambda: state() == "done", 30, "the last final")
            finals = driver.find_elements("css selector", "#finals .final")
            texts = [f.find_element("class name", "text").text for f in finals]
            times = [f.find_element("class name", "time").text for f in finals]
            granularities = {f.get_attribute("data-granularity") for f in finals}
            received = service.engine.metrics.audio_seconds._value.get()
        finally:
            driver.quit()
    assert texts and all(texts) and all(t.startswith("[00:") for t in times)
    assert granularities == {"full"}
    # The page sent 16 kHz audio for as long as it recorded: a wrong resampling ratio would be 3x off.
    assert abs(received - recorded) < 1.0, (received, recorded)
