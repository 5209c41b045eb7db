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

from tests.integration.streaming import settings_env
from tests.ui.conftest import PASSWORD

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "out" / "screenshots"


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


def _wait_until_idle(driver, timeout: float = 60) -> None:
    """Until Streamlit has finished running the script (its status widget is gone)."""
    deadline = time.monotonic() + timeout
    time.sleep(1)
    while driver.find_elements("css selector", '[data-testid="stStatusWidget"]'):
        assert time.monotonic() < deadline, "the page kept running"
        time.sleep(0.5)


def _log_in(driver, url: str, username: str) -> None:
    driver.get(url)
    _wait_for_text(driver, "Log in")
    driver.find_element("css selector", 'input[aria-label="Username"]').send_keys(username)
    driver.find_element("css selector", 'input[aria-label="Password"]').send_keys(PASSWORD)
    button = next(b for b in driver.find_elements("css selector", "button")
                  if b.text.strip() == "Log in")
    button.click()
    _wait_for_text(driver, f"Logged in as {username}")


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
