"""The dashboard in a real browser: `streamlit run`, headless Chromium (Debian's), a bank
login, and the bank page showing its transactions and the Benford chart. Screenshots of
every page go to out/screenshots/ (kept by CI as artifacts; the README shows them)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from selenium.common.exceptions import StaleElementReferenceException

from tests.integration.streaming import settings_env
from tests.ui.conftest import PASSWORD

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "out" / "screenshots"
USERNAME = 'input[aria-label="Username"]'
PASSWORD_INPUT = 'input[aria-label="Password"]'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(seeded):
    settings = seeded[0]
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "streamlit_app" / "Home.py"),
         "--server.port", str(port), "--server.headless", "true",
         "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=settings_env(settings), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "streamlit did not start"
            time.sleep(0.5)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(30)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.fail("Debian's chromium and chromium-driver are required "
                    "(apt-get install chromium chromium-driver)", pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()


def _wait_for_text(driver, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in driver.find_element("tag name", "body").text:
        assert time.monotonic() < deadline, f"{text!r} never appeared"
        time.sleep(0.5)


def _script_state(driver) -> tuple[str | None, str | None]:
    """(script run state, connection state) from the app root's data-test-* attributes:
    'initial' / 'running' / 'rerunRequested' / 'notRunning', and 'CONNECTED' when up."""
    roots = driver.find_elements("css selector", '[data-testid="stApp"]')
    if not roots:
        return None, None
    try:
        return (roots[0].get_attribute("data-test-script-state"),
                roots[0].get_attribute("data-test-connection-state"))
    except StaleElementReferenceException:  # re-rendered between find and read
        return None, None


def _is_idle(driver) -> bool:
    script, connection = _script_state(driver)
    return (script == "notRunning" and connection == "CONNECTED"
            and not driver.find_elements("css selector", '[data-testid="stStatusWidget"]'))


def _wait_until_idle(driver, timeout: float = 60, steady: float = 1.0) -> None:
    """Until Streamlit is connected and has finished running the script, and stays so for
    `steady` seconds (a click's rerun may start a moment after the click)."""
    deadline = time.monotonic() + timeout
    idle_since = None
    while True:
        now = time.monotonic()
        if _is_idle(driver):
            idle_since = idle_since or now
            if now - idle_since >= steady:
                return
        else:
            idle_since = None
        script, connection = _script_state(driver)
        assert now < deadline, f"Streamlit kept running (script {script}, {connection})"
        time.sleep(0.2)


def _usable(driver, css: str):
    """The first displayed, enabled element matching css, or None."""
    for element in driver.find_elements("css selector", css):
        try:
            if element.is_displayed() and element.is_enabled():
                return element
        except StaleElementReferenceException:
            continue
    return None


def _login_button(driver):
    for button in driver.find_elements("css selector", "button"):
        try:
            if button.text.strip() == "Log in" and button.is_displayed() and button.is_enabled():
                return button
        except StaleElementReferenceException:
            continue
    return None


def _wait_for_login_form(driver, timeout: float = 60) -> None:
    """Until the login form itself is there (both inputs and its button, usable) and
    Streamlit is idle. The text "Log in" is not enough: "Log in to see your pages."
    shows before the form exists."""
    deadline = time.monotonic() + timeout
    while True:
        _wait_until_idle(driver, timeout=max(1.0, deadline - time.monotonic()))
        if (_usable(driver, USERNAME) and _usable(driver, PASSWORD_INPUT)
                and _login_button(driver)):
            return
        assert time.monotonic() < deadline, "the login form never appeared"
        time.sleep(0.2)


def _log_in(driver, url: str, username: str) -> None:
    driver.get(url)
    for attempt in range(3):  # a rerun can replace the form between finding and typing
        _wait_for_login_form(driver)
        try:
            _usable(driver, USERNAME).send_keys(username)
            _usable(driver, PASSWORD_INPUT).send_keys(PASSWORD)
            _login_button(driver).click()
            break
        except (StaleElementReferenceException, AttributeError):
            if attempt == 2:
                raise
            driver.get(url)
    _wait_for_text(driver, f"Logged in as {username}")
    _wait_until_idle(driver)


def _open_page(driver, name: str) -> None:
    link = next(a for a in driver.find_elements("css selector",
                                                 '[data-testid="stSidebarNav"] a')
                if a.text.strip() == name)
    link.click()
    _wait_until_idle(driver)


def test_bank_page_in_chromium_shows_transactions_and_benford(app_url, browser, seeded,
                                                             small_world) -> None:
    from fraud_detection.store import queries

    _, store, _, bank = seeded
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    _log_in(browser, app_url, "bank")
    _open_page(browser, "Bank")
    _wait_for_text(browser, bank.name)
    day = queries.latest_activity_day(store)
    newest = queries.bank_transactions_on(store, bank.bank_id, day, 1).items[0]
    # The table is a canvas grid: its cells are in the DOM for screen readers.
    cells = browser.find_elements("css selector", '[data-testid="stDataFrame"] [role="gridcell"]')
    assert any(newest.transaction.transaction_id in c.get_attribute("textContent")
               for c in cells), "the newest transaction of the day is not in the table"
    browser.save_screenshot(str(SCREENSHOTS / "bank.png"))
    benford = next(t for t in browser.find_elements("css selector", '[role="tab"]')
                   if t.text.strip() == "Benford")
    benford.click()
    _wait_for_text(browser, "MAD")
    charts = browser.find_elements("css selector", '[data-testid="stVegaLiteChart"]')
    assert any(c.is_displayed() for c in charts), "no Benford chart shown"
    browser.save_screenshot(str(SCREENSHOTS / "bank-benford.png"))


def test_screenshot_every_page(app_url, browser, seeded) -> None:
    """The README's pictures: each page as an admin sees it (the customer page as the
    customer)."""
    _, _, customer, _ = seeded
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.delete_all_cookies()
    _log_in(browser, app_url, "root")
    for page in ("Analyst", "Operations", "Admin"):
        _open_page(browser, page)
        browser.save_screenshot(str(SCREENSHOTS / f"{page.lower()}.png"))
    browser.get(app_url)  # a new session: log in as the customer
    _log_in(browser, app_url, "cust")
    _open_page(browser, "Customer")
    _wait_for_text(browser, customer.name)
    browser.save_screenshot(str(SCREENSHOTS / "customer.png"))
    assert all((SCREENSHOTS / f"{p}.png").stat().st_size > 10_000
               for p in ("analyst", "operations", "admin", "customer"))
