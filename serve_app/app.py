"""The typed application builder that `serve run configs/*.yaml` calls: `serve_app.app:build_app`."""

from __future__ import annotations

from ray.serve import Application

from serve_app.compat import rembg
from serve_app.deployments.ingress import Ingress
from serve_app.deployments.remover import BackgroundRemover
from serve_app.settings import parse_app_args


def build_app(args: dict | None = None) -> Application:
    """Validate `args` (see serve_app.settings.AppArgs) and compose ingress -> model deployment.

    A mistake in the config fails here, before any replica starts, with the bad field's full name.
    Batch settings come from the BackgroundRemover's `user_config` in the config file, not from `args`.
    """
    settings = parse_app_args(args)
    remover = BackgroundRemover.bind(settings.model.model_dump(mode="json"))  # type: ignore[attr-defined]
    ingress = settings.ingress
    if not ingress.model_names:
        ingress = ingress.model_copy(update={"model_names": rembg.names_for_model(settings.model.model_id)})
    return Ingress.bind(remover,  # type: ignore[attr-defined]
                        ingress.model_dump(mode="json"), tuple(settings.model.input_size))
