"""A person's path through the UI in real headless Chromium: log in, open the form, trigger, see success.

Screenshots land in test-artifacts/ui-*.png.
"""

from __future__ import annotations

import time

import pytest

from tests.e2e.conftest import SUBSET
from tests.e2e.helpers import ARTIFACTS

pytestmark = [pytest.mark.slow, pytest.mark.ignite]
CHROME_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000",
                "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
                "--disable-quic"]


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for flag in CHROME_FLAGS:
        opts.add_argument(flag)
    opts.binary_location = "/usr/bin/chromium"
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    driver.implicitly_wait(10)
    yield driver
    driver.quit()


def button(driver, text: str, last: bool = False):
    from selenium.webdriver.common.by import By

    found = [b for b in driver.find_elements(By.TAG_NAME, "button") if b.text.strip() == text and b.is_displayed()]
    assert found, f"no visible button {text!r}"
    return found[-1] if last else found[0]


def test_trigger_from_the_form_and_watch_it_succeed(airflow_server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    ARTIFACTS.mkdir(exist_ok=True)
    browser.get(airflow_server.url)
    browser.find_element(By.NAME, "username").send_keys("admin")
    browser.find_element(By.NAME, "password").send_keys(airflow_server.password)
    button(browser, "Sign in").click()
    time.sleep(2)
    browser.get(f"{airflow_server.url}/dags/kiln_training")
    time.sleep(3)
    browser.save_screenshot(str(ARTIFACTS / "ui-1-dag.png"))
    button(browser, "Trigger").click()
    time.sleep(2)

    from kiln.form import form_settings

    from tests.conftest import transactions_spec

    body = browser.find_element(By.TAG_NAME, "body").text
    for setting in form_settings(transactions_spec()):  # every field of the dataset's form is there with its description
        assert browser.find_element(By.NAME, f"element_{setting.name}"), setting.name
        assert setting.description in body, setting.name
    browser.save_screenshot(str(ARTIFACTS / "ui-2-trigger-form.png"))

    rows = browser.find_element(By.NAME, "element_rows")
    rows.send_keys(Keys.CONTROL, "a")
    rows.send_keys("6000")
    candidates = browser.find_element(By.NAME, "element_candidates")  # an array field: one value per line
    candidates.send_keys(Keys.CONTROL, "a")
    candidates.send_keys("\n".join(SUBSET))
    browser.save_screenshot(str(ARTIFACTS / "ui-3-form-filled.png"))
    before = {r["dag_run_id"] for r in airflow_server.runs("kiln_training")}
    button(browser, "Trigger", last=True).click()

    deadline = time.monotonic() + 60
    new: list[dict] = []
    while not new and time.monotonic() < deadline:
        new = [r for r in airflow_server.runs("kiln_training") if r["dag_run_id"] not in before]
        time.sleep(1)
    assert len(new) == 1, "the form did not create a run"
    assert new[0]["conf"]["rows"] == 6000 and new[0]["conf"]["candidates"] == SUBSET
    run = airflow_server.wait_for_run("kiln_training", new[0]["dag_run_id"])
    browser.get(f"{airflow_server.url}/dags/kiln_training/runs/{new[0]['dag_run_id']}")
    time.sleep(4)
    browser.save_screenshot(str(ARTIFACTS / "ui-4-run-succeeded.png"))
    assert run["state"] == "success"
    assert "success" in browser.find_element(By.TAG_NAME, "body").text.lower()
