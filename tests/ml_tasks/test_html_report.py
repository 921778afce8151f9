"""The run report: one self-contained page (inline SVG, nothing fetched) of what the run and the registry wrote, and
of what it did not reach."""

from __future__ import annotations

import re

from ml_tasks.core.layout import Layout
from ml_tasks.evaluation.evaluate import evaluate
from ml_tasks.evaluation.registry import record_approval, register
from ml_tasks.reports.html_report import write_report
from tests.conftest import transactions_spec
from tests.ml_tasks.test_evaluate_registry import LOOSE, make_candidate


def test_a_finished_runs_report_has_every_part_and_opens_offline(data_root):
    lay = Layout(data_root, "transactions", "2026-06-02")
    make_candidate(lay, "strong", 2.0)
    make_candidate(lay, "weak", 0.3)
    evaluate("binary", lay.candidates_root, lay.evaluation, LOOSE)
    waiting = register(lay.evaluation, lay.registry_root, "transactions", lay.ds, lay.transform_dir,
                       require_approval=True)
    # what a person typed is shown as text, never as markup
    record_approval(lay.registry_root, "transactions", lay.ds, waiting["registration"], False, "ana", "<b>drift</b>")

    page = write_report(transactions_spec(), lay, "transactions").read_text()
    for part in ("Candidates", "ROC", "precision-recall", "calibration (10 bins)", "Training curves", "Validation",
                 "Hyper-parameter search", "No search in this run", "Registry", "rejected by ana", "min_auc 0.550"):
        assert part in page, part
    assert page.count("<svg") == 4  # ROC, PR, calibration, the registry's history
    assert "not approved: &lt;b&gt;drift&lt;/b&gt;" in page and "<b>drift" not in page
    # nothing to fetch: no scripts, stylesheets, images or frames from anywhere
    assert not re.search(r"<(script|link|img|iframe)\b", page)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)


def test_a_run_that_stopped_early_gets_a_report_of_what_it_reached(data_root):
    lay = Layout(data_root, "transactions", "2026-06-03", "failed_run")
    page = write_report(transactions_spec(), lay, "transactions").read_text()
    assert "No evaluation: the run stopped before it." in page
    assert "No validation report: the run stopped before it." in page
    assert "Nothing registered for this model yet." in page
