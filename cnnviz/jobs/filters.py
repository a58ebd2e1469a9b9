"""The `filters` job: learned conv weights as PNG grids, one per layer (paged when large)."""
from __future__ import annotations

import time
from dataclasses import dataclass

from ..errors import UsageError
from ..filters import FilterPlan, plan_filters, render_plan
from ..io import indices_tag, option_tags, output_name
from ..layers import ConvLayer, conv_layers, select_layers
from ..models import LoadedModel
from ..render import check_cmap
from ..sources import ModelSpec, architecture, as_spec, load
from .output import Output, Say, default, quiet, request_tags


@dataclass(frozen=True, kw_only=True)
class FiltersRequest:
    """Everything `cnnviz filters` can be asked (defaults = the CLI's). ``filters`` / ``channels``:
    selectors (empty = all); ``max_filters`` / ``max_channels``: caps (None = the mode's default,
    0 = no cap); the rest shape the pictures (see cnnviz.filters.plan_filters)."""

    layers: tuple[str, ...] = ("0",)
    model: ModelSpec | str = "resnet50"
    mode: str = "auto"
    norm: str = "layer"
    filters: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    max_filters: int | None = None
    max_channels: int | None = None
    cmap: str = "RdBu_r"
    legend: bool = True
    labels: bool = False
    tile_size: int = 48
    gap: int = 2
    max_side: int = 8192


def run_filters(req: FiltersRequest, *, output: Output, model: LoadedModel | None = None, say: Say = quiet) -> None:
    """Write each selected layer's filters as PNG pages through ``output``, reporting each page.
    Every selection is checked on the architecture (no weights read) before the model loads;
    planning notes (caps, mode changes) go to ``say``."""
    check_cmap(req.cmap)  # a typo fails before the model loads
    plans = _plan(req)
    total = sum(len(p.pages) for _, p in plans)
    output.prepare(total, message=f"-o - streams exactly one PNG, but this writes {total}; select one layer (and "
                                  f"--channels that fit one page) or give an output folder")
    for cl, plan in plans:
        for note in plan.notes:
            say(f"layer {cl.index} {cl.name}: {note}")
    written = 0
    lm = model or load(req.model)
    t0 = time.perf_counter()
    loaded = conv_layers(lm.model)
    for cl, plan in plans:
        w = loaded[cl.index].module.weight.detach().cpu().float().numpy()
        title = f"{lm.name} {cl.index} {cl.name}" + (f" ({cl.alias})" if cl.alias else "") + f" [{lm.weights}]"
        tags = _tags(req, cl, plan)
        for page in render_plan(w, plan, title=title):
            page_tag = f"p{page.page:02d}" if len(plan.pages) > 1 else None
            meta = {"Software": "cnnviz", "model": lm.name, "weights": lm.weights, "layer": str(cl.index),
                    "name": cl.name, **({"alias": cl.alias} if cl.alias else {})}
            # the page's own text follows meta
            path = output.png(output_name(lm.name, cl.index, cl.slug, kind="filters", tags=[*tags, page_tag]),
                              page.picture, metadata=meta)
            written += 1
            output.report({
                "path": path, "layer": cl.index, "name": cl.name, "alias": cl.alias, "mode": plan.mode,
                "norm": plan.norm, "shape": list(plan.shape), **page.stats,
                "filters": page.metadata["filters"], "channels": page.metadata.get("channels"),
                "page": page.page, "pages": len(plan.pages), "height": page.shape[0], "width": page.shape[1],
                "model": lm.name, "weights": lm.weights,
            })
    say(f"{lm.name} [{lm.weights}]: {written} PNG{'s' if written != 1 else ''} for {len(plans)} layer"
        f"{'s' if len(plans) != 1 else ''} in {time.perf_counter() - t0:.2f} s (after model load)")


def _plan(req: FiltersRequest) -> list[tuple[ConvLayer, FilterPlan]]:
    """Each selected layer with its page plan, from the architecture alone."""
    spec = as_spec(req.model)
    chosen = select_layers(conv_layers(architecture(spec).model), req.layers, model_name=spec.source)
    hint = f"see 'cnnviz layers --model {spec.source}'"
    plans = []
    for cl in chosen:
        try:
            plan = plan_filters(
                tuple(cl.module.weight.shape), mode=req.mode, norm=req.norm, cmap=req.cmap, groups=cl.groups,
                filters=list(req.filters) or None, channels=list(req.channels) or None,
                max_filters=req.max_filters, max_channels=req.max_channels, tile_px=req.tile_size, gap=req.gap,
                labels=req.labels, legend=req.legend, max_side=req.max_side, hint=hint,
            )
        except UsageError as exc:
            if len(chosen) == 1:
                raise
            raise type(exc)(f"layer {cl.index} ({cl.name}): {exc}") from None
        plans.append((cl, plan))
    return plans


def _tags(req: FiltersRequest, cl: ConvLayer, plan: FilterPlan) -> list[str]:
    """File-name tags for what differs from the layer's default picture (README "Output names"):
    the drawn mode, norm, the filters and channels drawn (selections and caps alike), colormap
    and layout. Pages add their own '-p01' after these."""
    default_plan = plan_filters(plan.shape, groups=cl.groups, max_side=req.max_side)
    tags = option_tags([("{}", plan.mode, default_plan.mode), ("norm-{}", plan.norm, default(FiltersRequest, "norm"))])
    if plan.filters != default_plan.filters:
        tags.append(indices_tag("f", plan.filters))
    if plan.channels is not None and plan.channels != default_plan.channels:
        tags.append(indices_tag("c", plan.channels))
    options = [("{}", "cmap")] if plan.cmap is not None else []
    options += [("labels", "labels"), ("nolegend", "legend"), ("tile{}", "tile_size"), ("gap{}", "gap")]
    return tags + request_tags(req, options)
