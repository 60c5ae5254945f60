"""Command line: ``anomaly <stage>`` runs one pipeline stage; user errors print one line.

Exit codes: 0 success, 2 a user error (message names the file or key),
130 interrupted. Anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .logging_utils import setup_logging
from .stages.common import run_guarded


def run_stage(name: str, params_path: str | Path = "params.yaml") -> None:
    from .params import load_params
    from .pipeline import run_stage as run_in_process

    run_in_process(name, load_params(params_path))


def _examples(params_path: str, out: str) -> None:
    from .data.manifest import read_manifest
    from .params import load_params
    from .paths import manifest
    from .reporting.plots import dataset_examples_figure

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
        stage = sub.add_parser(name, help=what, description=what, parents=[common])
        if name == "export":  # the stage, or a bundle / ONNX file written elsewhere
            stage.add_argument(
                "--out", default=None, help="write here instead of models/<model>.bundle"
            )
            stage.add_argument(
                "--format",
                choices=("bundle", "onnx"),
                default="bundle",
                help="bundle (default; predict and load_detector read it) or onnx "
                "(the tile scorer as an ONNX graph, preprocessing and thresholds as metadata)",
            )
            stage.add_argument(
                "--model",
                default=None,
                help="bundle to convert with --format onnx (default: the active model's)",
            )
    examples = sub.add_parser(
        "examples", help="draw example rolls of the dataset (README figure)", parents=[common]
    )
    examples.add_argument("--out", default="docs/dataset_examples.png")
    predict = sub.add_parser(
        "predict",
        help="score new images with a trained model's bundle (no project files needed)",
        description="Score images with a bundle: writes predictions.csv and, per image, "
        "<path>_map.npy, <path>_mask.png and <path>_overlay.png, keeping relative paths.",
        parents=[common],
    )
    predict.add_argument("images", nargs="+", help="image files or folders (searched recursively)")
    predict.add_argument("--out", default="predictions", help="output folder")
    predict.add_argument(
        "--model",
        default=None,
        help="a bundle (.bundle); default: models/<model>.bundle of the active pipeline model",
    )
    predict.add_argument(
        "--group",
        default=None,
        help="fabric code or category whose score normalisation to use (default: read from "
        "the file name where the dataset family defines it, or the model's only group)",
    )
    predict.add_argument("--no-overlays", action="store_true", help="skip the overlay PNGs")
    predict.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
    srv = sub.add_parser(
        "serve",
        help="serve a bundle over HTTP: /predict, /model, /health, /metrics and a page at /",
        description="Serve a trained model's bundle over HTTP (FastAPI + uvicorn): POST "
        "images to /predict as multipart field 'files'; open / in a browser to drop images.",
        parents=[common],
    )
    srv.add_argument(
        "--model",
        default=None,
        help="a bundle (.bundle); default: models/<model>.bundle of the active pipeline model",
    )
    srv.add_argument("--host", default="127.0.0.1", help="interface (default: 127.0.0.1)")
    srv.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    srv.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
    srv.add_argument(
        "--max-bytes", type=int, default=64 * 2**20, help="largest upload per file (bytes)"
    )
    srv.add_argument("--max-files", type=int, default=64, help="most files per request")
    srv.add_argument(
        "--max-pending",
        type=int,
        default=64,
        help="requests admitted at once (scoring + queued); more are answered 503",
    )
    srv.add_argument(
        "--timeout", type=float, default=120.0, help="seconds a request may wait and run (504)"
    )
    srv.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes, each with a copy of the model and cores/workers threads "
        "(default: 1; 2 on a 2-core CPU measured 1.2x the throughput of predict in process)",
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
    rep.add_argument(
        "--pull",
        default=None,
        metavar="GIT_REMOTE",
        help="first pull the experiments pushed there (default: sweep.remote; 'none': do not)",
    )
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
        "--shard",
        default=None,
        metavar="I/N",
        help="queue only this machine's share: every N-th experiment from the I-th "
        "(several machines, one shared git and DVC remote; see README, Scaling out)",
    )
    swp.add_argument(
        "-S",
        "--set-param",
        action="append",
        default=[],
        help="extra param for every run, e.g. -S dataset.name=mvtec (repeatable)",
    )
    sel = sub.add_parser(
        "select",
        help="run select.candidates as experiments, rank them by the label-free figure "
        "(val_synthetic.*) and apply the winner",
        parents=[common],
    )
    sel.add_argument(
        "-S",
        "--set-param",
        action="append",
        default=[],
        help="param for every candidate, e.g. -S dataset.name=mvtec (repeatable)",
    )
    sel.add_argument(
        "--candidates",
        nargs="+",
        default=None,
        help="candidates by name: a select.candidates entry (patchcore-whole256) or a model (default: all of select.candidates)",
    )
    sel.add_argument("-j", "--jobs", type=int, default=None, help="workers (default: select.jobs)")
    sel.add_argument("--no-apply", action="store_true", help="rank only; leave the workspace")
    sel.add_argument("--dry-run", action="store_true", help="print the dvc commands only")
    sel.add_argument(
        "--copy-untracked", action="store_true", help="copy untracked files into each run"
    )
    sel.add_argument("--rerun", action="store_true", help="repeat runs made from this commit")
    args = parser.parse_args(argv)
    args.params = getattr(args, "params", "params.yaml")
    level = (
        logging.DEBUG
        if getattr(args, "verbose", False)
        else logging.WARNING
        if getattr(args, "quiet", False)
        else logging.INFO
    )
    setup_logging(level)
    return run_guarded(lambda: _dispatch(args))


def _checked_params(path: str):
    from .models.registry import check_model_params
    from .params import load_params

    params = load_params(path)
    check_model_params(params, "all")
    return params


def _bundle_arg(args: argparse.Namespace) -> str:
    """``--model``, or the active pipeline model's bundle (the only use of params.yaml)."""
    if args.model:
        return args.model
    from .inference.bundle import bundle_path
    from .params import load_params

    return str(bundle_path(load_params(args.params).model))


def _pull_remote(args: argparse.Namespace) -> str | None:
    """``report --pull``, else ``sweep.remote`` from the params file when there is one."""
    if args.pull:
        return None if args.pull == "none" else args.pull
    if not Path(args.params).is_file():
        return None
    from .params import load_params

    return load_params(args.params).sweep.remote


def _dispatch(args: argparse.Namespace) -> None:
    if args.command == "examples":
        _examples(args.params, args.out)
    elif args.command == "predict":
        from .inference.detector import load_detector
        from .inference.predict import predict_images

        detector = load_detector(_bundle_arg(args), args.device)
        frame = predict_images(detector, args.images, args.out, args.group, not args.no_overlays)
        print(frame.to_string(index=False))
    elif args.command == "serve":
        from .errors import ParamsError
        from .inference.serve import ServeSettings, serve

        for flag in ("max_bytes", "max_files", "max_pending", "timeout", "workers"):
            if getattr(args, flag) <= 0:
                raise ParamsError(f"--{flag.replace('_', '-')}: must be positive")
        settings = ServeSettings(args.max_bytes, args.max_files, args.max_pending, args.timeout)
        serve(_bundle_arg(args), args.host, args.port, args.device, settings, args.workers)
    elif args.command == "export" and (args.out or args.format != "bundle" or args.model):
        from .inference.export import export

        written = export(_bundle_arg(args), args.format, args.out, args.params)
        print(f"{written}: written")
    elif args.command == "report":
        from .reporting.report import report

        written = report(
            ".",
            args.out,
            args.rev,
            args.all_branches,
            args.all_commits,
            args.num,
            args.workspace,
            _pull_remote(args),
        )
        print(
            f"{args.out}: {written['runs']} runs ({written['collected']} collected now); "
            f"{', '.join(written['files'])}"
        )
    elif args.command == "sweep":
        from .reporting.sweep import sweep

        sweep(
            ".",
            _checked_params(args.params),
            args.run,
            args.jobs,
            args.copy_untracked,
            args.rerun,
            args.dry_run,
            args.set_param,
            args.shard,
        )
    elif args.command == "select":
        from .reporting.selection import select

        select(
            ".",
            _checked_params(args.params),
            args.set_param,
            args.candidates,
            args.jobs,
            not args.no_apply,
            args.copy_untracked,
            args.rerun,
            args.dry_run,
        )
    else:
        run_stage(args.command, args.params)


if __name__ == "__main__":
    sys.exit(main())
