"""Stage explore: the dataset before training -> ``plots/explore/`` and ``data/explore/``."""

from __future__ import annotations

from .. import paths
from ..data.manifest import dataset_info, read_manifest
from ..data.splitting import SPLITS
from ..io import atomic_dir, read_csv, write_csv, write_json
from ..params import Params
from ..reporting import explore
from .common import split_tiles


def run(params: Params) -> None:
    """Examples per class, defect sizes, grey levels, class balance per split."""
    raw = paths.RAW / params.dataset.name
    manifest = read_manifest(paths.manifest(params.dataset.name))
    info = dataset_info(raw)
    images = read_csv(paths.PATCHES / "images.csv", required=["image_id", "label"])
    image_label = images.set_index("image_id")["label"]
    splits = {}
    for name in SPLITS:
        tiles = split_tiles(name)
        splits[name] = tiles.assign(image_label=tiles["image_id"].map(image_label))
    balance = explore.class_balance(splits)
    dpi, cfg = params.plot.dpi, params.explore
    summary = explore.dataset_summary(params.dataset.name, manifest, balance)
    with atomic_dir(paths.EXPLORE) as tmp:
        explore.class_balance_figure(balance, tmp / "class_balance.png", dpi)
        stats = None
        if info["kind"] == "tabular":
            table = read_csv(raw / "table.csv", required=["label"])
            explore.feature_histogram_figure(table, info["features"], tmp / "features.png", dpi)
        else:
            mode = "RGB" if info["channels"] == 3 else "L"
            explore.examples_figure(manifest, cfg, mode, params.seed, tmp / "examples.png", dpi)
            stats = explore.defect_statistics(manifest)
            explore.defect_size_figure(stats, tmp / "defect_sizes.png", dpi)
            samples = explore.intensity_samples(manifest, cfg.intensity_samples, params.seed)
            explore.intensity_figure(samples, tmp / "intensity.png", dpi)
            summary["defect_pixels_by_type"] = explore.defect_pixel_summary(stats)
            summary["mean_intensity"] = {k: float(v.mean()) for k, v in samples.items()}
    # Tables apart from the figures: `dvc plots` would try to chart any JSON/CSV it finds.
    with atomic_dir(paths.EXPLORE_DATA) as tmp:
        write_json(tmp / "summary.json", summary)
        if stats is not None:
            write_csv(tmp / "defects.csv", stats)
