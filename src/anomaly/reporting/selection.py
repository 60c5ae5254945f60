"""``anomaly select``: choose the detector for this data without labelled defects.

Why experiments and not a stage: DVC cannot template a stage's deps on another stage's
output, so a stage that "chose" a model would hide the choice from ``dvc.yaml``. Each
candidate (``select.candidates``: a model name, or a model with param overrides) runs
as an ordinary experiment of the current commit (``dvc exp run --queue -n
select-<candidate>-<tag>``, with the same safety as ``anomaly sweep``: no untracked
file silently missing, a git-ignored ``dataset.source`` copied in). Every run writes the
label-free figure (``val_synthetic.*`` in ``metrics/eval.json``: simulated defects on
held-out good images), the candidates are ranked by it, ``reports/selection.md`` shows
the ranking with intervals (and the real test AUROC beside it where the data has
labelled defects), and ``dvc exp apply`` makes the winner the workspace: its
``params.yaml``, metrics, model folder and bundle.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..dvc_cli import run_dvc
from ..errors import AnomalyError, ParamsError
from ..io import write_json, write_text
from ..params import Params
from .report import finished_as
from .report import head_experiments as _experiments
from .sweep import run_copies, untracked_files, worker_threads

log = logging.getLogger(__name__)

RANK_KEY = "val_synthetic.image.auroc"
TIE_KEY = "val_synthetic.pixel.auroc"
PREFIX = "select-"


class SelectError(AnomalyError):
    """The selection cannot run or cannot decide (no candidate produced the figure)."""


@dataclass(frozen=True)
class Candidate:
    """One model with its overrides (``-S`` settings), named for the experiment."""

    model: str
    overrides: dict[str, Any] = field(default_factory=dict)
    label: str | None = None

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        if not self.overrides:
            return self.model
        parts = [f"{k.rsplit('.', 1)[-1]}{v}" for k, v in sorted(self.overrides.items())]
        return "-".join([self.model, *parts]).replace("/", "_").replace(" ", "")

    def set_params(self) -> list[str]:
        args = ["-S", f"model={self.model}"]
        for key, value in sorted(self.overrides.items()):
            args += ["-S", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
        return args


def parse_candidates(entries: list[Any], where: str = "select.candidates") -> list[Candidate]:
    """``select.candidates`` entries: ``"padim"``, or ``{model: patchcore, set:
    {models.patchcore.input_size: 256}, name: patchcore-256}`` (name optional)."""
    from ..models.registry import available_models

    known = set(available_models())
    source = "anomaly select" if where.startswith("--") else "params.yaml"
    out = []
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            entry = {"model": entry}
        if not isinstance(entry, dict) or "model" not in entry:
            raise ParamsError(
                f"{source}: {where}[{i}] must be a model name or a mapping with 'model' "
                "(and optional 'set' and 'name')"
            )
        unknown = set(entry) - {"model", "set", "name"}
        if unknown:
            raise ParamsError(f"{source}: {where}[{i}] has unknown keys {sorted(unknown)}")
        if entry["model"] not in known:
            raise ParamsError(
                f"{source}: {where}[{i}].model is {entry['model']!r}, not a known model "
                f"(known: {', '.join(sorted(known))})"
            )
        overrides = entry.get("set") or {}
        if not isinstance(overrides, dict):
            raise ParamsError(f"{source}: {where}[{i}].set must map param keys to values")
        out.append(Candidate(entry["model"], dict(overrides), entry.get("name")))
    names = [c.name for c in out]
    if len(set(names)) != len(names):
        raise ParamsError(f"{source}: {where} names a candidate twice ({', '.join(names)})")
    if len(out) < 2:
        raise ParamsError(f"{source}: {where} needs at least two candidates to choose from")
    return out


def named_candidates(names: list[str], configured: list[Any]) -> list[Candidate]:
    """``--candidates``: a name the report shows for an entry of ``select.candidates``
    (``patchcore-whole256``) stands for that entry with its settings, so a user can drop
    one candidate by listing the others; any other name is a model with its defaults."""
    from ..models.registry import available_models

    by_name = {
        c.name: entry for c, entry in zip(parse_candidates(configured), configured, strict=True)
    }
    known = set(available_models())
    unknown = [n for n in names if n not in by_name and n not in known]
    if unknown:
        raise ParamsError(
            f"anomaly select: --candidates {', '.join(unknown)}: neither a candidate of "
            f"select.candidates ({', '.join(by_name)}) nor a model "
            f"(known: {', '.join(sorted(known))})"
        )
    return parse_candidates([by_name.get(n, n) for n in names], "--candidates")


def tag(extra: list[str]) -> str:
    """Six hex digits of the user's ``-S`` settings: runs of one commit on other data
    (another category, folder) get other names, and reruns of the same find theirs."""
    return hashlib.sha256("\n".join(sorted(extra)).encode()).hexdigest()[:6]


def experiment_name(candidate: Candidate, extra: list[str]) -> str:
    return f"{PREFIX}{candidate.name}-{tag(extra)}"


PINNED = "score.synthetic_resolution"


def pinned_resolution(params: Params, extra: list[str]) -> str | None:
    """The one resolution every candidate's label-free defects are sized at, to add to
    each candidate's settings; None when the user's ``-S`` already sets it (it travels
    with their settings). Else params.yaml's ``score.synthetic_resolution`` when not
    ``auto``, else the working resolution the user's settings give (``patch.image_size``;
    ``native`` when it is null), never a candidate's own. Why: measured at each
    candidate's working resolution, a candidate that shrinks the images is graded on
    larger defects in image pixels than one that tiles them at full resolution, and
    wins the figure where it finds fewer real defects
    (``evaluation/synthetic.defect_geometry``)."""
    import yaml

    settings = {}
    for item in extra:
        key, _, value = item.partition("=")
        settings[key.strip()] = yaml.safe_load(value)
    if PINNED in settings:
        return None
    if params.score.synthetic_resolution != "auto":
        return str(params.score.synthetic_resolution)
    size = settings.get("patch.image_size", params.patch.image_size)
    return "native" if size is None else str(size)


def plan(
    repo: Path,
    params: Params,
    candidates: list[Candidate],
    extra: list[str],
    copy_untracked: bool = False,
    rerun: bool = False,
) -> list[list[str]]:
    """The ``dvc exp run --queue`` argument lists for the candidates not yet run."""
    outputs = _outputs(repo)
    untracked = [f for f in untracked_files(repo) if not _is_output(f, outputs)]
    copies = run_copies(repo, params, untracked, copy_untracked, "the candidates' runs")
    existing = _existing(repo)
    resolution = pinned_resolution(params, extra)
    commands = []
    for candidate in candidates:
        name = experiment_name(candidate, extra)
        if name in existing and not existing[name] and not rerun:
            log.info("select: %s already ran from this commit; reused", name)
            continue
        args = ["exp", "run", "--queue", "-n", name, *candidate.set_params()]
        for setting in extra:
            args += ["-S", setting]
        if resolution is not None and PINNED not in candidate.overrides:
            args += ["-S", f"{PINNED}={resolution}"]
        for path in copies:
            args += ["-C", path]
        if name in existing:  # a rerun, or a failed run tried again under its name
            args.append("-f")
        commands.append(args)
    return commands


def _outputs(repo: Path) -> list[str]:
    """What the pipeline writes: ``dvc.lock``, the stage outputs it records and the
    top-level metrics of ``dvc.yaml``. A queued run rebuilds or restores those, so an
    untracked one (an applied experiment's results, in a repo whose lock or DVC-written
    ``.gitignore`` files were never committed) is not an input the run would lose."""
    import yaml

    written = ["dvc.lock"]
    lock, pipeline = repo / "dvc.lock", repo / "dvc.yaml"
    if lock.is_file():
        stages = (yaml.safe_load(lock.read_text()) or {}).get("stages") or {}
        written += [
            str(out["path"]).rstrip("/")
            for stage in stages.values()
            for out in stage.get("outs") or []
            if isinstance(out, dict) and "path" in out
        ]
    if pipeline.is_file():
        for entry in (yaml.safe_load(pipeline.read_text()) or {}).get("metrics") or []:
            written.append(str(entry if isinstance(entry, str) else next(iter(entry))))
    return written


def _is_output(path: str, outputs: list[str]) -> bool:
    return any(path == out or path.startswith(out + "/") for out in outputs)


def _existing(repo: Path) -> dict[str, bool]:
    """Names of this commit's experiments -> whether they failed."""
    return {name: info["failed"] for name, info in _experiments(repo).items()}


def rank(records: list[dict]) -> list[dict]:
    """Candidates best first by the label-free image AUROC (ties: its pixel AUROC, then
    the name). Runs without the figure (failed, or a version before it) come last."""

    def key(record: dict) -> tuple:
        main, tie = record.get(RANK_KEY), record.get(TIE_KEY)
        return (
            main is None,
            -(main if main is not None else 0.0),
            -(tie if tie is not None else 0.0),
            str(record["candidate"]),
        )

    return sorted(records, key=key)


def _fmt(value: Any, low: Any = None, high: Any = None) -> str:
    if value is None:
        return "n/a"
    text = f"{value:.3f}"
    if low is not None and high is not None:
        text += f" [{low:.3f}, {high:.3f}]"
    return text


def close_call(ranked: list[dict]) -> str | None:
    """A sentence when the label-free figure does not separate the winner from the
    runner-up (the winner's figure lies inside the runner-up's interval, or the
    runner-up's inside the winner's): the choice between them is then close to a coin
    toss on this data, and the user should know it before trusting it."""
    scored = [r for r in ranked if r.get(RANK_KEY) is not None]
    if len(scored) < 2:
        return None
    first, second = scored[0], scored[1]
    low, high = first.get(RANK_KEY + "_ci_low"), second.get(RANK_KEY + "_ci_high")
    if low is None or high is None or (second[RANK_KEY] < low and first[RANK_KEY] > high):
        return None
    return (
        f"The figure does not separate {first['candidate']} from {second['candidate']}: "
        "one's figure lies inside the other's 95% interval, so on this data the "
        "ranking between them is uncertain; prefer the cheaper one (train s), or compare "
        "them on a few labelled defects if you have any."
    )


# Below this many good validation images the label-free figure's intervals are wide (4
# images and 24 simulated defects: about +/- 0.1) and candidates often tie outright.
FEW_GOOD = 20


def few_good(ranked: list[dict]) -> str | None:
    """A sentence when the figure rests on few good validation images: its image AUROC
    compares each simulated defect with every good validation image, so with a handful
    of them it moves in coarse steps and the user should know why candidates tie."""
    counts = [r.get("val_synthetic.n_good") for r in ranked]
    counts = [int(c) for c in counts if isinstance(c, (int, float))]
    if not counts or min(counts) >= FEW_GOOD:
        return None
    return (
        f"The figure rests on {min(counts)} good validation images (`split.val_fraction` "
        "of the good training images), so it moves in coarse steps and its intervals are "
        f"wide; with {FEW_GOOD} or more it separates candidates better: add good images, "
        "or raise `split.val_fraction` if you can spare them from training."
    )


def report_markdown(
    ranked: list[dict], extra: list[str], applied: str | None, failed: list[str] | None = None
) -> str:
    """``reports/selection.md``: the ranking, with intervals and train seconds; the real
    test AUROC beside the label-free one where the data has labelled test defects."""
    labelled = any(r.get("image.auroc") is not None for r in ranked)
    header = "| rank | candidate | label-free image AUROC | label-free pixel AUROC |"
    rule = "|---|---|---|---|"
    if labelled:
        header += " test image AUROC (labelled defects) |"
        rule += "---|"
    header += " train s | experiment |"
    rule += "---|---|"
    lines = [
        "# Model selection",
        "",
        "Ranked by the label-free figure: each candidate's image AUROC of held-out good "
        "validation images against copies with a simulated defect (foreign texture, stain, "
        "scratch, smear, hole, and on colour images a colour shift; `val_synthetic.*`), "
        "95% bootstrap intervals. The defects are sized alike for every candidate "
        f"(`{PINNED}`, the same in each experiment), whatever size it resizes the images to.",
        "",
        f"Settings: {' '.join(extra) if extra else '(params.yaml as committed)'}",
        "",
        header,
        rule,
    ]
    for i, r in enumerate(ranked, start=1):
        row = (
            f"| {i} | {r['candidate']} | "
            f"{_fmt(r.get(RANK_KEY), r.get(RANK_KEY + '_ci_low'), r.get(RANK_KEY + '_ci_high'))} | "
            f"{_fmt(r.get(TIE_KEY), r.get(TIE_KEY + '_ci_low'), r.get(TIE_KEY + '_ci_high'))} |"
        )
        if labelled:
            row += f" {_fmt(r.get('image.auroc'), r.get('image.auroc_ci_low'), r.get('image.auroc_ci_high'))} |"
        seconds = r.get("seconds")
        row += f" {seconds:.0f} |" if isinstance(seconds, (int, float)) else " n/a |"
        row += f" {r['experiment']} |"
        lines.append(row)
    lines.append("")
    for note in (close_call(ranked), few_good(ranked)):
        if note:
            lines += [note, ""]
    if failed:
        lines += [f"Failed, not ranked: {', '.join(failed)}.", ""]
    if applied:
        lines.append(f"Applied to the workspace: **{applied}** (`dvc exp apply`).")
    else:
        lines.append("Not applied (--no-apply): `dvc exp apply <experiment>` applies one.")
    if labelled:
        lines += [
            "",
            "The test AUROC needs labelled defects and played no part in the choice; it is "
            "shown to check the label-free ranking where labels exist.",
        ]
    return "\n".join(lines) + "\n"


def collect(repo: Path, candidates: dict[str, Candidate]) -> tuple[list[dict], list[str]]:
    """The finished candidates' flat metrics (experiment name -> candidate in
    ``candidates``), and the names of those that failed. A run counts as finished only
    when its ``metrics/eval.json`` is its own (the candidate's model): DVC lists a failed
    run with the metrics of its baseline, which must never be ranked."""
    found = _experiments(repo)
    records, failed = [], []
    for name, candidate in candidates.items():
        info = found.get(name)
        if not finished_as(info, candidate.model):
            failed.append(candidate.name)
            continue
        records.append(
            {
                **info["eval"],
                "rev": info.get("rev"),
                "seconds": info["seconds"],
                "candidate": candidate.name,
                "experiment": name,
            }
        )
    return records, failed


def ensure_cached(repo: Path) -> None:
    """Queued runs start from the commit and restore the stages they share with it from
    the DVC cache; in a fresh clone the cache is empty and those runs fail ("failed to
    load directory"). ``dvc repro`` first fills it (a no-op when up to date), as
    ``make sweep`` does."""
    out = run_dvc(repo, "status", "--json")
    try:
        changed = json.loads(out or "{}")
    except json.JSONDecodeError:
        changed = True
    if changed:
        log.info(
            "select: the pipeline's outputs are not all in the DVC cache (a fresh clone?); "
            "`dvc repro` first so the candidates' runs can restore the stages they share"
        )
        run_dvc(repo, "repro", capture=False)


def apply_experiment(repo: Path, name: str, rev: str | None) -> None:
    """``dvc exp apply`` the winner, then delete the git-tracked files its commit
    deleted. Why: DVC 3.67's apply restores changed and added files but leaves files the
    experiment removed (measured: a PaDiM run applied over a CAE workspace kept the CAE's
    per-epoch loss files in ``metrics/train/plots``, so ``dvc status`` reported the train
    and plot stages modified)."""
    run_dvc(repo, "exp", "apply", name, capture=False)
    if not rev:
        return
    import subprocess

    proc = subprocess.run(
        ["git", "diff", "--name-only", "--diff-filter=D", "HEAD", rev],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SelectError(f"{repo}: git diff HEAD {rev} failed: {proc.stderr.strip()}")
    for relative in proc.stdout.splitlines():
        target = repo / relative
        if target.is_file():
            target.unlink()
            log.info("select: removed %s (the applied run deleted it)", relative)


def select(
    repo: str | Path,
    params: Params,
    extra: list[str] | None = None,
    candidates: list[str] | None = None,
    jobs: int | None = None,
    apply: bool = True,
    copy_untracked: bool = False,
    rerun: bool = False,
    dry_run: bool = False,
    out_dir: str | Path = "reports",
) -> list[dict]:
    """Run every candidate as an experiment, rank by the label-free figure, write
    ``reports/selection.{md,json}`` and (``apply``) ``dvc exp apply`` the winner."""
    repo = Path(repo)
    extra = list(extra or [])
    configured = params.select.candidates
    chosen = (
        named_candidates(candidates, configured) if candidates else parse_candidates(configured)
    )
    commands = plan(repo, params, chosen, extra, copy_untracked, rerun)
    if commands and not dry_run:
        ensure_cached(repo)
    for args in commands:
        print("dvc " + " ".join(args))
        if not dry_run:
            run_dvc(repo, *args)
    if dry_run:
        return []
    if commands:
        workers = jobs or params.select.jobs
        env = None
        if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
            env = {**os.environ, "OMP_NUM_THREADS": str(worker_threads(workers))}
        log.info("select: running %d candidate(s), %d worker(s)", len(commands), workers)
        run_dvc(repo, "exp", "run", "--run-all", "-j", str(workers), capture=False, env=env)
    records, failed = collect(repo, {experiment_name(c, extra): c for c in chosen})
    for name in failed:
        log.warning(
            "select: candidate %s failed (see `dvc exp show`, `dvc queue logs <name>`); "
            "ranked without it",
            name,
        )
    ranked = rank(records)
    if not ranked or ranked[0].get(RANK_KEY) is None:
        raise SelectError(
            "select: no candidate finished with the label-free figure "
            f"(val_synthetic.image.auroc){'; failed: ' + ', '.join(failed) if failed else ''}"
        )
    winner = ranked[0]
    out = repo / out_dir
    applied = None
    if apply:
        apply_experiment(repo, winner["experiment"], winner.get("rev"))
        applied = winner["candidate"]
    write_text(out / "selection.md", report_markdown(ranked, extra, applied, failed))
    write_json(
        out / "selection.json",
        {"settings": extra, "applied": applied, "ranking": ranked, "failed": failed},
    )
    log.info(
        "select: %s wins (label-free image AUROC %s)%s; reports/selection.md",
        winner["candidate"],
        _fmt(
            winner.get(RANK_KEY),
            winner.get(RANK_KEY + "_ci_low"),
            winner.get(RANK_KEY + "_ci_high"),
        ),
        ", applied to the workspace" if applied else "",
    )
    return ranked
