"""Queue the standard benchmark: every model in ``sweep.models`` x every ``sweep.categories``.

Why a command rather than one ``dvc exp run --queue -S model=a,b -S ...`` line:
queued experiments run in a temporary copy made from git, so a file git does
not know (a new model module not yet added, a dataset folder that is ignored)
silently drops out of every run, and the runs then fail, or worse, succeed
with the old code. This command refuses to queue while untracked files exist
(or copies them in with ``--copy-untracked``), copies a git-ignored local
``dataset.source`` in explicitly, names runs ``<model>-<category>``, and skips
combinations already run from the same commit so an interrupted sweep resumes.
"""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..dvc_cli import run_dvc
from ..errors import AnomalyError
from ..params import Params

log = logging.getLogger(__name__)


class SweepError(AnomalyError):
    """The sweep cannot be queued as asked (untracked inputs, git or DVC failures)."""


@dataclass(frozen=True)
class Combination:
    model: str
    category: str | None
    dataset: str = "synthetic_fabric"

    @property
    def name(self) -> str:
        label = self.category if self.category is not None else "all"
        return f"{self.model}-{label}".replace("/", "_").replace(" ", "_")

    def set_params(self) -> list[str]:
        """``-S`` arguments. For one-class MNIST the category is the normal digit;
        elsewhere it is quoted so YAML keeps a fabric code like ``"01"`` a string."""
        from ..data.families.registry import get_family

        args = ["-S", f"model={self.model}"]
        if self.category is None:
            return args
        return [*args, *get_family(self.dataset).select(self.category)]


def _git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SweepError(f"{repo}: git {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def untracked_files(repo: Path) -> list[str]:
    """Files git neither tracks nor ignores: exactly what a queued run would lose."""
    out = _git(repo, "ls-files", "--others", "--exclude-standard")
    return [line for line in out.splitlines() if line]


def ignored_source(repo: Path, params: Params) -> str | None:
    """``dataset.source`` when it is a git-ignored path inside the repo (copied with -C)."""
    source = params.dataset.source
    if not source or "://" in source:
        return None
    path = Path(source)
    resolved = (repo / path).resolve() if not path.is_absolute() else path.resolve()
    try:
        relative = resolved.relative_to(repo.resolve())
    except ValueError:
        return None  # outside the repo: the temporary copy sees it at the same path
    proc = subprocess.run(
        ["git", "check-ignore", "-q", str(relative)], cwd=repo, capture_output=True, check=False
    )
    return str(relative) if proc.returncode == 0 and resolved.exists() else None


def run_copies(
    repo: Path, params: Params, untracked: list[str], copy_untracked: bool, runs: str
) -> list[str]:
    """What every queued run must get with ``-C``: the untracked files (refused unless
    ``copy_untracked``: a queued run is built from git and would silently lose them)
    and a git-ignored local ``dataset.source``."""
    if untracked and not copy_untracked:
        shown = ", ".join(untracked[:5]) + (
            f" and {len(untracked) - 5} more" if len(untracked) > 5 else ""
        )
        raise SweepError(
            f"{repo}: untracked files would be missing from {runs}: {shown}; "
            "`git add` them (or ignore them), or pass --copy-untracked"
        )
    copies = list(untracked)
    source = ignored_source(repo, params)
    if source:
        log.info("copying the git-ignored dataset.source %s into every run", source)
        copies.append(source)
    return copies


def known_categories(params: Params) -> list[str]:
    """Every category of the configured dataset, for ``sweep.categories: all``."""
    from ..data.families.registry import get_family

    name = params.dataset.name
    family = get_family(name)
    if family.categories is not None:
        return family.categories(params)
    raise SweepError(
        f"params.yaml: sweep.categories is 'all', but dataset {name!r} has no known "
        "categories; list them"
    )


def combinations(params: Params) -> list[Combination]:
    from ..models.registry import available_models

    cfg = params.sweep
    models = available_models() if cfg.models == "all" else list(cfg.models)
    categories: list[str | None] = (
        list(known_categories(params)) if cfg.categories == "all" else list(cfg.categories)
    ) or [None]
    return [Combination(m, c, params.dataset.name) for m in models for c in categories]


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/n"`` (1 <= i <= n) -> (i, n); None passes through."""
    if text is None:
        return None
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit()) or not 1 <= int(index) <= int(count):
        raise SweepError(f"--shard {text}: expected i/n with 1 <= i <= n, e.g. --shard 2/3")
    return int(index), int(count)


def in_shard(position: int, shard: tuple[int, int] | None) -> bool:
    """Whether the experiment at ``position`` of the sweep's fixed order is this machine's:
    round robin, so every machine gets a mix of models (their run times differ)."""
    return shard is None or position % shard[1] == shard[0] - 1


def worker_threads(jobs: int, cpus: int | None = None) -> int:
    """Torch threads per queue worker so that ``jobs`` workers do not oversubscribe the
    cores: each process defaults to one thread per core, and on 2 cores two workers
    with 2 threads each made small-model training up to 9x slower (measured: the test
    suite's DRAEM training, 184 s oversubscribed vs 20 s with one thread per process)."""
    cpus = cpus or os.cpu_count() or 1
    return max(1, cpus // max(1, jobs))


def existing_names(repo: Path) -> set[str]:
    """Experiment names already made from the current commit."""
    out = run_dvc(repo, "exp", "list", "--name-only")
    return {line.strip() for line in out.splitlines() if line.strip()}


def plan(
    repo: Path,
    params: Params,
    copy_untracked: bool = False,
    rerun: bool = False,
    extra: list[str] | None = None,
    shard: tuple[int, int] | None = None,
) -> list[list[str]]:
    """The ``dvc exp run --queue`` argument lists to run, after the safety checks;
    with ``shard`` (i, n) only every n-th experiment, starting at the i-th."""
    copies = run_copies(repo, params, untracked_files(repo), copy_untracked, "queued runs")
    done = set() if rerun else existing_names(repo)
    commands = []
    for position, combo in enumerate(combinations(params)):
        if not in_shard(position, shard):
            continue
        if combo.name in done:
            log.info(
                "sweep: %s already ran from this commit; skipped (--rerun to repeat)", combo.name
            )
            continue
        args = ["exp", "run", "--queue", "-n", combo.name, *combo.set_params()]
        for setting in extra or []:  # the same extra params for every run
            args += ["-S", setting]
        for path in copies:
            args += ["-C", path]
        if rerun:
            args.append("-f")
        commands.append(args)
    return commands


def sweep(
    repo: str | Path,
    params: Params,
    run: bool = False,
    jobs: int | None = None,
    copy_untracked: bool = False,
    rerun: bool = False,
    dry_run: bool = False,
    extra: list[str] | None = None,
    shard: str | None = None,
) -> list[list[str]]:
    """Queue the sweep (this machine's ``shard`` of it); with ``run``, execute the queue
    and wait for it."""
    repo = Path(repo)
    commands = plan(repo, params, copy_untracked, rerun, extra, parse_shard(shard))
    for args in commands:
        print("dvc " + " ".join(args))
        if not dry_run:
            run_dvc(repo, *args)
    if dry_run:
        return commands
    log.info("sweep: %d experiments queued", len(commands))
    if run and commands:
        workers = jobs or params.sweep.jobs
        env = None
        if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
            threads = worker_threads(workers)
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            log.info("sweep: %d workers, %d torch thread(s) each", workers, threads)
        # Foreground equivalent of `dvc queue start -j N`: returns when the queue is empty.
        run_dvc(repo, "exp", "run", "--run-all", "-j", str(workers), capture=False, env=env)
        failed = failed_runs(repo, params, commands)
        if params.sweep.remote:
            push(repo, params.sweep.remote)
        if failed:
            raise SweepError(
                f"sweep: {len(failed)} of {len(commands)} experiments failed: "
                f"{', '.join(failed)} (`dvc queue logs <name>` says why; the others finished, "
                "and a second `anomaly sweep --run` queues only the missing ones)"
            )
    return commands


def failed_runs(repo: Path, params: Params, commands: list[list[str]]) -> list[str]:
    """The queued runs that did not finish as themselves. Why a check: ``dvc exp run
    --run-all`` exits 0 when a run fails (DVC 3.67), and ``dvc exp show`` lists a failed
    run with its baseline's metrics, so a sweep would otherwise end "successfully" with
    rows that are not what they say."""
    from .report import finished_as, head_experiments

    models = {combo.name: combo.model for combo in combinations(params)}
    found = head_experiments(repo)
    failed = []
    for args in commands:
        name = args[args.index("-n") + 1]
        if not finished_as(found.get(name), models.get(name)):
            failed.append(name)
    return failed


def push(repo: Path, remote: str) -> None:
    """Share this machine's experiments of HEAD: their git refs go to ``remote``, their
    cached outputs (models, scores) to the default DVC remote, so any machine can
    ``anomaly report`` them and ``dvc exp apply`` one with its outputs."""
    log.info("sweep: pushing the experiments of HEAD to %s", remote)
    run_dvc(repo, "exp", "push", remote, "--rev", "HEAD", capture=False)
