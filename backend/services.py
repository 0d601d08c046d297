"""What the routes use, as one typed object on the app, created once at start."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app

from backend.budget import PixelBudget
from backend.fetch_policy import FetchPolicy
from backend.imaging import ImagePolicy
from backend.registry import ModelRegistry
from backend.settings import Settings
from backend.stopping import StopSignal

_EXTENSION = "baked_vision"


@dataclass(frozen=True)
class Services:
    settings: Settings
    models: ModelRegistry
    fetch_policy: FetchPolicy
    image_policy: ImagePolicy
    pixel_budget: PixelBudget
    stop_signal: StopSignal  # set when the process stops (SIGTERM): waits end early

    def install(self, app: Flask) -> None:
        app.extensions[_EXTENSION] = self


def services(app: Flask | None = None) -> Services:
    """The services of `app`, or of the app handling the current request."""
    return (app or current_app).extensions[_EXTENSION]
