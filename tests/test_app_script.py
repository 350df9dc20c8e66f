"""app.py through its command line: the server on loopback with the tiny model, used through `gradio_client`'s
`/predict` and by a person's actions in headless Chromium (upload, Recognise, read the chart), and the messages when
there is no model to serve.

The browser test keeps its screenshot: in $EMOVIT_TEST_ARTIFACTS when that is set (CI keeps that folder), else in
the test's own temporary folder; the path is printed either way."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from PIL import Image

from emovit.inference.demo import _agreement_note, _contradiction
from emovit.inference.loading import load_model
from modeling_emovit.image_utils import open_image

from testing_utils import REPO_ROOT, run_script, subprocess_env


EXAMPLE = REPO_ROOT / "examples" / "images" / "awe.png"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
STARTUP_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def app_env(**extra):
    env = subprocess_env(GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    env.pop("EMOVIT_MODEL", None)
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def app_url(tiny_dir, tmp_path_factory):
    """`python app.py --model TINY --port P` on 127.0.0.1, ready to answer; stopped after the module's tests."""
    port = free_port()
    log = tmp_path_factory.mktemp("app") / "app.log"
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, "app.py", "--model", str(tiny_dir), "--host", "127.0.0.1",
                                   "--port", str(port)], cwd=REPO_ROOT, env=app_env(), stdout=out,
                                  stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if server.poll() is not None:
                pytest.fail(f"app.py exited with {server.returncode} before serving:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"app.py did not answer on {url} within {STARTUP_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(scope="module")
def expected(tiny_dir):
    """classify() and explain() of the example image, in this process, with the model loaded as app.py loads it."""
    model, processor = load_model(str(tiny_dir), torch.float32)
    image = open_image(EXAMPLE)
    return {"score": model.classify([image], processor, method="score"),
            "generate": model.classify([image], processor, method="generate"),
            "labels": list(model.config.emotion_labels),
            "explain": model.explain([image], processor, preset="label", method="score", max_new_tokens=128)}


@pytest.mark.integration
def test_the_predict_endpoint_answers_gradio_client_as_classify_does(app_url, expected, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(app_url, verbose=False)
    assert "/predict" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    labels = expected["labels"]
    for method in ("score", "generate"):
        chart, explanation, note, details = client.predict(handle_file(str(EXAMPLE)), method, "none", 128,
                                                           api_name="/predict")
        result = expected[method]
        assert details["label"] == result.labels[0] and explanation == "" and note == ""
        shown = {entry["label"]: entry["score"] for entry in details["scores"]}
        assert shown == pytest.approx(dict(zip(labels, result.scores[0].tolist())), abs=1e-6)
        if result.labels[0] is not None:
            assert chart["label"] == result.labels[0]
            assert {c["label"]: c["confidence"] for c in chart["confidences"]} == pytest.approx(shown, abs=1e-6)

    # Bad files: the caller gets the demo's message and the server keeps serving.
    not_image = tmp_path / "notes.txt"
    not_image.write_text("not an image")
    with pytest.raises(AppError, match=r"'notes.txt' is not an image this demo can read"):
        client.predict(handle_file(str(not_image)), api_name="/predict")
    Image.new("RGB", (1, 1), "red").save(not_image.parent / "dot.png")
    with pytest.raises(AppError, match=r"'dot.png' is 1×1 pixels, too small"):
        client.predict(handle_file(str(not_image.parent / "dot.png")), api_name="/predict")
    # Over the upload limit (25 MB): refused before anything is sent.
    (not_image.parent / "big.png").write_bytes(b"\0" * (25 * 1024 * 1024 + 1))
    with pytest.raises(ValueError, match=r"exceeds the maximum file size of 26214400 bytes"):
        client.predict(handle_file(str(not_image.parent / "big.png")), api_name="/predict")
    chart, *_ = client.predict(handle_file(str(EXAMPLE)), api_name="/predict")  # defaults: score, no explanation
    assert chart["label"] == expected["score"].labels[0]


@pytest.mark.integration
@pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                    reason="needs Chromium and its driver on PATH (Debian: apt-get install chromium chromium-driver)")
def test_a_person_uploads_an_image_in_chromium_and_sees_classify_result(app_url, expected, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # Headless, and nothing but the page's own requests (no updates, sync or other background traffic).
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,1100", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # every request the page makes
    artifacts = Path(os.environ.get("EMOVIT_TEST_ARTIFACTS") or tmp_path)
    artifacts.mkdir(parents=True, exist_ok=True)
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(EXAMPLE.read_bytes()[:400])
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        wait = WebDriverWait(driver, 60)
        driver.get(app_url)
        upload = (By.CSS_SELECTOR, "#image input[type=file]")
        # A truncated image: the page says what is wrong with which file.
        wait.until(ready.presence_of_element_located(upload)).send_keys(str(truncated))
        driver.find_element(By.CSS_SELECTOR, "#recognise").click()
        error = wait.until(ready.visibility_of_element_located((By.CSS_SELECTOR, "[data-testid=toast-text]"))).text
        driver.find_element(By.CSS_SELECTOR, "[data-testid=toast-close]").click()
        driver.find_element(By.CSS_SELECTOR, "#image button[aria-label='Remove Image']").click()

        # The example image, explained: the chart, the explanation and the agreement note.
        wait.until(ready.presence_of_element_located(upload)).send_keys(str(EXAMPLE))
        wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#image img")))
        driver.find_element(By.XPATH, "//*[@id='explanation-choice']//label[normalize-space()='Why this emotion']"
                            ).click()
        driver.find_element(By.CSS_SELECTOR, "#recognise").click()
        shown_label = wait.until(ready.visibility_of_element_located(
            (By.CSS_SELECTOR, "#emotion [data-testid=label-output-value]"))).text
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#explanation textarea").get_attribute("value"))
        # Each label's bar is a <meter> whose value is the exact probability; its text is the rounded percentage.
        bars = driver.execute_script(
            "return [...document.querySelectorAll('#emotion meter')].map(m => [m.getAttribute('aria-label'), m.value])")
        percentages = [element.text for element in driver.find_elements(By.CSS_SELECTOR, "#emotion dd")]
        explanation = driver.find_element(By.CSS_SELECTOR, "#explanation textarea").get_attribute("value")
        note = driver.find_element(By.CSS_SELECTOR, "#agreement").text
        popups = [element.text for element in driver.find_elements(By.CSS_SELECTOR, "[data-testid=toast-text]")]
        screenshot = artifacts / "app_prediction.png"
        driver.save_screenshot(str(screenshot))
        print(f"screenshot: {screenshot}")
        requested = {json.loads(entry["message"])["message"]["params"].get("request", {}).get("url", "")
                     for entry in driver.get_log("performance")}
    finally:
        driver.quit()

    assert error.startswith("'cut.png' is not an image this demo can read (OSError: image file is truncated")
    result, labels = expected["score"], expected["labels"]
    probabilities = dict(zip(labels, result.scores[0].tolist()))
    assert shown_label == result.labels[0]
    assert [label for label, _ in bars] == sorted(labels, key=lambda label: -probabilities[label])
    assert bars[0][1] == pytest.approx(probabilities[result.labels[0]], abs=1e-3)
    for (label, value), percentage in zip(bars, percentages):
        assert value == pytest.approx(probabilities[label], abs=1e-3)
        assert percentage == f"{round(probabilities[label] * 100)}%"
    explained = expected["explain"]
    assert explanation == explained.explanations[0]
    shown_note = _agreement_note(explained.labels[0], explained.mentioned[0], explained.agreement[0])
    assert note == shown_note.replace("**", "")
    # The tiny model's explanation of this image names other emotions: the page warns twice (note and pop-up).
    assert explained.agreement[0] == "names_other" and note.startswith("Warning:")
    assert popups == [_contradiction(explained.labels[0], explained.mentioned[0])]
    assert screenshot.stat().st_size > 10_000
    # Fonts, scripts and styles all come from the app itself: the page works without the internet.
    web = {url for url in requested if url.startswith(("http:", "https:"))}
    assert web and all(url.startswith(app_url) for url in web), sorted(web - {u for u in web if u.startswith(app_url)})


def app_in_process(argv, monkeypatch, tmp_path, **environment):
    """app.py's main(argv) in this process, from `tmp_path`, with only `environment` of its own variables set; for
    the refusals that come before a server starts."""
    for name in ("EMOVIT_MODEL", "EMOVIT_DTYPE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return run_script("app", argv, cwd=tmp_path)


def test_without_a_model_it_says_how_to_get_one(tmp_path, monkeypatch):
    done = app_in_process([], monkeypatch, tmp_path)
    assert done.returncode == 1
    assert "No model to serve: there is no runs/emovit-offline/" in done.stderr
    assert "Run `accelerate launch train.py` first" in done.stderr and "pass --model" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_model_or_dtype_from_the_environment_that_does_not_work_is_named(tmp_path, tiny_dir,
                                                                            monkeypatch):
    (tmp_path / "empty").mkdir()
    done = app_in_process([], monkeypatch, tmp_path, EMOVIT_MODEL=str(tmp_path / "empty"))
    assert done.returncode == 1
    assert f"--model '{tmp_path / 'empty'}' is a folder without config.json" in done.stderr
    assert "(the model came from $EMOVIT_MODEL)" in done.stderr
    assert "Traceback" not in done.stderr
    done = app_in_process(["--model", tiny_dir], monkeypatch, tmp_path, EMOVIT_DTYPE="int8")
    assert done.returncode == 1
    assert "--dtype (or $EMOVIT_DTYPE) is 'int8'; use one of ['float32', 'bfloat16', 'float16']" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.integration
def test_refusals_show_no_server_path_and_the_budget_is_bounded(app_url):
    """A file that was not uploaded is refused by Gradio itself, whose message names the path it resolved, under the
    server's working directory: the caller learns only that the request failed. A budget past the page's slider is
    refused by the demo, with the range."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    payload = {"data": [{"path": "relative.png", "meta": {"_type": "gradio.FileData"}}, "score", "none", 128]}
    request = urllib.request.Request(app_url + "gradio_api/call/predict", data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        event = json.loads(response.read())["event_id"]
    with urllib.request.urlopen(f"{app_url}gradio_api/call/predict/{event}", timeout=60) as response:
        answer = response.read().decode()
    assert "event: error" in answer
    assert str(REPO_ROOT) not in answer and "relative.png" not in answer, answer

    client = Client(app_url, verbose=False)
    with pytest.raises(AppError, match=r"max_new_tokens is 1000000; this demo generates 16 to 256 new tokens"):
        client.predict(handle_file(str(EXAMPLE)), "score", "label", 1_000_000, api_name="/predict")


def test_limits_that_are_not_positive_are_refused_before_the_model_loads(tmp_path, monkeypatch):
    done = app_in_process(["--model", tmp_path / "nowhere", "--queue_size", "0"], monkeypatch, tmp_path)
    assert done.returncode == 1
    assert "app.py: error: --queue_size is 0; use a positive number." in done.stderr
    assert "Traceback" not in done.stderr
