"""The work of each cnnviz command as a typed library function ("job"), without click.

A command flows cli -> jobs -> domain modules -> render/io::

    cnnviz/cli/maps.py    options -> MapsRequest -> run_maps(...); prints each record (path or JSON)
    cnnviz/jobs/maps.py   validate on the 'meta' architecture, load the model, capture, render, write
    cnnviz/maps.py ...    the computations and pictures (pure arrays); cnnviz/io.py writes files

Every job has the same shape:

* a frozen, keyword-only **request** dataclass (``MapsRequest``): what the user asked, with the
  CLI's defaults; images come as one :class:`ImageInputs` field named ``inputs``;
* a function ``run_<job>(request, *, output, model=None, say=quiet)`` that raises every usage
  error (a :class:`cnnviz.errors.CnnvizError`) before reading weights or pixels, loads the model
  unless an already loaded ``model`` is given (benchmarks and notebooks pass one), writes each file
  through ``output.png`` / ``output.npy`` and calls ``output.report(record)`` once per file, in
  order: a JSON-ready dict with at least ``"path"``;
* ``say(message)`` for notes and the closing summary (the CLI sends them to stderr), never print;
* a long job (maps, rf --effective, cam, top, report, maximize) shows its progress through
  :class:`cnnviz.progress.Progress` (a tqdm bar on stderr when it is a terminal), off with the
  request's ``quiet`` field (the CLI's ``-q/--quiet``), which names no file.

Dependencies point one way: cli -> jobs -> report/ and the domain modules. A job that shows
other jobs' work (report: cam, top) runs them itself and hands them to the builder.

:class:`Output` is the sink: ``Output("dir")`` writes atomically into a folder, ``Output("-")``
streams exactly one PNG to stdout (``output.prepare(n_files)`` refuses anything else, up front);
records go to ``on_record`` as they happen or collect in ``output.records``.

Adding a command ``cnnviz cam``: its computation in cnnviz/cam.py, then 14 lines of job and a
click function::

    # cnnviz/jobs/cam.py
    @dataclass(frozen=True, kw_only=True)
    class CamRequest:                            # field names = the CLI's option names
        inputs: ImageInputs
        layers: tuple[str, ...]
        model: ModelSpec | str = "resnet50"      # --model, --weights, --seed, --mean ... (sources.py)

    def run_cam(req: CamRequest, *, output: Output, model: LoadedModel | None = None, say: Say = quiet) -> None:
        output.prepare(len(req.inputs.check()))  # every usage error before any weights are read
        lm = model or load(req.model)            # cnnviz.sources.load
        for im in req.inputs.read(lm):
            picture = cam_picture(lm.model, im.x, req.layers)         # cnnviz/cam.py
            path = output.png(output_name(im.label, lm.name, kind="cam"), picture, metadata={...})
            output.report({"path": path, "image": im.source})
        say(f"cam: {output.written} file(s)")

    # cnnviz/cli/cam.py (imported in cnnviz/cli/__init__.py)
    @cli.command()
    @image_options
    @model_options()
    @layer_option(required=True)
    @output_option()
    @json_option
    def cam(inputs, output, as_json, **options):
        \"\"\"Class activation maps ... (help with examples)\"\"\"
        from ..jobs.cam import CamRequest, run_cam

        run_cam(CamRequest(inputs=inputs, **options), output=sink(output, as_json=as_json), say=info)

The CLI (cnnviz/cli/common.py) owns the rest once: ``-h``/100-column help, ``-o``/``--json``
options and their conflict (``sink``), printing records (``emit``), and turning every
CnnvizError into one ``cnnviz: error: ...`` line with its exit code.
"""
from __future__ import annotations

from .inputs import ImageInputs, InputImage, parse_image_size
from .output import Output, Record, Say, quiet

__all__ = ["ImageInputs", "InputImage", "Output", "Record", "Say", "parse_image_size", "quiet"]
