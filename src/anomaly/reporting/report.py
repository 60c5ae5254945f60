"""The benchmark report: every experiment and commit as a row, summarised in tables and figures.

Why read ``dvc exp show --json`` rather than our own files: DVC already knows
every run (queued sweeps, branches, ``dvc exp run`` one-offs) with its params
and metrics, in git, so the report covers runs made anywhere the experiment
refs were pushed or pulled. Why keep ``reports/runs.json``: experiments get
garbage-collected and branches deleted; the report is incremental, so a row
once collected stays until a rerun of the same revision replaces it.

Outputs in ``reports/``: ``runs.json`` (full records, the source of truth),
``runs.csv`` (every metric, the params that differ between runs, run time),
``summary.md`` and the PNG figures it links.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..dvc_cli import DvcCommandError, run_dvc
from ..errors import DataError
from ..io import atomic_path, write_json
from .plots import _save, plt

log = logging.getLogger(__name__)

# Metric files and the prefix their keys get in the report (eval.json is the main one).
METRIC_PREFIXES = {
    "metrics/eval.json": "",
    "metrics/train_time.json": "time.",
    "metrics/threshold.json": "threshold.",
    "metrics/train/metrics.json": "train_log.",
}
ID_COLUMNS = ["run_id", "name", "kind", "baseline", "created", "model", "dataset", "category"]
HEADLINE = [
    "image.auroc",
    "pixel.auroc",
    "pixel.aupro",
    "image.f1",
    "image.f1_max",
    "image.precision",
    "image.recall",
    "time.seconds",
]


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    if isinstance(data, list):
        return {prefix[:-1]: json.dumps(data)}
    return {prefix[:-1]: data}


def exp_show(
    repo: Path, revs: list[str], all_branches: bool, all_commits: bool, num: int
) -> list[dict]:
    """``dvc exp show --json`` for the chosen baselines (HEAD when none are named)."""
    args = ["exp", "show", "--json", "-n", str(num)]
    for rev in revs:
        args += ["--rev", rev]
    if all_branches:
        args.append("--all-branches")
    if all_commits:
        args.append("--all-commits")
    out = run_dvc(repo, *args)
    try:
        return json.loads(out or "[]")
    except json.JSONDecodeError as exc:
        raise DvcCommandError(f"{repo}: `dvc exp show --json` printed no JSON ({exc})") from exc


def head_experiments(repo: Path) -> dict[str, dict]:
    """This commit's experiments by name: ``{"rev", "failed", "eval", "seconds"}`` from
    ``dvc exp show --json`` (a failed run is listed with the error DVC recorded, and
    with its baseline's metrics). Sweep and select both judge their runs by it."""

    found: dict[str, dict] = {}
    for entry in exp_show(repo, [], False, False, 1):
        for experiment in entry.get("experiments") or []:
            revs = experiment.get("revs") or []
            name = experiment.get("name")
            if not name or not revs:
                continue
            rev = revs[0]
            data = rev.get("data") or {}
            metrics = data.get("metrics") or {}
            found[name] = {
                "rev": rev.get("rev"),
                "failed": bool(rev.get("error")),
                "eval": dict((metrics.get("metrics/eval.json") or {}).get("data") or {}),
                "seconds": ((metrics.get("metrics/train_time.json") or {}).get("data") or {}).get(
                    "seconds"
                ),
            }
    return found


def finished_as(info: dict | None, model: str | None) -> bool:
    """Whether a run of :func:`head_experiments` finished as itself: listed, without
    DVC's error, and with metrics of ``model`` (a failed run carries its baseline's).
    Sweep and select judge their runs by it."""
    return info is not None and not info["failed"] and info["eval"].get("model") == model


def _family(name: Any):
    """The run's dataset family, or None for a name this version does not know."""
    from ..data.families.registry import available_families, get_family

    return get_family(str(name)) if str(name) in available_families() else None


def category_of(params: dict[str, Any]) -> str:
    """The run's category label: the MVTec category, fabric code(s), digit or 'all'."""
    family = _family(params.get("dataset.name"))
    if family is None:
        from ..data.families.registry import category_label

        return category_label(params)
    return family.label(params)


def category_type(dataset: str, category: str) -> str:
    """texture | object | fabric | digit | table | other, as the family says."""
    family = _family(dataset)
    return family.category_type(category) if family is not None else "other"


def _evaluated(entry: dict) -> bool:
    """Whether a run has its evaluation (not queued, running or failed)."""
    data = entry.get("data") or {}
    if entry.get("error") or not data:
        return False
    return "data" in ((data.get("metrics") or {}).get("metrics/eval.json") or {})


def _stale(entry: dict) -> bool:
    """Whether a run's eval.json was written for another model or dataset than its params
    name: params committed or changed without running the pipeline. Its metrics belong to
    other settings, so the report leaves it out (and says so) instead of filing them
    under the wrong model or dataset."""
    data = entry.get("data") or {}
    metrics = ((data.get("metrics") or {}).get("metrics/eval.json") or {}).get("data") or {}
    params = _flatten((data.get("params") or {}).get("params.yaml", {}).get("data", {}))
    return any(
        key in metrics and params.get(name) is not None and metrics[key] != params.get(name)
        for key, name in (("model", "model"), ("dataset", "dataset.name"))
    )


def _runs(entries: list[dict]) -> Iterator[tuple[str, str, dict]]:
    """(kind, baseline name, run entry) for every baseline and every experiment of it;
    an experiment's result is the first of its revs (named after the experiment when the
    rev itself carries no name)."""
    for entry in entries:
        baseline = entry.get("name") or str(entry.get("rev"))[:7]
        yield "workspace" if entry.get("rev") == "workspace" else "commit", baseline, entry
        for experiment in entry.get("experiments") or []:
            revs = experiment.get("revs") or []
            if revs:
                run = revs[0]
                if not run.get("name") and experiment.get("name"):
                    run = {**run, "name": experiment["name"]}
                yield "experiment", baseline, run


def _run_id(entry: dict) -> str:
    """The key of a run's row in ``runs.json``: its revision (or ``workspace``)."""
    return entry.get("rev") if entry.get("rev") != "workspace" else "workspace"


def _record(entry: dict, kind: str, baseline: str) -> dict[str, Any]:
    """One evaluated run's flat record."""
    data = entry["data"]
    metrics_files = data.get("metrics") or {}
    params = _flatten((data.get("params") or {}).get("params.yaml", {}).get("data", {}))
    record: dict[str, Any] = {
        "run_id": _run_id(entry),
        "name": entry.get("name") or str(entry.get("rev"))[:7],
        "kind": kind,
        "baseline": baseline,
        "created": data.get("timestamp") or "",
        "model": params.get("model"),
        "dataset": params.get("dataset.name"),
        "category": category_of(params),
    }
    record["category_type"] = category_type(str(record["dataset"]), str(record["category"]))
    for path, prefix in METRIC_PREFIXES.items():
        payload = (metrics_files.get(path) or {}).get("data")
        if payload:
            for key, value in _flatten(payload).items():
                if prefix == "" and key in ("model", "dataset"):
                    continue  # the same as the params; kept once
                record[f"{prefix}{key}"] = value
    record.update({f"params.{k}": v for k, v in params.items()})
    return record


def collect(entries: list[dict], include_workspace: bool = False) -> list[dict[str, Any]]:
    """Flat records of the evaluated baselines (commits, branches) and their experiments."""
    return [
        _record(run, kind, baseline)
        for kind, baseline, run in _evaluated_runs(entries, include_workspace)
        if not _stale(run)
    ]


def stale(entries: list[dict], include_workspace: bool = False) -> list[str]:
    """Names of evaluated runs whose metrics were written for other params (``_stale``)."""
    return [_run_name(run) for run in _stale_runs(entries, include_workspace)]


def stale_ids(entries: list[dict], include_workspace: bool = False) -> set[str]:
    """``runs.json`` keys of the stale runs: an archive written before they were found
    stale (or by a version without the check) must lose their rows too."""
    return {_run_id(run) for run in _stale_runs(entries, include_workspace)}


def _run_name(run: dict) -> str:
    """The experiment's name, or its revision when it has none (a commit)."""
    return str(run.get("name") or run["rev"])


def _stale_runs(entries: list[dict], include_workspace: bool) -> Iterator[dict]:
    for _, _, run in _evaluated_runs(entries, include_workspace):
        if _stale(run):
            yield run


def _evaluated_runs(
    entries: list[dict], include_workspace: bool
) -> Iterator[tuple[str, str, dict]]:
    """``_runs`` that have their evaluation, the workspace only when asked for."""
    for kind, baseline, run in _runs(entries):
        if (kind != "workspace" or include_workspace) and _evaluated(run):
            yield kind, baseline, run


def unfinished(entries: list[dict]) -> list[str]:
    """Names of experiments with no evaluation yet (queued, running or failed): the report
    says they were left out rather than dropping them silently."""
    return [
        _run_name(run)
        for kind, _, run in _runs(entries)
        if kind == "experiment" and not _evaluated(run)
    ]


def merge_runs(
    previous: list[dict], new: list[dict], dropped: set[str] | frozenset[str] = frozenset()
) -> list[dict]:
    """Previous rows kept, a rerun of the same revision replaces its row; rows whose
    ``run_id`` is in ``dropped`` (runs now found stale) go."""
    merged = {row["run_id"]: row for row in previous if row["run_id"] not in dropped}
    for row in new:
        merged[row["run_id"]] = row
    return sorted(merged.values(), key=lambda r: (str(r.get("created")), str(r["run_id"])))


def runs_table(records: list[dict]) -> pd.DataFrame:
    """One row per run: identity, every metric, and only the params that differ."""
    frame = pd.DataFrame(records)
    if frame.empty:
        return pd.DataFrame(columns=ID_COLUMNS)
    param_cols = [c for c in frame.columns if c.startswith("params.")]
    differing = [c for c in param_cols if frame[c].astype(str).nunique(dropna=False) > 1]
    metric_cols = [
        c
        for c in frame.columns
        if c not in ID_COLUMNS and c not in param_cols and c != "category_type"
    ]
    headline = [c for c in HEADLINE if c in metric_cols]
    rest = sorted(c for c in metric_cols if c not in headline)
    return frame[[*ID_COLUMNS, "category_type", *headline, *rest, *sorted(differing)]]


def latest_per_cell(frame: pd.DataFrame) -> pd.DataFrame:
    """The newest run for each (dataset, model, category): what heatmaps show."""
    ordered = frame.sort_values(["created", "run_id"])
    return ordered.groupby(["dataset", "model", "category"], as_index=False, sort=True).last()


def per_category(cells: pd.DataFrame) -> pd.DataFrame:
    """Cells without the whole-dataset runs (category ``all``) of datasets that also have
    per-category runs: a mean or spread "across categories" must not count them twice."""
    split = cells.groupby("dataset")["category"].transform(lambda c: (c != "all").any())
    return cells[~(split & (cells["category"] == "all"))]


def _markdown(frame: pd.DataFrame, digits: int = 3) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "" if np.isnan(value) else f"{value:.{digits}f}"
        return str(value)

    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def with_intervals(frame: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """AUROC columns written as ``value [low, high]`` where the run has the evaluate
    stage's 95% bootstrap interval: with a few dozen test images a difference of 0.02
    is noise, and a table of bare numbers hides that."""
    out = frame.copy()
    for metric in ("image.auroc", "pixel.auroc", "val_synthetic.image.auroc"):
        low, high = f"{metric}_ci_low", f"{metric}_ci_high"
        if metric not in out or low not in frame or high not in frame:
            continue
        values = []
        for v, lo, hi in zip(frame[metric], frame[low], frame[high], strict=True):
            if pd.isna(v):
                values.append("")
            elif pd.isna(lo) or pd.isna(hi):
                values.append(f"{v:.{digits}f}")
            else:
                values.append(f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]")
        out[metric] = values
    return out


RESULT_COLUMNS = {
    "name": "run",
    "model": "model",
    "category": "category",
    "image.auroc": "image AUROC [95% CI]",
    "pixel.auroc": "pixel AUROC [95% CI]",
    "pixel.aupro": "AUPRO",
    # simulated defects on held-out good images: needs no labels (anomaly select ranks by it)
    "val_synthetic.image.auroc": "label-free AUROC [95% CI]",
    "image.f1": "image F1",
    "time.seconds": "train s",
}


def results_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Every run, best image AUROC first within each (dataset, category), with its
    intervals: the table a README or a paper quotes."""
    ordered = frame.assign(_auroc=frame["image.auroc"].fillna(-1.0)).sort_values(
        ["dataset", "category", "_auroc"], ascending=[True, True, False], kind="stable"
    )
    shown = with_intervals(ordered)
    columns = [c for c in RESULT_COLUMNS if c in shown]
    table = shown[columns].rename(columns=RESULT_COLUMNS)
    if "train s" in table:
        table["train s"] = [
            "" if pd.isna(v) else f"{v:.0f}" for v in ordered["time.seconds"].astype(float)
        ]
    return table


def pivot(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """model x category table of ``metric`` (newest run per cell), with a mean column."""
    if metric not in frame or frame[metric].isna().all():
        return pd.DataFrame()
    cells = latest_per_cell(frame)
    table = cells.pivot_table(index="model", columns="category", values=metric, aggfunc="first")
    categories = sorted(per_category(cells)["category"].unique())
    # pivot_table drops a category where no run has this metric (pixel AUROC of a
    # category without masks): keep it as an empty column instead of failing.
    table = table.reindex(columns=sorted(set(table.columns) | set(categories)))
    table["mean"] = table[categories].mean(axis=1)
    return table.sort_values("mean", ascending=False)


def best_models(cells: pd.DataFrame, metric: str = "image.auroc") -> pd.DataFrame:
    """Per (dataset, category): the best value of ``metric`` and every model reaching it."""
    rows = []
    for (dataset, category), part in cells.groupby(["dataset", "category"], sort=True):
        values = part[metric].dropna()
        if values.empty:
            continue
        best = values.max()
        models = part.loc[np.isclose(part[metric], best), "model"]
        rows.append(
            {
                "dataset": dataset,
                "category": category,
                "model": ", ".join(sorted(models)),
                metric: best,
            }
        )
    return pd.DataFrame(rows, columns=["dataset", "category", "model", metric])


def heatmap_figure(
    table: pd.DataFrame,
    title: str,
    path: Path,
    vmin: float = 0.5,
    digits: int = 3,
    xlabel: str = "category",
) -> None:
    """An annotated red-to-green table; a last column named ``mean`` is set off by a line."""
    values = table.to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(1.1 * values.shape[1] + 2.5, 0.55 * values.shape[0] + 1.6))
    image = ax.imshow(values, cmap="RdYlGn", vmin=vmin, vmax=1.0, aspect="auto")
    for (i, j), value in np.ndenumerate(values):
        if not np.isnan(value):
            ax.text(j, i, f"{value:.{digits}f}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(values.shape[1]), [str(c) for c in table.columns], rotation=30, ha="right")
    ax.set_yticks(range(values.shape[0]), [str(i) for i in table.index])
    if str(table.columns[-1]) == "mean":
        ax.axvline(values.shape[1] - 1.5, c="black", lw=1)
    ax.set(xlabel=xlabel, ylabel="model", title=title)
    fig.colorbar(image, ax=ax, fraction=0.04)
    _save(fig, path, 120)


def f1_figure(frame: pd.DataFrame, path: Path) -> None:
    """Mean F1 at the chosen threshold beside the F1-max ceiling, per model."""
    cells = per_category(latest_per_cell(frame))
    stats = cells.groupby("model")[["image.f1", "image.f1_max"]].agg(["mean", "std"])
    models = list(stats.index)
    x = np.arange(len(models))
    fig, ax = plt.subplots(figsize=(max(5, 1.0 * len(models) + 2), 3.8))
    for offset, key, label in (
        (-0.2, "image.f1", "F1 at threshold"),
        (0.2, "image.f1_max", "F1-max"),
    ):
        ax.bar(
            x + offset,
            stats[(key, "mean")],
            width=0.4,
            yerr=stats[(key, "std")].fillna(0),
            capsize=3,
            label=label,
        )
    ax.set_xticks(x, models)
    ax.set(ylim=(0, 1.05), ylabel="image F1 (mean over categories)", title="F1 per model")
    ax.legend(fontsize=8)
    _save(fig, path, 120)


def boxplot_figure(frame: pd.DataFrame, path: Path) -> None:
    """Distribution across categories of each headline metric, per model."""
    cells = per_category(latest_per_cell(frame))
    metrics = [
        m
        for m in ("image.auroc", "pixel.auroc", "pixel.aupro")
        if m in cells and cells[m].notna().any()
    ]
    models = sorted(cells["model"].unique())
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        data = [cells.loc[cells["model"] == m, metric].dropna().to_numpy() for m in models]
        ax.boxplot(data, tick_labels=models)
        for i, values in enumerate(data, start=1):
            ax.scatter(np.full(len(values), i), values, s=10, c="tab:blue", alpha=0.6, zorder=3)
        low = min([1.0, *(v.min() for v in data if len(v))])
        ax.set(title=metric, ylim=(max(0.0, low - 0.05), 1.01))
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle("Metric spread across categories (one dot per category)")
    fig.tight_layout()
    _save(fig, path, 120)


def texture_object_figure(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Mean image AUROC per model on texture and on object categories."""
    means = (
        per_category(latest_per_cell(frame))
        .groupby(["model", "category_type"])["image.auroc"]
        .mean()
        .unstack("category_type")
    )
    kinds = list(means.columns)
    x = np.arange(len(means))
    width = 0.8 / max(len(kinds), 1)
    fig, ax = plt.subplots(figsize=(max(5, 1.0 * len(means) + 2), 3.8))
    for k, kind in enumerate(kinds):
        ax.bar(x - 0.4 + width * (k + 0.5), means[kind], width=width, label=kind)
    ax.set_xticks(x, list(means.index))
    ax.set(ylim=(0, 1.05), ylabel="mean image AUROC", title="Texture vs object categories")
    ax.legend(fontsize=8)
    _save(fig, path, 120)
    return means


def defect_recall_table(frame: pd.DataFrame) -> pd.DataFrame:
    """model x defect type: recall at the chosen threshold, averaged over categories."""
    cells = per_category(latest_per_cell(frame))
    cols = [c for c in cells.columns if c.startswith("by_defect.") and c.endswith(".recall")]
    if not cols:
        return pd.DataFrame()
    table = cells.groupby("model")[cols].mean()
    table.columns = [c[len("by_defect.") : -len(".recall")] for c in cols]
    return table


def write_report(
    records: list[dict],
    out: Path,
    sources: str,
    left_out: list[str] | None = None,
    stale_runs: list[str] | None = None,
) -> dict[str, Any]:
    """CSV, markdown and figures for ``records``; returns what was written."""
    out.mkdir(parents=True, exist_ok=True)
    frame = runs_table(records)
    with atomic_path(out / "runs.csv") as tmp:
        frame.to_csv(tmp, index=False)
    written = {"runs": len(frame), "files": ["runs.json", "runs.csv", "summary.md"]}
    lines = [
        "# Benchmark report",
        "",
        f"{len(frame)} runs, collected from {sources}. Heatmaps and means use the newest run "
        "of each (dataset, model, category); `runs.csv` has every run.",
        "",
    ]
    if left_out:
        lines += [
            f"Left out, not evaluated (queued, running or failed): {', '.join(left_out)}.",
            "",
        ]
    if stale_runs:
        lines += [
            "Left out, metrics written for another model or dataset than the run's params "
            f"(params changed without running the pipeline): {', '.join(stale_runs)}.",
            "",
        ]
    if frame.empty:
        lines.append("No evaluated runs yet: run `dvc repro`, `dvc exp run` or `make sweep` first.")
    figures = []
    for metric, label in (
        ("image.auroc", "image AUROC"),
        ("pixel.auroc", "pixel AUROC"),
        ("pixel.aupro", "AUPRO"),
    ):
        if frame.empty:
            break
        for dataset, part in frame.groupby("dataset", sort=True):
            table = pivot(part, metric)
            if table.empty:
                continue
            stem = f"heatmap_{metric.replace('.', '_')}" + (
                f"_{dataset}" if frame["dataset"].nunique() > 1 else ""
            )
            if metric != "pixel.aupro":
                heatmap_figure(
                    table, f"{label} on {dataset} (model x category)", out / f"{stem}.png"
                )
                figures.append(f"{stem}.png")
            lines += [f"## {label}: {dataset}", "", _markdown(table.reset_index()), ""]
    if not frame.empty:
        cells = latest_per_cell(frame)
        for dataset, part in frame.groupby("dataset", sort=True):
            lines += [f"## Results: {dataset}", "", _markdown(results_table(part)), ""]
        lines += [
            "## Best model per category (image AUROC; ties listed together)",
            "",
            _markdown(best_models(cells)),
            "",
        ]
        f1_figure(frame, out / "f1_by_model.png")
        figures.append("f1_by_model.png")
        # Figures about spread over categories say nothing for one category (or one kind).
        if cells["category"].nunique() > 1:
            boxplot_figure(frame, out / "metric_spread.png")
            figures.append("metric_spread.png")
        if cells["category_type"].nunique() > 1:
            means = texture_object_figure(frame, out / "texture_vs_object.png")
            figures.append("texture_vs_object.png")
            lines += [
                "## Texture vs object (mean image AUROC)",
                "",
                _markdown(means.reset_index()),
                "",
            ]
        recall = defect_recall_table(frame)
        if not recall.empty:
            heatmap_figure(
                recall,
                "Recall per defect type (at each run's threshold)",
                out / "defect_recall.png",
                vmin=0.0,
                digits=2,
                xlabel="defect type",
            )
            figures.append("defect_recall.png")
            lines += ["## Recall per defect type", "", _markdown(recall.reset_index(), 2), ""]
        shown = [
            c
            for c in ["name", "kind", "baseline", "model", "dataset", "category", *HEADLINE]
            if c in frame
        ]
        lines += [
            "## All runs (AUROC with its 95% bootstrap interval)",
            "",
            _markdown(with_intervals(frame)[shown]),
            "",
        ]
        lines += ["## Figures", "", *[f"![{f}]({f})" for f in figures], ""]
    with atomic_path(out / "summary.md") as tmp:
        tmp.write_text("\n".join(lines), encoding="utf-8")
    written["files"] += figures
    return written


def load_previous(out: Path) -> list[dict]:
    path = out / "runs.json"
    if not path.is_file():
        return []
    try:
        return json.loads(path.read_text(encoding="utf-8"))["runs"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(
            f"{path}: not a report archive ({exc}); move it away to start afresh"
        ) from exc


def pull_experiments(repo: Path, remote: str, revs: list[str], everything: bool) -> None:
    """``dvc exp pull`` of the experiments of each baseline (HEAD by default), or of all
    commits; git refs from ``remote``, outputs from the default DVC remote."""
    selections = [["--all-commits"]] if everything else [["--rev", r] for r in revs or ["HEAD"]]
    for selection in selections:
        log.info("report: pulling experiments (%s) from %s", " ".join(selection), remote)
        run_dvc(repo, "exp", "pull", remote, *selection, "--force")


def report(
    repo: str | Path = ".",
    out: str | Path = "reports",
    revs: list[str] | None = None,
    all_branches: bool = False,
    all_commits: bool = False,
    num: int = 1,
    include_workspace: bool = False,
    pull: str | None = None,
) -> dict[str, Any]:
    """Collect runs from DVC, merge them into ``out/runs.json`` and redraw the report;
    with ``pull`` (a git remote: ``sweep.remote``), first fetch the experiments other
    machines pushed there for the same baselines."""
    repo, out = Path(repo), Path(out)
    out = out if out.is_absolute() else repo / out
    if pull:
        pull_experiments(repo, pull, revs or [], all_branches or all_commits)
    entries = exp_show(repo, revs or [], all_branches, all_commits, num)
    new = collect(entries, include_workspace)
    previous = load_previous(out)
    records = merge_runs(previous, new, stale_ids(entries, include_workspace))
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "runs.json", {"runs": records})
    sources = ", ".join(revs) if revs else "all branches" if all_branches else "HEAD"
    written = write_report(
        records, out, sources, unfinished(entries), stale(entries, include_workspace)
    )
    new_ids = {r["run_id"] for r in new}
    kept = sum(r["run_id"] not in new_ids for r in records)
    written.update({"collected": len(new), "kept_from_before": kept})
    log.info("report: %d runs (%d collected now) in %s", len(records), len(new), out)
    return written
