"""The dashboard in a real headless Chromium (Debian packages ``chromium`` and ``chromium-driver``).

A real ``hostd serve`` runs the bundled modules and three of ``tests/dashboard_modules``
(a view echoing its typed parameters, a failing view, a view slower than its call
limit, a module that cannot load), fed a course's worth of learner activity. Chromium,
driven through WebDriver (selenium), opens ``/`` and the tests wait for what a person
would see: frames loading on their own, a chart image, a submitted form, error boxes.

Set ``DASHBOARD_SCREENSHOT=docs/dashboard.png`` to also write the README's screenshot
(a smaller, palette PNG) from :func:`test_a_screenshot_of_the_dashboard_on_course_data`.
"""
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from hostd.demo import generate

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[1]
TEST_MODULES = Path(__file__).resolve().parent / "dashboard_modules"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
COURSE = "course-v1:Demo+Dashboard+2026"
WAIT_S = 90  # the longest any state is waited for; a test fails past it

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the test extra")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@functools.lru_cache(maxsize=1)
def course_events() -> list:
    """Development data: ``hostd demo``'s synthetic course (30 learners over two weeks:
    enrolments, page views, videos, problem checks, sessions and dropout)."""
    return generate(seed=7, learners=30, weeks=2, course_id=COURSE).events


def module_states(url):
    """:returns: ``{module: state}`` from ``/modules``, empty while hostd does not answer."""
    try:
        return {name: m["state"] for name, m in requests.get(url + "modules", timeout=5).json().items()}
    except (requests.RequestException, ValueError):
        return {}


def wait_for_states(url, expected: dict, log_path):
    """Wait until the modules named in ``expected`` are in those states and every other one runs."""
    deadline = time.time() + WAIT_S
    while time.time() < deadline:
        states = module_states(url)
        if states and all(states.get(name, "running") == state for name, state in expected.items()) \
                and all(state == "running" for name, state in states.items() if name not in expected):
            return
        time.sleep(0.2)
    pytest.fail(f"modules did not reach {expected}: {module_states(url)}\n" + Path(log_path).read_text())


@pytest.fixture(scope="module")
def hostd(tmp_path_factory):
    """A real ``hostd serve`` with the bundled and the test modules, fed :func:`course_events`.

    :returns: ``(base URL, log path)``.
    """
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("headless Chromium is not installed (Debian packages 'chromium' and 'chromium-driver';"
                    " .ci/run installs them)")
    base = tmp_path_factory.mktemp("browser")
    modules = base / "modules"
    modules.mkdir()
    for name in ("dash_checks", "dash_slow", "dash_broken"):
        shutil.copytree(TEST_MODULES / name, modules / name)
    port = _free_port()
    log_path = base / "hostd.log"
    log = open(log_path, "wb")
    process = subprocess.Popen(
        [sys.executable, "-c", "from hostd.cli import main; main()", "serve", "--data-dir", str(base / "data"),
         "--port", str(port), "--workers", "2", "--modules", str(ROOT / "contrib_modules"),
         "--modules", str(modules)],
        stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for_states(url, {"dash_broken": "failed"}, log_path)
        answer = requests.post(url + "event", json=course_events(), timeout=60)
        assert answer.status_code in (200, 202), answer.text
        deadline = time.time() + WAIT_S
        while any(m.get("lag") for m in requests.get(url + "modules", timeout=5).json().values()):
            assert time.time() < deadline, "the handlers did not catch up with the events"
            time.sleep(0.2)
        yield url, log_path
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def browser(hostd, tmp_path_factory):
    """A headless Chromium driven through chromium-driver."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000", "--disable-background-networking", "--no-first-run",
                     f"--user-data-dir={tmp_path_factory.mktemp('profile')}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


# -- what the tests look at ------------------------------------------------------------------

def frame_state(driver, view):
    """:returns: the state of a view's frame: ``idle``, ``loading``, ``loaded`` or ``error``."""
    return driver.execute_script(
        "const v = document.getElementById('view-' + arguments[0]);"
        " return v ? v.querySelector('.frame').dataset.state : null;", view)


def wait_for_frame(driver, view, states=("loaded", "error")):
    """Wait until a view's frame is in one of ``states``. :returns: that state."""
    WebDriverWait(driver, WAIT_S).until(lambda d: frame_state(d, view) in states,
                                        f"frame of {view} never reached {states}")
    return frame_state(driver, view)


def error_text(driver, view):
    """:returns: the text of a view's error box."""
    return driver.find_element(By.CSS_SELECTOR, f"#view-{view} .error-text").text


def in_frame(driver, view, script):
    """:returns: ``script``'s value run with ``doc`` bound to the document inside a view's frame."""
    return driver.execute_script(
        "const doc = document.querySelector('#view-' + arguments[0] + ' iframe').contentDocument;"
        + script, view)


def submit(driver, view, values: dict):
    """Type ``values`` into a view's form (``{param: text}``) and press Show."""
    form = driver.find_element(By.CSS_SELECTOR, f"#view-{view} form")
    for name, text in values.items():
        field = form.find_element(By.CSS_SELECTOR, f'.param[data-param="{name}"] input')
        field.clear()
        field.send_keys(text)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()


def open_dashboard(driver, url):
    driver.get(url)
    WebDriverWait(driver, WAIT_S).until(lambda d: d.execute_script("return document.readyState") == "complete")


def chart_loaded(driver, view):
    """:returns: whether a view's frame shows an image that the browser decoded."""
    return in_frame(driver, view, "const img = doc && doc.querySelector('img');"
                                  " return !!img && img.complete && img.naturalWidth > 0;")


# -- the tests ---------------------------------------------------------------------------------

def test_views_load_in_their_own_frames(hostd, browser):
    open_dashboard(browser, hostd[0])
    for view in ("hello_world", "user_count_view", "event_count_view"):
        assert wait_for_frame(browser, view) == "loaded", error_text(browser, view)
    assert in_frame(browser, "hello_world", "return doc.body.textContent") == "Hello world!"
    assert in_frame(browser, "event_count_view", "return doc.body.textContent") == f"Events: {len(course_events())}"


def test_views_with_required_parameters_wait_for_their_form(hostd, browser):
    open_dashboard(browser, hostd[0])
    for view in ("hello_user", "plot_grades", "user_activity_view", "echo_params", "slow_view"):
        assert frame_state(browser, view) == "idle"
        assert browser.find_element(By.CSS_SELECTOR, f"#view-{view} .hint").is_displayed()
        assert browser.find_element(By.CSS_SELECTOR, f"#view-{view} abbr.required").text == "*"


def test_a_submitted_form_shows_a_chart_of_the_course(hostd, browser):
    open_dashboard(browser, hostd[0])
    submit(browser, "user_activity_view", {"course_id": COURSE})
    assert wait_for_frame(browser, "user_activity_view") == "loaded", error_text(browser, "user_activity_view")
    assert chart_loaded(browser, "user_activity_view")
    page_height, frame_height = in_frame(browser, "user_activity_view", (
        "const frame = document.querySelector('#view-user_activity_view iframe');"
        " return [doc.documentElement.getBoundingClientRect().height, frame.clientHeight];"))
    assert page_height > 200 and page_height <= frame_height <= page_height + 10  # the frame fits its page
    link = browser.find_element(By.CSS_SELECTOR, "#view-user_activity_view .view-link").get_attribute("href")
    assert link.endswith("/view/user_activity_view?course_id=course-v1%3ADemo%2BDashboard%2B2026")


def test_a_form_sends_each_parameter_as_its_type(hostd, browser):
    open_dashboard(browser, hostd[0])
    form = browser.find_element(By.CSS_SELECTOR, "#view-echo_params form")
    assert form.find_element(By.CSS_SELECTOR, '[data-param="weeks"] input').get_attribute("type") == "number"
    form.find_element(By.CSS_SELECTOR, '[data-param="detailed"] input[type=checkbox]').click()
    form.find_element(By.CSS_SELECTOR, '[data-param="tags"] .add-item').click()
    tags = form.find_elements(By.CSS_SELECTOR, '[data-param="tags"] input')
    assert len(tags) == 2
    tags[0].send_keys("a, b")
    tags[1].send_keys("<c>")
    submit(browser, "echo_params", {"course": "<b>x</b>", "weeks": "5", "ratio": "0.25"})
    assert wait_for_frame(browser, "echo_params") == "loaded", error_text(browser, "echo_params")
    received = json.loads(in_frame(browser, "echo_params", "return doc.getElementById('received').textContent"))
    assert received == {"course": "<b>x</b>", "weeks": 5, "ratio": 0.25, "detailed": True, "tags": ["a, b", "<c>"]}


def test_a_failing_view_shows_its_error_box(hostd, browser):
    open_dashboard(browser, hostd[0])
    assert wait_for_frame(browser, "always_fails") == "error"
    box = browser.find_element(By.CSS_SELECTOR, "#view-always_fails .error-box")
    assert box.is_displayed()
    assert error_text(browser, "always_fails").startswith("500 module_error:")
    assert "raised ValueError" in error_text(browser, "always_fails")
    assert not browser.find_element(By.CSS_SELECTOR, "#view-always_fails iframe").is_displayed()


def test_a_view_not_answering_within_the_pages_timeout_shows_its_error_box(hostd, browser):
    """The frame gives up by itself (2 s), before hostd's own limit (8 s) would answer 504."""
    open_dashboard(browser, hostd[0] + "?view_timeout_s=2")
    submit(browser, "slow_view", {"seconds": "6"})
    assert wait_for_frame(browser, "slow_view") == "error"
    assert error_text(browser, "slow_view") == "no answer within 2 s"


def test_a_slow_view_holds_up_no_other_and_ends_in_an_error_box(hostd, browser):
    """While a view runs past its module's call limit, another frame is reloaded and shown;
    then hostd's 504 shows in the slow view's error box (and dash_slow is restarted)."""
    open_dashboard(browser, hostd[0])
    submit(browser, "slow_view", {"seconds": "60"})
    assert frame_state(browser, "slow_view") == "loading"
    assert browser.find_element(By.CSS_SELECTOR, "#view-slow_view .loading").is_displayed()
    wait_for_frame(browser, "hello_world")
    browser.execute_script("document.querySelector('#view-hello_world iframe').srcdoc = ''")
    browser.find_element(By.CSS_SELECTOR, "#view-hello_world button[type=submit]").click()
    assert wait_for_frame(browser, "hello_world") == "loaded", error_text(browser, "hello_world")
    assert in_frame(browser, "hello_world", "return doc.body.textContent") == "Hello world!"
    assert frame_state(browser, "slow_view") == "loading"  # answered by hostd only at its 8 s limit
    assert wait_for_frame(browser, "slow_view") == "error"
    assert error_text(browser, "slow_view").startswith("504 timeout:")


def test_a_module_that_failed_shows_why_and_its_traceback_on_a_click(hostd, browser):
    open_dashboard(browser, hostd[0])
    section = browser.find_element(By.ID, "module-dash_broken")
    assert section.find_element(By.CSS_SELECTOR, ".state").text == "failed"
    summary = section.find_element(By.CSS_SELECTOR, ".error-summary")
    assert summary.text == "RuntimeError: dash_broken cannot load <on purpose>"  # escaped, shown as text
    traceback = section.find_element(By.CSS_SELECTOR, ".traceback")
    assert not traceback.is_displayed()
    summary.click()
    assert traceback.is_displayed() and "Traceback" in traceback.text


def test_the_modules_facts_follow_hostd_without_a_reload(hostd, browser):
    url, _log = hostd
    open_dashboard(browser, url)
    browser.execute_script("window.notReloaded = true")

    def handled(driver):
        return driver.find_element(By.CSS_SELECTOR, "#module-event_count .handled").text

    before = int(handled(browser))
    answer = requests.post(url + "event", json={"id": uuid.uuid4().hex, "username": "late", "event_type": "page_close",
                                                "time": "2026-03-12T09:00:00+00:00"}, timeout=30)
    assert answer.status_code in (200, 202), answer.text
    WebDriverWait(browser, WAIT_S).until(lambda d: handled(d) == str(before + 1), "the page kept the old count")
    assert browser.execute_script("return window.notReloaded") is True


def test_a_screenshot_of_the_dashboard_on_demo_data(hostd, browser, tmp_path):
    open_dashboard(browser, hostd[0])
    submit(browser, "user_activity_view", {"course_id": COURSE})
    submit(browser, "plot_grades", {"course": "demo"})
    for view in ("user_activity_view", "plot_grades"):
        assert wait_for_frame(browser, view) == "loaded", error_text(browser, view)
        assert chart_loaded(browser, view)
    wait_for_frame(browser, "always_fails")
    browser.set_window_size(1280, 1400)
    browser.execute_script("document.getElementById('module-user_activity').scrollIntoView()")
    path = tmp_path / "dashboard.png"
    assert browser.save_screenshot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("DASHBOARD_SCREENSHOT"):
        from PIL import Image
        with Image.open(path) as image:
            image.convert("RGB").quantize(colors=128).save(os.environ["DASHBOARD_SCREENSHOT"], optimize=True)
