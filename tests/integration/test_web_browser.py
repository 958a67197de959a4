"""A real browser on the approval page: Debian's chromium driven by Selenium through
Debian's chromium-driver (no browser download), against a real `mailguard serve`
that holds a message for a capturing upstream and a real `mailguard web`.

An approver logs in, opens the held message, approves it with a reason, and the
message arrives at the upstream. Screenshots of the list and the detail page at
1280 px width are saved under the test's tmp dir, and the text of both pages is
checked for numbers in the clear.

Skips when chromium, its driver or Selenium is missing; MAILGUARD_REQUIRE_BROWSER=1
(CI sets it) turns that skip into a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hold_support import NUMBERS, ROOT, Serve, Sink, free_port, held_list, message_with_numbers, send
from web_support import JINJI, PASSWORD, TWELVE_DIGITS, add_people, load, web_config

CHROMIUM = os.environ.get("MAILGUARD_CHROMIUM", "/usr/bin/chromium")
DRIVER = os.environ.get("MAILGUARD_CHROMEDRIVER", "/usr/bin/chromedriver")
REQUIRED = os.environ.get("MAILGUARD_REQUIRE_BROWSER") == "1"
WIDTH = 1280



def page_text_after_click(browser, expected: str, timeout: float = 30.0) -> str:
    """The body text of the page a click leads to, once it shows ``expected``.

    A click that submits a form or follows a link returns before the next page is
    loaded: reading the old page's body then races the navigation (a stale element,
    or the previous page's text). Wait for the new page instead."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def text_if_loaded(b):
        text = b.find_element(By.TAG_NAME, "body").text
        return text if expected in text else False

    return WebDriverWait(browser, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(
        text_if_loaded)

def _missing() -> str:
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} not found (apt-get install chromium)"
    if not os.access(DRIVER, os.X_OK):
        return f"{DRIVER} not found (apt-get install chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return ""


@pytest.fixture()
def browser(tmp_path: Path):
    reason = _missing()
    if reason:
        if REQUIRED:
            pytest.fail(f"MAILGUARD_REQUIRE_BROWSER=1 but: {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--window-size={WIDTH},1000", "--lang=ja",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER, log_output=str(tmp_path / "driver.log")),
                              options=opts)
    driver.set_page_load_timeout(20)
    yield driver
    driver.quit()


class Web:
    """`python -m mailguard web` as a real subprocess (uvicorn)."""

    def __init__(self, cfg: Path, port: int, log: Path) -> None:
        self.port = port
        out = open(log, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "mailguard", "-c", str(cfg), "web"], cwd=ROOT,
                                     stdout=out, stderr=out, start_new_session=True)
        out.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mailguard web exited: {log.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("mailguard web did not start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def png_width(path: Path) -> int:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">I", head[16:20])[0]


def assert_no_numbers(text: str) -> None:
    digits = re.sub(r"\D", "", text)
    for n in NUMBERS:
        assert n not in text and n not in digits, "a number in the clear on the page"
    assert not TWELVE_DIGITS.search(text)


def test_approver_approves_in_a_real_browser_and_the_mail_arrives(tmp_path: Path, browser) -> None:
    from selenium.webdriver.common.by import By

    sink = Sink().start()
    web_port = free_port()
    cfg = web_config(tmp_path, sink.port, secure=False, listen_port=web_port)  # plain http on loopback
    config = load(cfg)
    add_people(config)
    relay = Serve(cfg, tmp_path / "serve.log").start()
    web = Web(cfg, web_port, tmp_path / "web.log")
    try:
        code, _ = send(relay.port, ["someone@example.com"], message_with_numbers(NUMBERS[:3]),
                       mail_from=f"yamada@{JINJI}")
        assert code == 250
        (held,) = held_list(cfg)
        base = f"http://127.0.0.1:{web_port}"

        browser.get(f"{base}/held")
        assert browser.current_url.endswith("/login")
        browser.find_element(By.ID, "username").send_keys("kacho")
        browser.find_element(By.ID, "password").send_keys(PASSWORD)
        browser.find_element(By.CSS_SELECTOR, "form.login button").click()
        text = page_text_after_click(browser, "保留中のメール")
        assert browser.current_url == f"{base}/held"
        assert held["id"] in browser.page_source and "保留中のメール" in text
        assert_no_numbers(text)
        assert_no_numbers(browser.page_source)
        shot = tmp_path / "held-list.png"
        assert browser.save_screenshot(str(shot))
        assert png_width(shot) == WIDTH

        browser.find_element(By.CSS_SELECTOR, f'a[href="/held/{held["id"]}"]').click()
        text = page_text_after_click(browser, "名簿.csv")
        assert browser.current_url == f"{base}/held/{held['id']}"
        assert "名簿.csv" in text and "********" + NUMBERS[0][-4:] in text and "外部 / external" in text
        assert_no_numbers(text)
        assert_no_numbers(browser.page_source)
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": WIDTH, "height": int(browser.execute_script("return document.body.scrollHeight")) + 40,
            "deviceScaleFactor": 1, "mobile": False})
        shot = tmp_path / "held-detail.png"
        assert browser.save_screenshot(str(shot))
        assert png_width(shot) == WIDTH
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

        browser.find_element(By.ID, "reason-approve").send_keys("宛先と内容を確認しました")
        browser.find_element(By.CSS_SELECTOR, "button.approve").click()
        assert "送信しました" in page_text_after_click(browser, "送信しました")
        got = sink.wait_for(lambda m: "someone@example.com" in m[1])
        assert got and got[0][0] == f"yamada@{JINJI}"
        assert held_list(cfg, "released")[0]["id"] == held["id"]
        keep = os.environ.get("MAILGUARD_KEEP_SCREENSHOTS")
        if keep:
            for name in ("held-list.png", "held-detail.png"):
                shutil.copy(tmp_path / name, Path(keep) / name)
    finally:
        web.stop()
        relay.stop()
        sink.stop()
