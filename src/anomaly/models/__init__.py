"""Model families; importing this package registers every model in the registry."""

from . import aae, ae, anogan, cae, draem, patchcore, vae, vae_grf, vit_vae  # noqa: F401
from .registry import available_models, build_model, get_model_class, load_checkpoint

__all__ = ["available_models", "build_model", "get_model_class", "load_checkpoint"]
