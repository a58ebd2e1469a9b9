"""Every `cnnviz ...` line of the ```sh blocks of the README and of every docs/ page runs and shows
what the page says.

Each page's examples run in page order in one scratch folder of its own (later ones use what
earlier ones wrote, e.g. the `top` index), through the real click CLI, with substitutions that keep
them fast and offline: `--weights none` where no weights are given, a small `--size`, one
optimisation step, a few channels, few integration/metric steps, and for `cam` and `report`
ResNet-18 in place of ResNet-50 (Score-CAM and Ablation-CAM go through layer4's channels one by one).
A line that appears on several pages runs once, on the first (the README, then docs/ in name order).
The pages' own files are made here: photo.jpg, a.jpg/b.jpg for `*.jpg`, photos/, scan.png,
mynet.py (from the docs' own code block) with best.pth and classes.txt, convnext.pth, vgg16.pt2.
Pipes are checked in Python: `| jq FILTER` by parsing the JSON, `| grep`, `> file.png` by
verifying the PNG; `a && b` runs b after a. Only examples that need a cluster are skipped (see
SKIP). Beyond exit codes, what the pages' text claims is checked (_claims, _claims_of).
"""
from __future__ import annotations

import glob
import json
import os
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import assert_png_valid, run_cli

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
# Generated pages hold no examples to run (cli.md: the --help texts, checked by test_docs_site.py).
GENERATED = {"cli.md"}


def pages() -> list[Path]:
    """The README, then every docs page."""
    return [README, *sorted(p for p in DOCS.glob("*.md") if p.name not in GENERATED)]


SKIP = {  # substring of the example -> why it cannot run in a test
    "--engine ray": "needs a Ray cluster (ray start); the ray engine has its own test in test_top.py",
    "ray start": "starts a Ray cluster",
    "$SLURM_ARRAY_TASK_ID": "runs inside a SLURM array job (the same sharding runs here via the GNU parallel example)",
}
WEIGHTED = {"maps", "filters", "maximize", "rf", "top", "cam", "report", "ablate", "compare"}
# Shell steps that prepare an example's files (folders, copies, a labels file, a checkpoint), run
# with bash in the scratch folder where a block with cnnviz examples has them; other shell lines
# (pip, publishing a report) never run.
SETUP = ("mkdir ", "cp ", "printf ", "python -c ")
# Examples that take several seconds even shrunk: marked slow (they still run in CI).
HEAVY = ("vgg16.pt2", "maximize --model vgg16", "maximize -m vgg16", "--effective", "--layer all", "timm:",
         "-c 0:512 -n 25")


def shell_lines(text: str) -> list[str]:
    """The command lines of a page's ```sh blocks: '$ '-prompted lines where a block has prompts,
    else every non-comment line; backslash continuations joined."""
    out = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        block = block.replace("\\\n", " ")
        lines = [ln.strip() for ln in block.splitlines() if ln.strip()]
        if any(ln.startswith("$ ") for ln in lines):
            lines = [ln[2:] for ln in lines if ln.startswith("$ ")]
        runs = [ln for ln in lines if not ln.startswith("#") and re.search(r"(^|[|&] *)cnnviz |parallel cnnviz", ln)]
        if runs:  # a block's own set-up steps (folders, copies, a labels file) run in their place
            runs = [ln for ln in lines if ln in runs or ln.startswith(SETUP)]
        out += runs
    return out


def docs_examples() -> list[tuple[str, str]]:
    """(page, line) for every example, each distinct line once, in page order."""
    seen: set[str] = set()
    out = []
    for page in pages():
        for line in shell_lines(page.read_text(encoding="utf-8")):
            if line not in seen:
                seen.add(line)
                out.append((page.name, line))
    return out


EXAMPLES = docs_examples()


def _page_code(marker: str) -> str | None:
    """The ```python block that starts with MARKER on any page (mynet.py lives on sources.md)."""
    for page in pages():
        m = re.search(r"```python\n(" + re.escape(marker) + r"\n.*?)```", page.read_text(encoding="utf-8"), re.S)
        if m:
            return m.group(1)
    return None


def _make_inputs(d: Path) -> None:
    """The files the pages' examples name, in a fresh scratch folder."""
    rng = np.random.default_rng(0)

    def photo(path, w=80, h=64):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)

    for name in ("photo.jpg", "a.jpg", "b.jpg", "photos/cat.jpg", "photos/chelsea.png", "photos/coffee.png", "photos/rocket.jpg",
                 *(f"photos/img{i:02d}.jpg" for i in range(15))):  # 16 photos: each of 4 shards gets some
        photo(d / name)
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8), "L").save(d / "scan.png")
    code = _page_code("# mynet.py")
    if code:
        (d / "mynet.py").write_text(code)
        (d / "classes.txt").write_text("benign\nmalignant\nnormal\n")


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """page name -> its scratch folder, made with the input files on first use."""
    folders: dict[str, Path] = {}

    def get(page: str) -> Path:
        if page not in folders:
            folders[page] = tmp_path_factory.mktemp(page.replace(".", "_"))
            _make_inputs(folders[page])
        return folders[page]

    return get


def _commands(line: str) -> list[list[list[str]]]:
    """The shell line as commands joined by '&&', each a list of '|'-joined segments (token lists)."""
    lex = shlex.shlex(line, posix=True, punctuation_chars="|>&")
    lex.whitespace_split = True
    lex.commenters = "#"
    cmds: list[list[list[str]]] = [[[]]]
    for tok in lex:
        if tok == "&&":
            cmds.append([[]])
        elif tok == "|":
            cmds[-1].append([])
        else:
            cmds[-1][-1].append(tok)
    return [[seg for seg in c if seg] for c in cmds if any(c)]


def _prepare(argv: list[str], cwd: Path) -> list[str]:
    """Expand globs; add --weights none and the fast overrides (click keeps an option's last value)."""
    args: list[str] = []
    for a in argv:  # the shell's globbing: a pattern without matches stays as it is (block*_conv1)
        hits = sorted(glob.glob(str(cwd / a))) if any(c in a for c in "*?") else []
        args += [os.path.relpath(h, cwd) for h in hits] or [a]
    cmd = args[1] if len(args) > 1 else ""
    model = args[args.index("--model") + 1] if "--model" in args else (args[args.index("-m") + 1] if "-m" in args else "")
    archive = model.endswith((".pt2", ".pt"))  # an archive brings its own weights
    if cmd in WEIGHTED and not {"-w", "--weights"} & set(args) and not archive and "merge" not in args:
        args += ["-w", "none"]
    scans = cmd == "top" and "merge" not in args and (len(args) > 2 and not args[2].startswith("-") or "-" in args)
    if cmd in ("maps", "rf", "ablate") and not model.endswith(".pt2") or scans:
        args += ["--size", "64"]
    if cmd == "rf" and "--samples" in args:
        args += ["--samples", "2"]
    if cmd == "maximize":
        args += ["--steps", "1", "--size", "8"]
    if cmd == "top" and scans and not {"-c", "--channels"} & set(args) and "--no-pictures" not in args:
        args += ["-c", "0:16"]  # pictures of 16 channels, not of all 512
    if cmd in ("cam", "report") and model in ("", "resnet50"):
        # ResNet-18: the same family (layer3, layer4, the same default CAM layer) with 512 instead of
        # 2,048 channels at layer4, which Score-CAM and Ablation-CAM go through one by one, and 20
        # instead of 53 conv layers for a report; what the pages say of these examples holds for both
        args += ["-m", "resnet18"]
    if cmd == "cam" and "list" not in args:
        args += ["--size", "48"]
        if "--metrics" in args:
            args += ["--metric-steps", "4"]
        if {"--smooth", "integrated-gradients", "all"} & set(",".join(args).split(",")):
            args += ["--ig-steps", "2"] + (["--smooth", "2"] if "--smooth" in args else [])
    if cmd == "report":
        args += ["--size", "32"]
        if "--maximize" in args:  # one step on two channels per layer: the picture, not the optimum
            args += ["--steps", "1", "--maximize-channels", "0:2"]
        if "--index" in args:
            args += ["--examples", "2"]
    return args[1:]


def _prereqs(line: str, cwd: Path) -> None:
    if "best.pth" in line and not (cwd / "best.pth").exists():
        import sys

        import torch

        sys.path.insert(0, str(cwd))
        try:
            import mynet  # the docs' own code (sources.md)
        finally:
            sys.path.remove(str(cwd))
        torch.save(mynet.Net().state_dict(), cwd / "best.pth")
    if "convnext.pth" in line and not (cwd / "convnext.pth").exists():
        timm = pytest.importorskip("timm")
        import torch

        torch.save(timm.create_model("convnext_tiny", pretrained=False).state_dict(), cwd / "convnext.pth")
    if "vgg16.pt2" in line and not (cwd / "vgg16.pt2").exists():
        import torch
        from torch.export import Dim

        from cnnviz.models import build_model

        x = torch.zeros(1, 3, 224, 224)
        prog = torch.export.export(build_model("vgg16"), (x,), dynamic_shapes=({0: Dim.AUTO, 2: Dim.AUTO, 3: Dim.AUTO},))
        torch.export.save(prog, str(cwd / "vgg16.pt2"))


def _jq(filt: str, stdout: str) -> None:
    """The pages' jq filters, checked on the parsed JSON."""
    if filt == ".zero_fraction":
        vals = [json.loads(ln)["zero_fraction"] for ln in stdout.splitlines()]
        assert vals and all(0 <= v <= 1 for v in vals)
        assert any(v > 0 for v in vals), f"zero_fraction is 0 for every file: {vals}"
    elif filt == "[.name, .mode, .std] | @tsv":
        recs = [json.loads(ln) for ln in stdout.splitlines()]
        assert recs and all(isinstance(r["name"], str) and r["mode"] and r["std"] > 0 for r in recs)
    elif filt == ".[] | {alias, receptive_field, jump, center0}":
        rows = json.loads(stdout)
        assert rows and all({"alias", "receptive_field", "jump", "center0"} <= set(r) for r in rows)
    else:
        raise AssertionError(f"an example pipes into 'jq {filt}': teach tests/test_docs_examples.py::_jq to check it")


def _run_example(line: str, cwd: Path) -> None:
    if line.startswith(SETUP):
        subprocess.run(["bash", "-c", line], cwd=cwd, check=True)
        return
    _prereqs(line, cwd)
    for segs in _commands(line):  # `a && b`: b runs after a succeeded
        if segs[0][0] != "pip":  # `pip install . && cnnviz ...`
            _run_command(line, segs, cwd)


def _run_command(line: str, segs: list[list[str]], cwd: Path) -> None:
    stdin = None
    if segs[0][0] == "cat":
        stdin, segs = (cwd / segs[0][1]).read_bytes(), segs[1:]
    elif segs[0][0] == "find":
        root, pat = segs[0][1], segs[0][segs[0].index("-name") + 1]
        found = sorted(str(p.relative_to(cwd)) for p in (cwd / root).rglob(pat))
        stdin, segs = ("\n".join(found) + "\n").encode(), segs[1:]
    elif segs[0][0] == "seq":  # seq A B | parallel cnnviz ... {} ...
        a, b = int(segs[0][1]), int(segs[0][2])
        for i in range(a, b + 1):
            _run_example(" ".join(shlex.quote(t.replace("{}", str(i))) for t in segs[1][1:]), cwd)
        return
    cmd, rest = segs[0], segs[1:]
    redirect = None
    if ">" in cmd:
        redirect, cmd = cmd[cmd.index(">") + 1], cmd[: cmd.index(">")]
    assert cmd[0] == "cnnviz", line
    argv = _prepare(cmd, cwd)
    before = _files(cwd) if argv[0] in ("cam", "report") else set()
    r = run_cli(*argv, input=stdin)
    assert r.exit_code == 0, f"{line}\n-> cnnviz {' '.join(argv)}\n{r.stderr}"
    assert "Traceback" not in r.stderr
    assert "is deprecated" not in r.stderr, f"{line}: the page uses an old spelling\n{r.stderr}"
    if "-o" in argv and argv[argv.index("-o") + 1] == "-":
        assert_png_valid(r.stdout_bytes)
    if redirect:
        (cwd / redirect).write_bytes(r.stdout_bytes)
    for seg in rest:
        if seg[0] == "jq":
            _jq(seg[-1], r.stdout)
        elif seg[0] == "grep":
            assert any(seg[1] in ln for ln in r.stdout.splitlines()), (line, r.stdout[:500])
        else:
            raise AssertionError(f"an example pipes into {seg[0]!r}: teach tests/test_docs_examples.py to check it")
    if not rest and "--json" in argv and not ("-o" in argv and argv[argv.index("-o") + 1] == "-"):
        for ln in r.stdout.splitlines():
            json.loads(ln)
    _claims(line, r)
    if argv[0] in ("cam", "report"):
        _claims_of(argv, r, cwd, sorted(_files(cwd) - before))


def _files(cwd: Path) -> set[str]:
    return {str(p.relative_to(cwd)) for p in cwd.rglob("*") if p.is_file()}


def _png_text(path: Path) -> dict[str, str]:
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        return dict(im.text)


def _claims_of(argv: list[str], r, cwd: Path, new: list[str]) -> None:
    """What the pages say the cam and report examples print and write."""
    printed = r.stdout.splitlines()
    if argv[0] == "report":
        _report_claims(argv, r, cwd, new)
        return
    from cnnviz.cam import METHODS

    if "list" in argv:
        assert [ln.split()[0] for ln in printed] == list(METHODS)
        return
    records = [json.loads(ln) for ln in printed] if "--json" in argv else None
    paths = [rec["path"] for rec in records] if records is not None else printed
    for p in paths:
        _png_text(cwd / p)
    methods = [m for i, a in enumerate(argv) if a in ("-M", "--method") for m in argv[i + 1].split(",")]
    kinds = [_kind(p) for p in paths]
    sanity = [p for p, k in zip(paths, kinds) if k == "sanity"]
    maps = [p for p in paths if p not in sanity]
    if len(methods) > 1 or methods == ["all"]:  # several methods: one comparison sheet
        assert len(maps) == 1 and _kind(maps[0]) == "cam-sheet", paths
        meta = _png_text(cwd / maps[0])
        n_methods = len(METHODS) if methods == ["all"] else len(methods)
        assert len(json.loads(meta["methods"])) == n_methods
    else:
        assert all(_kind(p) == "cam" for p in maps), paths
    if records is not None and "--class" in argv:  # the named class, by every method
        cells = [c for rec in records for c in rec.get("cells", [rec])]
        wanted = argv[argv.index("--class") + 1]
        assert cells and {c["class_name"] for c in cells} == {wanted}, cells
        assert {c["method"] for c in cells} == set(methods)
    if "--npy" in argv:  # a (2, H, W) float32 per map: [raw, normalised to 0..1]
        arrays = [np.load(cwd / n) for n in new if n.endswith(".npy")]
        assert len(arrays) == len([a for a in argv if a.endswith(".jpg")]) and all(
            a.dtype == np.float32 and a.shape[0] == 2 and 0 <= a[1].min() and a[1].max() <= 1 for a in arrays)
    if "--sanity" in argv:  # a strip per map
        assert len(sanity) == len(methods), paths
    if "--metrics" in argv:  # the methods table on stderr
        assert "deletion AUC" in r.stderr and all(m in r.stderr for m in methods)
    layers = [argv[i + 1] for i, a in enumerate(argv) if a in ("-l", "--layer")]
    if len(layers) > 1:  # fused: every layer named in the picture's metadata
        assert json.loads(_png_text(cwd / maps[0])["layers"]) == layers


def _kind(path: str) -> str | None:
    """A cam output's kind from its name, '{image}-{model}-...-{kind}[-{tag}...].png'."""
    m = re.search(r"-(cam-sheet|sanity|cam)(-[^-/]+)*\.png$", path)
    return m.group(1) if m else None


def _report_claims(argv: list[str], r, cwd: Path, new: list[str]) -> None:
    """It prints the path of index.html; every picture a page shows is in the folder; each option
    adds what the pages say it adds."""
    folder = argv[argv.index("-o") + 1]
    assert r.stdout.splitlines() == [os.path.join(folder, "index.html")], r.stdout
    root = cwd / folder
    for page in root.glob("*.html"):
        for ref in re.findall(r'src="(img/[^"]+)"', page.read_text(encoding="utf-8")):
            assert (root / ref).is_file(), (page.name, ref)
    index = (root / "index.html").read_text(encoding="utf-8")
    made = [os.path.basename(n) for n in new if Path(n).parent == Path(folder) / "img"]
    for p in (argv[1:argv.index("-m")] if "-m" in argv else []):  # every image is on the model page
        if not p.startswith("-"):
            assert p in index, p
    if "--maximize" in argv:  # block4_* = 3 layers x channels 0:2 (the harness's override)
        assert sum(n.startswith("max-") for n in made) == 6, made
    if "--index" in argv:  # block4_conv1's channel pages: the index's images, one JPEG each, in its layer's data
        assert any(n.startswith("ex-") and n.endswith(".jpg") for n in made), made
        assert '"exImages":[{' in (root / "data" / "layer-07.js").read_text(encoding="utf-8")
    if "--cam" in argv:  # on each image's page, its Grad-CAM
        pages = "".join(page.read_text(encoding="utf-8") for page in root.glob("image-*.html"))
        assert len(re.findall(r'<img src="img/cam-[0-9a-f]+\.png" alt="gradcam: ', pages)) == len(
            [a for a in argv if a.endswith(".jpg")])
    if "--include" in argv:  # every picture of the folder is copied in and shown
        src = cwd / argv[argv.index("--include") + 1]
        shown = "".join(page.read_text(encoding="utf-8") for page in root.glob("*.html"))
        copied = re.findall(r'src="(img/inc-[^"]+)"', shown)
        assert len(set(copied)) == len(list(src.glob("*.png"))) > 0, copied


def _claims(line: str, r) -> None:
    """What the pages' text says about particular examples."""
    if "--layer all --stage act --sheet" in line:
        assert len(r.stdout.split()) == 14  # "13 grids + a sheet"
    if line.startswith("cnnviz models") and "--names-only" not in line and "--task" not in line:
        assert re.search(r"^resnet50 .* IMAGENET1K_V1, IMAGENET1K_V2$", r.stdout, re.M)
    if line == "cnnviz layers --model vgg16.pt2":  # fields from the program's own graph
        assert r.stdout.splitlines()[-1].split()[-3:] == ["196", "16", "7.5"]
    if "1x1 kernels" in line:
        assert Image.open(r.stdout.strip()).text["mode"] == "heatmap"
    if "top --index idx -c 0:512 -n 25" in line:  # 512 channels x 25: paged, no picture over --max-side
        pages = sorted({p for ln in r.stdout.splitlines() for p in json.loads(ln)["pictures"]})
        assert len(pages) > 1 and "-top-mean-" in pages[0] and pages[0].endswith("-p01.png")
        for p in pages:
            with Image.open(p) as im:
                assert max(im.size) <= 8192


def _id(page: str, line: str) -> str:
    return f"{page}: " + re.sub(r"\s+", " ", line)[:90]


# Examples that fail today because of a bug outside this test, reported in the defects report.
KNOWN_BUGS: dict[str, str] = {}


def _marks(line: str) -> list:
    marks = [pytest.mark.slow] if any(h in line for h in HEAVY) else []
    bug = next((why for key, why in KNOWN_BUGS.items() if key in line), None)
    return marks + ([pytest.mark.xfail(reason=bug, strict=False)] if bug else [])


@pytest.mark.parametrize("page,line", [pytest.param(pg, ln, id=_id(pg, ln), marks=_marks(ln)) for pg, ln in EXAMPLES])
def test_docs_example(page, line, scratch, monkeypatch):
    why = next((reason for key, reason in SKIP.items() if key in line), None)
    if why:
        pytest.skip(why)
    cwd = scratch(page)
    monkeypatch.chdir(cwd)
    _run_example(line, cwd)


def test_the_pages_have_the_examples_this_test_expects():
    assert len(EXAMPLES) >= 30
    assert any("jq .zero_fraction" in ln and "--stage act" in ln for _, ln in EXAMPLES)
    by_page = {pg for pg, _ in EXAMPLES}
    for page in ("README.md", "ablate.md", "compare.md", "layers.md", "filters.md", "maps.md", "rf.md", "maximize.md", "top.md",
                 "cam.md", "report.md", "sources.md"):
        assert page in by_page, f"no runnable example on {page}"


def test_shell_examples_are_sh_blocks():
    """The examples are found by their ```sh fence: a shell example fenced otherwise would go untested.
    (```console is for transcripts that show a message, e.g. a deprecation warning, and is not run.)"""
    for page in pages():
        text = page.read_text(encoding="utf-8")
        other = re.findall(r"```(bash|shell|zsh)\n", text)
        assert not other, f"{page.name}: fence shell examples as ```sh so tests/test_docs_examples.py runs them"


def test_the_readme_and_ci_run_the_same_test_command():
    """.ci/run runs exactly the README's test command (the README says so)."""
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    tests = [ln.strip() for b in blocks for ln in b.splitlines() if "pytest" in ln]
    assert tests == ["pip install -e '.[test,ray]' && python -m pytest -q"], tests
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert [ln for ln in ci if "pytest" in ln and not ln.lstrip().startswith("#")] == tests


def test_readme_pictures_are_absolute_links_into_this_repository():
    """The README is PyPI's description too, where relative image paths break: every picture is an
    absolute raw URL under the project's Source URL (pyproject [project.urls]) and names a file
    that exists here; every docs link names an existing page."""
    urls = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["urls"]
    source = urls["Source"].rstrip("/")
    owner_repo = source.removeprefix("https://github.com/")
    raw = f"https://raw.githubusercontent.com/{owner_repo}/main/"
    text = README.read_text(encoding="utf-8")
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text)
    assert len(images) >= 4
    for src in images:
        assert src.startswith(raw), f"README picture {src!r} is not an absolute link under {raw}"
        assert (ROOT / src.removeprefix(raw)).is_file(), src
    links = [u for u in re.findall(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)", text)]
    assert links and all(u.startswith(("https://", "http://")) for u in links), [u for u in links if "://" not in u]
    for u in links:
        if u.startswith(f"{source}/blob/main/"):
            path = u.removeprefix(f"{source}/blob/main/").split("#")[0]
            assert (ROOT / path).is_file(), u
    assert len(text.splitlines()) <= 250, "the README is the front door: the manual goes into docs/"
