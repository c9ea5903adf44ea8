"""A researcher's day on their own data, end to end, with the README's own command lines.

Every command comes from README.md's ``bash`` blocks (``readme_commands``): the README's
placeholders (``/data/busi``, ``busi.yaml``, ``outputs/demo/<run>``, ``me/sam2-ct-liver``,
``case.nii.gz``, the prompt) become this test's paths, and nothing else is added but a free
``port=`` for the page and, to keep the suite short, fewer shifts and severities than the
robustness line lists. The data is made the way a user's looks (``tests/data/user_folders.py``),
never a shipped or fixture card: ``data init`` writes the card, the test fills in licence and
citation as a user would, trains with the README's first try, then moves the card file away (the
adapter must carry it) and goes on: evaluate (quick start, robustness, propagation for volumes),
the notebook, predict, ONNX export and predict, the page in a headless browser, a Hub dry run and
its model card. The joints between features are what breaks for a new user; these tests walk them.
The folders (``KINDS``): ultrasound PNGs, an MSD-style NIfTI task, a hospital's DICOM export (one CT
series per patient, NIfTI labels) and GeoTIFF tiles; a step that does not apply to one says why
(``Kind.skips``).

Commands run in-process (``runpy``, as ``python -m`` runs them) in the journey's folder; ``data
init``, ``data check``, the page and the sweep run as subprocesses to prove the command lines.
"""

from __future__ import annotations

import json
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
from conftest import click_shown_image, errors, execute, load_user_folders, read_mask, serve_app
from PIL import Image
from readme_commands import command, commands

pytestmark = pytest.mark.slow
folders = load_user_folders()
#: Kept short: every listed shift is the same code path (adapt.evaluation.robustness).
FEWER_SHIFTS = {
    "shift=[noise,blur,contrast,gamma,bias_field,resolution,motion]": "shift=[noise,blur]",
    "severity=[1,2,3,4,5]": "severity=[2]",
}
GEO_TAGS = (33550, 33922, 34735)  # pixel scale, tie point, GeoKey directory (the CRS)


def python_m(argv: list[str], cwd: Path, subprocess_run: bool = False) -> str:
    """Run ``python -m <module> ...`` in ``cwd`` (in-process as ``python -m`` would, or as a subprocess);
    its output. A non-zero exit fails the test with that output."""
    assert argv[:2] == ["python", "-m"], argv
    if subprocess_run:
        done = subprocess.run(
            [sys.executable, *argv[1:]],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=900,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"},
        )
        assert done.returncode == 0, f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr[-3000:]}"
        return done.stdout + done.stderr
    output = StringIO()
    with pytest.MonkeyPatch.context() as patch, redirect_stdout(output), redirect_stderr(output):
        patch.chdir(cwd)
        patch.setattr(sys, "argv", [argv[2], *argv[3:]])
        try:
            runpy.run_module(argv[2], run_name="__main__", alter_sys=True)
        except SystemExit as exit:
            assert exit.code in (0, None), f"{' '.join(argv)} exited {exit.code}:\n{output.getvalue()[-3000:]}"
    return output.getvalue()


def fill_in(card: Path, citation: str) -> None:
    """Replace the drafted card's licence and citation TODOs, as a user edits the YAML (comments kept)."""
    text = card.read_text()
    assert "license: 'TODO" in text and "citation: 'TODO" in text, text
    text = re.sub(r"^license: .*$", "license: CC-BY-4.0", text, flags=re.MULTILINE)
    card.write_text(re.sub(r"^citation: .*$", f'citation: "{citation}"', text, flags=re.MULTILINE))


def box_of(mask: np.ndarray) -> str:
    """``x0,y0,x1,y1`` (x = column, y = row) around the non-zero pixels of a 2D mask."""
    rows, columns = np.nonzero(mask)
    return f"{columns.min()},{rows.min()},{columns.max()},{rows.max()}"


@dataclass
class Kind:
    """What differs between the journeys: the user's folder, the file (or DICOM series folder) predict gets,
    its prompt, what the masks and the model card show, and the steps that do not apply (``walks``)."""

    name: str
    write: Callable[[Path], Path]
    sample: str  # the file of the folder predict reads
    output: str  # predict's output name (same format)
    prompt: Callable[[Path], str]  # the prompt for the sample, from its label file
    label: str  # the sample's label file
    dims: int
    usage: str  # the input the model card's predict line shows
    mask_on: int = 1  # the value predict's masks store for the object (the card's mask_values)
    skips: dict[str, str] = field(default_factory=dict)  # step -> why it does not apply to this kind
    known_bugs: dict[str, str] = field(default_factory=dict)  # step -> an open bug that can fail it

    def walks(self, step: str, request: pytest.FixtureRequest | None = None) -> None:
        """Skip the calling test where ``step`` does not apply to this kind (``skips`` says why); where an open
        bug can fail it (``known_bugs``), the test still runs and its failure is reported as that bug (xfail)."""
        if step in self.skips:
            pytest.skip(self.skips[step])
        if step in self.known_bugs and request is not None:
            request.applymarker(pytest.mark.xfail(reason=self.known_bugs[step], strict=False))


def volume_grid(path: Path) -> tuple[tuple[int, ...], np.ndarray]:
    """A volume's voxel grid, ``(shape, voxel -> RAS affine)``: a NIfTI file's header, or a DICOM series
    (a folder) as the project's reader places it."""
    if path.is_dir():
        from adapt.data.formats import read_raster

        raster = read_raster(path)
        return raster.array.shape[1:], raster.affine
    image = nib.load(path)
    return image.shape, image.affine


def assert_same_grid(path: Path, reference: Path) -> None:
    (shape, affine), (wanted_shape, wanted_affine) = volume_grid(path), volume_grid(reference)
    assert shape == wanted_shape and np.allclose(affine, wanted_affine, atol=1e-4), (
        path,
        affine,
        reference,
        wanted_affine,
    )


#: Why a step is left out (``Kind.skips``).
FLAT = "propagation follows an object through a volume"
SHIFTS_IN_2D = "journeys score shifts on 2D files (the cheapest); the code path is the same"
ONE_MOVE = "one journey (GeoTIFF: the message comes before any model is loaded) moves its data folder"


def _volume_prompt(label: Path) -> str:
    data = np.asarray(nib.load(label).dataobj)
    k = int(data.sum(axis=(0, 1)).argmax())
    return f"box {box_of(data[:, :, k].T)} slice={k}"  # NIfTI slice k: x = i, y = j


KINDS = {
    "png": Kind(
        "png",
        folders.write_ultrasound_folder,
        "images/scan_00.png",
        "scan_00_mask.png",
        lambda label: f"box {box_of(np.asarray(Image.open(label)))}",
        "masks/scan_00.png",
        2,
        "input=image.png",
        mask_on=255,
        skips={"propagation": FLAT, "data moved": ONE_MOVE},
    ),
    "msd": Kind(
        "msd",
        folders.write_msd_style_folder,
        "imagesTr/organ_000.nii.gz",
        "organ_000_mask.nii.gz",
        _volume_prompt,
        "labelsTr/organ_000.nii.gz",
        3,
        "input=case.nii.gz",
        skips={
            "robustness": SHIFTS_IN_2D,
            "page": "the page's NIfTI volumes (slice scrolling, propagation) are tested in test_app; the DICOM "
            "journey opens a volume (a series' slice files) on the page",
            "data moved": ONE_MOVE,
        },
    ),
    "dicom": Kind(
        "dicom",
        folders.write_dicom_folder,
        "dicom/patient_00",
        "patient_00_mask",  # a series' mask is a series: a folder
        _volume_prompt,
        "segmentations/patient_00.nii.gz",
        3,
        "input=series_folder output=mask_folder",  # a series' mask is a series: a folder
        skips={"robustness": SHIFTS_IN_2D, "data moved": ONE_MOVE},
    ),
    "geotiff": Kind(
        "geotiff",
        folders.write_geotiff_folder,
        "tiles/field_00.tif",
        "field_00_mask.tif",
        lambda label: f"box {box_of(tifffile.imread(label))}",
        "labels/field_00.tif",
        2,
        "input=image.tif",
        skips={"propagation": FLAT},
    ),
}


@dataclass
class Journey:
    """One user's folder and what their commands made so far (paths relative to ``home``, the shell's folder)."""

    kind: Kind
    home: Path
    data: Path
    run: str = ""
    card: Path | None = None
    done: dict[str, object] = field(default_factory=dict)

    def places(self, **more: str) -> dict[str, str]:
        """README placeholder -> this journey's text."""
        places = {
            "/data/busi": str(self.data),
            "busi.yaml": "busi.yaml",
            "outputs/demo/<run>": self.run,
            "outputs/ct_liver/<run>": self.run,
            "me/sam2-ct-liver": "me/sam2-ct-liver",
        }
        return {**places, **more}

    def readme(
        self,
        start: str,
        section: str | None = None,
        containing: tuple[str, ...] = (),
        options: tuple[str, ...] = (),
        subprocess_run: bool = False,
        **more: str,
    ) -> str:
        """The README command found by ``start`` (see ``readme_commands.command``) run in ``home``."""
        argv = command(start, section, containing).argv(self.places(**more), options)
        return python_m(argv, self.home, subprocess_run)

    def once(self, step: str, run: Callable[[], object]) -> object:
        """``run()``'s result, computed once per journey (later tests reuse it)."""
        if step not in self.done:
            self.done[step] = run()
        return self.done[step]

    def predict(self, adapter_placeholder: str, output: str, prompt: str | None = None) -> Path:
        """The README's predict line whose adapter is ``adapter_placeholder`` (the Hub id stands for the run)
        on the sample, prompted around its label (or with ``prompt``); the written file."""
        prompt = prompt or self.kind.prompt(self.data / self.kind.label)
        self.readme(
            "python -m adapt.predict",
            containing=(f"adapter={adapter_placeholder}",),
            **{
                "me/sam2-ct-liver": self.run,
                "case.nii.gz": str(self.data / self.kind.sample),
                "mask.nii.gz": output,
                '"box 120,80,200,170 slice=42"': f'"{prompt}"',
                '"box 40,30,90,70 slice=12"': f'"{prompt}"',
            },
        )
        return self.home / output


@pytest.fixture(scope="module", params=sorted(KINDS))
def journey(request, tmp_path_factory) -> Journey:
    """The user's folder, its card drafted by ``data init`` and checked, licence and citation filled in, the
    README's first try trained, and the card file moved to another folder (the data stays)."""
    kind = KINDS[request.param]
    base = tmp_path_factory.mktemp(f"journey_{kind.name}")
    home = base / "home"
    home.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SAM2_ADAPT_DATA", str(base / "cache"))
        patch.delenv("SAM2_ADAPT_EVAL_DIRS", raising=False)
        trip = Journey(kind, home, kind.write(base / "my_data"))
        trip.readme("python -m adapt.data init", "Bring your own data", subprocess_run=True)
        card = home / "busi.yaml"
        fill_in(card, f"Doe J. et al. My {kind.name} scans. Journal of Tests 1 (2026).")
        trip.readme("python -m adapt.data check", "Bring your own data", subprocess_run=True)
        assert any(home.glob("*_check.png")), "check saves its figure"
        before = set(home.glob("outputs/*/*"))
        trip.readme("python -m adapt.train", "Bring your own data", containing=("busi.yaml", "model=tiny"))
        [run] = set(home.glob("outputs/*/*")) - before
        trip.run = str(run.relative_to(home))
        elsewhere = base / "cards" / "moved"  # a relative data root in the card no longer reaches the data
        elsewhere.mkdir(parents=True)
        trip.card = Path(shutil.move(card, elsewhere / "busi.yaml"))
        yield trip


def test_first_try_changes_dice(journey):
    """The README's first try changes validation Dice visibly on the user's data (not all warm-up: a tiny
    random model's 20 steps move it, up or down, as the README says)."""
    metrics = json.loads((journey.home / journey.run / "metrics.json").read_text())
    before, after = metrics["before"]["val/dice"], metrics["after"]["val/dice"]
    assert abs(after - before) >= 0.01, f"val Dice {before:.4f} -> {after:.4f}"


def evaluated(journey: Journey) -> Path:
    """The quick start's evaluate line on the adapter alone (its card travelled with it): the output folder."""

    def run() -> Path:
        journey.readme("python -m adapt.evaluate", "Quick start (offline, minutes on a laptop CPU)")
        return journey.home / "outputs" / "evaluate" / "demo"

    return journey.once("evaluate", run)


def test_evaluate_uses_the_adapters_own_card_after_the_card_file_moved(journey):
    out = evaluated(journey)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data_card"] == re.search(r"^name: (\S+)", journey.card.read_text(), re.MULTILINE).group(1)
    assert summary["cases"] >= 1
    assert summary["compare"]["adapter"].startswith("zero-shot")
    assert set(summary["classes"]) == set(summary["label_values"]) and summary["overall"]["dice"]["mean"] is not None


def test_evaluate_under_shift(journey):
    journey.kind.walks("robustness")
    journey.readme("python -m adapt.evaluate", "Robustness", **FEWER_SHIFTS)
    table = (journey.home / "eval" / "robust" / "robustness.csv").read_text()
    for condition in ("noise,2", "blur,2"):
        assert condition in table, table


def test_evaluate_propagation_through_memory(journey):
    journey.kind.walks("propagation")
    journey.readme("python -m adapt.evaluate", containing=("task=propagation",))
    summary = json.loads((journey.home / "eval" / "memory" / "summary.json").read_text())
    assert summary["protocol"]["propagation"] and summary["throughput"]["unit"] == "frames/s"
    assert summary["overall"]["dice"]["mean"] is not None


def test_notebook_draws_the_users_ground_truth(journey, monkeypatch):
    book = execute("evaluate.ipynb", {"SAM2_ADAPT_EVAL_DIRS": str(evaluated(journey))}, monkeypatch, probe=True)
    assert not errors(book)
    [overlays] = [f for f in book.metadata["figures"] if f["legend"]]
    key = {entry["text"]: entry["colour"] for entry in overlays["legend"]}
    assert all(panel["contours"] == [key["ground truth"]] for panel in overlays["axes"]), overlays


def predicted(journey: Journey) -> Path:
    return journey.once("predict", lambda: journey.predict("me/sam2-ct-liver", journey.kind.output))


def test_predict_writes_masks_in_the_cards_encoding_and_the_inputs_geometry(journey):
    """The mask stores the card's values (0/255 for the PNG folder) on the input's grid: a volume's (NIfTI
    or DICOM series) shape and affine are the input's and its label file's, a GeoTIFF keeps its tags."""
    kind = journey.kind
    mask, source, label = predicted(journey), journey.data / kind.sample, journey.data / kind.label
    values = set(np.unique(read_mask(mask)).tolist())
    if kind.dims == 3:
        assert values <= {0, kind.mask_on}, values  # the first try's tiny model may miss
        assert_same_grid(mask, source)
        assert_same_grid(mask, label)  # the label was written on the grid the series' headers describe
    else:
        assert values == {0, kind.mask_on}, f"{mask}: values {values}; the card's masks store 0/{kind.mask_on}"
    if kind.name == "geotiff":
        with tifffile.TiffFile(mask) as written, tifffile.TiffFile(label) as truth:
            for tag in GEO_TAGS:
                assert written.pages[0].tags[tag].value == truth.pages[0].tags[tag].value, tag


def test_export_onnx_and_int8_then_predict_with_onnx(journey):
    """The README's export line (fp32 to ``export/demo``; int8 to ``export/int8`` in the PNG journey, one
    quantisation path for all) and its ``backend=onnx`` predict line: a 2D mask as torch predicts it; a
    volume's on the input's grid (an export follows a volume by boxes, torch by SAM2's memory)."""
    journey.readme("python -m adapt.export", containing=("format=onnx",))
    assert (journey.home / "export" / "demo" / "image_encoder.onnx").exists()
    if journey.kind.name == "png":
        journey.readme(
            "python -m adapt.export",
            containing=("format=onnx",),
            options=("quantize",),
            **{"out=export/demo": "out=export/int8"},
        )
        assert json.loads((journey.home / "export" / "int8" / "export.json").read_text())["quantize"] == "int8"
    onnx_mask = journey.predict("export/demo", "onnx_" + journey.kind.output)
    if journey.kind.dims == 3:  # the export follows the volume by boxes, torch by SAM2's memory: same grid only
        assert_same_grid(onnx_mask, predicted(journey))
        assert set(np.unique(read_mask(onnx_mask)).tolist()) <= {0, journey.kind.mask_on}
        return
    torch_mask = read_mask(predicted(journey))
    assert (read_mask(onnx_mask) == torch_mask).mean() >= 0.99 and torch_mask.any()


def test_hub_dry_run_publishes_the_card_and_a_model_card_that_fits(journey):
    journey.readme("python -m adapt.hub push", containing=("dry_run=true",))
    folder = journey.home / "hub" / "preview"
    model_card = (folder / "README.md").read_text()
    assert f"My {journey.kind.name} scans" in model_card, "the model card cites the user's dataset"
    assert "CC-BY-4.0" in model_card
    usage = [line for line in model_card.splitlines() if line.startswith("python -m adapt.predict")]
    assert usage, model_card
    assert all(("slice=" in line) == (journey.kind.dims == 3) for line in usage), usage
    [line] = [line for line in usage if journey.kind.usage in line]
    # the model card's line runs as shown: the user's run for the Hub id, their sample for the example input
    words = {word.split("=", 1)[0]: word for word in shlex.split(line)[3:]}
    label = journey.data / journey.kind.label
    shown = words["output"].split("=", 1)[1]
    python_m(
        ["python", "-m", "adapt.predict", f"adapter={journey.run}", f"input={journey.data / journey.kind.sample}"]
        + [words["output"], f"prompt={journey.kind.prompt(label)}"],
        journey.home,
    )
    written = read_mask(journey.home / shown)
    assert written.shape == read_mask(predicted(journey)).shape and set(np.unique(written)) <= {0, journey.kind.mask_on}
    private = str(journey.home.parent)
    leaked = [
        p.name
        for p in folder.rglob("*")
        if p.is_file() and p.suffix in (".json", ".md", ".yaml", ".py", ".txt") and private in p.read_text()
    ]
    assert not leaked, f"local paths published in {leaked}"


def test_page_saves_what_predict_writes(journey, request):
    """The README's page opens the sample (a series: its slice files, as a browser uploads them), a box drawn
    on the shown (middle) slice segments it, and the saved mask is what predict writes for that prompt."""
    journey.kind.walks("page", request)
    browser = request.getfixturevalue("browser")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    argv = command("python -m adapt.app", "Deploy: ONNX, int8, a plain transformers folder, a page").argv(
        journey.places()
    )
    wait = WebDriverWait(browser, 180)
    value = lambda css: browser.find_element(By.CSS_SELECTOR, css).get_attribute("value")  # noqa: E731
    with serve_app(argv[3:], journey.home) as url:
        browser.get(url)
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"))
        sample = journey.data / journey.kind.sample
        files = sorted(sample.iterdir()) if sample.is_dir() else [sample]
        browser.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys("\n".join(map(str, files)))
        wait.until(lambda b: value("#status textarea").startswith("opened"))
        click_shown_image(browser, 0.2, 0.2)
        wait.until(lambda b: value("#status textarea").startswith("box"))
        click_shown_image(browser, 0.8, 0.8)
        wait.until(lambda b: value("#prompt textarea").startswith("box "))
        prompt = value("#prompt textarea")
        browser.find_element(By.CSS_SELECTOR, "#segment").click()
        wait.until(lambda b: value("#status textarea").startswith(("mask", "error")))
        browser.find_element(By.CSS_SELECTOR, "#save").click()
        wait.until(lambda b: value("#status textarea").startswith(("saved", "error")))
        saved = journey.home / value("#saved_path textarea")  # out_dir=masks: relative to the app's folder
    assert saved.exists(), value("#status textarea")
    expected = journey.predict("me/sam2-ct-liver", "page_" + journey.kind.output, prompt)
    np.testing.assert_array_equal(read_mask(saved), read_mask(expected))
    if journey.kind.dims == 3:
        assert_same_grid(saved, journey.data / journey.kind.sample)
    assert set(np.unique(read_mask(saved)).tolist()) <= {0, journey.kind.mask_on}


def test_evaluate_names_data_root_when_the_data_moved(journey):
    """Last: the user's data folder moves (and comes back): evaluate says which key points to it (one
    journey, the cheapest: the message comes before any model is loaded)."""
    journey.kind.walks("data moved")
    moved = journey.data.with_name("my_data_moved")
    journey.data.rename(moved)
    try:
        argv = command("python -m adapt.evaluate", "Quick start (offline, minutes on a laptop CPU)").argv(
            journey.places(**{"outputs/evaluate/demo": "outputs/evaluate/moved"})
        )
        done = subprocess.run(
            [sys.executable, *argv[1:]],
            cwd=journey.home,
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
    finally:
        moved.rename(journey.data)
    assert done.returncode == 2 and "data.root=" in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]


# --- the README's install installs every command the README runs ---------------------------------------


def test_every_command_the_readme_runs_is_installed():
    """``python -m X`` resolves to an installed module, other programs (jupyter lab, torchrun, pip) are on
    PATH; and the README's install line (``.[dev]``) names the extra that brings jupyterlab."""
    import importlib.util

    import tomllib

    from adapt.conf import REPO_ROOT

    missing = []
    for found in commands():
        words = found.text.split()
        if words[:2] == ["python", "-m"]:
            if importlib.util.find_spec(words[2]) is None:
                missing.append(found.text)
        elif words[0] == "jupyter":
            if shutil.which(f"jupyter-{words[1]}") is None:
                missing.append(found.text)
        elif shutil.which(words[0]) is None:
            missing.append(found.text)
    assert not missing, f"installed by nothing: {missing}"
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert 'pip install -e ".[dev]"' in [c.text for c in commands()]
    assert "sam2-adapt[notebooks]" in extras["dev"] and any(d.startswith("jupyterlab") for d in extras["notebooks"])


# --- how many labels: the README's sweep on a user's card, then compare_adapters.ipynb ------------------


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """The README's label-efficiency sweep on a user's GeoTIFF card (its first try's overrides in place of
    ``recipe=demo``, as the README says; k = 1 and all, LoRA only), collected by the README's sweep line."""
    base = tmp_path_factory.mktemp("sweep")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SAM2_ADAPT_DATA", str(base / "cache"))
        trip = Journey(KINDS["geotiff"], base / "home", folders.write_geotiff_folder(base / "my_data"))
        trip.home.mkdir()
        trip.readme("python -m adapt.data init", "Bring your own data")
        fill_in(trip.home / "busi.yaml", "Doe J. Fields (2026).")
        first_try = command("python -m adapt.train", "Bring your own data", ("busi.yaml", "model=tiny")).text
        trip.readme(
            "python -m adapt.train -m",
            "How many labels?",
            subprocess_run=True,
            **{
                "recipe=demo": first_try.removeprefix("python -m adapt.train "),
                "data.train_cases=1,2,5,10,all": "data.train_cases=1,all",
                "adapter=lora,bottleneck": "adapter=lora",
            },
        )
        [folder] = (trip.home / "multirun").glob("*/*")
        trip.readme(
            "python -m adapt.evaluation.sweep",
            "How many labels?",
            **{"multirun/demo/<date>": str(folder.relative_to(trip.home))},
        )
        yield folder


def test_label_efficiency_sweep_and_compare_notebook_on_a_user_card(sweep, monkeypatch):
    rows = (sweep / "label_efficiency.csv").read_text().splitlines()
    assert len(rows) == 3, rows  # header, k=1, k=all (5 training tiles)
    book = execute("compare_adapters.ipynb", {"SAM2_ADAPT_RUN_DIRS": str(sweep)}, monkeypatch, probe=True)
    assert not errors(book)
    [curve] = [a for f in book.metadata["figures"] for a in f["axes"] if a["title"].startswith("Dice against labelled")]
    assert not curve["ticks_overlap"] and curve["legend"], curve
