"""Benchmark figures with their baseline and goal: printed as they come, written to a results folder
(``results.json``, ``results.md``) with PNG plots.

A figure's goal is a ratio or a bound checked in the same run; ``met`` is None where a figure has no goal.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Figure:
    section: str
    name: str
    value: float
    unit: str
    baseline: str = ""  # what it is compared with, with the baseline's own value
    goal: str = ""  # e.g. "<= 1.5"
    met: bool | None = None


@dataclass
class Results:
    folder: Path
    quick: bool
    figures: list[Figure] = field(default_factory=list)
    series: dict[str, dict[str, Any]] = field(default_factory=dict)
    started: float = field(default_factory=time.time)

    def add(self, section: str, name: str, value: float, unit: str, *, baseline: str = "", goal: tuple[str, float] | None = None) -> Figure:
        """Record a figure; ``goal`` is (``<=`` or ``>=``, bound)."""
        met = None
        goal_text = ""
        if goal is not None:
            op, bound = goal
            met = value <= bound if op == "<=" else value >= bound
            goal_text = f"{op} {bound:g}"
        fig = Figure(section, name, float(value), unit, baseline, goal_text, met)
        self.figures.append(fig)
        mark = {True: "met", False: "NOT met", None: ""}[met]
        print(f"  [{section}] {name}: {value:,.3g} {unit}" + (f"  (baseline: {baseline})" if baseline else "")
              + (f"  goal {goal_text}: {mark}" if goal_text else ""), flush=True)
        self.save()
        return fig

    def plot(self, key: str, **data: Any) -> None:
        """Raw series for a PNG (kind: hist, lines); written with the results."""
        self.series[key] = data
        self.save()

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        meta = {"quick": self.quick, "machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started)),
                "seconds": round(time.time() - self.started, 1)}
        (self.folder / "results.json").write_text(json.dumps({"meta": meta, "figures": [asdict(f) for f in self.figures],
                                                              "series": self.series}, indent=1))
        (self.folder / "results.md").write_text(markdown(self.figures, meta))

    def finish(self) -> None:
        self.save()
        for stale in self.folder.glob("*.png"):  # an earlier run's plot of a figure this run did not measure
            if stale.stem not in self.series:
                stale.unlink()
        draw(self.series, self.folder)
        print("\n" + markdown(self.figures, {"machine": machine()}))
        print(f"results: {self.folder}/results.md, results.json and {len(self.series)} PNG plots")


def machine() -> str:
    cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    mem = next((ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")), "0")
    return f"{platform.machine()}, {cores} cores, {int(mem) // 1024 // 1024} GiB, Python {sys.version.split()[0]}"


def markdown(figures: list[Figure], meta: dict[str, Any]) -> str:
    lines = [f"Machine: {meta['machine']}", "", "| section | figure | value | unit | baseline (same run) | goal | met |",
             "|---|---|---:|---|---|---|---|"]
    for f in figures:
        met = {True: "yes", False: "**no**", None: ""}[f.met]
        lines.append(f"| {f.section} | {f.name} | {f.value:,.4g} | {f.unit} | {f.baseline} | {f.goal} | {met} |")
    return "\n".join(lines) + "\n"


def draw(series: dict[str, dict[str, Any]], folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for key, data in series.items():
        fig, ax = plt.subplots(figsize=(7, 4))
        if data["kind"] == "hist":
            for label, values in data["values"].items():
                ax.hist(values, bins=60, alpha=0.6, label=label)
        else:
            for label, (xs, ys) in data["lines"].items():
                ax.plot(xs, ys, marker="o", label=label)
            if data.get("logx"):
                ax.set_xscale("log")
        ax.set_title(data["title"])
        ax.set_xlabel(data["xlabel"])
        ax.set_ylabel(data["ylabel"])
        ax.legend()
        fig.tight_layout()
        fig.savefig(folder / f"{key}.png", dpi=100)
        plt.close(fig)
