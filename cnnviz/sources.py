"""Model sources: what ``--model`` names, turned into a LoadedModel.

=====================  ==================================================================
``resnet50``           torchvision's registry (also ``torchvision:resnet50``), see models.py
``timm:convnext_tiny`` timm's registry (optional extra ``cnnviz[timm]``); preprocessing from
                       the model's ``pretrained_cfg``
``model.py:build``     a factory or class in a Python file, called with no arguments or with
                       ``--model-args JSON``; the file runs as ``python model.py`` would
``pkg.module:Net``     the same from an importable module
``net.pt``             a TorchScript archive (``torch.jit.save``)
``net.pt2``            a ``torch.export`` program (``torch.export.save``)
=====================  ==================================================================

TorchScript and exported programs run as graphs, on which Python forward hooks on submodules never
fire. Their conv calls are therefore rewritten into real ``nn.Conv2d`` modules (sharing the
archive's tensors) inside an fx GraphModule, checked to give the archive's own outputs, so the
catalog, filters, feature maps and maximization work; TorchScript goes through torch.export's
converter first. What still cannot work is said in one line (``LoadedModel.limits``).
"""
from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util
import json
import os
import re
import sys
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from .detect import is_detector, original_transform
from .detect import prepare as prepare_detector
from .errors import ModelError, UsageError, WeightsError
from .graph import Kind, as_modules, op_kind
from .models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LoadedModel,
    _params_on_meta,
    _reason,
    apply_state_dict,
    assigning_loads,
    check_materialised,
    check_state_dict,
    finetuned_classes,
    is_checkpoint_path,
    load_checkpoint,
    offline,
)
from .models import architecture as tv_architecture
from .models import load_model as tv_load_model

KINDS = ("torchvision", "timm", "python", "torchscript", "export")
TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".jit", ".ts", ".torchscript")


@dataclass(frozen=True)
class Source:
    """A parsed ``--model``: ``kind`` (one of KINDS), ``target`` (model name, file path or module)
    and ``attr`` (the factory or class name of a Python source)."""

    kind: str
    target: str
    attr: str = ""

    @property
    def label(self) -> str:
        """Short name for titles and output file names: 'resnet50', 'convnext_tiny', 'model-Net'."""
        if self.kind in ("torchvision", "timm"):
            return self.target
        stem = os.path.splitext(os.path.basename(self.target))[0] if self.kind != "python" or self.target.endswith(".py") \
            else self.target.rsplit(".", 1)[-1]
        return f"{stem}-{self.attr}" if self.attr else stem


def parse_source(text: str) -> Source:
    """Parse a ``--model`` value (see the module docstring). Raises UsageError."""
    t = str(text).strip()
    if not t:
        raise UsageError("--model is empty; give a torchvision name, timm:NAME, model.py:Factory, or a .pt/.pt2 file")
    for kind in ("torchvision", "timm"):
        if t.startswith(kind + ":"):
            name = t[len(kind) + 1:].strip()
            if not name:
                raise UsageError(f"--model {t!r} names no model; e.g. {kind}:resnet50")
            return Source(kind, name)
    if t.endswith(".pt2"):
        return Source("export", t)
    path, sep, attr = t.rpartition(":")
    if sep and path and attr and not attr.startswith(("\\", "/")):  # 'C:\\x' is a Windows path, not path:attr
        if not attr.isidentifier():
            raise UsageError(f"--model {t!r}: {attr!r} is not a Python name; use FILE.py:Factory or package.module:Class")
        if path.endswith(".py") or os.sep in path or "/" in path:
            return Source("python", path, attr)
        if all(part.isidentifier() for part in path.split(".")):
            return Source("python", path, attr)
        raise UsageError(f"--model {t!r}: {path!r} is neither a .py file nor a module path (package.module)")
    if t.endswith(TORCHSCRIPT_SUFFIXES) or os.sep in t or "/" in t:
        return Source("torchscript", t)
    if t.endswith(".py"):
        raise UsageError(f"--model {t!r}: say which factory or class builds the model, e.g. {t}:Net")
    return Source("torchvision", t)


@dataclass(frozen=True)
class ModelSpec:
    """Everything the model options of a command ask for (hashable: the key of the load cache).

    ``mean``/``std``/``size``/``channels_in``/``labels`` override the source's own preprocessing
    and class names; None keeps them."""

    source: str = "resnet50"
    weights: str = "DEFAULT"
    seed: int = 0
    model_args: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    size: int | None = None
    channels_in: int | None = None
    labels: str | None = None

    @property
    def parsed(self) -> Source:
        return parse_source(self.source)


def as_spec(model: ModelSpec | str, **kwargs: Any) -> ModelSpec:
    if isinstance(model, ModelSpec):
        return replace(model, **kwargs) if kwargs else model
    return ModelSpec(source=str(model), **kwargs)


# ---------------------------------------------------------------- entry points

_CACHE: dict[tuple[ModelSpec, str], LoadedModel] = {}


def load(model: ModelSpec | str, *, device: str | torch.device = "cpu", progress: bool = True) -> LoadedModel:
    """The model of ``model`` (a ModelSpec or a ``--model`` string) with its weights, in eval mode,
    parameters frozen, with its preprocessing. Raises ModelError / WeightsError / UsageError."""
    spec = as_spec(model)
    key = (spec, str(device))
    if key in _CACHE:
        return _CACHE[key]
    src = spec.parsed
    if src.kind == "torchvision":
        _no_model_args(spec, src)
        lm = tv_load_model(src.target, weights=spec.weights, seed=spec.seed, device=device, progress=progress)
        lm.source, lm.kind = spec.source, "torchvision"
    elif src.kind == "timm":
        lm = _load_timm(src, spec, meta=False)
    elif src.kind == "python":
        lm = _load_python(src, spec, meta=False)
    else:
        lm = _load_graph(src, spec)
    lm = _finish(lm, spec, device)
    if src.kind != "torchvision":  # user files: read once per process even if asked twice
        _CACHE[key] = lm
    return lm


def architecture(model: ModelSpec | str) -> LoadedModel:
    """The model's structure with its preprocessing, for checking a request before weights are read:
    on the 'meta' device (no storage) where the source allows, else the loaded model itself."""
    spec = as_spec(model)
    src = spec.parsed
    if src.kind == "torchvision":
        _no_model_args(spec, src)
        lm = tv_architecture(src.target, weights=spec.weights)
        lm.source, lm.kind = spec.source, "torchvision"
        return _finish(lm, spec, None)
    if src.kind == "timm":
        return _finish(_load_timm(src, spec, meta=True), spec, None)
    if src.kind == "python":
        return _finish(_load_python(src, spec, meta=True), spec, None)
    return load(spec)


def _finish(lm: LoadedModel, spec: ModelSpec, device: str | torch.device | None) -> LoadedModel:
    """Apply the user's preprocessing overrides and labels; eval mode, frozen parameters."""
    if device is not None and not _on_meta(lm.model):
        lm.model = lm.model.to(device)
    lm.model.eval()
    for p in lm.model.parameters():
        p.requires_grad_(False)
    if lm.kind != "torchvision" and is_detector(lm.model):  # a user's torchvision-style detector
        for key, value in prepare_detector(lm.model).items():
            setattr(lm, key, value)
        lm.task = "detection"
    first = next((m for m in lm.model.modules() if isinstance(m, nn.Conv2d)), None)
    native = int(first.in_channels) if first is not None else 3
    lm.channels_in = spec.channels_in or native
    if lm.channels_in not in (1, 3):
        raise UsageError(f"--channels-in {lm.channels_in}: images can feed 1 (grayscale) or 3 (RGB) channels")
    if lm.channels_in != native and first is not None:
        raise UsageError(f"--channels-in {lm.channels_in}, but the first conv of {lm.name} takes {native} channels")
    n = lm.channels_in
    if lm.kind not in ("torchvision", "timm") and len(lm.mean) != n:  # no metadata: neutral defaults
        lm.mean, lm.std = (IMAGENET_MEAN, IMAGENET_STD) if n == 3 else ((0.5,), (0.5,))
    for what, value in (("mean", spec.mean), ("std", spec.std)):
        if value is not None:
            if len(value) == 1:
                value = tuple(value) * n
            if len(value) != n:
                raise UsageError(f"--{what} takes 1 or {n} values for this {n}-channel model, got {len(value)}")
            if what == "std" and any(v <= 0 for v in value):
                raise UsageError("--std values must be > 0")
            setattr(lm, what, tuple(float(v) for v in value))
    if (spec.mean is not None or spec.std is not None) and is_detector(lm.model):
        t = original_transform(lm.model)  # a detector normalises inside its forward: the override goes there
        t.image_mean, t.image_std = list(lm.mean), list(lm.std)
    if len(lm.mean) != n:  # metadata for RGB, model fed grayscale (or the reverse)
        lm.mean, lm.std = (_avg(lm.mean),) * n, (_avg(lm.std),) * n
    if spec.size is not None:
        if not 1 <= spec.size <= 8192:
            raise UsageError(f"size {spec.size} out of range; use 1..8192 pixels")
        lm.resize_size = max(spec.size, round(spec.size * lm.resize_size / lm.crop_size))
        lm.crop_size = spec.size
    if spec.labels is not None:
        lm.categories = read_labels(spec.labels)
        linears = [m for m in lm.model.modules() if isinstance(m, nn.Linear)]
        outputs = lm.num_classes or (linears[-1].out_features if linears else None)
        if outputs is not None and outputs != len(lm.categories):
            raise UsageError(f"--labels {spec.labels!r} has {len(lm.categories)} names, but {lm.name} outputs "
                             f"{outputs} classes; give one name per output, in order")
    return lm


def _avg(v: Sequence[float]) -> float:
    return float(sum(v) / len(v))


def _on_meta(model: nn.Module) -> bool:
    return any(p.is_meta for p in model.parameters())


def _no_model_args(spec: ModelSpec, src: Source) -> None:
    if spec.model_args is not None:
        raise UsageError(f"--model-args is for Python model sources (FILE.py:Factory), not {src.kind} models")


def read_labels(path: str) -> list[str]:
    """Class names, one per line (blank lines at the end ignored). Raises UsageError."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = [ln.rstrip("\r\n") for ln in f]
    except FileNotFoundError:
        raise UsageError(f"--labels file {path!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read --labels file {path!r} ({_reason(exc)})") from None
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise UsageError(f"--labels file {path!r} is empty; put one class name per line")
    return [ln.strip() for ln in lines]


def parse_floats(text: str | None, *, what: str) -> tuple[float, ...] | None:
    """'0.5' or '0.485,0.456,0.406' -> floats. Raises UsageError."""
    if text is None:
        return None
    try:
        vals = tuple(float(v) for v in str(text).replace(" ", ",").split(",") if v)
    except ValueError:
        raise UsageError(f"--{what} takes numbers separated by commas, e.g. 0.5 or 0.485,0.456,0.406; got {text!r}") from None
    if not vals:
        raise UsageError(f"--{what} is empty")
    return vals


# ---------------------------------------------------------------- Python code


def _import(src: Source) -> Any:
    """The module of a Python source, imported as Python would (the file runs)."""
    if src.target.endswith(".py") or os.sep in src.target or "/" in src.target:
        path = os.path.abspath(src.target)
        if not os.path.isfile(path):
            raise ModelError(f"model file {src.target!r} does not exist")
        name = f"cnnviz_user_{abs(hash(path)):x}"
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ModelError(f"{src.target!r} cannot be imported as Python")
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, os.path.dirname(path))  # its sibling modules import as under `python model.py`
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise ModelError(f"importing {src.target} failed: {_where(exc, path)}") from None
        finally:
            sys.path.remove(os.path.dirname(path))
        return module
    try:
        return importlib.import_module(src.target)
    except ModuleNotFoundError as exc:
        if exc.name and src.target.startswith(exc.name):
            raise ModelError(f"no module named {src.target!r} (is it installed, or on PYTHONPATH?)") from None
        raise ModelError(f"importing {src.target} failed: {_where(exc, '')}") from None
    except Exception as exc:
        raise ModelError(f"importing {src.target} failed: {_where(exc, '')}") from None


def _where(exc: BaseException, path: str) -> str:
    """'ValueError: bad width (model.py line 12)': the error and the user's line that raised it."""
    import traceback

    text = f"{type(exc).__name__}: {_reason(exc)}"
    if isinstance(exc, SyntaxError) and exc.lineno:
        return f"{text} ({os.path.basename(exc.filename or path)} line {exc.lineno})"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(os.path.dirname(__file__))]
    if frames:
        f = frames[-1]
        text += f" ({os.path.basename(f.filename)} line {f.lineno})"
    return text


def _factory(src: Source) -> Any:
    module = _import(src)
    obj = getattr(module, src.attr, None)
    if obj is None:
        names = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                 and getattr(v, "__module__", None) == module.__name__]
        close = difflib.get_close_matches(src.attr, names, n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else (
            f"; it defines {', '.join(names[:8])}" if names else "")
        raise ModelError(f"{src.target} has no {src.attr!r}{hint}")
    if not callable(obj):
        raise ModelError(f"{src.target}:{src.attr} is a {type(obj).__name__}, not a class or function that builds a model")
    return obj


def _model_args(spec: ModelSpec) -> tuple[list[Any], dict[str, Any]]:
    if spec.model_args is None:
        return [], {}
    try:
        value = json.loads(spec.model_args)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--model-args is not valid JSON ({exc.msg} at character {exc.pos}); "
                         f"e.g. --model-args '{{\"num_classes\": 3}}'") from None
    if isinstance(value, dict):
        return [], value
    if isinstance(value, list):
        return value, {}
    return [value], {}


def _call_factory(src: Source, spec: ModelSpec) -> nn.Module:
    fn = _factory(src)
    args, kwargs = _model_args(spec)
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        torch.manual_seed(spec.seed)
        warnings.simplefilter("ignore")
        try:
            model = fn(*args, **kwargs)
        except Exception as exc:
            raise ModelError(f"{src.target}:{src.attr}({_show_args(args, kwargs)}) raised {_where(exc, src.target)}") from None
    if isinstance(model, torch.jit.ScriptModule):
        raise ModelError(f"{src.target}:{src.attr} returned a TorchScript module; save it with torch.jit.save and "
                         f"pass the .pt file as --model")
    if not isinstance(model, nn.Module):
        raise ModelError(f"{src.target}:{src.attr} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _show_args(args: list[Any], kwargs: dict[str, Any]) -> str:
    return ", ".join([repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()])


def _load_python(src: Source, spec: ModelSpec, *, meta: bool) -> LoadedModel:
    """Build the user's model. With a checkpoint (or for the architecture only) it is built with
    parameters on 'meta' and the checkpoint's tensors assigned; if the user's code cannot run that
    way it is built normally."""
    w = spec.weights
    path = w if is_checkpoint_path(w) else None
    if w.lower() not in ("none", "default") and path is None:
        raise WeightsError(f"--weights {w!r}: a Python model takes 'default' (what its code builds), "
                           f"'none' (random, seeded) or a checkpoint path")
    if path is not None and not os.path.isfile(path):
        raise WeightsError(f"checkpoint {path!r} does not exist")
    on_meta = meta or path is not None
    model = None
    if on_meta:
        try:
            with _params_on_meta():
                model = _call_factory(src, spec)
        except ModelError:
            model = None  # e.g. code that computes with its own parameters while building
    if model is None:
        model = _call_factory(src, spec)
    label = "architecture only" if meta else ("none" if w.lower() == "none" else ("default" if path is None else path))
    if path is not None:  # the architecture too: a checkpoint that does not fit is refused by every command
        sd = load_checkpoint(path)  # memory-mapped: the names and shapes cost nothing
        classes = finetuned_classes(model, sd)
        if classes is not None:
            raise WeightsError(f"checkpoint {path!r} has a {classes}-class head but {src.target}:{src.attr} builds another "
                               f"size; pass the size through --model-args (e.g. '{{\"num_classes\": {classes}}}')")
        (check_state_dict if meta else apply_state_dict)(model, sd, source=path)
    if not meta:
        check_materialised(model, source=path or f"{src.target}:{src.attr}")
    cats = getattr(model, "classes", None) or getattr(model, "categories", None)
    categories = [str(c) for c in cats] if isinstance(cats, (list, tuple)) and all(isinstance(c, str) for c in cats) else []
    return LoadedModel(model=model, name=src.label, weights=label, mean=(), std=(), categories=categories,
                       source=spec.source, kind="python")


# ---------------------------------------------------------------- timm


def _timm() -> Any:
    try:
        import timm
    except ImportError:
        raise ModelError("timm models need the timm package: pip install 'cnnviz[timm]' (or pip install timm)") from None
    return timm


def _load_timm(src: Source, spec: ModelSpec, *, meta: bool) -> LoadedModel:
    timm = _timm()
    _no_model_args(spec, src)
    name = src.target
    if not timm.is_model(name):
        names = timm.list_models()
        close = difflib.get_close_matches(name.lower(), names, n=3, cutoff=0.6)
        sugg = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        raise ModelError(f"unknown timm model {name!r}{sugg}; timm.list_models() lists its {len(names)} models")
    w = spec.weights
    path = w if is_checkpoint_path(w) else None
    if path is not None and not os.path.isfile(path):
        raise WeightsError(f"checkpoint {path!r} does not exist")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if meta or path is not None:
            with _params_on_meta():
                model = timm.create_model(name, pretrained=False)
            if path is not None:  # the architecture too: its head size is the checkpoint's, and it must fit
                sd = load_checkpoint(path)  # memory-mapped: the names and shapes cost nothing
                classes = finetuned_classes(model, sd)
                if classes is not None:
                    with _params_on_meta():
                        model = timm.create_model(name, pretrained=False, num_classes=classes)
                (check_state_dict if meta else apply_state_dict)(model, sd, source=path)
            label = "architecture only" if meta else path
        elif w.lower() == "none":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(spec.seed)
                model = timm.create_model(name, pretrained=False)
            label = "none"
        else:
            model = _timm_pretrained(timm, name, w)
            label = f"timm {w}"
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    c, h, _w = tuple(cfg.get("input_size") or (3, 224, 224))
    crop_pct = float(cfg.get("crop_pct") or 0.875)
    mean = tuple(float(v) for v in cfg.get("mean") or IMAGENET_MEAN)
    std = tuple(float(v) for v in cfg.get("std") or IMAGENET_STD)
    categories: list[str] = []
    num_classes = int(getattr(model, "num_classes", 0) or 0)
    if num_classes and path is None:
        try:
            from timm.data import ImageNetInfo, infer_imagenet_subset

            subset = infer_imagenet_subset(model)
            if subset:
                # 'tench, Tinca tinca' -> 'tench': the short names torchvision's weights use
                categories = [d.split(",")[0].strip() for d in ImageNetInfo(subset).label_descriptions()][:num_classes]
        except Exception:  # older timm: no class names, indices still work
            categories = []
    interpolation = str(cfg.get("interpolation") or "bicubic")
    return LoadedModel(model=model, name=name, weights=label, mean=mean, std=std, crop_size=int(h),
                       resize_size=int(h / crop_pct), categories=categories, source=spec.source, kind="timm",
                       interpolation=interpolation if interpolation in ("bilinear", "bicubic", "nearest") else "bicubic")


@contextlib.contextmanager
def _no_downloads() -> Iterator[None]:
    """When offline(): the Hugging Face hub in its offline mode and torch.hub downloads refused, so
    timm reads only what its caches hold (no network call, no timeout)."""
    if not offline():
        yield
        return
    try:
        from huggingface_hub import constants as hf
    except ImportError:
        hf = None
    saved_hf = getattr(hf, "HF_HUB_OFFLINE", None)
    saved_dl = torch.hub.download_url_to_file

    def refuse(url: str, *a: Any, **k: Any) -> None:
        raise OSError(f"not in the cache and downloads are off (CNNVIZ_OFFLINE): {url}")

    if hf is not None:
        hf.HF_HUB_OFFLINE = True
    torch.hub.download_url_to_file = refuse
    try:
        yield
    finally:
        torch.hub.download_url_to_file = saved_dl
        if hf is not None:
            hf.HF_HUB_OFFLINE = saved_hf


def _timm_pretrained(timm: Any, name: str, weights: str) -> nn.Module:
    """timm's own pretrained weights (its hub cache; downloaded unless offline), loaded into a model
    built on 'meta'. ``weights`` 'DEFAULT' or a pretrained tag such as 'in1k'."""
    tag = "" if weights.upper() == "DEFAULT" else weights
    try:
        with _no_downloads(), _params_on_meta(), assigning_loads():
            model = timm.create_model(f"{name}.{tag}" if tag else name, pretrained=True)
    except RuntimeError as exc:
        text = _reason(exc)
        if "No pretrained weights" in text or "Invalid pretrained tag" in text or "Unknown" in text:
            raise WeightsError(f"timm has no pretrained weights {weights!r} for {name} ({text}); "
                               f"use --weights PATH or --weights none") from None
        raise WeightsError(f"timm pretrained weights for {name} could not be loaded ({text})") from None
    except Exception as exc:  # network / hub cache errors of all kinds
        raise WeightsError(f"cannot get timm's pretrained weights for {name} ({type(exc).__name__}: {_reason(exc)}); "
                           f"put them in timm's cache, or use --weights PATH or --weights none") from None
    check_materialised(model, source=f"timm:{name}")
    return model


# ---------------------------------------------------------------- TorchScript and exported programs


def _load_graph(src: Source, spec: ModelSpec) -> LoadedModel:
    path = src.target
    if spec.model_args is not None:
        _no_model_args(spec, src)
    if not os.path.exists(path):
        raise ModelError(f"model file {path!r} does not exist")
    if os.path.isdir(path):
        raise ModelError(f"model file {path!r} is a directory")
    if spec.weights.lower() not in ("default", "none") and not is_checkpoint_path(spec.weights):
        raise WeightsError(f"--weights {spec.weights!r}: a {src.kind} archive carries its weights; "
                           f"give a checkpoint path to replace them, or leave --weights out")
    if spec.weights.lower() == "none":
        raise WeightsError(f"--weights none: a {src.kind} archive has no code to initialise new weights; "
                           f"leave --weights out to use the archive's own")
    if src.kind == "export":
        gm, shape = _read_exported(path)
    else:
        gm, shape = _read_torchscript(path, spec)
    limits: dict[str, str] = {}
    batch, channels = shape[0], shape[1]
    hw = shape[2:]
    if isinstance(batch, int):
        limits["batch"] = f"the program was exported for batches of {batch} only"
    if all(isinstance(v, int) for v in hw):
        limits["size"] = (f"the program was exported for {hw[0]}x{hw[1]} inputs only (re-export with dynamic "
                          f"shapes, torch.export.Dim, to use other sizes)")
    label = "archive"
    if is_checkpoint_path(spec.weights):
        apply_state_dict(gm, load_checkpoint(spec.weights), source=spec.weights)
        label = spec.weights
    size = int(hw[0]) if isinstance(hw[0], int) else 224
    lm = LoadedModel(model=gm, name=Source(src.kind, path).label, weights=label, mean=(), std=(), crop_size=size,
                     resize_size=size if "size" in limits else round(size * 256 / 224), source=spec.source,
                     kind=src.kind, limits=limits)
    if "size" in limits:
        lm.input_hw = (int(hw[0]), int(hw[1]))
    if isinstance(channels, int):
        lm.channels_in = channels
    out = next((n for n in gm.graph.nodes if n.op == "output"), None)
    vals = out.args[0] if out is not None else None
    val = (vals[0] if isinstance(vals, (list, tuple)) and len(vals) == 1 else vals)
    meta = getattr(val, "meta", {}).get("val")
    if isinstance(meta, torch.Tensor) and meta.ndim == 2 and isinstance(meta.shape[1], int):
        lm.num_classes = int(meta.shape[1])
    return lm


def _read_exported(path: str) -> tuple[nn.Module, tuple[Any, ...]]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ep = torch.export.load(path)
    except Exception as exc:
        kind = _zip_kind(path)
        if kind == "checkpoint":
            raise ModelError(f"{path!r} is a checkpoint (a state dict), not an exported program: pass it as --weights "
                             f"together with the model's code (--model model.py:Net --weights {path})") from None
        raise ModelError(f"{path!r} is not a torch.export program that torch.export.load can read "
                         f"({type(exc).__name__}: {_reason(exc)})") from None
    return _hookable(ep, path)


def _read_torchscript(path: str, spec: ModelSpec) -> tuple[nn.Module, tuple[Any, ...]]:
    kind = _zip_kind(path)
    if kind == "checkpoint":
        raise ModelError(f"{path!r} is a checkpoint (a state dict), not a TorchScript archive: pass it as --weights "
                         f"together with the model (--model resnet50 --weights {path}, or --model model.py:Net "
                         f"--weights {path})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ts = torch.jit.load(path, map_location="cpu")
    except Exception as exc:
        what = "a corrupt TorchScript archive" if kind == "torchscript" else "not a TorchScript archive"
        raise ModelError(f"{path!r} is {what} ({type(exc).__name__}: {_reason(exc)})") from None
    convs = [m for m in ts.modules() if getattr(m, "original_name", "") == "Conv2d"]
    channels = spec.channels_in or (_in_channels(convs[0]) if convs else 3)
    size = spec.size or 224
    # A batch of 2 so that the converter does not specialise the batch dimension to 1.
    example = torch.randn(2, channels, size, size)
    try:
        from torch._export.converter import TS2EPConverter

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ep = TS2EPConverter(ts, (example,)).convert()
    except Exception as exc:
        raise ModelError(f"TorchScript archive {path!r} runs as a compiled graph where Python hooks cannot see its "
                         f"layers, and torch.export could not convert it ({type(exc).__name__}: {_reason(exc)}); "
                         f"export the model with torch.export (.pt2) or give its source (model.py:Net)") from None
    with contextlib.suppress(Exception):  # names only: the program computes the same without them
        _module_paths_from(ts, ep)
    gm, shape = _hookable(ep, path)
    with torch.no_grad():
        a, b = ts(example), gm(example)
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
            and torch.allclose(a, b, rtol=1e-4, atol=1e-5)):
        raise ModelError(f"TorchScript archive {path!r}: its conversion to a graph cnnviz can hook does not compute "
                         f"the same outputs; export the model with torch.export (.pt2) or give its source")
    return gm, shape


def _in_channels(conv: Any) -> int:
    """The input channels of an archive's Conv2d: a scripted module keeps its attributes, a traced
    one (torch.jit.trace) only its tensors, so there they come from the weight, (out, in/groups, kh, kw),
    with the groups a traced module does not record taken as 1 (a first conv is grouped only by design)."""
    channels = getattr(conv, "in_channels", None)
    if channels is not None:
        return int(channels)
    return int(conv.weight.shape[1]) * int(getattr(conv, "groups", 1))


def _module_paths_from(ts: Any, ep: Any) -> None:
    """Give the converted program's activation calls the module paths the TorchScript archive
    records (``layer1.0.relu``), as torch.export does for the program it exports, so --stage act
    hooks them under the same names as on the source model. The converter keeps the archive's
    order of calls: the k-th ``aten::relu_`` of the archive is the k-th ``aten.relu_`` of the
    program. Of an ``if`` (``F.hardtanh``'s ``inplace`` test) one call per module and op counts:
    one branch runs. An op whose count still differs keeps no paths."""
    def walk(block: Any) -> Iterator[Any]:
        for n in block.nodes():
            if n.kind() != "prim::If":
                yield n
                continue
            seen = set()
            for b in n.blocks():
                for m in walk(b):
                    if (m.kind(), m.getModuleHierarchy()) not in seen:
                        seen.add((m.kind(), m.getModuleHierarchy()))
                        yield m

    archive: dict[str, list[str]] = {}
    for n in walk(ts.inlined_graph):
        archive.setdefault(n.kind(), []).append(n.getModuleHierarchy())
    program: dict[str, list[Any]] = {}
    for node in ep.graph.nodes:
        if node.op == "call_function" and op_kind(node, {}) is Kind.ACTIVATION and hasattr(node.target, "_schema"):
            program.setdefault(node.target._schema.name, []).append(node)
    for op, nodes in program.items():
        scopes = archive.get(op, [])
        if len(scopes) != len(nodes):
            continue
        for node, scope in zip(nodes, scopes):
            parts = [(name, kind) for name, kind in re.findall(r"([^.()]+)\(([^()]*)\)", scope)
                     if name not in ("SELF", "UNKNOWN_INSTANCE")]
            if parts:
                path = ".".join(name for name, _ in parts)
                node.meta["nn_module_stack"] = {path: (path, parts[-1][1])}


def _zip_kind(path: str) -> str:
    """'torchscript', 'export', 'checkpoint' or 'other', from the archive's member names."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (OSError, zipfile.BadZipFile):
        return "other"
    if any("/code/" in n or n.endswith("constants.pkl") for n in names):
        return "torchscript"
    if any("serialized_exported_program" in n or "/models/" in n for n in names):
        return "export"
    if any(n.endswith("/data.pkl") for n in names):
        return "checkpoint"
    return "other"


_CONV_OPS = ("conv2d",)


def _hookable(ep: Any, path: str) -> tuple[nn.Module, tuple[Any, ...]]:
    """The exported program as an fx GraphModule whose 2-D convolutions are real nn.Conv2d modules
    (sharing the program's tensors, at the original module paths such as 'features.0'), so forward
    hooks see them. Returns it with the input shape (ints where static, None where dynamic)."""
    gm = ep.module()
    # ep.module() refuses .eval()/.train() (the graph's ops are fixed at export time); the mode flag
    # itself is harmless, and hooks and cnnviz's eval_mode() set it.
    for attr in ("train", "eval"):
        gm.__dict__.pop(attr, None)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise ModelError(f"{path!r} takes {len(placeholders)} inputs; cnnviz feeds one image tensor")
    val = placeholders[0].meta.get("val")
    shape = tuple(int(s) if isinstance(s, int) else None for s in val.shape) if val is not None else (None,) * 4
    if len(shape) != 4:
        raise ModelError(f"{path!r} takes a {len(shape)}-D input; cnnviz feeds images as (N, C, H, W)")
    aten = torch.ops.aten
    targets = {aten.conv2d.default, aten.conv2d.padding, aten.convolution.default}
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in targets:
            continue
        norm = node.normalized_arguments(gm, normalize_to_only_use_kwargs=True)
        if norm is None:
            continue
        a = norm.kwargs
        if a.get("transposed") or any(int(p) for p in (a.get("output_padding") or ())):
            continue  # a transposed convolution is no nn.Conv2d
        x, w, b = a["input"], a["weight"], a.get("bias")
        stride, padding = a.get("stride") or [1, 1], a.get("padding") or [0, 0]
        dilation, groups = a.get("dilation") or [1, 1], a.get("groups") or 1
        if getattr(w, "op", None) != "get_attr" or not str(w.target).endswith("weight") or "." not in w.target:
            continue
        prefix = w.target.rsplit(".", 1)[0]
        if b is not None and (getattr(b, "op", None) != "get_attr" or b.target != f"{prefix}.bias"):
            continue
        holder = gm.get_submodule(prefix)
        own = {n for n, _ in holder.named_parameters(recurse=False)} | {n for n, _ in holder.named_buffers(recurse=False)}
        if list(holder.children()) or own - {"weight", "bias"}:
            continue
        weight = getattr(holder, "weight")
        if weight.dim() != 4:
            continue  # a 1-D or 3-D convolution (aten.convolution serves all three)
        conv = nn.Conv2d(weight.shape[1] * int(groups), weight.shape[0], tuple(weight.shape[2:]), stride=tuple(stride),
                         padding=padding if isinstance(padding, str) else tuple(padding), dilation=tuple(dilation),
                         groups=int(groups), bias=b is not None, device="meta")
        conv.weight = weight if isinstance(weight, nn.Parameter) else nn.Parameter(weight, requires_grad=False)
        if b is not None:
            bias = getattr(holder, "bias")
            conv.bias = bias if isinstance(bias, nn.Parameter) else nn.Parameter(bias, requires_grad=False)
        parent, _, leaf = prefix.rpartition(".")
        setattr(gm.get_submodule(parent) if parent else gm, leaf, conv)
        with graph.inserting_before(node):
            call = graph.call_module(prefix, (x,))
        call.meta = dict(node.meta)
        node.replace_all_uses_with(call)
        graph.erase_node(node)
    graph.eliminate_dead_code()
    gm.recompile()
    # activations (aten.relu_ after a conv) as modules too, so that --stage act can hook them
    as_modules(gm, kinds={Kind.ACTIVATION})
    return gm, shape
