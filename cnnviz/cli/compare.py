"""`cnnviz compare`: what differs between two models or two checkpoints, layer by layer (linear
CKA) and unit by unit (channels matched by activation correlation)."""
from __future__ import annotations

import json
from typing import Any

import click

from . import cli
from .cam import _RegistryHelp, _complete_methods
from .common import (batch_size_option, check_stream, class_option, cmap_option, crop_option, device_options, examples_option,
                     index_option, info, json_option, layer_option, model_options, out, output_option, quiet_option,
                     scan_options, size_option, stage_option, top_option, with_model_options)


def _method_help() -> str:
    from ..cammethods import METHODS

    return f"With --cam: the method ('cnnviz cam --method list'): {', '.join(METHODS)}."


@cli.command()
@click.argument("images", nargs=-1, metavar="[IMAGES]...")
@model_options(labels=False)
@with_model_options(required=True, help="Model B, compared with model A (--model): any source --model takes.")
@layer_option(help="A's conv layers (repeatable; the selector grammar of 'cnnviz layers').  [default: all]")
@click.option("--with-layer", "with_layers", multiple=True, metavar="SEL",
              help="B's conv layers, as --layer.  [default: all]")
@stage_option("act", help="conv: the Conv2d's output; act: after the activation that follows it (what the network "
                          "passes on).")
@click.option("--spatial", type=click.Choice(["mean", "flatten"]), default="mean", show_default=True,
              help="mean: a channel's feature is its spatial average; CKA is then exact over all images from running "
                   "sums, in memory C_A x C_B per pair of layers. flatten: every unit is a feature; the minibatch "
                   "estimator (mean HSIC over minibatches of --batch-size images) with its standard error.")
@click.option("--kernel", type=click.Choice(["linear", "rbf"]), default="linear", show_default=True,
              help="rbf: RBF CKA (bandwidth: each minibatch's median distance), always by the minibatch estimator.")
@click.option("--same-units", is_flag=True,
              help="Match channel c of A to channel c of B (the same checkpoint lineage) instead of the best matching.")
@top_option(default=10, help="Channels listed per layer as 'changed most' (lowest matched correlation).")
@size_option(help="Input size: S px (with the centre crop: S x S) or HxW exact (with --no-crop).  "
                  "[default: each side's weights' crop size, 224]")
@crop_option(True, help="Each side's classifier Resize + CenterCrop (same-size inputs, fast batches); --no-crop keeps "
                        "the whole image with its shorter side at S.")
@batch_size_option(32, help="Images per forward pass (and per minibatch of --spatial flatten, at least 4).")
@scan_options(workers_help="Processes decoding images ahead of each model (0: none).  [default: min(4, CPUs) / 2]")
@cmap_option("viridis", help="Colormap of the heat map (CKA from 0 to 1).")
@index_option(exists=True, help="A 'cnnviz top' index of A (same weights and --stage): with --with-index, the channels "
                                "that changed most get their dataset examples before and after, side by side.")
@click.option("--with-index", type=click.Path(exists=True, file_okay=False), default=None, metavar="DIR",
              help="B's 'cnnviz top' index (see --index).")
@examples_option(most=100, help="Dataset examples per channel with --index.")
@click.option("--cam", "cam", is_flag=True,
              help="Attribution drift: per image, A's and B's maps of one cam method (--method) for the same class, "
                   "side by side with their Spearman rank correlation over the pixels; each side at the cam command's "
                   "default layer.")
@click.option("-M", "--method", "methods", multiple=True, default=("gradcam",), show_default=True, metavar="NAME",
              cls=_RegistryHelp, help_from=_method_help, shell_complete=_complete_methods)
@class_option(help="With --cam: explain these classes (names or indices, repeatable).  [default: A's top-1 prediction "
                   "per image]")
@device_options(note="compare takes fp32 only: its exact estimator is checked against float32 references.")
@click.option("--npy", is_flag=True, help="Also write the CKA matrix (rows A's layers, columns B's) as .npy.")
@click.option("--no-pictures", is_flag=True, help="No heat map PNG, only the numbers.")
@output_option(help="Folder for the heat map (created if needed); '-' streams the PNG to stdout.")
@quiet_option
@json_option(help="Print the written files' records, then the comparison as one JSON object (matrix, profile, units).")
def compare(images: tuple[str, ...], model: Any, with_source: str, with_weights: str, with_model_args: str | None,
            layers: tuple[str, ...], with_layers: tuple[str, ...], stage: str, spatial: str, kernel: str, same_units: bool,
            top: int, quiet: bool,
            size: str | None, crop: bool, max_pixels: int | None, batch_size: int, workers: int | None, strict: bool,
            cmap: str, index: str | None, with_index: str | None, examples: int, cam: bool, methods: tuple[str, ...],
            classes: tuple[str, ...], device: str, precision: str, npy: bool,
            no_pictures: bool, output: str, as_json: bool) -> None:
    """How similar two networks' representations are, layer by layer, and which channels changed.

    Runs IMAGES (files, folders, globs, '-' for a list on stdin; at least 4) through model A
    (--model, --weights) and model B (--with, --with-weights), each with its own preprocessing,
    and computes linear CKA (Kornblith et al. 2019; unbiased HSIC, Song et al. 2012) between every
    selected conv layer of A and of B. Writes the matrix as a heat map,
    {A}-vs-{B}-cka.png (rows A's layers, columns B's, depth order), and prints its path.

    When A and B share the architecture it also prints the diagonal profile (one line per
    layer: how similar it stayed) and, per layer, the channels that changed most: each channel of
    A is matched to one of B by the correlation of their spatially averaged activations over the
    images (Hungarian matching; --same-units: the identity).

    With --cam (and -M METHOD, default gradcam) it also writes, per image, {image}-{A}-vs-{B}-{METHOD}-{class}-drift.png:
    the image, A's map and B's map for the same class (A's top-1, or --class), with the Spearman
    rank correlation of the two maps over the pixels, and prints one line per image.

    \b
    Examples:
      cnnviz compare photos/ -m resnet18 -w base.pth --with resnet18 --with-weights tuned.pth -o cmp
      cnnviz compare photos/ -m vgg16 --with vgg16_bn --json > cka.json
      cnnviz compare photos/ -m resnet18 --with resnet34 -l 'layer4.*' --with-layer 'layer4.*' --npy
      cnnviz compare photos/ -m resnet18 -w base.pth --with resnet18 --with-weights tuned.pth \
          --index idx-base --with-index idx-tuned -k 8 -o cmp
      cnnviz compare photos/ -m vgg16 --with vgg16_bn --cam -M scorecam -o cmp
    """
    from ..jobs.compare import CompareRequest, run_compare
    from ..jobs.output import Output
    from ..sources import ModelSpec
    import sys

    check_stream(output, as_json=as_json)
    if not cam and methods != ("gradcam",):
        from ..errors import UsageError

        raise UsageError("--method picks the method of --cam's maps; add --cam")
    if no_pictures and output == "-":
        from ..errors import UsageError

        raise UsageError("-o - streams the heat map to stdout, but --no-pictures draws none; drop -o -")
    other = ModelSpec(source=with_source, weights=with_weights, seed=model.seed, model_args=with_model_args)
    req = CompareRequest(images=images, model=model, with_model=other, layers=layers, with_layers=with_layers,
                         stage=stage, spatial=spatial, kernel=kernel, same_units=same_units, top=top, size=size, crop=crop,
                         max_pixels=max_pixels, batch_size=batch_size, workers=workers, strict=strict, npy=npy,
                         picture=not no_pictures, cmap=cmap, index=index, with_index=with_index, examples=examples,
                         cam=",".join(methods) if cam else None, classes=classes, device=device, precision=precision, quiet=quiet)

    def on_record(rec: dict[str, Any]) -> None:
        if as_json:
            out(json.dumps(rec))
        elif rec.get("path") not in (None, "-"):
            out(rec["path"])

    result = run_compare(req, output=Output(output, on_record=on_record), say=info, stdin=sys.stdin)
    if as_json:
        out(json.dumps(result.as_dict()))
    elif output != "-":
        _print_text(result)
        _print_drift(result)
    how = "exact" if result.stderr is None else "minibatch estimate"
    info(f"compare: {kernel} CKA ({how}) of {len(result.layers_a)} x {len(result.layers_b)} layer(s) over "
         f"{result.images:,} image(s)" + (f" ({result.skipped:,} unreadable skipped)" if result.skipped else "")
         + f" in {result.seconds:.1f}s")


def _print_drift(result: Any) -> None:
    d = result.drift
    if not d:
        return
    med = "n/a" if d["median_rho"] is None else f"{d['median_rho']:.3f}"
    out(f"# attribution drift: {d['method']} maps of A (at {d['layer_a']}) and B (at {d['layer_b']}) for "
        f"{d['class_from']}; Spearman rho over the pixels (median {med})")
    for r in d["images"]:
        rho = "n/a" if r["rho"] is None else f"{r['rho']:.3f}"
        out(f"rho {rho:>6}  {r['class_name'][:28]:<28} ({r['class']:>4})  p_A {r['a']['probability']:.3f}  "
            f"p_B {r['b']['probability']:.3f}  {r['image']}")


def _print_text(result: Any) -> None:
    import numpy as np

    profile = result.profile()
    if profile:
        err = None if result.stderr is None else {lay.name: result.stderr[i, i] for i, (lay, _) in enumerate(profile)}
        out(f"# diagonal: CKA of each layer of A with the same layer of B (stage {result.stage}, {result.images:,} images)")
        units = {u.layer.name: u for u in result.units}
        for lay, v in profile:
            u = units.get(lay.name)
            extra = ""
            if u is not None:
                d = u.as_dict()
                med = "n/a" if d["median_corr"] is None else f"{d['median_corr']:.3f}"
                extra = f"  units: median matched corr {med}, {d['moved']} of {d['channels']} moved"
            pm = "" if err is None else f" \u00b1 {err[lay.name]:.4f}"
            name = lay.name + (f" ({lay.alias})" if lay.alias else "")
            out(f"layer {lay.index:>3} {name:<28} CKA {v:.4f}{pm}{extra}")
        rows = [(row["corr"], u.layer, row) for u in result.units for row in u.as_dict()["changed_most"]
                if row["corr"] is not None]
        rows.sort(key=lambda r: (r[0], r[1].index, r[2]["channel"]))
        if rows:
            k = result.units[0].top
            out(f"# the {min(k, len(rows))} channels that changed most: A's channel, its match in B, their correlation "
                f"over the images (identity: with B's channel of the same index)")
            for corr, lay, row in rows[:k]:
                ident = "n/a" if row["identity_corr"] is None else f"{row['identity_corr']:.3f}"
                out(f"layer {lay.index:>3} {lay.alias or lay.name:<24} channel {row['channel']:>4} -> {row['match']:>4}  "
                    f"corr {corr:.3f}  identity {ident}")
    else:
        best = np.nanargmax(np.nan_to_num(result.cka, nan=-np.inf), axis=1) if result.cka.size else []
        out("# for each layer of A: the most similar layer of B (linear CKA)")
        for i, lay in enumerate(result.layers_a):
            j = int(best[i])
            b = result.layers_b[j]
            out(f"layer {lay.index:>3} {lay.alias or lay.name:<24} -> {b.index:>3} {b.alias or b.name:<24} "
                f"CKA {result.cka[i, j]:.4f}")
