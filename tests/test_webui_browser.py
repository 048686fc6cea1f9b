"""`xft webui` in a real headless Chromium (Debian's chromium + chromedriver, Selenium):
pick the quickstart config, see a validation error, preview, launch, close the tab, reopen,
watch the loss curve, chat with the result (compared with `xft chat`), merge and export.

A screenshot of each stage is saved under the test's tmp dir (the path is printed); the
ones in docs/img/ come from this test.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, DEMO_CONFIG
from serving import free_port

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
pytest.importorskip("gradio", reason="needs the webui extra: pip install -e '.[webui]'")
webdriver = pytest.importorskip("selenium.webdriver",
                                reason="needs selenium (the test extra)")
if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    pytest.skip(f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}): "
                "apt-get install chromium chromium-driver", allow_module_level=True)

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-dev-shm-usage", "--window-size=1400,1700"]
DOCS_SHOTS = os.environ.get("XFT_DOCS_SCREENSHOTS")  # a folder: copy the screenshots there


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def wait_for(condition, timeout, what):
    deadline = time.time() + timeout
    while True:
        try:
            value = condition()
            if value:
                return value
        except Exception:  # the page is still rendering
            pass
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.5)


class Page:
    def __init__(self, driver, url, shots):
        self.driver, self.shots = driver, shots
        driver.get(url)
        wait_for(lambda: self.value("#model-path"), 120, "the form to load")

    def find(self, css):
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def field(self, elem_id):
        return self.find(f"{elem_id} input, {elem_id} textarea")

    def value(self, elem_id):
        return self.field(elem_id).get_attribute("value")

    def type(self, elem_id, text):
        field = self.field(elem_id)
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(Keys.DELETE)
        field.send_keys(str(text))
        field.send_keys(Keys.TAB)  # Gradio takes the value on blur too

    def choose(self, elem_id, option):
        field = self.field(elem_id)
        field.click()
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(option)
        wait_for(lambda: self.find(f'li[role=option][aria-label="{option}"]'), 30,
                 f"option {option}").click()

    def click(self, elem_id):
        self.find(elem_id).click()

    def tab(self, label):
        for button in self.driver.find_elements(By.CSS_SELECTOR, "button[role=tab]"):
            if button.text.strip() == label:
                button.click()
                return
        raise AssertionError(f"no tab {label}")

    def text(self, css):
        return self.find(css).text

    def shot(self, name):
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        if DOCS_SHOTS:
            shutil.copyfile(path, Path(DOCS_SHOTS) / f"webui_{name}.png")


@pytest.fixture()
def webui(tmp_path):
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO), GRADIO_ANALYTICS_ENABLED="False")
    runs = tmp_path / "runs"
    process = subprocess.Popen([sys.executable, "-m", "xft", "webui", "--port", str(port),
                                "--runs-dir", str(runs)], env=env, cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    import httpx

    try:
        wait_for(lambda: httpx.get(url, timeout=5).status_code == 200, 300, "xft webui")
        yield url, runs
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.slow
def test_quickstart_in_the_browser_configure_launch_watch_chat_export(webui, tmp_path):
    url, runs = webui
    shots = tmp_path / "screenshots"
    shots.mkdir()
    print(f"screenshots: {shots}")
    driver = browser()
    try:
        page = Page(driver, url, shots)
        # Pick another shipped config, then the quickstart: the form follows the choice.
        page.choose("#config", "qwen2_7b_instruct_lora_alpaca_e3")
        wait_for(lambda: page.value("#model-path") != "xft://tiny-llama", 60, "qwen2 fields")
        page.choose("#config", DEMO_CONFIG)
        wait_for(lambda: page.value("#model-path") == "xft://tiny-llama", 60, "tiny fields")
        assert page.value("#dataset-path") == "xft://data/self_cognition.json"

        # A bad value is reported in the page, and nothing is launched.
        page.type("#lr", "-1")
        page.click("#preview")
        wait_for(lambda: "learning rate" in page.text("#check"), 60, "the validation error")
        page.shot("1_validation_error")
        page.click("#launch")
        time.sleep(2)
        assert "learning rate" in page.text("#check") and not runs.exists()

        page.type("#lr", "0.003")
        page.type("#epochs", "5")
        page.type("#log-interval", "2")
        page.type("#run-name", "quickstart")
        page.click("#preview")
        wait_for(lambda: "config is valid" in page.text("#check"), 60, "the preview")
        command = page.text("#command")
        assert "xft train" in command and "--work-dir" in command and "quickstart" in command
        assert "epochs=5" in page.text("#resolved")
        page.shot("2_preview")
        page.click("#launch")
        wait_for(lambda: (runs / "quickstart" / "xft_run.json").is_file(), 60, "the launch")
    finally:
        driver.quit()  # the tab (the whole browser) closes; training goes on

    driver = browser()
    try:
        page = Page(driver, url, shots)
        page.tab("Runs")
        page.choose("#run", "quickstart")
        metrics = runs / "quickstart" / "metrics.jsonl"
        wait_for(lambda: page.find("#loss-plot img") and metrics.is_file()
                 and len(metrics.read_text().splitlines()) >= 4, 600, "the loss curve")
        time.sleep(3)  # the page redraws every 2 s
        page.shot("3_loss_curve")
        wait_for(lambda: "finished" in page.text("#run-status"), 900, "the run to finish")
        assert "failed" not in page.text("#runs-table")
        page.shot("4_finished")

        page.tab("Chat")
        page.type("#chat-input", "Who are you?")
        page.click("#send")
        expected = reference_answer(runs / "quickstart" / "hf", "Who are you?")
        wait_for(lambda: bot_text(page) == expected, 300,
                 f"the streamed answer {expected!r}")
        page.shot("5_chat")

        page.tab("Export")
        page.click("#export")
        wait_for(lambda: "Merged model written" in page.text("#export-result"), 300,
                 "the merge")
        page.shot("6_export")
    finally:
        driver.quit()
    merged = runs / "quickstart" / "merged"
    assert (merged / "config.json").is_file() and (merged / "xft_meta.json").is_file()


def bot_text(page):
    messages = page.driver.find_elements(By.CSS_SELECTOR, "#chatbot .bot, "
                                         "#chatbot [data-testid=bot]")
    return messages[-1].text.strip() if messages else ""


def reference_answer(artifact, question):
    """What `xft chat ARTIFACT --prompt QUESTION` answers (greedy, 128 new tokens)."""
    from conftest import run_cli

    return run_cli("chat", str(artifact), "--prompt", question, "--max-new-tokens",
                   "128").stdout.strip()
