"""The cam method registry: every explanation method of `cnnviz cam` is one :class:`Method`.

A method is a name, a kind (how cnnviz.cam drives it), the function that computes it, the
``explain`` options that function reads, and a one-line summary. This module imports no torch:
the CLI lists the methods and builds its help from :data:`METHODS` at `cnnviz --help` speed, and
a method's function is named by a ``'module:attribute'`` path imported on first use (a callable
works too). Adding a method is one call::

    register(Method("mycam", "cam", "mypkg.cams:mycam", "my CAM: ...", grad=True))

after which ``explain(..., method="mycam")``, ``cnnviz cam --method mycam``, ``--method list``
and ``--method all`` include it.

The function each kind receives (torch tensors; N pairs of image and target class):

* ``cam``: ``f(acts, grads) -> (N, h, w)`` per layer, from one forward (and with ``grad`` one
  backward) pass: the layer's output (N, C, h, w) and the gradient of the target logits with
  respect to it (None without ``grad``). cnnviz.cam applies the ReLU, resizes and fuses layers.
* ``perturb``: ``f(model, x1, targets, acts1, *, point, batch_size) -> (K, C)`` channel weights
  for ONE image ``x1`` (1, 3, H, W) and its K target classes, from extra forward passes;
  ``acts1`` (1, C, h, w) is the layer's output, ``point`` where it is read. Pairs of one image
  share one call, so K classes cost one set of passes.
* ``input``: ``f(model, x, targets, **options) -> (logits (N, classes), raw map (N, H, W))``,
  gradients at the input.
"""
from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import UsageError

KINDS = {
    "cam": "layer, gradients",
    "perturb": "layer, masked forwards",
    "input": "input gradients",
}
# explain() keyword arguments a method's function may read (passed only when listed in ``options``)
OPTIONS = {
    "layers": "--layer/--stage",
    "ig_steps": "--ig-steps",
    "batch_size": "--batch-size",
}


@dataclass(frozen=True)
class Method:
    """One explanation method. ``kind``: 'cam' (a layer's activations and, with ``grad``, their
    gradients), 'perturb' (a layer's activations and masked forward passes, no gradients) or
    'input' (gradients at the input). ``function``: the compute function (see the module doc for
    each kind's signature) or its ``'module:attribute'`` path, imported on first use.
    ``options``: the explain() options it reads beyond its kind's own (see :data:`OPTIONS`);
    'cam' and 'perturb' methods always read ``layers``. ``aliases``: other spellings
    ``--method`` accepts (compared without case, '-' and '_')."""

    name: str
    kind: str
    function: str | Callable[..., Any] = field(repr=False)
    summary: str
    grad: bool = True
    options: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"method {self.name!r}: kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        unknown = [o for o in self.options if o not in OPTIONS]
        if unknown:
            raise ValueError(f"method {self.name!r}: unknown option {unknown[0]!r}; known: {', '.join(OPTIONS)}")
        if isinstance(self.function, str) and ":" not in self.function:
            raise ValueError(f"method {self.name!r}: function path {self.function!r} is not 'module:attribute'")

    @property
    def uses_layers(self) -> bool:
        """Whether the method reads a layer (every CAM; input methods that list 'layers')."""
        return self.kind != "input" or "layers" in self.options

    def uses(self, option: str) -> bool:
        """Whether the method's map depends on the explain() option ``option``."""
        return option == "layers" and self.uses_layers or option in self.options

    def resolve(self) -> Callable[..., Any]:
        """The compute function (its module imported on first use)."""
        if callable(self.function):
            return self.function
        module, _, attr = self.function.partition(":")
        fn = importlib.import_module(module)
        for part in attr.split("."):
            fn = getattr(fn, part)
        return fn  # type: ignore[return-value]

    def describe(self) -> str:
        """The kind column of ``--method list``."""
        return "layer" if self.kind == "cam" and not self.grad else KINDS[self.kind]


METHODS: dict[str, Method] = {}


def register(method: Method, *, replace: bool = False) -> Method:
    """Add ``method`` to :data:`METHODS` (the CLI, 'all' and 'list' include it from then on).
    ValueError when the name or an alias is taken, unless ``replace`` (same name only)."""
    taken = _spellings()
    for spelling in (method.name, *method.aliases):
        owner = taken.get(_key(spelling))
        if owner is not None and not (replace and owner == method.name):
            raise ValueError(f"method name {spelling!r} is already taken by {owner!r}")
    METHODS[method.name] = method
    return method


def unregister(name: str) -> None:
    """Remove a method registered under ``name`` (KeyError when there is none)."""
    del METHODS[name]


def _key(spelling: str) -> str:
    return spelling.lower().replace("-", "").replace("_", "")


def _spellings() -> dict[str, str]:
    """{normalised spelling: method name} over every name and alias."""
    out: dict[str, str] = {}
    for m in METHODS.values():
        for s in (m.name, *m.aliases):
            out.setdefault(_key(s), m.name)
    return out


def resolve_methods(specs: str | Sequence[str]) -> list[str]:
    """Method names for ``--method`` values (comma lists allowed, 'all' = every method, case,
    '-' and '_' forgiven, aliases). Raises UsageError naming close matches."""
    if isinstance(specs, str):
        specs = [specs]
    spellings = _spellings()
    out: list[str] = []
    for spec in specs:
        for term in (t.strip() for t in str(spec).split(",")):
            if _key(term) == "all":
                out.extend(n for n in METHODS if n not in out)
                continue
            name = spellings.get(_key(term))
            if name is None:
                close = difflib.get_close_matches(term.lower(), list(METHODS), n=3, cutoff=0.5)
                sugg = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
                raise UsageError(f"unknown method {term!r}{sugg}; see 'cnnviz cam --method list'")
            if name not in out:
                out.append(name)
    if not out:
        raise UsageError("no method given; see 'cnnviz cam --method list'")
    return out


def users(option: str) -> list[str]:
    """Names of the registered methods whose maps depend on ``option`` (for help texts)."""
    return [m.name for m in METHODS.values() if m.uses(option)]


_CAM = "cnnviz.cam"
for _m in (
    Method("gradcam", "cam", f"{_CAM}:gradcam", "Grad-CAM: channels weighted by their mean gradient (Selvaraju et al. 2017)"),
    Method("hirescam", "cam", f"{_CAM}:hirescam", "HiResCAM: activations times gradients, element-wise (Draelos & Carin 2020)"),
    Method("gradcam++", "cam", f"{_CAM}:gradcam_pp", "Grad-CAM++: higher-order gradient weights (Chattopadhay et al. 2018)",
           aliases=("gradcampp", "gradcamplusplus")),
    Method("xgradcam", "cam", f"{_CAM}:xgradcam", "XGrad-CAM: activation-normalised gradient weights (Fu et al. 2020)"),
    Method("layercam", "cam", f"{_CAM}:layercam",
           "LayerCAM: positive gradients times activations, fuses several layers (Jiang et al. 2021)"),
    Method("eigencam", "cam", f"{_CAM}:eigencam", "Eigen-CAM: first principal component of the activations (Muhammad & Yeasin 2020)",
           grad=False),
    Method("eigengradcam", "cam", f"{_CAM}:eigengradcam", "Eigen-Grad-CAM: first principal component of activations x gradients"),
    Method("scorecam", "perturb", f"{_CAM}:scorecam_weights",
           "Score-CAM: channels weighted by the score of the image masked by each (Wang et al. 2020)",
           grad=False, options=("batch_size",)),
    Method("ablationcam", "perturb", f"{_CAM}:ablationcam_weights",
           "Ablation-CAM: channels weighted by the score drop when each is zeroed (Desai & Ramaswamy 2020)",
           grad=False, options=("batch_size",)),
    Method("saliency", "input", f"{_CAM}:saliency",
           "vanilla gradient: max over colour channels of |d score / d pixel| (Simonyan et al. 2014)", aliases=("vanilla",)),
    Method("inputxgrad", "input", f"{_CAM}:input_x_gradient",
           "input x gradient: |sum over colour channels of x * d score / d x| (Shrikumar et al. 2016)"),
    Method("guided-backprop", "input", f"{_CAM}:guided_backprop",
           "guided backpropagation: only positive gradients through ReLUs (Springenberg et al. 2015)"),
    Method("guided-gradcam", "input", f"{_CAM}:guided_gradcam", "guided backprop times the Grad-CAM map (Selvaraju et al. 2017)",
           options=("layers",)),
    Method("integrated-gradients", "input", f"{_CAM}:integrated_gradients_map",
           "integrated gradients from a zero baseline, --ig-steps points (Sundararajan et al. 2017)",
           options=("ig_steps", "batch_size"), aliases=("ig",)),
):
    register(_m)
del _m
