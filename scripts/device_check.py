"""Do the main commands compute the same numbers on a GPU as on the CPU?

    python scripts/device_check.py                         # ResNet-18, random weights, the sample photo
    python scripts/device_check.py -m squeezenet1_1 -w DEFAULT --device cuda:1
    python scripts/device_check.py --bf16                  # also bf16 on the GPU against fp32 on the CPU

Runs, through the same library functions the commands use, each check on the CPU and on the GPU
(--device, default auto: CUDA, then MPS) with the same weights and inputs, and prints a table:

    maps        stream_maps at four layers (first, early, middle, last conv), stages conv and act
    cam         explain() gradcam and scorecam of the top-1 class
    top         scan() statistics (max and mean per image and channel) of three images
    rf          effective_fields(): |d unit / d input| of the centre unit of two layers
    maximize    maximize() 4 steps, fixed seed: the images and the objective values

The error of a check is max |gpu - cpu| / max(max - min, max |.|) of the CPU values; tolerances:

    1e-4  maps, top, rf      float32 rounding: one summation order against another, through the network
    1e-3  cam                 scores and gradients of the whole network (and Score-CAM's softmax over them)
    1e-2  maximize            4 Adam steps: the update normalises the gradient, amplifying tiny differences
    3e-2  bf16 rows (--bf16)  bfloat16 keeps 8 bits of mantissa (0.4 % per value), compounded over layers

In fp32 the GPU runs with TF32 off (cnnviz.device.autocast; PyTorch's cuDNN default would use it).
Exit status 1 when a check exceeds its tolerance. Without a GPU it says so, runs the CPU side of
every check (against itself: the table shows how it would compare) and exits 0.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cnnviz.cam import default_layer, explain, predict  # noqa: E402
from cnnviz.device import autocast, bf16_native, describe_device, resolve_device  # noqa: E402
from cnnviz.fields import effective_fields  # noqa: E402
from cnnviz.io import load_image, preprocess, sample_image_path  # noqa: E402
from cnnviz.layers import conv_layers  # noqa: E402
from cnnviz.maps import stream_maps  # noqa: E402
from cnnviz.optimize import maximize  # noqa: E402
from cnnviz.scan import Preprocess, scan  # noqa: E402
from cnnviz.sources import ModelSpec, load  # noqa: E402

TOL = {"maps": 1e-4, "top": 1e-4, "rf": 1e-4, "cam": 1e-3, "maximize": 1e-2, "bf16": 3e-2}


def rel_error(cpu: Any, other: Any) -> float:
    """max |other - cpu| / max(range of cpu, max |cpu|), in float64 (0 for two equal constants)."""
    a = np.asarray(cpu, np.float64)
    b = np.asarray(other, np.float64)
    if a.shape != b.shape:
        return float("inf")
    span = max(float(a.max() - a.min()), float(np.abs(a).max())) if a.size else 0.0
    diff = float(np.abs(a - b).max()) if a.size else 0.0
    return diff / span if span > 0 else (0.0 if diff == 0 else float("inf"))


class Checks:
    """The model on the CPU and on ``device``, the inputs, and the rows of the table."""

    def __init__(self, spec: ModelSpec, device: torch.device, size: int, folder: str):
        self.cpu = load(spec, device="cpu")
        self.dev = load(spec, device=str(device)) if device.type != "cpu" else self.cpu
        self.device = device
        img = load_image(sample_image_path())
        x, _ = preprocess(img, size=size, crop=True, resize_size=self.cpu.resize_size, crop_size=self.cpu.crop_size,
                          mean=self.cpu.mean, std=self.cpu.std, interpolation=self.cpu.interpolation)
        self.x = torch.from_numpy(x)[None]
        self.size = size
        self.paths = []
        for i, op in enumerate([None, "flip", "rotate"]):  # three different images for the scan
            im = img if op is None else (img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if op == "flip"
                                          else img.rotate(90, expand=True))
            path = os.path.join(folder, f"{i}.png")
            im.save(path)
            self.paths.append(path)
        convs = conv_layers(self.cpu.model)
        picks = sorted({0, len(convs) // 4, len(convs) // 2, len(convs) - 1})
        self.layers = [convs[i] for i in picks]
        self.rows: list[tuple[str, str, float, float]] = []

    def both(self, name: str, what: str, run: Callable[[Any, str], Any], *, tol: float, precision: str = "fp32") -> None:
        """``run(lm, precision)`` -> {part: array} on the CPU (fp32) and on the device (``precision``)."""
        ref = run(self.cpu, "fp32")
        got = run(self.dev, precision)
        for part in ref:
            self.rows.append((name, f"{what} {part}".strip(), rel_error(ref[part], got[part]), tol))

    # ---------------------------------------------------------------- the checks

    def maps(self, precision: str = "fp32") -> None:
        tol = TOL["maps" if precision == "fp32" else precision]
        for stage in ("conv", "act"):
            def run(lm: Any, prec: str, stage: str = stage) -> dict[str, np.ndarray]:
                got: dict[str, np.ndarray] = {}
                layers = [conv_layers(lm.model)[lay.index] for lay in self.layers]
                with autocast(prec, _device(lm)):
                    stream_maps(lm.model, layers, [self.x], stage=stage,
                                on_layer=lambda _b, lay, arr: got.__setitem__(f"{lay.index} {lay.name}", arr.copy()))
                return got

            self.both("maps" + ("" if precision == "fp32" else f" {precision}"), f"{stage}", run, tol=tol,
                      precision=precision)

    def cam(self) -> None:
        for method in ("gradcam", "scorecam"):
            def run(lm: Any, prec: str, method: str = method) -> dict[str, np.ndarray]:
                with autocast(prec, _device(lm)):
                    target = int(predict(lm.model, self.x.to(_device(lm))).argmax())
                    e = explain(lm.model, self.x, [target], method=method, layers=[default_layer(lm.model)],
                                batch_size=64)
                return {f"class {target}": e.raw}

            self.both("cam", method, run, tol=TOL["cam"])

    def top(self) -> None:
        def run(lm: Any, prec: str) -> dict[str, np.ndarray]:
            stats: dict[str, list[np.ndarray]] = {}
            prep = Preprocess(size=self.size, crop=True, resize_size=lm.resize_size, crop_size=lm.crop_size,
                              mean=tuple(lm.mean), std=tuple(lm.std), interpolation=lm.interpolation)
            layers = [conv_layers(lm.model)[lay.index] for lay in self.layers]

            def on_batch(_pos: list[int], got: dict[str, Any]) -> None:
                for name, st in got.items():
                    stats.setdefault(f"{name} max", []).append(st.max)
                    stats.setdefault(f"{name} mean", []).append(st.mean)

            with autocast(prec, _device(lm)):
                scan(lm.model, layers, self.paths, prep=prep, on_batch=on_batch, batch_size=3, workers=0)
            return {k: np.concatenate(v) for k, v in stats.items()}

        self.both("top", "scan", run, tol=TOL["top"])

    def rf(self) -> None:
        def run(lm: Any, prec: str) -> dict[str, np.ndarray]:
            out = {}
            for lay in self.layers[1:3]:
                with autocast(prec, _device(lm)):
                    # the unit at the centre of the input: maps are at least 1x1 at these depths
                    shape = _map_shape(lm, lay.name, self.x)
                    g = effective_fields(lm.model, self.x, [(lay.name, (shape[0] // 2, shape[1] // 2), None)])[0]
                out[f"{lay.index} {lay.name}"] = g
            return out

        self.both("rf", "effective", run, tol=TOL["rf"])

    def maximize(self) -> None:
        lay = self.layers[1]

        def run(lm: Any, prec: str) -> dict[str, np.ndarray]:
            layer = conv_layers(lm.model)[lay.index]
            res = maximize(lm.model, targets=[0, 1], layer=layer, steps=4, size=64, seed=0, mean=lm.mean, std=lm.std,
                           precision=prec)
            return {"images": res.images, "values": res.values}

        self.both("maximize", f"{lay.name} 4 steps", run, tol=TOL["maximize"])


def _device(lm: Any) -> torch.device:
    return next(lm.model.parameters()).device


def _map_shape(lm: Any, name: str, x: torch.Tensor) -> tuple[int, int]:
    from cnnviz.capture import capture

    return tuple(capture(lm.model, x, [name])[name].shape[-2:])  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", default="resnet18")
    ap.add_argument("-w", "--weights", default="none", help="as --weights (default: none, random and seeded)")
    ap.add_argument("--device", default="auto", help="the GPU to compare with the CPU (auto: CUDA, then MPS)")
    ap.add_argument("-s", "--size", type=int, default=224, help="input size (px)")
    ap.add_argument("--bf16", action="store_true",
                    help="also maps in bf16 on the GPU (without one: on the CPU) against fp32 on the CPU")
    ap.add_argument("--skip", default="", help="checks to leave out, comma-separated (maps,cam,top,rf,maximize)")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    device = resolve_device(args.device)
    gpu = device.type != "cpu"
    if not gpu:
        print("device_check: no GPU here (CUDA or MPS): running the CPU side of every check against itself; "
              "nothing to compare", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="cnnviz-device-check-") as folder:
        checks = Checks(ModelSpec(args.model, weights=args.weights), device, args.size, folder)
        skip = {s.strip() for s in args.skip.split(",") if s.strip()}
        for name in ("maps", "cam", "top", "rf", "maximize"):
            if name not in skip:
                getattr(checks, name)()
        if args.bf16:
            if not bf16_native(device):
                print(f"device_check: {describe_device(device)} does not compute bf16 natively: emulated, slow",
                      file=sys.stderr)
            checks.maps(precision="bf16")
    where = describe_device(device) if gpu else "cpu (no GPU)"
    print(f"{args.model} ({args.weights}), {args.size} px: cpu against {where}; error = max |gpu - cpu| / max(range, max |.|) of cpu\n")
    print("| check | what | error | tolerance | ok |")
    print("|---|---|---:|---:|---|")
    bad = 0
    for name, what, err, tol in checks.rows:
        ok = err <= tol
        bad += not ok
        print(f"| {name} | {what} | {err:.2e} | {tol:.0e} | {'yes' if ok else 'NO'} |")
    print(f"\n{len(checks.rows) - bad} of {len(checks.rows)} within tolerance" + ("" if gpu else " (fp32: the CPU against itself)"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
