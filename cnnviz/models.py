"""Model and weights loading: torchvision's registry, its weights API and hub cache, local checkpoints.

``load_model("resnet50")`` gives torchvision's recommended pretrained weights (downloaded once into
``$TORCH_HOME/hub/checkpoints`` with a progress bar on stderr, then read from there);
``weights="IMAGENET1K_V1"`` picks an enum member, ``weights="none"`` a seeded random init, and a
path loads a local checkpoint with ``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

import contextlib
import contextvars
import difflib
import hashlib
import http.client
import json
import os
import pickle
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torchvision
from torch import nn
from torchvision import models as tvm

from ._convcounts import SHIPPED_COUNTS, SHIPPED_VERSION
from .errors import ModelError, WeightsError, first_line

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# What a torchvision model predicts, in the order `cnnviz models` lists them: each task is one of
# torchvision's model modules (tvm, tvm.segmentation, tvm.detection).
TASKS = ("classification", "segmentation", "detection")


@dataclass
class LoadedModel:
    """A model in eval mode plus what is needed to feed it and to name its outputs."""

    model: nn.Module
    name: str
    weights: str  # "IMAGENET1K_V2", "none", or the checkpoint path
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    crop_size: int = 224
    resize_size: int = 256
    interpolation: str = "bilinear"  # the weights' resize filter: "bilinear" or "bicubic"
    categories: list[str] = field(default_factory=list)
    source: str = ""  # what --model said ('resnet50', 'timm:convnext_tiny', 'net.py:Net', 'net.pt2')
    kind: str = "torchvision"  # see cnnviz.sources.KINDS
    channels_in: int = 3  # 1: the model is fed grayscale images
    input_hw: tuple[int, int] | None = None  # the only input size the model accepts, if it has one
    num_classes: int | None = None  # outputs of a model without a final nn.Linear (graph archives)
    # What this model cannot do, and why: {'batch': ..., 'size': ...} (see cnnviz.sources)
    limits: dict[str, str] = field(default_factory=dict)
    task: str = "classification"  # one of TASKS: what the model's output means

    @property
    def pretrained(self) -> bool:
        return self.weights.lower() != "none"


def _task_module(task: str) -> Any:
    if task not in TASKS:
        raise ModelError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    return {"classification": tvm, "segmentation": tvm.segmentation, "detection": tvm.detection}[task]


def list_models(*, task: str | None = None) -> list[str]:
    """Names of torchvision's image models of ``task`` (one of TASKS), sorted; ``None``: all of
    them, classification first, then segmentation, then detection."""
    tasks = TASKS if task is None else (task,)
    return [n for t in tasks for n in sorted(tvm.list_models(module=_task_module(t)))]


def model_task(name: str) -> str:
    """What torchvision model ``name`` predicts: 'classification', 'segmentation' or 'detection'."""
    name = check_model_name(name)
    return next(t for t in TASKS if name in tvm.list_models(module=_task_module(t)))


def check_model_name(name: str) -> str:
    """Return ``name`` if torchvision has that image model (any of TASKS), else raise with suggestions."""
    names = list_models()
    if name in names:
        return name
    low = name.lower().replace("-", "_")
    if low in names:
        return low
    close = difflib.get_close_matches(low, names, n=3, cutoff=0.5)
    sugg = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    raise ModelError(f"unknown model {name!r}{sugg}; 'cnnviz models' lists the {len(names)} torchvision models "
                     f"({', '.join(TASKS)})")


def weights_enum(name: str) -> Any | None:
    """torchvision's weights enum class for a model, or None when it has no pretrained weights."""
    try:
        return tvm.get_model_weights(check_model_name(name))
    except ValueError:
        return None


def weight_members(name: str) -> list[str]:
    """Member names of the model's weights enum, DEFAULT first, e.g. ['DEFAULT', 'IMAGENET1K_V1', ...]."""
    enum = weights_enum(name)
    if enum is None:
        return []
    members = [m for m in enum.__members__ if m != "DEFAULT"]
    return ["DEFAULT", *members] if "DEFAULT" in enum.__members__ else members


def resolve_weights(model: str, weights: str) -> Any:
    """The enum member for ``weights`` ('DEFAULT', 'IMAGENET1K_V1', 'ResNet50_Weights.IMAGENET1K_V1')."""
    enum = weights_enum(model)
    if enum is None:
        raise WeightsError(f"model {model!r} has no pretrained weights in torchvision; use --weights none or --weights PATH")
    key = weights.split(".")[-1]
    for member in enum.__members__:
        if member.upper() == key.upper():
            return enum[member]
    raise ModelError(
        f"unknown weights {weights!r} for {model}; choose one of {', '.join(weight_members(model))}, 'none' or a checkpoint path"
    )


def checkpoint_path(member: Any) -> str:
    """Where torchvision looks for (and saves) the file of a weights enum member."""
    filename = os.path.basename(member.url)
    return os.path.join(torch.hub.get_dir(), "checkpoints", filename)


def is_cached(member: Any) -> bool:
    return os.path.isfile(checkpoint_path(member))


def offline() -> bool:
    """True when downloads are disabled (CNNVIZ_OFFLINE=1 or the generic HF/TORCH offline flags)."""
    return any(os.environ.get(k, "").lower() in ("1", "true", "yes") for k in ("CNNVIZ_OFFLINE", "TORCH_HUB_OFFLINE"))


def _not_cached_message(model: str, member: Any, cause: str) -> str:
    path = checkpoint_path(member)
    return (
        f"cannot get pretrained weights {type(member).__name__}.{member.name} for {model} ({cause}): "
        f"put {os.path.basename(path)} into {os.path.dirname(path)} (from {member.url}), "
        f"or use --weights PATH for a local checkpoint, or --weights none for random weights"
    )


def _meta_from(member: Any | None) -> dict[str, Any]:
    if member is None:
        return {}
    meta: dict[str, Any] = {"categories": list(member.meta.get("categories") or [])}
    try:
        t = member.transforms()
        resize = int(t.resize_size[0])
        # Segmentation weights resize (shorter side) and never crop: their crop is the resize.
        crop = int(t.crop_size[0]) if hasattr(t, "crop_size") else resize
        meta.update(
            mean=tuple(t.mean), std=tuple(t.std), crop_size=crop, resize_size=resize,
            interpolation=str(getattr(t.interpolation, "value", "bilinear")),
        )
    except Exception:  # transforms without the usual attributes (detection: the model normalises): ImageNet defaults
        pass
    return meta


def _dense_kwargs(name: str) -> dict[str, Any]:
    """Builder arguments of a segmentation or detection model built without its weights: no
    ImageNet backbone either (torchvision's default would download one)."""
    return {} if model_task(name) == "classification" else {"weights_backbone": None}


def _aux_kwargs(name: str, *, pretrained: bool) -> dict[str, Any]:
    """FCN and DeepLabV3 weights carry an auxiliary head (torchvision builds it, ``aux_loss=True``,
    whenever it loads weights): the architecture of pretrained weights or of such a checkpoint has
    it too, so the catalog lists the modules the loaded model runs."""
    if not pretrained or model_task(name) != "segmentation" or name.startswith("lraspp"):
        return {}
    return {"aux_loss": True}


def _build(name: str, *, seed: int, **kwargs: Any) -> nn.Module:
    # Builders differ in defaults that matter without pretrained weights (aux heads, init_weights);
    # torchvision's own choices are kept, only randomness is fixed.
    kwargs = {**_dense_kwargs(name), **kwargs}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return tvm.get_model(name, weights=None, **kwargs)


def conv_counts(names: list[str] | None = None) -> dict[str, int]:
    """Number of Conv2d modules of each torchvision model (all of ``list_models()`` by default).

    Building 80 models, even on 'meta', takes seconds, so the counts come from a table: the one
    shipped for the torchvision version it was made with (cnnviz/_convcounts.py), else the user's
    cache ($XDG_CACHE_HOME/cnnviz), filled on first use by building the missing models on 'meta'."""
    names = list_models() if names is None else [check_model_name(n) for n in names]
    version = torchvision.__version__.split("+")[0]  # '0.29.1+cu130': the build does not change models
    table: dict[str, int] = dict(SHIPPED_COUNTS) if SHIPPED_VERSION == version else {}
    cache = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "cnnviz",
                         f"convs-torchvision-{version}.json")
    missing = [n for n in names if n not in table]
    if missing:
        with contextlib.suppress(OSError, ValueError):
            with open(cache, encoding="utf-8") as f:
                table.update({str(k): int(v) for k, v in json.load(f).items()})
        missing = [n for n in names if n not in table]
    if missing:
        for n in missing:
            table[n] = sum(isinstance(m, nn.Conv2d) for m in build_meta_model(n).modules())
        with contextlib.suppress(OSError):  # a read-only home only costs speed
            os.makedirs(os.path.dirname(cache), exist_ok=True)
            tmp = f"{cache}.{os.getpid()}.tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(table, f)
            os.replace(tmp, cache)
    return {n: table[n] for n in names}


def build_model(name: str, *, seed: int = 0, device: str | torch.device = "cpu", num_classes: int | None = None) -> nn.Module:
    """A randomly initialised model (same seed, same weights), in eval mode."""
    name = check_model_name(name)
    kwargs: dict[str, Any] = {} if num_classes is None else {"num_classes": num_classes}
    if name in ("inception_v3", "googlenet"):
        kwargs["aux_logits"] = False
        kwargs["init_weights"] = True
    model = _build(name, seed=seed, **kwargs)
    return model.to(device).eval()


# True while a checkpoint is being assigned into a model built under _params_on_meta: its tensors
# must stay where they are.
_ASSIGNING: contextvars.ContextVar[bool] = contextvars.ContextVar("cnnviz_assigning", default=False)


@contextlib.contextmanager
def _params_on_meta() -> Iterator[None]:
    """Every parameter and buffer a module registers goes to the 'meta' device (no storage, no
    init cost), while plain tensor arithmetic in builders (RegNet's width rules) still runs on CPU."""
    reg_param, reg_buffer = nn.Module.register_parameter, nn.Module.register_buffer

    def param(self: nn.Module, name: str, p: Any) -> None:
        if p is not None and not _ASSIGNING.get():
            p = nn.Parameter(p.to("meta"), requires_grad=p.requires_grad)
        reg_param(self, name, p)

    def buffer(self: nn.Module, name: str, b: Any, persistent: bool = True) -> None:
        # Non-persistent buffers are not in checkpoints: keep the values the builder computed.
        keep = b is None or not persistent or _ASSIGNING.get()
        reg_buffer(self, name, b if keep else b.to("meta"), persistent=persistent)

    nn.Module.register_parameter, nn.Module.register_buffer = param, buffer  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter, nn.Module.register_buffer = reg_param, reg_buffer  # type: ignore[method-assign]


def build_meta_model(name: str, *, num_classes: int | None = None, aux: bool = False) -> nn.Module:
    """The model's structure with no storage (device 'meta'): for shapes and catalogs, instant.
    ``aux``: a segmentation model with the auxiliary head its pretrained weights carry."""
    name = check_model_name(name)
    kwargs: dict[str, Any] = {} if num_classes is None else {"num_classes": num_classes}
    kwargs.update(_aux_kwargs(name, pretrained=aux))
    if name in ("inception_v3", "googlenet"):
        kwargs["aux_logits"] = False
        kwargs["init_weights"] = False
    kwargs = {**_dense_kwargs(name), **kwargs}
    with _params_on_meta(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tvm.get_model(name, weights=None, **kwargs).eval()


def load_checkpoint(path: str) -> dict[str, torch.Tensor]:
    """Read a state dict from ``path`` with ``weights_only=True``; unwrap {'state_dict'|'model': ...}
    and strip a DataParallel ``module.`` prefix. Raises WeightsError with the reason."""
    if not os.path.exists(path):
        raise WeightsError(f"checkpoint {path!r} does not exist")
    if os.path.isdir(path):
        raise WeightsError(f"checkpoint {path!r} is a directory, not a file")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols: noise for users
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Unsupported global" in text or "GLOBAL" in text:
            raise WeightsError(
                f"refused checkpoint {path!r}: it holds Python objects other than tensors, and unpickling them "
                f"could run code (cnnviz loads with weights_only=True); re-save it with torch.save(model.state_dict(), path)"
            ) from None
        detail = next((ln.strip() for ln in text.splitlines() if ln.strip().startswith("Unsupported")), "unreadable")
        raise WeightsError(
            f"{path!r} is not a PyTorch checkpoint that loads safely with weights_only=True ({detail}); other pickles are refused "
            f"because unpickling them could run code; re-save it with torch.save(model.state_dict(), path)"
        ) from None
    except PermissionError:
        raise WeightsError(f"cannot read checkpoint {path!r}: permission denied") from None
    except Exception as exc:  # zip errors, EOF, garbage bytes: all mean "not a checkpoint"
        raise WeightsError(f"{path!r} is not a PyTorch checkpoint ({first_line(exc)})") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(
            f"{path!r} does not hold a state dict (a mapping of parameter names to tensors, "
            f"optionally under 'state_dict' or 'model')"
        )
    strip = bool(obj) and all(k.startswith("module.") for k in obj)
    sd = OrderedDict((k[len("module."):] if strip else k, v) for k, v in obj.items())
    meta = getattr(obj, "_metadata", None)  # per-module versions some modules' loaders read (MNASNet)
    if meta is not None:
        sd._metadata = OrderedDict((k[len("module."):] if strip and k.startswith("module.") else k, v)  # type: ignore[attr-defined]
                                   for k, v in meta.items())
    return sd


def _few(items: list[str], n: int = 5) -> str:
    shown = ", ".join(items[:n])
    return shown + (f" (+{len(items) - n} more)" if len(items) > n else "")


def finetuned_classes(model: nn.Module, sd: Mapping[str, torch.Tensor]) -> int | None:
    """If ``sd`` differs from ``model`` only in the output size of the final classifier layer
    (Linear, or SqueezeNet's 1x1 conv), that size; else None."""
    own = model.state_dict()
    if set(own) != set(sd):
        return None
    diff = [k for k in own if own[k].shape != sd[k].shape]
    if not diff:
        return None
    heads = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    head = heads[-1] if heads else None
    if head is None or set(diff) - {f"{head}.weight", f"{head}.bias"}:
        return None
    w = sd.get(f"{head}.weight")
    if w is None or w.shape[1:] != own[f"{head}.weight"].shape[1:]:
        return None
    return int(w.shape[0])


def check_state_dict(model: nn.Module, sd: Mapping[str, torch.Tensor], *, source: str) -> None:
    """WeightsError listing the first mismatches unless ``sd`` has exactly ``model``'s names and
    shapes (reads no tensor data: a model on 'meta' and a memory-mapped ``sd`` cost nothing)."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in sd and sd[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"missing keys: {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_few(unexpected)}")
    if shapes:
        problems.append(f"shape mismatch (checkpoint vs model): {_few(shapes, 3)}")
    if problems:
        raise WeightsError(f"checkpoint {source!r} does not fit this model: " + "; ".join(problems))


def apply_state_dict(model: nn.Module, sd: Mapping[str, torch.Tensor], *, source: str) -> None:
    """Load ``sd`` into ``model`` strictly, with an error listing the first mismatches."""
    check_state_dict(model, sd, source=source)
    own = model.state_dict()
    # assign=True: the checkpoint's (memory-mapped) tensors become the parameters, no copy; this
    # also fills a model built on 'meta'. A half-precision checkpoint is converted to the model's dtype.
    if any(v.is_floating_point() and v.dtype != own[k].dtype for k, v in sd.items()):
        converted = OrderedDict((k, v.to(own[k].dtype) if v.is_floating_point() else v) for k, v in sd.items())
        if hasattr(sd, "_metadata"):
            converted._metadata = sd._metadata  # type: ignore[attr-defined]
        sd = converted
    model.load_state_dict(sd, strict=True, assign=True)
    check_materialised(model, source=source)


def _cached_state_dict(name: str, member: Any, *, progress: bool) -> dict[str, torch.Tensor]:
    """The weights of ``member`` from the hub cache, memory-mapped (nothing is read until used).
    A missing file is downloaded first through torchvision's weights API (its URL, its hash check)."""
    path = checkpoint_path(member)
    try:
        if not os.path.isfile(path):
            member.get_state_dict(progress=progress, check_hash=True)  # downloads into the hub cache
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Files in torch's legacy (pre-zip) format cannot be memory-mapped: read those whole.
            return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except (OSError, ConnectionError, http.client.HTTPException) as exc:  # URLError is an OSError
        if os.path.isfile(path):
            raise WeightsError(f"cannot read cached weights file {path} ({_reason(exc)}); delete it and retry") from None
        raise WeightsError(_not_cached_message(name, member, f"download failed: {_reason(exc)}")) from None
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise WeightsError(f"cached weights file {path} is broken ({_reason(exc)}); delete it and retry") from None


@contextlib.contextmanager
def assigning_loads() -> Iterator[None]:
    """Inside the block every ``load_state_dict`` assigns (``assign=True``): the checkpoint's
    (memory-mapped) tensors become the parameters, also of a model built under _params_on_meta,
    so nothing is initialised or copied. For builders that load weights themselves."""
    load_sd = nn.Module.load_state_dict

    def load(self: nn.Module, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        token = _ASSIGNING.set(True)
        try:
            return load_sd(self, state_dict, strict=strict, assign=True)
        finally:
            _ASSIGNING.reset(token)

    nn.Module.load_state_dict = load  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.load_state_dict = load_sd  # type: ignore[method-assign]


@contextlib.contextmanager
def _builder_loads(sd: Mapping[str, torch.Tensor]) -> Iterator[None]:
    """torchvision's builders get ``sd`` from ``weights.get_state_dict()`` and assign it: their own
    handling of their weights (class count, DenseNet's key renames, Inception's aux head) runs
    unchanged on a model built on 'meta'."""
    from torchvision.models._api import WeightsEnum

    get_sd = WeightsEnum.get_state_dict
    WeightsEnum.get_state_dict = lambda self, *a, **k: sd  # type: ignore[method-assign]
    try:
        with assigning_loads():
            yield
    finally:
        WeightsEnum.get_state_dict = get_sd  # type: ignore[method-assign]


def _pretrained(name: str, member: Any, *, progress: bool) -> nn.Module:
    """torchvision model ``name`` with the weights of ``member``, built on 'meta' and filled from the
    memory-mapped hub-cache file: the same parameters as ``get_model(name, weights=member)``."""
    sd = _cached_state_dict(name, member, progress=progress)
    try:
        with _params_on_meta(), _builder_loads(sd), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = tvm.get_model(name, weights=member, progress=progress)
    except RuntimeError as exc:  # load_state_dict's key/shape report
        raise WeightsError(f"cached weights file {checkpoint_path(member)} does not fit {name} ({_reason(exc)}); "
                           f"delete it and retry") from None
    check_materialised(model, source=checkpoint_path(member))
    return model


def check_materialised(model: nn.Module, *, source: str) -> None:
    """Every parameter and persistent buffer holds data (none left on 'meta' by a partial load)."""
    empty = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if empty:
        raise WeightsError(f"checkpoint {source!r} does not fill the model: no values for {_few(empty)}")


def load_model(
    name: str,
    *,
    weights: str | None = "DEFAULT",
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> LoadedModel:
    """Build torchvision model ``name`` with ``weights``: 'DEFAULT', an enum member name, 'none'
    (random, seeded) or a checkpoint path. Returns the model in eval mode with its preprocessing
    metadata. Never downloads when ``offline()``. Raises ModelError / WeightsError."""
    name = check_model_name(name)
    weights = "none" if weights is None else str(weights)
    enum = weights_enum(name)
    default_member = enum.DEFAULT if enum is not None and "DEFAULT" in enum.__members__ else None

    looks_like_path = is_checkpoint_path(weights)
    if weights.lower() == "none":
        model = build_model(name, seed=seed, device="cpu")
        label, meta = "none", _meta_from(default_member)
    elif looks_like_path:
        model, sd, meta = _checkpoint_model(name, weights, default_member)
        apply_state_dict(model, sd, source=weights)
        label = weights
    else:
        member = resolve_weights(name, weights)
        if not is_cached(member) and offline():
            raise WeightsError(_not_cached_message(name, member, "not in the cache and downloads are off"))
        model = _pretrained(name, member, progress=progress)
        label, meta = member.name, _meta_from(member)
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return LoadedModel(model=model, name=name, weights=label, task=model_task(name), **_fed(model, meta))


def _fed(model: nn.Module, meta: dict[str, Any]) -> dict[str, Any]:
    """A detector takes its inputs as its own transform makes them (cnnviz.detect.prepare): the
    mean/std and size of that transform replace the weights' (which have none)."""
    from .detect import is_detector, prepare

    return {**meta, **prepare(model)} if is_detector(model) else meta


def _checkpoint_model(name: str, path: str, default_member: Any) -> tuple[nn.Module, dict[str, torch.Tensor], dict[str, Any]]:
    """Model ``name`` on 'meta' shaped for the checkpoint at ``path`` (a fine-tuned head keeps its
    own size), the checkpoint's state dict (memory-mapped: nothing is read until used) and the
    preprocessing metadata. Raises WeightsError when the file is no safe state dict."""
    sd = load_checkpoint(path)
    if name in ("inception_v3", "googlenet"):  # trained with auxiliary heads; cnnviz builds without them
        sd = OrderedDict((k, v) for k, v in sd.items() if not k.startswith(("aux1.", "aux2.", "AuxLogits.")))
    aux = any(k.startswith("aux_classifier.") for k in sd)
    model = build_meta_model(name, aux=aux)
    meta = _meta_from(default_member)
    classes = finetuned_classes(model, sd)
    if classes is not None:
        # A fine-tuned checkpoint (e.g. 10 classes): same backbone, its own head size.
        model = build_meta_model(name, num_classes=classes, aux=aux)
        meta["categories"] = [f"class {i}" for i in range(classes)]
    return model, sd, meta


def is_checkpoint_path(weights: str) -> bool:
    """True when ``--weights`` names a file rather than 'none' or an enum member."""
    return weights.lower() != "none" and (
        os.sep in weights or weights.endswith((".pth", ".pt", ".ckpt", ".bin")) or os.path.exists(weights)
    )


def architecture(name: str, *, weights: str = "DEFAULT") -> LoadedModel:
    """The model's structure on the 'meta' device with the preprocessing (mean, std, sizes,
    categories) of ``weights``; reads no weights file. For geometry: shapes, receptive fields."""
    name = check_model_name(name)
    enum = weights_enum(name)
    member = None
    if enum is not None:
        if is_checkpoint_path(weights) and not os.path.isfile(weights):
            raise WeightsError(f"checkpoint {weights!r} does not exist")
        if weights.lower() == "none" or is_checkpoint_path(weights):
            member = enum.DEFAULT if "DEFAULT" in enum.__members__ else None
        else:
            member = resolve_weights(name, weights)
    if is_checkpoint_path(weights):
        # The checkpoint decides the head's size and must fit: read its names and shapes (memory-mapped).
        model, sd, meta = _checkpoint_model(name, weights, member)
        check_state_dict(model, sd, source=weights)
        return LoadedModel(model=model, name=name, weights="architecture only", task=model_task(name), **_fed(model, meta))
    pretrained = member is not None and weights.lower() != "none"
    model = build_meta_model(name, aux=pretrained)
    return LoadedModel(model=model, name=name, weights="architecture only", task=model_task(name),
                       **_fed(model, _meta_from(member)))


def _reason(exc: BaseException) -> str:
    return first_line(getattr(exc, "reason", "") or exc, 200, empty=type(exc).__name__)


def version_info() -> str:
    return f"torch {torch.__version__}, torchvision {torchvision.__version__}"


# ---------------------------------------------------------------- the identity of weights

#: What :func:`weights_digest` hashes. ``"all"``: every state-dict tensor, the identity of the
#: weights (a top index records it and refuses other weights; the report's CAM pictures, which
#: read the classifier, key on it). ``"features"``: every parameter and buffer outside fully
#: connected layers (nn.Linear), what a conv layer's maps, filters and maximized images depend on
#: (the report's picture cache keys on it, so another classifier head keeps them cached; the head
#: is ~90% of VGG16's bytes).
DigestScope = Literal["all", "features"]


def weights_digest(model: nn.Module, *, scope: DigestScope = "all") -> str:
    """Hash of ``model``'s weights by value: tensor names, dtypes, shapes and bytes in module order,
    so the same weights give the same digest whatever file, enum or seed they came from.

    The scopes also differ in encoding, for history: ``"all"`` is the SHA-256 (64 hex digits) of
    the state dict's entries, ``"features"`` the SHA-1 (20 hex digits) of each module's own
    parameters and buffers (non-persistent ones included, a module shared under two names once).
    Both are stored in existing indexes and report caches, so neither may change: tests pin them."""
    if scope == "all":
        h = hashlib.sha256()
        for name, t in model.state_dict().items():
            _hash_tensor(h, f"{name}|{t.dtype}|{tuple(t.shape)}\n", t)
        return h.hexdigest()
    if scope == "features":
        h = hashlib.sha1()
        for mod_name, mod in model.named_modules():
            if isinstance(mod, nn.Linear):
                continue
            for name, t in [*mod.named_parameters(recurse=False), *mod.named_buffers(recurse=False)]:
                if t is not None and t.device.type != "meta":
                    _hash_tensor(h, f"{mod_name}.{name}{t.dtype}{tuple(t.shape)}", t)
        return h.hexdigest()[:20]
    raise ValueError(f"unknown digest scope {scope!r}; use 'all' or 'features'")


def _hash_tensor(h: Any, header: str, t: torch.Tensor) -> None:
    h.update(header.encode())
    h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
