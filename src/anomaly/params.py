"""The typed view of params.yaml.

Every stage loads the whole file through :func:`load_params`, so a typo or a
wrong type anywhere fails fast with the key's name, before any work is done.
Model blocks are validated against the model's own config class by
``models.registry.check_model_params`` (the stages that use a model, and the
CLI), so adding a model never touches this file and no other stage imports
model code.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml

from .config_schema import build, require
from .errors import ParamsError

DEFECT_KINDS = (
    "broken_end",
    "broken_pick",
    "fuzzyball",
    "contamination",
    "crease",
    "knots",
    "nep",
)
FABRIC_KINDS = ("plain", "twill", "irregular", "satin")


def _default_contrast() -> dict[str, list[float]]:
    return {
        "broken_end": [0.2, 0.5],
        "broken_pick": [0.2, 0.5],
        "fuzzyball": [0.2, 0.5],
        "contamination": [0.1, 0.25],
        "crease": [0.1, 0.25],
        "knots": [0.25, 0.55],
        "nep": [0.25, 0.55],
    }


@dataclass
class SyntheticFabricConfig:
    """Size and difficulty of the generated AITEX-like rolls."""

    ZERO_OK: ClassVar[tuple[str, ...]] = ("n_defect",)

    n_good: int = 240
    n_defect: int = 120
    width: int = 512
    height: int = 128
    fabrics: list[str] = field(default_factory=lambda: ["plain", "twill", "irregular"])
    defects: list[str] = field(default_factory=lambda: list(DEFECT_KINDS))
    defects_per_image: list[int] = field(default_factory=lambda: [1, 2])
    contrast: dict[str, list[float]] = field(default_factory=_default_contrast)
    noise: float = 0.03

    def validate(self, where: str, source: str) -> None:
        require(self.n_good >= 1, source, f"{where}.n_good", "must be at least 1")
        require(self.n_defect >= 0, source, f"{where}.n_defect", "must be >= 0")
        require(self.width >= 32 and self.height >= 32, source, where, "rolls must be >= 32 px")
        for name in self.fabrics:
            require(
                name in FABRIC_KINDS,
                source,
                f"{where}.fabrics",
                f"has unknown fabric {name!r} (known: {', '.join(FABRIC_KINDS)})",
            )
        require(bool(self.fabrics), source, f"{where}.fabrics", "must not be empty")
        for name in self.defects:
            require(
                name in DEFECT_KINDS,
                source,
                f"{where}.defects",
                f"has unknown defect {name!r} (known: {', '.join(DEFECT_KINDS)})",
            )
        lo_hi = self.defects_per_image
        require(
            len(lo_hi) == 2 and 1 <= lo_hi[0] <= lo_hi[1],
            source,
            f"{where}.defects_per_image",
            "must be [min, max] with 1 <= min <= max",
        )
        for name, pair in self.contrast.items():
            require(
                name in DEFECT_KINDS, source, f"{where}.contrast.{name}", "is not a defect kind"
            )
            require(
                len(pair) == 2 and 0 < pair[0] <= pair[1] <= 1,
                source,
                f"{where}.contrast.{name}",
                "must be [low, high] with 0 < low <= high <= 1",
            )
        require(0 <= self.noise < 0.5, source, f"{where}.noise", "must be in [0, 0.5)")


@dataclass
class TabularConfig:
    """A CSV's label column, or the synthetic table's shape (when dataset.source is null)."""

    ZERO_OK: ClassVar[tuple[str, ...]] = ("n_anomalies",)
    SIGNED: ClassVar[tuple[str, ...]] = ("shift",)
    POSITIVE: ClassVar[tuple[str, ...]] = ("spread",)

    label_column: str | None = "label"
    n_normal: int = 1000
    n_anomalies: int = 50
    dims: int = 10
    shift: float = 2.0
    spread: float = 2.0


@dataclass
class DatasetConfig:
    ZERO_OK: ClassVar[tuple[str, ...]] = ("normal_class",)
    name: str = "synthetic_fabric"
    category: str | list[str] | None = None
    source: str | None = None
    normal_class: int = 0
    cache_dir: str | None = None
    on_bad_file: Literal["error", "skip"] = "error"
    synthetic: SyntheticFabricConfig = field(default_factory=SyntheticFabricConfig)
    tabular: TabularConfig = field(default_factory=TabularConfig)

    def validate(self, where: str, source: str) -> None:
        from .data.families.registry import available_families

        known = available_families()  # module names only: no family code is imported
        require(
            self.name in known,
            source,
            f"{where}.name",
            f"is {self.name!r}, not a known dataset (known: {', '.join(known)})",
        )

    @property
    def categories(self) -> list[str] | None:
        if self.category is None:
            return None
        return [self.category] if isinstance(self.category, str) else list(self.category)


@dataclass
class PatchConfig:
    # "side", not "size": DVC's run-cache key drops every key named size or nfiles
    # (DVC issue 10296), so `-S patch.size=32` silently reused 64-px tiles.
    RENAMED: ClassVar[dict[str, str]] = {
        "size": "side (DVC's run-cache ignores keys named size, DVC issue 10296)"
    }
    # "auto": the largest square tile that fits every image, at most auto_side_max; a
    # tile smaller than an image overlaps its neighbours by half (resolve_tiling)
    side: int | Literal["auto"] = 64
    # "auto": the side itself (no overlap) for a fixed side, half of it for side: auto
    stride: int | Literal["auto"] = 64
    auto_side_max: int = 256
    resize: int | None = None
    image_size: int | None = None
    min_defect_pixels: int = 16
    blank_std: float = 1.0
    # [low, high]: what deep (16/32-bit, float) pixel values mean, mapped to 0..255
    # (a 12-bit camera in 16-bit files: [0, 4095]); null: the file's own bit depth
    intensity_range: list[float] | None = None

    def validate(self, where: str, source: str) -> None:
        require(
            self.intensity_range is None
            or (
                len(self.intensity_range) == 2
                and all(isinstance(v, (int, float)) for v in self.intensity_range)
                and self.intensity_range[0] < self.intensity_range[1]
            ),
            source,
            f"{where}.intensity_range",
            "must be null or [low, high] with low < high",
        )
        require(self.side == "auto" or self.side >= 8, source, f"{where}.side", "must be >= 8")
        require(self.auto_side_max >= 8, source, f"{where}.auto_side_max", "must be >= 8")
        require(
            self.stride == "auto" or self.stride >= 1, source, f"{where}.stride", "must be >= 1"
        )
        require(
            self.side != "auto" or self.stride == "auto",
            source,
            f"{where}.stride",
            f"is {self.stride}, but {where}.side is auto: the tile side follows the images, "
            "so a fixed stride could skip pixels; set it to auto (half the side)",
        )
        require(
            self.side == "auto" or self.stride == "auto" or self.stride <= self.side,
            source,
            f"{where}.stride",
            f"is {self.stride}, larger than {where}.side {self.side}: pixels between "
            "tiles would never be scored; use a stride <= the tile side",
        )
        require(
            self.resize is None or self.resize >= 8,
            source,
            f"{where}.resize",
            "must be null or >= 8",
        )
        require(self.min_defect_pixels >= 1, source, f"{where}.min_defect_pixels", "must be >= 1")
        require(
            self.image_size is None or self.image_size >= 8,
            source,
            f"{where}.image_size",
            "must be null or >= 8",
        )
        require(self.blank_std >= 0, source, f"{where}.blank_std", "must be >= 0")

    @property
    def out_size(self) -> int:
        if self.side == "auto":
            raise ValueError("patch.side is auto: resolve it with resolve_tiling first")
        return self.resize or self.side

    def resolve_tiling(self, sizes: list[tuple[int, int]]) -> PatchConfig:
        """This config with ``side`` and ``stride`` as numbers, for images of ``sizes``
        (height, width).

        ``side: auto`` is the shorter side of the smallest image (after ``image_size``),
        capped at ``auto_side_max``: images up to that size are one whole-image tile
        at their own resolution (a feature model sees all the context there is), and
        larger ones are cut into tiles that overlap by half, so every pixel also lies
        well inside some tile. No image is stretched, as it would be if it were smaller
        than the tile. ``stride: auto`` is the side itself for a fixed side (no
        overlap), half of it for ``side: auto``.
        """
        side, stride = self.side, self.stride
        if side == "auto":
            if self.image_size:
                shortest = self.image_size
            else:
                shortest = min((min(h, w) for h, w in sizes), default=self.auto_side_max)
            side = max(8, min(self.auto_side_max, shortest))
            stride = max(1, side // 2)
        elif stride == "auto":
            stride = side
        return replace(self, side=side, stride=stride)


@dataclass
class SplitConfig:
    val_fraction: float = 0.15
    test_good_fraction: float = 0.5
    labeled_val_fraction: float = 0.0

    def validate(self, where: str, source: str) -> None:
        require(0 < self.val_fraction < 1, source, f"{where}.val_fraction", "must be in (0, 1)")
        require(
            0 <= self.test_good_fraction < 1,
            source,
            f"{where}.test_good_fraction",
            "must be in [0, 1)",
        )
        require(
            self.val_fraction + self.test_good_fraction < 1,
            source,
            where,
            "val_fraction + test_good_fraction must leave good images for training",
        )
        require(
            0 <= self.labeled_val_fraction < 1,
            source,
            f"{where}.labeled_val_fraction",
            "must be in [0, 1)",
        )


@dataclass
class TrainConfig:
    ZERO_OK: ClassVar[tuple[str, ...]] = ("min_steps_per_epoch",)  # 0: plain passes
    epochs: int = 15
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 8
    device: str = "auto"
    # Mixed precision on CUDA, off by default: on an H100 with 64-px tiles in batches
    # of 64 these small networks trained slower with it (fp32 with cuDNN's TF32 was
    # 1.06 to 2.9 times faster for 7 of 8 models; benchmarks/results/bench_models_h100.jsonl).
    amp: bool = False
    max_train_patches: int | None = None
    min_steps_per_epoch: int = 20
    # large sets: an epoch is at most this many batches, walking on through the tiles
    # from epoch to epoch (gradient-trained models; null: a full pass per epoch)
    max_steps_per_epoch: int | None = None
    distributed: bool = False
    processes: int | Literal["auto"] = "auto"
    resident_store: bool | Literal["auto"] = "auto"
    compile: bool = False

    def validate(self, where: str, source: str) -> None:
        require(self.epochs >= 1, source, f"{where}.epochs", "must be >= 1")
        require(self.batch_size >= 1, source, f"{where}.batch_size", "must be >= 1")
        require(self.lr > 0, source, f"{where}.lr", "must be > 0")
        require(self.patience >= 1, source, f"{where}.patience", "must be >= 1")
        require(
            self.max_steps_per_epoch is None
            or self.max_steps_per_epoch >= max(1, self.min_steps_per_epoch),
            source,
            f"{where}.max_steps_per_epoch",
            f"must be null or >= train.min_steps_per_epoch ({self.min_steps_per_epoch})",
        )
        require(
            self.processes == "auto" or self.processes >= 1,
            source,
            f"{where}.processes",
            "must be auto or >= 1",
        )
        ok = self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")
        require(
            ok, source, f"{where}.device", f"must be auto, cpu, cuda or cuda:N, got {self.device!r}"
        )


@dataclass
class ScoreConfig:
    map: Literal["mse", "ssim", "mse_ssim"] = "mse"
    ssim_window: int = 7
    # "auto": the dataset family's value (see scoring.resolve_score), written to
    # scores/<model>/score_settings.json and metrics/eval.json so every run says what ran
    smooth_sigma: float | Literal["auto"] = "auto"
    normalize: Literal["none", "group"] = "group"
    patch_reduce: Literal["max", "mean", "topk_mean", "auto"] = "auto"
    patch_top_fraction: float = 0.01
    aggregate: Literal["max", "mean", "topk_mean"] = "max"
    aggregate_k: int = 3
    batch_size: int = 128
    # the label-free figure (val_synthetic.* in metrics/eval.json): simulated defects per
    # good validation image, drawn from `seed` (evaluation/synthetic.py)
    synthetic_per_image: int = 6
    # the image side at which the figure's defects are sized (64 px there, never finer
    # than the image's own pixels): auto = patch.image_size (the run's working images),
    # native = the images' own, N = N px. `anomaly select` pins it for every candidate,
    # so candidates that resize the images differently are graded on the same defects
    synthetic_resolution: int | Literal["auto", "native"] = "auto"

    def validate(self, where: str, source: str) -> None:
        require(
            self.synthetic_per_image >= 1,
            source,
            f"{where}.synthetic_per_image",
            "must be >= 1 (the label-free figure needs simulated defects)",
        )
        require(
            self.synthetic_resolution in ("auto", "native")
            or (
                isinstance(self.synthetic_resolution, int)
                and not isinstance(self.synthetic_resolution, bool)
                and self.synthetic_resolution >= 8
            ),
            source,
            f"{where}.synthetic_resolution",
            f"must be auto, native or an image side >= 8, got {self.synthetic_resolution!r}",
        )
        require(
            self.ssim_window >= 3 and self.ssim_window % 2 == 1,
            source,
            f"{where}.ssim_window",
            "must be an odd integer >= 3",
        )
        require(
            self.smooth_sigma == "auto" or self.smooth_sigma >= 0,
            source,
            f"{where}.smooth_sigma",
            "must be >= 0 or auto",
        )
        require(
            0 < self.patch_top_fraction <= 1,
            source,
            f"{where}.patch_top_fraction",
            "must be in (0, 1]",
        )
        require(self.aggregate_k >= 1, source, f"{where}.aggregate_k", "must be >= 1")


@dataclass
class ThresholdConfig:
    SIGNED: ClassVar[tuple[str, ...]] = ("value",)  # scores can be negative
    method: Literal["percentile", "mean_std", "f1_optimal", "manual"] = "percentile"
    percentile: float = 95.0
    k: float = 3.0
    value: float | None = None
    # predicted masks: this percentile of good validation pixels' map values
    pixel_percentile: float = 99.9

    def validate(self, where: str, source: str) -> None:
        require(0 < self.percentile <= 100, source, f"{where}.percentile", "must be in (0, 100]")
        require(
            0 < self.pixel_percentile <= 100,
            source,
            f"{where}.pixel_percentile",
            "must be in (0, 100]",
        )
        require(
            self.method != "manual" or self.value is not None,
            source,
            f"{where}.value",
            "must be set when threshold.method is manual",
        )


@dataclass
class EvaluateConfig:
    aupro_max_fpr: float = 0.3

    def validate(self, where: str, source: str) -> None:
        require(0 < self.aupro_max_fpr <= 1, source, f"{where}.aupro_max_fpr", "must be in (0, 1]")


@dataclass
class PlotConfig:
    ZERO_OK: ClassVar[tuple[str, ...]] = ("gallery_per_group",)
    gallery_per_group: int = 3
    dpi: int = 110
    latent: Literal["pca", "tsne", "both", "none"] = "both"
    latent_points: int = 1000  # test tiles drawn in the latent view (t-SNE is quadratic)

    def validate(self, where: str, source: str) -> None:
        require(self.dpi >= 10, source, f"{where}.dpi", "must be >= 10")
        require(self.latent_points >= 10, source, f"{where}.latent_points", "must be >= 10")


@dataclass
class ExploreConfig:
    examples_per_type: int = 2  # example images per defect type (and of good ones)
    intensity_samples: int = 200_000  # pixels sampled per class for the intensity histogram

    def validate(self, where: str, source: str) -> None:
        require(self.examples_per_type >= 1, source, f"{where}.examples_per_type", "must be >= 1")
        require(
            self.intensity_samples >= 100, source, f"{where}.intensity_samples", "must be >= 100"
        )


@dataclass
class SweepConfig:
    """The standard benchmark ``anomaly sweep`` queues: every model x every category."""

    # A list, or "all": every registered model / every category the dataset knows.
    models: list[str] | Literal["all"] = field(
        default_factory=lambda: ["cae", "vae", "ae", "vit_vae"]
    )
    categories: list[str] | Literal["all"] = field(default_factory=lambda: ["01", "02", "03"])
    jobs: int = 1  # parallel queue workers for `dvc queue start -j`
    # A git remote shared by several machines (README, Scaling out): `anomaly sweep
    # --run` pushes this machine's experiments there (their outputs to the default DVC
    # remote), `anomaly report` pulls everyone's before collecting. null: local only.
    remote: str | None = None

    def validate(self, where: str, source: str) -> None:
        require(bool(self.models), source, f"{where}.models", "must name at least one model")
        require(self.jobs >= 1, source, f"{where}.jobs", "must be >= 1")


@dataclass
class SelectConfig:
    """What ``anomaly select`` runs as candidates and ranks by the label-free figure."""

    # A model name, or {model: <name>, set: {<param key>: <value>, ...}, name: <label>}
    candidates: list[Any] = field(
        default_factory=lambda: [
            "patchcore",
            "padim",
            "cae",
            {
                "model": "patchcore",
                "name": "patchcore-whole256",
                "set": {"patch.image_size": 256, "patch.side": 256, "patch.stride": 256},
            },
        ]
    )
    jobs: int = 1  # parallel workers for the candidates' runs

    def validate(self, where: str, source: str) -> None:
        require(len(self.candidates) >= 2, source, f"{where}.candidates", "needs >= 2 entries")
        require(self.jobs >= 1, source, f"{where}.jobs", "must be >= 1")


@dataclass
class Params:
    ZERO_OK: ClassVar[tuple[str, ...]] = ("seed",)
    seed: int = 0
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    patch: PatchConfig = field(default_factory=PatchConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    model: str = "cae"
    models: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    threshold: ThresholdConfig = field(default_factory=ThresholdConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    plot: PlotConfig = field(default_factory=PlotConfig)
    explore: ExploreConfig = field(default_factory=ExploreConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    select: SelectConfig = field(default_factory=SelectConfig)

    # Model names and blocks are checked by models.registry.check_model_params (train,
    # score, the CLI), not here: every stage loads params, and a stage that does not use
    # a model must not import model code, or editing a model would rerun download.


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: not found (run from the project root)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    params = build(Params, data, "", source=str(path))
    params.source_path = str(path)  # where errors found later (model blocks) point
    return params
