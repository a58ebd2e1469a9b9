"""`cnnviz top`: dataset examples, the images (and the patch in them) that excite each channel most;
`cnnviz top merge`: combine shard indexes."""
from __future__ import annotations

from typing import Any

import click
from click.core import ParameterSource

from . import cli
from .common import (CONTEXT_SETTINGS, CnnvizCommand, batch_size_option, channels_option, check_stream, cmap_option,
                     crop_option, deprecated_aliases, device_options, emit, engine_option, examples_option, index_option, info,
                     json_option, layer_option, model_options, out, output_option, quiet_option, scan_options,
                     shard_option, size_option, stage_option, tile_option)


class _TopCommand(CnnvizCommand):
    """`top IMAGES...`, and `top merge ...` dispatched to the merge command (a folder or file
    named 'merge' is given as ./merge)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] == "merge":
            ctx.meta["cnnviz.top.merge"] = merge.make_context("cnnviz top merge", list(args[1:]), parent=ctx)
            return []
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        sub = ctx.meta.get("cnnviz.top.merge")
        if sub is not None:
            with sub:
                return merge.invoke(sub)
        return super().invoke(ctx)


@cli.command(cls=_TopCommand)
@click.argument("images", nargs=-1, metavar="[IMAGES]...")
@model_options()
@layer_option()
@channels_option(help="Channels: 0:16, 3,7,9, all.  [default: all]")
@examples_option(most=1000, help="Examples per channel (with --image: channels to list).")
@click.option("--score", type=click.Choice(["max", "mean"]), default="max", show_default=True,
              help="Rank images by the maximum of the channel's map or by its mean.")
@click.option("--bottom", is_flag=True, help="The least-activating examples instead (lowest score first).")
@stage_option(help="conv: the Conv2d's output; act: after the activation that follows it (see 'cnnviz maps').")
@size_option(help="Input size: S px (with the centre crop: S x S) or HxW exact (with --no-crop).  "
                  "[default: the weights' crop size, 224]")
@crop_option(True, help="The classifier's Resize + CenterCrop (same-size inputs, fast batches, comparable patches); "
                        "--no-crop keeps the whole image with its shorter side at S.")
@batch_size_option(32, help="Images per forward pass.")
@scan_options(workers_help="Processes decoding and preprocessing images ahead of the model (0: none).  "
                           "[default: min(4, CPUs)]",
              strict_help="Stop at the first unreadable file, or path listed on stdin that does not exist, instead of "
                   "skipping it with a warning (exit code 0 when files were skipped; 1 with --strict).")
@index_option(exists=False,
              help="Store every image's per-channel max, mean and peak unit in DIR (Parquet), resumable and "
                   "incremental; without IMAGES, answer from DIR alone.")
@click.option("--image", "image", default=None, metavar="FILE",
              help="With --index: the channels this image excites most, and its rank among the index's images in each "
                   "(an image not in the index runs once through the index's model and is ranked as if added).")
@shard_option(help="Scan only shard I of N (0 <= I < N; a stable partition by path) into --index; combine with 'cnnviz top merge'.")
@engine_option(help="ray: run the scan on a Ray cluster (ray.init(address='auto') if one runs, else local); "
                    "needs pip install 'cnnviz[ray]'.")
@click.option("--overlay", is_flag=True, help="Blend the channel's map over each patch (runs the model on the examples).")
@click.option("--separate", is_flag=True, help="One strip PNG per channel instead of one grid per layer.")
@tile_option(112, least=8, most=1024, help="Patch size in the pictures.")
@cmap_option("inferno", help="Colormap of --overlay.")
@click.option("--max-side", type=click.IntRange(256, 9459), default=8192, show_default=True, metavar="PX",
              help="Largest PNG side (at most 9459: what Pillow opens without a decompression-bomb warning): a grid "
                   "that does not fit goes to further pages (-p01, -p02, ...), a row of more than fit wraps onto "
                   "further lines.")
@click.option("--no-pictures", is_flag=True, help="Only the JSON/paths answer, no PNG.")
@output_option(help="Folder for the pictures (created if needed); '-' streams the one picture to stdout.")
@click.option("--part-images", type=click.IntRange(min=1), default=512, show_default=True, metavar="N",
              help="With --index: commit a part (the unit of resumption) every N images...")
@click.option("--part-seconds", type=click.FloatRange(min=0), default=60, show_default=True, metavar="S",
              help="...or S seconds after the last part, whichever comes first (0: by count only): a kill -9 loses "
                   "at most the part in flight; rerunning the command resumes.")
@device_options(note="top takes fp32 only: bf16 would reorder near ties in rankings compared across scans.")
@json_option
@quiet_option
@deprecated_aliases("top")
def top(images: tuple[str, ...], model: Any, layers: tuple[str, ...], channels: str | None,
        examples: int, score: str, bottom: bool, stage: str, size: str | None, crop: bool, max_pixels: int | None,
        batch_size: int, workers: int | None, strict: bool, index: str | None, image: str | None, shard: str | None,
        engine: str, overlay: bool, separate: bool, tile: int, cmap: str, max_side: int, no_pictures: bool, output: str,
        part_images: int, part_seconds: float, as_json: bool, device: str, precision: str, quiet: bool) -> None:
    """Dataset examples: for each channel, the K images that excite it most, cropped to the
    receptive field of the unit where its map peaks.

    IMAGES are files, folders (recursive, sorted), globs, or '-' for a list of paths on stdin.
    Images stream through the model in batches (decoded in worker processes, the forward pass
    stopped after the last --layer); memory stays flat however many there are. Writes one grid
    per layer, {model}-{index}-{name}-top-{score}.png (a row per channel, K patches with their
    value and file name; non-default options add tags, see "Output names" in the docs; pages
    -p01, -p02, ... beyond --max-side), and prints its path, or with
    --json one record per channel: {layer, name, channel, picture, pictures,
    examples: [{path, score, unit [y, x], box [y0, x0, y1, x1]}]}.

    \b
    Examples:
      cnnviz top photos/ -m vgg16 -l block4_conv1 -c 0:16 -n 8
      find photos -name '*.jpg' | cnnviz top - -m vgg16 -l block4_conv1 -c 0:16 -n 8 --index idx
      cnnviz top --index idx -c 0:512 -n 25 --score mean --json
      cnnviz top --index idx --image photos/cat.jpg -n 10
      cnnviz top photos/ -m vgg16 -l block4_conv1 --index idx-2 --shard 2/4
      cnnviz top merge idx-0 idx-1 idx-2 idx-3 --into idx
    """
    import sys

    from ..jobs.output import Output
    from ..jobs.top import TopRequest, image_query, run_top

    check_stream(output, as_json=as_json)
    ctx = click.get_current_context()
    given = frozenset(n for n in ("model", "weights", "stage", "size", "crop")
                      if ctx.get_parameter_source(n) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT))
    req = TopRequest(images=images, model=model, weights=model.weights, seed=model.seed, layers=layers, stage=stage, channels=channels,
                     k=examples, score=score, bottom=bottom, size=size, crop=crop, max_pixels=max_pixels, batch_size=batch_size,
                     workers=workers, strict=strict, index=index, image=image, shard=shard, engine=engine,
                     pictures=not no_pictures, overlay=overlay, separate=separate, tile=tile, cmap=cmap, max_side=max_side,
                     part_images=part_images, part_seconds=part_seconds, given=given, device=device,
                     precision=precision, quiet=quiet)
    if image is not None:
        if output == "-":
            from ..errors import UsageError

            raise UsageError("--image lists channels and draws no picture: drop -o -")
        for rec in image_query(req):
            if as_json:
                emit(rec, as_json=True)
            else:
                _print_ranks(rec)
        return
    printed: set[str] = set()

    def on_record(rec: dict[str, Any]) -> None:  # one record per channel; each picture's path printed once
        if as_json:
            emit(rec, as_json=True)
            return
        for path in rec.get("pictures", []):
            if path not in printed and path != "-":
                printed.add(path)
                out(path)

    result = run_top(req, output=Output(output, on_record=on_record), say=info, stdin=sys.stdin)
    n_ch = sum(len(lr.examples) for lr in result.layers)
    what = f"{result.images:,} image(s)"
    if images:
        what += f" ({result.scanned:,} scanned now" + (f", {result.already:,} already indexed" if result.already else "") + \
                (f", {result.skipped:,} unreadable skipped" if result.skipped else "") + \
                (f", {result.missing:,} missing skipped" if result.missing else "") + ")"
    info(f"top: {'bottom' if bottom else 'top'} {examples} by {score} for {n_ch} channel(s) of {len(result.layers)} layer(s) "
         f"over {what} in {result.seconds:.1f}s")


def _print_ranks(rec: dict[str, Any]) -> None:
    alias = f" ({rec['alias']})" if rec.get("alias") else ""
    added = "" if rec.get("indexed", True) else " (not in the index: ranked as if added)"
    out(f"layer {rec['layer']} {rec['name']}{alias}: channels {rec['image']} excites most by {rec['score']}{added}")
    for r in rec["channels"]:
        out(f"  channel {r['channel']:>5}  {rec['score']} {r['score']:>10.4g}  rank {r['rank']:,} of {r['of']:,}")


@click.command(cls=CnnvizCommand, context_settings=CONTEXT_SETTINGS)
@click.argument("sources", nargs=-1, required=True, metavar="DIR...")
@click.option("--into", "into", required=True, metavar="OUT", help="The merged index (created, or extended if it exists).")
def merge(sources: tuple[str, ...], into: str) -> None:
    """Combine indexes (e.g. one per --shard) into one. Indexes built with other weights,
    preprocessing or layers are refused; an image in several of them is kept once.

    \b
    Example:
      cnnviz top merge idx-0 idx-1 idx-2 idx-3 --into idx
    """
    from ..jobs.top import merge_indexes

    counts = merge_indexes(into, list(sources))
    out(into)
    info(f"top merge: {counts['images']:,} image(s) in {counts['parts']} part(s) from {len(sources)} index(es) into {into}"
         + (f"; {counts['duplicates']:,} already present, kept once" if counts["duplicates"] else ""))
