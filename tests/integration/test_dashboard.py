"""The admin dashboard (issue 10) in a real browser: Debian's headless
Chromium driven by chromedriver through python3-selenium. The page loads
from the admin listener with no external asset, goes live, its numbers
move under load and settle on exactly what /metrics says, rejections and
reloads show up, and a token-protected admin listener asks for the token.
Screenshots are written next to the test's temporary files (and to
$PORTICO_SCREENSHOT_DIR when set); they are not part of the repository."""

import os
import shutil
import signal
import threading
import time

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from conftest import simple_config
from test_admin_metrics import admin_cfg, scrape, value
from upstreams import request, wait_reloaded

TOKEN = "dashboard-token-0123456789"


@pytest.fixture
def browser(tmp_path):
    chromium = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    assert chromium and driver, "chromium / chromedriver missing: run scripts/install-deps.sh"
    opts = Options()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1400,1000", "--user-data-dir=%s" % (tmp_path / "chrome")):
        opts.add_argument(a)
    b = webdriver.Chrome(service=Service(driver), options=opts)
    b.set_page_load_timeout(30)
    yield b
    b.quit()


def text(b, element_id):
    return b.find_element(By.ID, element_id).text


def until(fn, timeout=20, msg="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - the page is still rendering
            last = repr(e)
        time.sleep(0.2)
    raise AssertionError("%s not reached within %ss (last: %r)" % (msg, timeout, last))


def screenshot(b, tmp_path, name):
    b.save_screenshot(str(tmp_path / name))
    out = os.environ.get("PORTICO_SCREENSHOT_DIR")
    if out:
        os.makedirs(out, exist_ok=True)
        b.save_screenshot(os.path.join(out, name))
    assert (tmp_path / name).stat().st_size > 10000


def load(port, stop, paths, headers=None):
    def run():
        i = 0
        while not stop.is_set():
            try:
                request(port, "GET", paths[i % len(paths)], headers=headers, timeout=5)
            except Exception:  # noqa: BLE001 - load only
                pass
            i += 1
    ts = [threading.Thread(target=run) for _ in range(3)]
    for t in ts:
        t.start()
    return ts


def test_dashboard_live_numbers_match_metrics(portico, echo, browser, tmp_path):
    cfg = simple_config(echo.addr, workers=2)
    cfg["routes"].insert(0, {"name": "limited", "match": {"path_prefix": "/limited"}, "upstream": "up",
                             "plugins": [{"rate_limit": {"key": "route", "limits": [{"requests": 5, "per": "1h"}]}}]})
    cfg, aport = admin_cfg(cfg)
    p = portico(cfg)
    r = request(aport, "GET", "/dashboard")
    assert r.status == 200 and r.header("Content-Type").startswith("text/html")
    assert "default-src 'none'" in r.header("Content-Security-Policy")
    assert b"http://" not in r.body and b"https://" not in r.body  # nothing fetched from elsewhere
    browser.get("http://127.0.0.1:%d/dashboard" % aport)
    until(lambda: text(browser, "status") == "live", msg="page live")
    assert text(browser, "gen") == "1"

    stop = threading.Event()
    ts = load(p.port, stop, ["/a", "/b", "/limited/x"])
    try:
        until(lambda: float(text(browser, "rps").replace("–", "0") or 0) > 0, msg="requests/s above 0")
        until(lambda: browser.find_elements(By.CSS_SELECTOR, "#routes tr[data-route='main']"), msg="route row")
        until(lambda: browser.find_elements(By.CSS_SELECTOR, "#rejections tr[data-plugin='rate_limit']"),
              msg="rate-limit rejections shown")
        row = browser.find_element(By.CSS_SELECTOR, "#routes tr[data-route='main']")
        until(lambda: row.find_elements(By.CSS_SELECTOR, "td.q")[0].text not in ("", "–"), msg="latency p50")
        screenshot(browser, tmp_path, "dashboard.png")
    finally:
        stop.set()
        for t in ts:
            t.join(10)
    # without traffic the page settles on what /metrics says
    want = value(scrape(aport), "portico_requests_total")
    assert want > 0
    until(lambda: text(browser, "total-requests") == str(int(want)), msg="total equal to /metrics (%d)" % want)
    until(lambda: text(browser, "rps") == "0.0", msg="requests/s back to 0")
    row = browser.find_element(By.CSS_SELECTOR, "#routes tr[data-route='main']")
    n_main = value(scrape(aport), "portico_requests_total", route="main")
    # the target's live state comes from /api/upstreams
    target = browser.find_element(By.CSS_SELECTOR, "#targets tr[data-target='%s']" % echo.addr)
    until(lambda: [td.text for td in target.find_elements(By.TAG_NAME, "td")][1:3] == ["healthy", "0"],
          msg="target healthy, nothing in flight")
    assert row.find_element(By.CSS_SELECTOR, "td.n").text == str(int(n_main))

    # a reload appears in the history and the generation
    p.write_config(cfg)
    p.signal(signal.SIGHUP)
    wait_reloaded(p, 1)
    until(lambda: text(browser, "gen") == "2", msg="generation 2 shown")
    until(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#reloads tbody tr")) == 2, msg="two reload rows")


def test_dashboard_asks_for_the_token(portico, echo, browser, tmp_path):
    cfg, aport = admin_cfg(simple_config(echo.addr), token=TOKEN)
    portico(cfg)
    browser.get("http://127.0.0.1:%d/dashboard" % aport)
    until(lambda: text(browser, "status") == "token needed", msg="token asked")
    assert browser.find_element(By.ID, "auth").is_displayed()
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.CSS_SELECTOR, "#auth-form button").click()
    until(lambda: text(browser, "status") == "live", msg="live with the token")
    screenshot(browser, tmp_path, "dashboard-token.png")
