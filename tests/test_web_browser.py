"""The web view in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``) driven by selenium, presenting a client certificate from its NSS
database as an operator's browser would.

Chromium picks the certificate by itself only under a managed policy
(``AutoSelectCertificateForUrls``); without one it waits for someone to choose. The
policy file is scoped to ``https://127.0.0.1`` and to certificates issued by this
suite's throwaway CA (TEST_CA), so it never picks a real certificate. ``.ci/run``
installs it; the fixture writes it when it is missing and it can. The conductor's
certificate is trusted by its key's pin (``--ignore-certificate-errors-spki-list``),
not by ignoring certificate errors.

Screenshots of each page are written to ``$ORCHESTRA_ARTEFACTS`` (default
``tests/artefacts/``); with ``ORCHESTRA_README_SCREENSHOT=1`` the job page's also
replaces ``docs/images/job-page.png``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from devtools import pki
from devtools.devcluster import CONDUCTOR_NAME, Cluster
from tests.conftest import FAST_CONDUCTOR, FAST_PLAYER, required_tool
from tests.webview import AUDIENCE, EVERYTHING, WAITING_CONF, submit_as

ROOT = Path(__file__).resolve().parents[1]
TEST_CA = "Orchestra browser test CA"
POLICY_DIR = Path("/etc/chromium/policies/managed")
POLICY_FILE = POLICY_DIR / "orchestra-tests.json"
POLICY = {"AutoSelectCertificateForUrls": [json.dumps(
    {"pattern": "https://127.0.0.1", "filter": {"ISSUER": {"CN": TEST_CA}}}, separators=(",", ":"))]}
P12_PASSWORD = "browser-test-password"
WAIT = 20  # seconds any one thing may take to show
# Each host waits for its own file: the test ends the tasks one at a time.
STEPPED = """#!/bin/sh
echo "started on $ORC_PLAYER"
i=0
while [ ! -e "$ORC_GO.$ORC_PLAYER" ]; do
  i=$((i+1)); [ $((i % 20)) -eq 0 ] && echo "still waiting on $ORC_PLAYER ($i)"
  sleep 0.05
done
echo "done on $ORC_PLAYER"
echo "host=$ORC_PLAYER" > "$ORC_RESPONSE_FILE"
echo "release=2026.11" >> "$ORC_RESPONSE_FILE"
"""
PLAYERS = ["web1.test", "web2.test", "web3.test"]


def policy_installed() -> None:
    """The certificate policy is in place, or the test cannot run (failing under CI)."""
    try:
        if json.loads(POLICY_FILE.read_text()) == POLICY:
            return
    except (OSError, ValueError):
        pass
    try:
        POLICY_DIR.mkdir(parents=True, exist_ok=True)
        POLICY_FILE.write_text(json.dumps(POLICY) + "\n")
    except OSError as err:
        message = (f"{POLICY_FILE} is missing and cannot be written ({err.strerror}): without it Chromium"
                   " waits for someone to choose a client certificate")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def artefacts() -> Path:
    path = Path(os.environ.get("ORCHESTRA_ARTEFACTS") or ROOT / "tests" / "artefacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def server_pin(cluster: Cluster) -> str:
    """base64(sha256(SubjectPublicKeyInfo)) of the conductor's certificate."""
    cert = x509.load_pem_x509_certificate(cluster.ssl.cert(CONDUCTOR_NAME).read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def nss_home(home: Path, cluster: Cluster | None, name: str | None) -> Path:
    """A HOME whose NSS database holds ``name``'s certificate and key (none: empty),
    loaded as an operator would: ``orchestra-pki export --p12``, then ``pk12util``."""
    certutil = required_tool("certutil", "libnss3-tools")
    pk12util = required_tool("pk12util", "libnss3-tools")
    database = home / ".pki" / "nssdb"
    database.mkdir(parents=True)
    subprocess.run([certutil, "-N", "-d", f"sql:{database}", "--empty-password"], check=True, timeout=60,
                   capture_output=True)
    if cluster is not None and name is not None:
        password = home / "p12-password"
        password.write_text(P12_PASSWORD + "\n")
        p12 = home / f"{name}.p12"
        assert pki.main(["export", str(cluster.ssl.root), name, "--p12", str(p12), "--password-file",
                         str(password)]) == 0
        subprocess.run([pk12util, "-i", str(p12), "-d", f"sql:{database}", "-W", P12_PASSWORD], check=True,
                       timeout=60, capture_output=True)
    return home


def browser(home: Path, pin: str) -> WebDriver:
    chromium = required_tool("chromium", "chromium")
    driver = required_tool("chromedriver", "chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1000", "--force-device-scale-factor=1",
                 "--hide-scrollbars", f"--user-data-dir={home / 'profile'}",
                 f"--ignore-certificate-errors-spki-list={pin}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console, for no_console_errors
    service = Service(driver, env={**os.environ, "HOME": str(home)})
    made = webdriver.Chrome(options=options, service=service)
    made.set_page_load_timeout(WAIT)
    return made


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    policy_installed()
    made = Cluster(tmp_path_factory.mktemp("web") / "cluster", PLAYERS, list(AUDIENCE), web=True, ca_name=TEST_CA,
                   conductor_settings={**FAST_CONDUCTOR, "audience": {name: EVERYTHING for name in AUDIENCE}},
                   player_settings={**FAST_PLAYER, "max_concurrent": 4})
    try:
        made.start()
        made.add_score("stepped", STEPPED, WAITING_CONF)
        yield made
    finally:
        made.stop()


@pytest.fixture(scope="module")
def alice(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    driver = browser(nss_home(tmp_path_factory.mktemp("alice"), cluster, "alice.test"), server_pin(cluster))
    try:
        yield driver
    finally:
        driver.quit()


def shown(driver: WebDriver, check: Callable[[WebDriver], object], what: str) -> None:
    """Wait for ``check``; an element replaced by a live update while it was read is read again."""
    WebDriverWait(driver, WAIT, poll_frequency=0.1,
                  ignored_exceptions=(StaleElementReferenceException, NoSuchElementException)).until(
        check, f"not shown in {WAIT} s: {what}")


def state_of(driver: WebDriver, row: str) -> str:
    """A task row's state, read in one step (a live update replaces the whole row)."""
    return str(driver.execute_script(f"const c = document.querySelector('#{row} td.state');"
                                     " return c ? c.dataset.state : '';"))


def no_console_errors(driver: WebDriver) -> None:
    """Nothing the page did was refused (a CSP violation) or failed in its script; an
    error status the test asked for is not counted."""
    errors = [entry["message"] for entry in driver.get_log("browser")
              if entry["level"] == "SEVERE" and "Failed to load resource" not in entry["message"]]
    assert errors == []


def snapshot(driver: WebDriver, name: str) -> Path:
    path = artefacts() / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def test_the_jobs_page_shows_a_job_submitted_by_the_test(cluster: Cluster, alice: WebDriver, tmp_path: Path) -> None:
    job = submit_as(cluster, "alice.test", "--all-of", "--name", "greet the web tier", "hello", "who=web", *PLAYERS)
    cluster.cli("getstatus", "--wait", "--timeout", "30", job)
    alice.get(cluster.web_url + "jobs")
    # Each page is live: an element may be replaced by an update between its lookup and
    # its read, so each is read in one go, again if it was.
    shown(alice, lambda d: all(words in d.find_element(By.ID, f"job-{job}").text
                               for words in ("greet the web tier", "cert:alice.test", "ok")), "the job's row")
    snapshot(alice, "jobs")
    alice.get(cluster.web_url)
    shown(alice, lambda d: d.find_element(By.ID, "live").text == "live", "the overview's stream")
    shown(alice, lambda d: "players connected" in d.find_element(By.ID, "overview").text, "the overview")
    snapshot(alice, "overview")
    alice.get(cluster.web_url + "players")
    shown(alice, lambda d: "web1.test" in d.find_element(By.ID, "player-web1.test").text, "web1's row")
    snapshot(alice, "players")
    no_console_errors(alice)


def test_the_job_page_updates_live_as_tasks_finish(cluster: Cluster, alice: WebDriver, tmp_path: Path) -> None:
    go = tmp_path / "go"
    job = submit_as(cluster, "alice.test", "--all-of", "--name", "rolling restart", "--label", "team=web",
                    "stepped", f"GO={go}", *PLAYERS)
    alice.get(f"{cluster.web_url}jobs/{job}")
    shown(alice, lambda d: all(state_of(d, f"t{n}") == "running" for n in range(3)), "three running tasks")
    shown(alice, lambda d: d.find_element(By.ID, "live").text == "live", "the job's stream")
    alice.execute_script("window.sameDocument = true")  # gone if the page were loaded again
    (go.parent / f"go.{PLAYERS[0]}").touch()
    shown(alice, lambda d: state_of(d, "t0") == "ok", "the first task ended ok")
    assert state_of(alice, "t1") == "running" and state_of(alice, "t2") == "running"
    shown(alice, lambda d: "host=web1.test release=2026.11" in d.find_element(By.ID, "t0").text, "its response")
    shown(alice, lambda d: "1 ok" in d.find_element(By.ID, "progress").text, "the progress bar's legend")
    snapshot_path = snapshot(alice, "job")
    if os.environ.get("ORCHESTRA_README_SCREENSHOT"):
        shutil.copyfile(snapshot_path, ROOT / "docs" / "images" / "job-page.png")
    for player in PLAYERS[1:]:
        (go.parent / f"go.{player}").touch()
    shown(alice, lambda d: d.find_element(By.ID, "job-status").text == "ok", "the job finished ok")
    shown(alice, lambda d: "finished" in d.find_element(By.ID, "live").text, "the stream's end")
    assert alice.execute_script("return window.sameDocument") is True  # no reload, no navigation
    snapshot(alice, "job-finished")
    no_console_errors(alice)


def test_live_output_of_a_running_score_appears(cluster: Cluster, alice: WebDriver, tmp_path: Path) -> None:
    go = tmp_path / "go"
    job = submit_as(cluster, "alice.test", "--all-of", "stepped", f"GO={go}", PLAYERS[1])
    alice.get(f"{cluster.web_url}jobs/{job}")
    shown(alice, lambda d: d.find_elements(By.CSS_SELECTOR, "#t0 a.follow"), "the live output link")
    alice.get(alice.execute_script("return document.querySelector('#t0 a.follow').href"))  # as a click would
    shown(alice, lambda d: f"started on {PLAYERS[1]}" in d.find_element(By.ID, "output").text, "the score's output")
    shown(alice, lambda d: "still waiting" in d.find_element(By.ID, "output").text, "output as it is printed")
    snapshot(alice, "output")
    (go.parent / f"go.{PLAYERS[1]}").touch()
    shown(alice, lambda d: f"done on {PLAYERS[1]}" in d.find_element(By.ID, "output").text, "the last line")
    shown(alice, lambda d: d.find_element(By.ID, "task-state").text == "ok", "the task's end")
    no_console_errors(alice)


def test_another_users_job_is_not_visible(cluster: Cluster, alice: WebDriver) -> None:
    job = submit_as(cluster, "bob.test", "--all-of", "--name", "bob's secret rollout", "hello", PLAYERS[0])
    alice.get(cluster.web_url + "jobs")
    assert job not in alice.page_source and "bob's secret rollout" not in alice.page_source
    alice.get(f"{cluster.web_url}jobs/{job}")
    assert alice.find_element(By.CSS_SELECTOR, "p.error").text == f"no such job {job}"
    assert "bob" not in alice.find_element(By.TAG_NAME, "main").text


def test_a_browser_without_a_certificate_gets_nothing(cluster: Cluster, tmp_path: Path) -> None:
    driver = browser(nss_home(tmp_path / "nobody", None, None), server_pin(cluster))
    try:
        for path in ("", "jobs", "static/app.js"):
            try:
                driver.get(cluster.web_url + path)
            except Exception:  # noqa: BLE001 - a browser may also give up on the page itself
                continue
            assert "Orchestra" not in driver.page_source and "cert:" not in driver.page_source
            assert "ERR_" in driver.page_source or "can’t be reached" in driver.page_source
    finally:
        driver.quit()
