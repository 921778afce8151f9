"""A person's path through the UI in real headless Chromium: log in, open the form, trigger, see success; approve a
promotion in the run's required actions and read the run's report in its "Report" tab.

Screenshots land in test-artifacts/ui-*.png (and the whole report in test-artifacts/report.png).
"""

from __future__ import annotations

import time

import pytest

from tests.e2e.conftest import SUBSET
from tests.e2e.helpers import ARTIFACTS, dataset_of_its_own, trigger, wait_for_approval_request

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


def sign_in(driver, server) -> None:
    from selenium.webdriver.common.by import By

    ARTIFACTS.mkdir(exist_ok=True)
    driver.get(server.url)
    driver.find_element(By.NAME, "username").send_keys("admin")
    driver.find_element(By.NAME, "password").send_keys(server.password)
    button(driver, "Sign in").click()
    time.sleep(2)


def test_trigger_from_the_form_and_watch_it_succeed(airflow_server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    sign_in(browser, airflow_server)
    browser.get(f"{airflow_server.url}/dags/kiln_training")
    time.sleep(3)
    browser.save_screenshot(str(ARTIFACTS / "ui-1-dag.png"))
    button(browser, "Trigger").click()
    time.sleep(2)

    from kiln.form import form_settings

    from tests.conftest import transactions_spec

    body = browser.find_element(By.TAG_NAME, "body").text
    for setting in form_settings(transactions_spec()):  # every field of the dataset's form is there with its description
        if setting.schema["type"] != "object":  # an object (search_space) is a JSON editor, which has no field name
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


def test_approve_a_promotion_in_the_browser_then_read_the_runs_report(airflow_server, browser):
    import json

    from selenium.webdriver.common.by import By

    dag_id = dataset_of_its_own(airflow_server, "approved_browser")  # a model of its own: no champion yet
    run_id = trigger(airflow_server, {"rows": 6000, "candidates": SUBSET, "warm_cache": False, "require_approval": True,
                                      "search_candidates": SUBSET, "search_trials": 2, "partition_date": "2026-04-03"},
                     dag_id)
    wait_for_approval_request(airflow_server, run_id, dag_id=dag_id)
    sign_in(browser, airflow_server)
    browser.get(f"{airflow_server.url}/dags/{dag_id}/runs/{run_id}/tasks/approve_promotion/required_actions")
    time.sleep(4)
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "Promote approved_browser/2026-04-03" in body and "auc" in body  # the request shows the metrics
    browser.find_element(By.NAME, "element_reason").send_keys("metrics and drift checked in the report")
    browser.save_screenshot(str(ARTIFACTS / "ui-5-approval-request.png"))
    button(browser, "Approve").click()
    run = airflow_server.wait_for_run(dag_id, run_id)
    assert run["state"] == "success", airflow_server.task_instances(dag_id, run_id)
    state = json.loads((airflow_server.data_root / "registry/approved_browser/registry.json").read_text())
    approval = state["versions"]["2026-04-03"]["approval"]
    assert state["champion"] == "2026-04-03" and approval["by"] == "admin"
    assert approval["reason"] == "metrics and drift checked in the report"

    # the run's page has a "Report" tab (the plugin's external view): the report renders inside it, plots included
    browser.get(f"{airflow_server.url}/dags/{dag_id}/runs/{run_id}/plugin/kiln-report")
    time.sleep(4)
    browser.save_screenshot(str(ARTIFACTS / "ui-6-run-report-tab.png"))
    frame = browser.find_element(By.TAG_NAME, "iframe")
    browser.switch_to.frame(frame)
    assert "Kiln run report: approved_browser partition 2026-04-03" in browser.find_element(By.TAG_NAME, "h1").text
    plots = browser.find_elements(By.CSS_SELECTOR, "figure svg")
    assert len(plots) >= 6 and all(p.size["width"] > 100 and p.size["height"] > 100 for p in plots)
    browser.switch_to.default_content()
    browser.set_window_size(1300, 4300)  # the whole report, as its own page (the session cookie signs it in)
    browser.get(f"{airflow_server.url}/kiln/reports/{dag_id}/{run_id}")
    time.sleep(2)
    browser.save_screenshot(str(ARTIFACTS / "report.png"))
