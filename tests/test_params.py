import pytest

from anomaly.errors import ParamsError
from anomaly.models.registry import check_model_params, model_block
from anomaly.params import load_params
from conftest import REPO, tiny_params, write_params


def load_checked(path):
    """Params as the CLI loads them: the file, then model names and blocks."""
    params = load_params(path)
    check_model_params(params, "all")
    return params


def test_repo_params_load_with_defaults():
    params = load_params(REPO / "params.yaml")
    assert params.model == "cae"
    assert params.dataset.name == "synthetic_fabric"
    # `auto` until the data's anomaly kind is known; on fabric (local defects) it is 16.
    assert model_block(params).latent_channels == "auto"
    from anomaly.models.registry import get_model_class, resolve_auto

    resolved, chosen = resolve_auto(get_model_class("cae"), model_block(params), "local")
    assert resolved.latent_channels == 16 and chosen["depth"] == 3
    _, digits = resolve_auto(get_model_class("cae"), model_block(params), "whole-image")
    assert digits == {"depth": 4, "latent_channels": 2, "denoise": 0.5}
    grf = model_block(params, "vae_grf")
    assert resolve_auto(get_model_class("vae_grf"), grf, "local")[1] == {"depth": 3, "channels": 8}
    assert resolve_auto(get_model_class("vae_grf"), grf, "whole-image")[1] == {
        "depth": 4,
        "channels": 2,
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"train": {"epochs": "ten"}}, "train.epochs must be an integer, got 'ten' (str)"),
        ({"train": {"lr": True}}, "train.lr must be a number"),
        ({"model": "resnet"}, "model is 'resnet', not a known model"),
        ({"dataset": {"name": "imagenet"}}, "dataset.name is 'imagenet', not a known dataset"),
        ({"score": {"aggregate": "median"}}, "score.aggregate must be one of 'max', 'mean'"),
        ({"train": {"epoch": 3}}, "unknown key train.epoch"),
        ({"models": {"cae": {"depth": "deep"}}}, "models.cae.depth must be an integer"),
        ({"models": {"cae": {"dropout": 0.1}}}, "unknown key models.cae.dropout"),
        ({"models": {"transformer": {}}}, "models.transformer is not a known model"),
        ({"threshold": {"method": "manual"}}, "threshold.value must be set"),
        ({"split": {"val_fraction": 0.6, "test_good_fraction": 0.5}}, "must leave good images"),
        ({"patch": {"side": 4}}, "patch.side must be >= 8"),
        ({"patch": {"side": "whole"}}, "patch.side must be an integer or one of 'auto'"),
        (
            {"patch": {"side": "auto", "stride": 32}},
            "patch.stride is 32, but patch.side is auto",
        ),
        ({"patch": {"side": "auto", "auto_side_max": 4}}, "patch.auto_side_max must be >= 8"),
    ],
)
def test_bad_params_name_the_key(tmp_path, change, message):
    path = write_params(tmp_path / "params.yaml", tiny_params(**change))
    with pytest.raises(ParamsError) as info:
        load_checked(path)
    text = str(info.value)
    assert message in text
    assert "\n" not in text
    assert str(path) in text


def test_invalid_yaml_is_reported(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(path)


def test_model_block_overrides_train(tmp_path):
    from anomaly.models.training import effective_train_config

    path = write_params(tmp_path / "p.yaml", tiny_params(models={"vae": {"epochs": 7, "lr": 0.01}}))
    params = load_params(path)
    eff = effective_train_config(params.train, model_block(params, "vae"))
    assert (eff.epochs, eff.lr, eff.batch_size) == (7, 0.01, params.train.batch_size)


def test_every_param_is_in_params_yaml_so_dvc_can_set_it():
    """`dvc exp run -S key=value` only overrides keys present in params.yaml."""
    import dataclasses

    import yaml

    from anomaly.config_schema import to_dict
    from anomaly.models.registry import available_models

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    params = load_params(REPO / "params.yaml")

    def missing(schema: dict, present: dict, prefix: str = "") -> list[str]:
        out = []
        for key, value in schema.items():
            if key not in present:
                out.append(prefix + key)
            elif isinstance(value, dict) and isinstance(present[key], dict) and key != "contrast":
                out += missing(value, present[key], f"{prefix}{key}.")
        return out

    top = {k: v for k, v in to_dict(params).items() if k != "models"}
    gaps = missing(top, raw)
    for name in available_models():
        block = dataclasses.asdict(model_block(params, name))
        gaps += missing(block, raw["models"].get(name) or {}, f"models.{name}.")
    assert gaps == []
