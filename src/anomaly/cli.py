"""Command line: ``anomaly <stage>`` runs one pipeline stage; user errors print one line.

Exit codes: 0 success, 2 a user error (message names the file or key),
130 interrupted. Anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .stages.common import run_guarded


def run_stage(name: str, params_path: str | Path = "params.yaml") -> None:
    from .params import load_params
    from .pipeline import run_stage as run_in_process

    run_in_process(name, load_params(params_path))


def _examples(params_path: str, out: str) -> None:
    from .data.manifest import read_manifest
    from .params import load_params
    from .paths import manifest
    from .plots import dataset_examples_figure

    params = load_params(params_path)
    dataset_examples_figure(read_manifest(manifest(params.dataset.name)), Path(out))


def main(argv: list[str] | None = None) -> int:
    from . import __version__
    from .pipeline import STAGES, describe

    # --params, -v and -q work before and after the subcommand.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--params",
        default=argparse.SUPPRESS,
        help="params file (default: params.yaml)",
    )
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS)
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS)
    parser = argparse.ArgumentParser(prog="anomaly", description=__doc__, parents=[common])
    parser.add_argument("--version", action="version", version=f"anomaly {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in STAGES:
        what = describe(name)
        sub.add_parser(name, help=what, description=what, parents=[common])
    examples = sub.add_parser(
        "examples", help="draw example rolls of the dataset (README figure)", parents=[common]
    )
    examples.add_argument("--out", default="docs/dataset_examples.png")
    predict = sub.add_parser(
        "predict", help="score a folder of new images with the trained model", parents=[common]
    )
    predict.add_argument("images", help="folder of images (searched recursively)")
    predict.add_argument("--out", default="predictions", help="output folder")
    predict.add_argument(
        "--checkpoint", default=None, help="model.pt (default: models/<model>/model.pt)"
    )
    predict.add_argument(
        "--group",
        default=None,
        help="fabric code or category whose score normalisation to use "
        "(required when the model was scored on several groups)",
    )
    rep = sub.add_parser(
        "report",
        help="collect experiments and branches into reports/ (CSV, markdown, figures)",
        parents=[common],
    )
    rep.add_argument("--out", default="reports", help="report folder (default: %(default)s)")
    rep.add_argument(
        "--rev", action="append", default=[], help="baseline branch/commit (repeatable; HEAD)"
    )
    rep.add_argument("-a", "--all-branches", action="store_true", help="every branch tip")
    rep.add_argument("-A", "--all-commits", action="store_true", help="every commit")
    rep.add_argument("-n", "--num", type=int, default=1, help="commits back from each --rev")
    rep.add_argument("--workspace", action="store_true", help="also the uncommitted workspace")
    swp = sub.add_parser(
        "sweep", help="queue every sweep.models x sweep.categories experiment", parents=[common]
    )
    swp.add_argument("--run", action="store_true", help="run the queue and wait for it")
    swp.add_argument("-j", "--jobs", type=int, default=None, help="workers (default: sweep.jobs)")
    swp.add_argument("--dry-run", action="store_true", help="print the dvc commands only")
    swp.add_argument(
        "--copy-untracked", action="store_true", help="copy untracked files into each run"
    )
    swp.add_argument("--rerun", action="store_true", help="repeat runs made from this commit")
    swp.add_argument(
        "-S",
        "--set-param",
        action="append",
        default=[],
        help="extra param for every run, e.g. -S dataset.name=mvtec (repeatable)",
    )
    args = parser.parse_args(argv)
    args.params = getattr(args, "params", "params.yaml")
    level = (
        logging.DEBUG
        if getattr(args, "verbose", False)
        else logging.WARNING
        if getattr(args, "quiet", False)
        else logging.INFO
    )
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    return run_guarded(lambda: _dispatch(args))


def _checked_params(path: str):
    from .models.registry import check_model_params
    from .params import load_params

    params = load_params(path)
    check_model_params(params, "all")
    return params


def _dispatch(args: argparse.Namespace) -> None:
    if args.command == "examples":
        _examples(args.params, args.out)
    elif args.command == "predict":
        from .predict import predict_folder

        frame = predict_folder(
            _checked_params(args.params), args.images, args.out, args.checkpoint, args.group
        )
        print(frame.to_string(index=False))
    elif args.command == "report":
        from .report import report

        written = report(
            ".",
            args.out,
            args.rev,
            args.all_branches,
            args.all_commits,
            args.num,
            args.workspace,
        )
        print(
            f"{args.out}: {written['runs']} runs ({written['collected']} collected now); "
            f"{', '.join(written['files'])}"
        )
    elif args.command == "sweep":
        from .sweep import sweep

        sweep(
            ".",
            _checked_params(args.params),
            args.run,
            args.jobs,
            args.copy_untracked,
            args.rerun,
            args.dry_run,
            args.set_param,
        )
    else:
        run_stage(args.command, args.params)


if __name__ == "__main__":
    sys.exit(main())
