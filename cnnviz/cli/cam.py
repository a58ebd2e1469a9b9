"""`cnnviz cam`: which part of the image drove the prediction (CAM family, gradient attributions)."""
from __future__ import annotations

from typing import Any

import click

from ..cammethods import users
from . import cli
from .common import (batch_size_option, captions_option, class_option, cmap_option, deprecated_aliases, device_options,
                     image_options, info, json_option, layer_option, model_options, out, output_option, quiet_option,
                     region_option, score_threshold_option, box_option, sink, stage_option, top_option)


class _RegistryHelp(click.Option):
    """An option whose help is written from the cam method registry (cnnviz.cammethods, no torch)
    when help is shown, so a method registered after import is listed too."""

    def __init__(self, *args: Any, help_from: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._help_from = help_from

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        self.help = self._help_from()
        return super().get_help_record(ctx)


def _method_help() -> str:
    from ..cammethods import METHODS

    return (f"Method(s), repeatable or comma-separated: {', '.join(METHODS)}; 'all' for every one (one comparison "
            "sheet); 'list' to describe them.")


def _ig_help() -> str:
    from ..cammethods import users

    return f"Points of the Gauss-Legendre path integral ({', '.join(users('ig_steps'))})."


def _complete_methods(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[str]:
    from ..cammethods import METHODS

    return [n for n in (*METHODS, "all", "list") if n.startswith(incomplete.lower())]


@cli.command()
@image_options
@model_options()
@layer_option(help="Layer(s) the CAM is computed on (repeatable; several are fused, as LayerCAM does): a module name "
                   "(layer4, features.29) or conv selectors (index -1, name, alias block5_conv3, slice, glob) read at "
                   "--stage.  [default: the block that ends with the last conv's activation: ResNet layer4, VGG16 "
                   "features.29, ConvNeXt features (timm: stages), Inception-v3 Mixed_7c]")
@stage_option("act", help="For conv selectors: act = after the conv's activation, conv = the conv's own output.")
@class_option(help="Explain these classes (repeatable): a name as in 'maximize --class' ('tennis ball', 'tennis', "
                   "'*terrier'), an index, a slice. Segmentation models: the sum of the class's logits over the pixels predicted as it.  "
                   "[default: the top-1 prediction; segmentation: the non-background class covering most pixels]")
@top_option(help="Explain the K most probable classes of each image (segmentation: the K classes covering most pixels).")
@region_option(help="Segmentation models: explain the class's logits summed over this region (a mask image the size of "
                    "the image or of the model's input; non-zero pixels are in it) instead of over the pixels "
                    "predicted as the class.")
@score_threshold_option(help="Detectors: explain each detection scoring at least P (one panel per box).")
@box_option(help="Detectors: explain the K-th detection only (0-based, best first), whatever its score.")
@click.option("-M", "--method", "methods", multiple=True, default=("gradcam",), show_default=True, metavar="NAME",
              cls=_RegistryHelp, help_from=_method_help, shell_complete=_complete_methods, is_eager=True,
              callback=lambda ctx, _param, value: _list_methods(ctx) if _asks_list(value) else value)
@click.option("--ig-steps", type=click.IntRange(min=1), default=50, show_default=True, metavar="N",
              cls=_RegistryHelp, help_from=_ig_help)
@click.option("--smooth", type=click.IntRange(min=0), default=0, show_default=True, metavar="N",
              help="SmoothGrad: average each map over N noisy copies of the image (0 = off).")
@click.option("--noise", type=float, default=0.15, show_default=True, metavar="S",
              help="SmoothGrad noise: standard deviation as a fraction of the image's value range.")
@cmap_option("inferno")
@click.option("--alpha", type=click.FloatRange(0, 1), default=0.6, show_default=True,
              help="Heat-map opacity where the map peaks (it fades with the map: silent regions show the photo).")
@click.option("--npy", is_flag=True, help="Also write each map as a (2, H, W) float32 .npy: [raw, scaled to 0..1].")
@click.option("--metrics", is_flag=True,
              help="Faithfulness per map: deletion/insertion AUC (Petsiuk 2018), confidence drop/increase "
                   "(Chattopadhay 2018); a methods table on stderr, the values in --json.")
@click.option("--metric-steps", type=click.IntRange(min=1), default=100, show_default=True, metavar="N",
              help="--metrics: pixels are deleted/inserted in N steps.")
@click.option("--sanity", is_flag=True,
              help="Sanity check (Adebayo 2018): randomise the layers from the top down and write a strip of the "
                   "re-computed maps with Spearman and SSIM to the original.")
@batch_size_option(16, help=f"Images per pass, and the inputs per pass of the extra forwards of {'/'.join(users('batch_size'))}.")
@captions_option(help="Title and legend (--no-captions: the heat map only).")
@device_options(note="bf16 runs the forward-only methods (eigencam, scorecam, ablationcam); the others need "
                     "float32 gradients.")
@output_option()
@json_option
@quiet_option
@deprecated_aliases("cam")
def cam(inputs: Any, output: str, as_json: bool, methods: tuple[str, ...], captions: bool, **options: Any) -> None:
    """Why the model decided: class activation maps and gradient attributions over the image.

    One PNG per image, class and method ({image}-{model}-{method}-{class}-cam.png), or with
    several methods one comparison sheet (rows: images and classes, columns: methods). The maps
    equal pytorch-grad-cam's (CAM family) and Captum's (saliency, integrated gradients, guided
    backprop) on the same model, layer and target.

    \b
    Examples:
      cnnviz cam --sample -m resnet50
      cnnviz cam --sample -m resnet50 --method all --top 2
      cnnviz cam photo.jpg --class 'tennis ball' --method gradcam++,scorecam --json
      cnnviz cam *.jpg -m vgg16 --method integrated-gradients --ig-steps 64 --smooth 8 --npy
      cnnviz cam --sample --method gradcam,saliency --metrics --sanity -o out/
      cnnviz cam --method list
    """
    from ..jobs.cam import CamRequest, run_cam

    run_cam(CamRequest(inputs=inputs, methods=methods, bare=not captions, **options), output=sink(output, as_json=as_json), say=info)


def _asks_list(values: tuple[str, ...]) -> bool:
    return any(m.strip().lower() == "list" for spec in values for m in spec.split(","))


def _list_methods(ctx: click.Context) -> None:
    """``--method list``: every registered method, then exit (before any input is read, like --help)."""
    from ..cammethods import METHODS

    for m in METHODS.values():
        out(f"{m.name:<22}{m.describe():<24}{m.summary}")
    ctx.exit(0)
