"""cnnviz: look inside convolutional neural networks (PyTorch / torchvision).

Library use (no CLI needed)::

    import cnnviz
    lm = cnnviz.load_model("vgg16", weights="DEFAULT")
    layers = cnnviz.catalog(lm.model)
    maps = cnnviz.capture(lm.model, x, [layers[3]], stage="act")

Heavy modules (torch) are imported on first use of a name, so ``import cnnviz`` stays cheap.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "receptive_fields": "rf",
    "layer_fields": "rf",
    "effective_fields": "fields",
    "load_model": "models",
    "build_model": "models",
    "list_models": "models",
    "LoadedModel": "models",
    "catalog": "rf",
    "conv_layers": "layers",
    "select_layers": "layers",
    "ConvLayer": "layers",
    "capture": "capture",
    "Capture": "capture",
    "hook_points": "capture",
    "render_grid": "maps",
    "render_sheet": "maps",
    "stream_maps": "maps",
    "MapGrid": "maps",
    "SheetRow": "maps",
    "load_image": "io",
    "preprocess": "io",
    "save_png": "io",
    "Picture": "render",
    "CnnvizError": "errors",
    "maximize": "optimize",
    "Transforms": "optimize",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'cnnviz' has no attribute {name!r}")
