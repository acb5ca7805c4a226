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
    remover = BackgroundRemover.bind(settings.replica_args())  # type: ignore[attr-defined]
    ingress = settings.ingress
    default = settings.default
    if not ingress.model_names:
        ingress = ingress.model_copy(update={"model_names": rembg.names_for_model(default.model_id)})
    # rembg's model names each select the served model they stand for; ingress.model_names the default one.
    aliases = {alias: entry.served_name for entry in settings.served_models
               for alias in rembg.names_for_model(entry.model_id)}
    aliases.update(dict.fromkeys(ingress.model_names, default.served_name))
    served = {"default": default.served_name, "aliases": aliases,
              "input_sizes": {entry.served_name: list(entry.input_size) for entry in settings.served_models}}
    return Ingress.bind(remover, ingress.model_dump(mode="json"), served)  # type: ignore[attr-defined]
