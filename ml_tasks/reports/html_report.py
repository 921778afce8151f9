"""A run's HTML report: one self-contained file (plots are inline SVG) that opens offline and in Airflow's UI.

It reads only what the run and the registry wrote: the evaluation (every candidate's metrics and held-out
predictions), the trainers' per-epoch history, the validation report (checks and PSI drift against the previous
partition), the search's trials and the registry's versions and decisions. A part the run did not reach is
said to be missing, so a failed run still gets a report of what it did.
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from ml_tasks.core.atomic import read_json, tmp_sibling
from ml_tasks.core.layout import CandidateFiles, Layout
from ml_tasks.core.run_settings import searchable
from ml_tasks.core.spec import DatasetSpec
from ml_tasks.evaluation.evaluate import METRICS
from ml_tasks.evaluation.registry import read_state
from ml_tasks.training.search import search_results

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1180px;color:#1f2328;padding:0 16px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;border-bottom:1px solid #d0d7de;padding-bottom:4px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}.ok{color:#1a7f37}.bad{color:#cf222e}.muted{color:#656d76}
.best{background:#dafbe1}.plots{display:flex;flex-wrap:wrap;gap:12px}.plots figure{margin:0}
figcaption{font-size:12px;color:#656d76;text-align:center}code{background:#f6f8fa;padding:1px 4px}
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _num(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or value is None:
        return _e(value)
    if isinstance(value, float):
        return "nan" if not math.isfinite(value) else f"{value:.{digits}f}"
    return _e(value)


def _table(header: list[str], rows: list[list[str]], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(f"<tr class='{(classes or [''] * len(rows))[i]}'>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>"
                   for i, row in enumerate(rows))
    return f"<table><tr>{head}</tr>{body}</table>"


def _svg(draw: Callable[[Any], None], caption: str, size: tuple[float, float] = (4.6, 3.6)) -> str:
    """One matplotlib figure as inline SVG (text kept as text, so the report is searchable)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.fonttype"] = "none"
    fig, ax = plt.subplots(figsize=size)
    try:
        draw(ax)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        out = io.StringIO()
        fig.savefig(out, format="svg")
    finally:
        plt.close(fig)
    svg = out.getvalue()
    return f"<figure>{svg[svg.index('<svg'):]}<figcaption>{_e(caption)}</figcaption></figure>"


def _predictions(candidates: list[dict[str, Any]]) -> dict[str, pd.DataFrame]:
    found = {}
    for row in candidates:
        path = CandidateFiles(Path(row["dir"])).predictions
        if path.exists():
            found[row["candidate"]] = pd.read_parquet(path, columns=["label", "score"])
    return found


def _binary_plots(preds: dict[str, pd.DataFrame]) -> str:
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import precision_recall_curve, roc_curve

    def roc(ax):
        for name, p in preds.items():
            fpr, tpr, _ = roc_curve(p.label, p.score)
            ax.plot(fpr, tpr, label=name)
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
        ax.legend(fontsize=8)

    def pr(ax):
        for name, p in preds.items():
            precision, recall, _ = precision_recall_curve(p.label, p.score)
            ax.plot(recall, precision, label=name)
        ax.set(xlabel="recall", ylabel="precision", title="precision-recall")
        ax.legend(fontsize=8)

    def calibration(ax):
        for name, p in preds.items():
            observed, predicted = calibration_curve(p.label, p.score, n_bins=10, strategy="uniform")
            ax.plot(predicted, observed, marker="o", ms=3, label=name)
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set(xlabel="mean predicted probability", ylabel="observed positive rate", title="calibration (10 bins)")
        ax.legend(fontsize=8)

    return "<div class='plots'>" + _svg(roc, "held-out ROC curves") + _svg(pr, "held-out precision-recall curves") + \
        _svg(calibration, "reliability diagram") + "</div>"


def _regression_plots(preds: dict[str, pd.DataFrame]) -> str:
    def fitted(ax):
        for name, p in preds.items():
            ax.scatter(p.label, p.score, s=6, alpha=0.6, label=name)
        low = min(float(p.label.min()) for p in preds.values())
        high = max(float(p.label.max()) for p in preds.values())
        ax.plot([low, high], [low, high], "k:", lw=0.8)
        ax.set(xlabel="actual", ylabel="predicted", title="predicted vs actual")
        ax.legend(fontsize=8)

    def residuals(ax):
        for name, p in preds.items():
            ax.scatter(p.score, p.label - p.score, s=6, alpha=0.6, label=name)
        ax.axhline(0, color="k", lw=0.8, ls=":")
        ax.set(xlabel="predicted", ylabel="residual (actual - predicted)", title="residuals")
        ax.legend(fontsize=8)

    def calibration(ax):  # a regression's calibration: mean actual per decile of the prediction
        for name, p in preds.items():
            bins = pd.qcut(p.score, 10, labels=False, duplicates="drop")
            grouped = p.groupby(bins).mean()
            ax.plot(grouped.score, grouped.label, marker="o", ms=3, label=name)
        ax.axline((0, 0), slope=1, color="k", lw=0.8, ls=":")
        ax.set(xlabel="mean prediction (decile)", ylabel="mean actual", title="calibration by decile")
        ax.legend(fontsize=8)

    return "<div class='plots'>" + _svg(fitted, "held-out predictions") + _svg(residuals, "held-out residuals") + \
        _svg(calibration, "calibration by prediction decile") + "</div>"


def _candidates_section(evaluation: dict[str, Any] | None) -> str:
    if evaluation is None:
        return "<h2>Candidates</h2><p class='muted'>No evaluation: the run stopped before it.</p>"
    task, names = evaluation["task"], METRICS[evaluation["task"]]
    rows, classes = [], []
    for row in evaluation["candidates"]:
        verdict = "<span class='ok'>blessed</span>" if row["passes"] else \
            f"<span class='bad'>{_e('; '.join(row['reasons']))}</span>"
        rows.append([_e(row["candidate"]), _e(row["framework"]), *[_num(row["metrics"].get(n)) for n in names], verdict])
        classes.append("best" if row["candidate"] == evaluation["best"] else "")
    for failed in evaluation.get("failed", []):
        rows.append([_e(failed["candidate"]), "", *[""] * len(names), f"<span class='bad'>{_e(failed['reason'])}</span>"])
        classes.append("")
    table = _table(["candidate", "framework", *names, "verdict"], rows, classes)
    preds = _predictions(evaluation["candidates"])
    plots = (_binary_plots(preds) if task == "binary" else _regression_plots(preds)) if preds else ""
    return (f"<h2>Candidates</h2><p>Best: <b>{_e(evaluation['best'])}</b> on held-out {_e(evaluation['primary_metric'])} "
            f"({'higher' if evaluation['higher_is_better'] else 'lower'} is better), "
            f"{'blessed' if evaluation['blessed'] else 'not blessed'}; blessing thresholds "
            + ", ".join(f"{_e(k)} {_num(v, 3)}" for k, v in evaluation["thresholds"].items()
                        if v is not None and k.split("_", 1)[1] in names) + ".</p>"
            + table + plots)


def _curves_section(evaluation: dict[str, Any] | None) -> str:
    histories = {}
    for row in (evaluation or {}).get("candidates", []):
        info = CandidateFiles(Path(row["dir"])).info
        history = read_json(info).get("history") if info.exists() else None
        if history:
            histories[row["candidate"]] = history
    if not histories:
        return "<h2>Training curves</h2><p class='muted'>No candidate recorded per-epoch history (MXNet and Singa do).</p>"
    metric = next(k for k in next(iter(histories.values()))[0] if k.startswith("held_out_"))

    def loss(ax):
        for name, h in histories.items():
            ax.plot([e["epoch"] for e in h], [e["loss"] for e in h], marker="o", ms=3, label=name)
        ax.set(xlabel="epoch", ylabel="mean training loss", title="training loss")
        ax.legend(fontsize=8)

    def held_out(ax):
        for name, h in histories.items():
            ax.plot([e["epoch"] for e in h], [e.get(metric) for e in h], marker="o", ms=3, label=name)
        ax.set(xlabel="epoch", ylabel=metric.replace("_", " "), title=metric.replace("_", " ") + " per epoch")
        ax.legend(fontsize=8)

    return ("<h2>Training curves</h2><div class='plots'>" + _svg(loss, "per-epoch training loss")
            + _svg(held_out, "held-out metric after each epoch (monitoring only: never used to choose)") + "</div>")


def _validation_section(lay: Layout) -> str:
    if not lay.validation_report.exists():
        return "<h2>Validation</h2><p class='muted'>No validation report: the run stopped before it.</p>"
    report = read_json(lay.validation_report)
    stats = report.get("stats", {})
    state = "<span class='ok'>passed</span>" if report["passed"] else "<span class='bad'>failed</span>"
    failures = _table(["column", "rule", "problem"], [[_e(c) for c in f] for f in report["failures"]]) \
        if report["failures"] else "<p>No rule broken.</p>"
    columns = _table(["column", "missing ratio"], [[_e(name), _num(c.get("missing_ratio"))]
                                                   for name, c in stats.get("columns", {}).items()])
    facts = f"<p>Validation {state}: {_e(stats.get('rows'))} rows" + (
        f", positive rate {_num(stats['positive_rate'])}" if "positive_rate" in stats else "") + ".</p>"
    drift = stats.get("drift_psi")
    if not drift:
        drift_part = (f"<p class='muted'>No PSI drift: no previous partition to compare with "
                      f"({_e(report.get('drift_baseline') or lay.previous_raw_dir())}).</p>")
    else:
        names = list(drift)

        def bars(ax):
            bars_ = ax.barh(names, [drift[n] for n in names],
                            color=["#cf222e" if drift[n] > 0.25 else "#2f81f7" for n in names])
            ax.bar_label(bars_, fmt="%.4f", fontsize=7, padding=2)  # small values stay readable
            ax.axvline(0.25, color="k", lw=0.8, ls=":")
            ax.set(xlabel="population stability index", title="drift against the previous partition")

        drift_part = (f"<p>PSI per feature against <code>{_e(report.get('drift_baseline'))}</code> "
                      "(0.1: watch, 0.25: drifted).</p>" + "<div class='plots'>"
                      + _svg(bars, "PSI per feature", (6.0, 0.4 * len(names) + 1.2)) + "</div>")
    return "<h2>Validation and drift</h2>" + facts + failures + columns + drift_part


def _search_section(spec: DatasetSpec, lay: Layout) -> str:
    parts = []
    for candidate in searchable(spec):
        found = search_results(lay, candidate)
        if found is None:
            continue
        best = found["best"]
        rows, classes = [], []
        for trial in found["trials"]:
            record = next((r for r in found["records"] if r["key"] == trial["key"]), None)
            status = "not run" if record is None else ("<span class='ok'>ok</span>" if record["status"] == "ok"
                                                      else f"<span class='bad'>{_e(record.get('reason'))}</span>")
            rows.append([_e(trial["trial"]), *[_num(trial["tuned"][n]) for n in found["tuned"]],
                         _num(record["value"]) if record and record["value"] is not None else "", status,
                         _num(record["seconds"], 1) if record else ""])
            classes.append("best" if best and trial["key"] == best["key"] else "")
        table = _table(["trial", *found["tuned"], f"validation {found['metric']}", "status", "seconds"], rows, classes)
        finished = [r for r in found["records"] if r["status"] == "ok"]

        def scatter(ax, finished=finished, found=found):
            ax.plot([r["trial"] for r in finished], [r["value"] for r in finished], "o")
            ax.set(xlabel="trial", ylabel=f"validation {found['metric']}", title="trials")

        plot = f"<div class='plots'>{_svg(scatter, 'validation score per trial', (4.0, 2.8))}</div>" if finished else ""
        parts.append(f"<h3>{_e(candidate)}</h3><p>{len(found['trials'])} trials, seed {_e(found['seed'])}, space "
                     f"<code>{_e(found['space'])}</code>; best: "
                     + (f"<b>{_e(best['key'])}</b> {_e(best['tuned'])}" if best else "<span class='bad'>none finished</span>")
                     + "</p>" + table + plot)
    if not parts:
        return "<h2>Hyper-parameter search</h2><p class='muted'>No search in this run (form field search_candidates).</p>"
    return ("<h2>Hyper-parameter search</h2><p>Trials fit 80% of the training rows and are scored on the other 20%; "
            "the held-out test rows are never used to choose.</p>" + "".join(parts))


def _registry_section(lay: Layout, model_name: str) -> str:
    state = read_state(lay.registry_root, model_name)
    versions = state["versions"]
    if not versions:
        return "<h2>Registry</h2><p class='muted'>Nothing registered for this model yet.</p>"
    metric = state["primary_metric"]
    mine = versions.get(lay.ds)
    this = ""
    if mine is not None:
        ran_here = mine.get("run_id") == lay.run_id
        approval = mine.get("approval")
        this = (f"<p>This partition's version <b>{_e(model_name)}/{_e(lay.ds)}</b> ({_e(mine['candidate'])}"
                f"{'' if ran_here else ', registered by run ' + _e(mine.get('run_id'))}): "
                + ("<span class='ok'>promoted</span>" if mine["promoted"] else
                   f"<span class='bad'>not promoted</span>: {_e('; '.join(mine['reasons']))}")
                + (f"; {_e(approval['state'])}" + (f" by {_e(approval.get('by'))}" if approval.get("by") else "")
                   + (f" ({_e(approval.get('reason'))})" if approval.get("reason") else "") if approval else "")
                + f". Champion: <b>{_e(state['champion'])}</b>.</p>")
    rows, classes = [], []
    for ds in sorted(versions):
        rec = versions[ds]
        approval = rec.get("approval")
        rows.append([_e(ds), _e(rec["candidate"]), _num(rec.get(metric)), "yes" if rec["promoted"] else "no",
                     _e("; ".join(rec["reasons"])), _e(approval["state"] if approval else "-")])
        classes.append("best" if ds == state["champion"] else "")
    table = _table(["version", "candidate", metric, "promoted", "why not", "approval"], rows, classes)
    dates = sorted(versions)

    def history(ax):
        ax.plot(dates, [versions[d].get(metric) for d in dates], "o-", color="#8c959f", label="registered")
        promoted = [d for d in dates if versions[d]["promoted"]]
        ax.plot(promoted, [versions[d][metric] for d in promoted], "o", color="#1a7f37", label="promoted")
        if state["champion"]:
            ax.plot([state["champion"]], [versions[state["champion"]][metric]], "*", ms=14, color="#bf8700", label="champion")
        ax.set(xlabel="version (partition)", ylabel=metric, title=f"{model_name}: versions over time")
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
        ax.legend(fontsize=8)

    return ("<h2>Registry</h2>" + this + table
            + f"<div class='plots'>{_svg(history, 'registered versions and the champion', (6.0, 3.4))}</div>")


def write_report(spec: DatasetSpec, lay: Layout, model_name: str) -> Path:
    """Write the run's report to ``lay.report`` (atomically: a reader never sees half a page) and return its path."""
    evaluation = read_json(lay.evaluation) if lay.evaluation.exists() else None
    body = "".join([_candidates_section(evaluation), _curves_section(evaluation), _validation_section(lay),
                    _search_section(spec, lay), _registry_section(lay, model_name)])
    page = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Kiln {_e(spec.name)} {_e(lay.ds)}</title>"
            f"<style>{STYLE}</style></head><body><h1>Kiln run report: {_e(spec.name)} partition {_e(lay.ds)}</h1>"
            f"<p class='muted'>run <code>{_e(lay.run_id)}</code>, model <code>{_e(model_name)}</code>, {_e(spec.task)} "
            f"task, written {datetime.now(UTC):%Y-%m-%d %H:%M} UTC</p>{body}</body></html>")
    lay.report_dir.mkdir(parents=True, exist_ok=True)
    tmp = tmp_sibling(lay.report)
    tmp.write_text(page)
    tmp.replace(lay.report)
    return lay.report


__all__ = ["write_report"]
