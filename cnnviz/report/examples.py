"""Dataset examples for the channel pages, from an index written by ``cnnviz top --index``.

For every report layer the index holds, the `top` job answers from the index alone (no forward
pass) and draws, per channel, its strip of the K images that excite it most, each cropped to the
receptive field of the peak unit: those pictures and the examples' numbers go into the report.
The job is handed in as an :class:`ExampleQuery` (cnnviz.jobs.report does): the site never calls
back into the jobs. The index must come from the same model and the same weights (SHA-256 of
the state dict).
"""
from __future__ import annotations

import io
import os
import tempfile
from typing import Any, Protocol

from PIL import Image

from ..errors import IndexStoreError, UsageError
from ..index import ActivationIndex, describe_layers
from ..io import write_atomic
from ..models import weights_digest
from .cache import Cache, digest
from .site import Site


_RANKS = {"conv": "the conv layers' outputs", "act": "the activations that follow the conv layers"}


def check_index(index: str, *, stage: str, lm: Any = None) -> ActivationIndex:
    """The index of ``report --index``, refused (IndexStoreError) when its examples would not be
    this report's: ranked at another stage than the report's maps, or (with the loaded model
    ``lm``) made by another model or other weights (SHA-256)."""
    idx = ActivationIndex.open(index)
    prov = idx.provenance
    if lm is not None and prov.get("model") != lm.name:
        raise IndexStoreError(f"index {index!r} was built with model {prov.get('model')}, not {lm.name}")
    if lm is not None and prov.get("weights_sha256") != weights_digest(lm.model):
        raise IndexStoreError(f"index {index!r} was built with other weights ({prov.get('weights')}) than the report's "
                              f"({lm.weights}); its examples would not be this network's")
    have = prov.get("stage")
    if have != stage:
        raise IndexStoreError(f"index {index!r} ranks {_RANKS.get(str(have), 'another stage')} (stage {have}), but this "
                              f"report shows stage {stage}; give the report --stage {have}, or scan an index with "
                              f"--stage {stage}")
    return idx


class ExampleQuery(Protocol):
    """Answers one layer from an index alone: the `top` job on index ``index``, layer number
    ``layer``, ``k`` examples per channel, one strip PNG per channel written into the folder
    ``into``; returns its records (per channel: ``channel``, ``picture`` (the strip's path),
    ``examples`` [{``path``, ``score``, ``unit``}])."""

    def __call__(self, *, index: str, layer: int, k: int, into: str) -> list[dict[str, Any]]: ...


def index_examples(site: Site, cache: Cache, out: str, *, index: str, k: int, query: ExampleQuery,
                   step: Any = lambda n: None) -> dict[str, int]:
    """Fill ``site.examples[(layer, channel)]`` from the index folder ``index`` (``query``
    answering the layers the report's cache lacks); returns counts {'computed': layers queried
    now, 'reused': layers from the report's cache}."""
    lm = site.lm
    idx = check_index(index, stage=site.stage, lm=lm)
    prov = idx.provenance
    held = {d["index"] for d in idx.layers}
    layers = [lay for lay in site.layers if lay.index in held]
    if not layers:
        raise UsageError(f"index {index!r} holds none of the report's layers (it holds {describe_layers(idx.layers)}); "
                         f"add them with -l")
    site.index_info = {"images": idx.count(), "score": "max", "k": k, "stage": prov.get("stage"),
                       "folder": os.path.abspath(index)}
    counts = {"computed": 0, "reused": 0}
    state = [prov.get("weights_sha256"), prov.get("preprocess"), prov.get("stage"), sorted(idx.part_dirs())]
    for lay in layers:
        key = digest("examples", state, lay.index, lay.name, k, "jpeg", 80)
        e = cache.get(key)
        if e is None:
            e = _query(query, index, lay, out, key, k)
            e = cache.put(key, e.pop("files"), **e)
            counts["computed"] += 1
        else:
            counts["reused"] += 1
        for c, v in e["channels"].items():
            site.examples[(lay.index, int(c))] = v
        step(1)
    return counts


def _jpeg(path: str) -> bytes:
    """The top job's PNG strip as a JPEG: these are photo crops, ~4x smaller so (a report of many
    channels stays light); the pixels are the job's, only the encoding differs."""
    buf = io.BytesIO()
    with Image.open(path) as im:
        im.convert("RGB").save(buf, format="JPEG", quality=88, optimize=True)
    return buf.getvalue()


def _query(query: ExampleQuery, index: str, lay: Any, out: str, key: str, k: int) -> dict[str, Any]:
    """One layer from the index: the top job's per-channel strips, copied into the report."""
    with tempfile.TemporaryDirectory(prefix="cnnviz-report-top-") as tmp:
        records = query(index=index, layer=lay.index, k=k, into=tmp)
        files, channels = [], {}
        for rec in records:
            rel = None
            if rec.get("picture"):
                rel = f"img/top-{key}-{rec['channel']:04d}.jpg"
                write_atomic(os.path.join(out, rel), _jpeg(rec["picture"]))
                files.append(rel)
            channels[str(rec["channel"])] = {
                "src": rel,
                "examples": [{"name": os.path.basename(e["path"]), "score": round(float(e["score"]), 4),
                              "unit": e["unit"]} for e in rec["examples"]],
            }
    return {"files": files, "channels": channels}
