"""REST server for the app's models (`python -m adapters serve`): a thin layer over `HuggingAdapter.predict`.

`create_app` is imported on first use, so reading `adapters.server.limits` (the CLI's defaults) stays cheap.
"""
from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app
        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
