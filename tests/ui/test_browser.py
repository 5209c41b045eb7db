"""The dashboard in a real browser: served by the command the CLI runs
(dashboard.streamlit_command), driven by headless Chromium (Debian's), logged in as each
role. Each role's navigation lists exactly its pages and one of its pages shows its
content; nobody gets a Deploy button. Screenshots of every page for every role go to
docs/screenshots/ as role-page.png (the README shows them)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from selenium.common.exceptions import StaleElementReferenceException

from fraud_detection.dashboard import money, streamlit_command
from fraud_detection.store import labels, queries
from tests.integration.streaming import settings_env
from tests.ui.conftest import PASSWORD

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "screenshots"
USERNAME = 'input[aria-label="Username"]'
PASSWORD_INPUT = 'input[aria-label="Password"]'
LOGINS = {"customer": "cust", "bank": "bank", "analyst": "ana", "admin": "root"}
# What each role's sidebar lists. A role with one page gets no list: Streamlit shows
# navigation only for two pages or more.
NAVIGATION = {
    "customer": [],
    "bank": [],
    "analyst": ["Analyst", "Bank", "Customer", "Operations"],
    "admin": ["Admin", "Analyst", "Bank", "Customer", "Operations"],
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(seeded, tmp_path_factory):
    """(url, the server's output file) of `streamlit run` as the CLI starts it."""
    settings = seeded[0]
    port = _free_port()
    output = tmp_path_factory.mktemp("streamlit") / "output.txt"
    with output.open("wb") as sink:
        process = subprocess.Popen(streamlit_command(port), cwd=ROOT,
                                   env=settings_env(settings), stdout=sink,
                                   stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "streamlit did not start"
            time.sleep(0.5)
    yield f"http://127.0.0.1:{port}", output
    process.terminate()
    process.wait(30)


@pytest.fixture(scope="module")
def confirmed_fraud(seeded):
    """A flagged transaction of the bank's last day that an analyst confirmed."""
    _, store, _, bank = seeded
    day = queries.latest_activity_day(store)
    flagged = queries.bank_frauds_on(store, bank.bank_id, day, 1).items
    assert flagged, f"nothing flagged for {bank.bank_id} on {day}"
    labels.record_verdict(store, flagged[0], labels.CONFIRMED, "ana")
    return flagged[0]


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
                 "--window-size=1400,1200"):
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


def _button(driver, label: str):
    for button in driver.find_elements("css selector", "button"):
        try:
            if button.text.strip() == label and button.is_displayed() and button.is_enabled():
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
                and _button(driver, "Log in")):
            return
        assert time.monotonic() < deadline, "the login form never appeared"
        time.sleep(0.2)


def _log_in(driver, url: str, username: str) -> None:
    """A new session (a fresh page load) logged in as username."""
    driver.get(url)
    for attempt in range(3):  # a rerun can replace the form between finding and typing
        _wait_for_login_form(driver)
        try:
            _usable(driver, USERNAME).send_keys(username)
            _usable(driver, PASSWORD_INPUT).send_keys(PASSWORD)
            _button(driver, "Log in").click()
            break
        except (StaleElementReferenceException, AttributeError):
            if attempt == 2:
                raise
            driver.get(url)
    _wait_for_text(driver, f"Logged in as {username}")
    _wait_until_idle(driver)


def _navigation(driver) -> list[str]:
    return [a.text.strip() for a in driver.find_elements(
        "css selector", '[data-testid="stSidebarNav"] a')]


def _open_page(driver, name: str) -> None:
    link = next(a for a in driver.find_elements("css selector",
                                                 '[data-testid="stSidebarNav"] a')
                if a.text.strip() == name)
    link.click()
    _wait_until_idle(driver)


def _open_tab(driver, name: str) -> None:
    next(t for t in driver.find_elements("css selector", '[role="tab"]')
         if t.text.strip() == name).click()
    _wait_until_idle(driver)


def _type(driver, css: str, text: str) -> None:
    """Types text and Enter into a text input or a select box's search."""
    from selenium.webdriver.common.keys import Keys

    field = _usable(driver, css)
    field.click()
    field.send_keys(text + Keys.ENTER)
    _wait_until_idle(driver)


def _cells(driver) -> list[str]:
    # Tables are canvas grids: their cells are in the DOM for screen readers.
    return [c.get_attribute("textContent") for c in driver.find_elements(
        "css selector", '[data-testid="stDataFrame"] [role="gridcell"]')]


def _menu(driver) -> list[str]:
    """The items of the app's menu (top right), which is then closed again."""
    driver.find_element("css selector", '[data-testid="stMainMenu"]').click()
    time.sleep(0.5)
    items = [e.text.strip() for e in driver.find_elements(
        "css selector", '[data-testid^="stMainMenuItem"]')]
    driver.find_element("css selector", '[data-testid="stMainMenu"]').click()
    time.sleep(0.5)
    return items


def _shoot(driver, role: str, page: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{role}-{page.lower().replace(' ', '-')}.png"
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000, f"{path.name} looks blank"


def test_the_server_binds_this_machine_only_and_looks_up_no_address(server) -> None:
    url, output = server
    deadline = time.monotonic() + 30
    while f"URL: {url}" not in (said := output.read_text()):  # printed once it listens
        assert time.monotonic() < deadline, said
        time.sleep(0.5)
    assert "External URL" not in said and "Network URL" not in said, said


def test_customer_sees_one_page_in_their_words(server, browser, seeded) -> None:
    _, store, customer, _ = seeded
    _log_in(browser, server[0], LOGINS["customer"])
    assert _navigation(browser) == NAVIGATION["customer"]
    assert not browser.find_elements("css selector", '[data-testid="stAppDeployButton"]')
    _wait_for_text(browser, customer.name)
    _wait_for_text(browser, "My accounts")
    body = browser.find_element("tag name", "body").text  # the flagged table is HTML
    deposit = next(s.transaction for s in queries.anomalies_of_user(store, customer.user_id)
                   .items if s.transaction.tx_type == "CASH_IN")
    rows = [r.get_attribute("textContent") for r in browser.find_elements(
        "css selector", '[data-testid="stTable"] tr')]
    row = next(r for r in rows if "+" + money(deposit.amount_cents, deposit.currency) in r)
    assert "Deposit" in row and "deposit" in row.replace("Deposit", ""), row  # a reason
    shown = "\n".join(_cells(browser)) + body
    for internal in ("seed project", "first payment", "CASH_IN", "model ", "[", "score"):
        assert internal not in shown, internal
    assert not {"Rerun", "Clear cache", "Deploy"} & set(_menu(browser))
    _shoot(browser, "customer", "customer")
    # Asked by its address, a page that is not theirs does not open: theirs does.
    # (Not as the server's first session: Streamlit then knows no pages yet and says
    # "page not found" over the login form.)
    _log_in(browser, server[0] + "/admin", LOGINS["customer"])
    _wait_for_text(browser, "My accounts")
    assert "Add an entity" not in browser.find_element("tag name", "body").text


def test_bank_sees_one_page_with_flagged_frauds_and_benford(server, browser, seeded,
                                                            confirmed_fraud) -> None:
    _, store, _, bank = seeded
    _log_in(browser, server[0], LOGINS["bank"])
    assert _navigation(browser) == NAVIGATION["bank"]
    assert not browser.find_elements("css selector", '[data-testid="stAppDeployButton"]')
    _wait_for_text(browser, bank.name)
    day = queries.latest_activity_day(store)
    newest = queries.bank_transactions_on(store, bank.bank_id, day, 1).items[0]
    assert newest.transaction.transaction_id in _cells(browser)
    _shoot(browser, "bank", "bank")
    _open_tab(browser, "Frauds")
    _wait_for_text(browser, "Frauds analysts confirmed")
    assert confirmed_fraud.transaction.transaction_id in _cells(browser)
    _shoot(browser, "bank", "bank-frauds")
    _open_tab(browser, "Benford")
    _wait_for_text(browser, "MAD")
    assert f"to {day}:" in browser.find_element("tag name", "body").text  # the last day
    charts = browser.find_elements("css selector", '[data-testid="stVegaLiteChart"]')
    assert any(c.is_displayed() for c in charts), "no Benford chart shown"
    _shoot(browser, "bank", "bank-benford")


@pytest.mark.parametrize("role", ["analyst", "admin"])
def test_staff_see_their_pages_and_every_page_shows(server, browser, seeded, role) -> None:
    _, _, customer, bank = seeded
    _log_in(browser, server[0] + "/operations", LOGINS[role])  # a bookmark opens
    _wait_for_text(browser, "Dead letters")
    assert _navigation(browser) == NAVIGATION[role]
    assert not browser.find_elements("css selector", '[data-testid="stAppDeployButton"]')
    for page in NAVIGATION[role]:
        _open_page(browser, page)
        if page == "Customer":  # opens on a customer at once, named as someone else
            _wait_for_text(browser, "Accounts of ")
            _type(browser, 'input[aria-label="Find a customer"]', customer.name)
            _wait_for_text(browser, f"Accounts of {customer.name}")
        if page == "Bank":  # other tests may add banks: show the seeded one
            _type(browser, '[data-testid="stSelectbox"] input', bank.bank_id)
            _wait_for_text(browser, bank.name)
        if page == "Analyst":
            _wait_for_text(browser, "still open")
        body = browser.find_element("tag name", "body").text
        assert "Traceback" not in body and "Refused" not in body, (page, body)
        assert "My accounts" not in body
        _shoot(browser, role, page)
