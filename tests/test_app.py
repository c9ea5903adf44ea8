"""``python -m adapt.app``: the page's session saves what ``adapt.predict`` writes, and the page itself works
in a real headless browser (Debian's chromium + chromedriver through Selenium).

The browser test draws the box by clicking two corners on the shown slice (Selenium clicks at
positions of the rendered image; the page turns them into the prompt it shows), then runs
``adapt.predict`` with the prompt the page shows and compares the files.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import click_shown_image, load_user_folders, read_mask, serve_app
from huggingface_hub import ModelCard
from omegaconf import OmegaConf
from PIL import Image
from tiny_adapters import make_adapter

from adapt import predict
from adapt.app.session import Session
from adapt.hub.share import stage
from adapt.conf import CONFIG_DIR
from adapt.data import synthetic
from adapt.errors import ConfigError, DataError
from adapt.inference.onnx_backend import load_predictor

AFFINE = np.diag([0.8, 0.7, 2.5, 1.0])


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    return make_adapter(tmp_path_factory.mktemp("app") / "adapter", 256)


def write_volume(path: Path) -> Path:
    """A small CT-like volume whose object grows from slice to slice (no two slices alike)."""
    data = np.full((40, 48, 5), -1000, np.int16)
    for k in range(1, 5):
        data[10 - k : 26 + k, 12 : 32 + k, k] = 80
    nib.save(nib.Nifti1Image(data, AFFINE), path)
    return path


def predict_file(adapter: Path, input: Path, output: Path, prompt: str) -> Path:
    cfg = OmegaConf.load(CONFIG_DIR / "predict.yaml")
    cfg.merge_with(
        {
            "adapter": str(adapter),
            "input": str(input),
            "output": str(output),
            "prompt": prompt,
            "device": "cpu",
            "propagation": "boxes",
        }
    )
    [written] = predict.run(cfg)
    return written


def test_session_saves_what_predict_writes_in_every_format(adapter, tmp_path):
    folders = load_user_folders()
    volume = write_volume(tmp_path / "ct.nii.gz")
    png = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(2).random((60, 80)) * 255).astype(np.uint8)).save(png)
    tif = tmp_path / "tile.tif"
    image, _ = synthetic.make_aerial_tile(3, (64, 64))
    synthetic.write_geotiff(tif, image, (500000.0, 5200000.0))
    rows, columns, slices = 36, 40, 6
    series = folders.write_dicom_series(
        tmp_path / "series", (np.random.default_rng(3).random((rows, columns, slices)) * 200).astype(np.int32) + 900
    )
    session = Session(load_predictor(adapter, propagation="boxes"), tmp_path / "saved")
    cases = [
        ([volume], [(10, 12), (30, 34)], []),
        ([png], [(10, 10), (60, 45)], [(30, 30, 1)]),
        ([tif], [(8, 8), (50, 40)], [(20, 20, 0)]),
        (sorted(series.iterdir()), [(5, 5), (30, 28)], []),
    ]
    for files, corners, clicks in cases:
        session.open(files)
        for x, y in corners:
            session.click(x, y, "box", session.slice)
        for x, y, label in clicks:
            session.click(x, y, "object click" if label else "background click", session.slice)
        assert session.prompt.startswith("box ") and ("slice=" in session.prompt) == session.scan.is_volume
        status = session.segment(session.prompt)
        saved = session.save()
        expected = predict_file(
            adapter,
            files[0] if len(files) == 1 else tmp_path / "series",
            tmp_path / "predicted" / saved.name,
            session.prompt,
        )
        assert saved.name == expected.name, status
        np.testing.assert_array_equal(read_mask(saved), read_mask(expected))
        assert session.render().dtype == np.uint8 and session.render().shape[-1] == 3
        if files[0] == volume:
            assert read_mask(saved).shape == (40, 48, 5) and np.allclose(nib.load(saved).affine, AFFINE)
            assert read_mask(saved).any() and status.startswith("mask: ")
    session.clear()
    with pytest.raises(ConfigError, match="draw a box"):
        session.segment("")


@pytest.mark.parametrize(
    "x, y, slice_index",
    [(80, 10, None), (-1, 10, None), (10, 60, None), (10, -2, None), (10, 10, 1)],
    ids=["right of it", "left of it", "below it", "above it", "past the last slice"],
)
def test_session_refuses_a_click_outside_the_image(adapter, tmp_path, x, y, slice_index):
    png = tmp_path / "photo.png"
    Image.fromarray(np.zeros((60, 80), np.uint8)).save(png)
    session = Session(load_predictor(adapter, propagation="boxes"), tmp_path / "saved")
    session.open([png])
    with pytest.raises(ConfigError, match=rf"outside {png}, 80x60 on 1 slice\(s\) \(x = column 0..79, y = row 0..59"):
        session.click(x, y, "box", slice_index)
    assert session.prompt == "" and session.render().shape == (360, 480, 3)


def test_session_saves_over_its_own_mask_but_never_over_another_file(adapter, tmp_path):
    png = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(4).random((60, 80)) * 255).astype(np.uint8)).save(png)
    session = Session(load_predictor(adapter, propagation="boxes"), tmp_path / "saved")
    session.open([png])
    session.segment("box 10,10,60,45")
    saved = session.save()
    session.segment("box 20,20,50,40")
    assert session.save() == saved  # the page's own mask, saved again
    labels = tmp_path / "masks"
    labels.mkdir()
    (labels / saved.name).write_bytes(b"a label drawn by hand")
    with pytest.raises(DataError, match=rf"{labels / saved.name} exists and was not saved by this page"):
        session.save(folder=labels)
    assert (labels / saved.name).read_bytes() == b"a label drawn by hand"


@pytest.mark.slow
def test_hub_push_space_app_installs_offline_and_builds_the_page(adapter, tmp_path):
    """``hub push space_app=true`` stages app.py, sam2-adapt's wheel and a requirements.txt naming only what
    exists: in a fresh virtual environment (system packages visible, no network) the shipped wheel installs,
    the requirements resolve against what is installed, and app.py, imported from the wheel's sam2-adapt,
    builds the page for the adapter beside it."""
    folder = stage(adapter, "me/sam2-demo", tmp_path / "upload", space_app=True)
    assert {"app.py", "requirements.txt", "README.md", "adapter_model.safetensors", "wheels"} <= {
        p.name for p in folder.iterdir()
    }
    (wheel,) = (folder / "wheels").glob("sam2_adapt-*.whl")
    requirements = [line for line in (folder / "requirements.txt").read_text().splitlines() if not line.startswith("#")]
    assert requirements[0] == f"./wheels/{wheel.name}" and any(line.startswith("gradio") for line in requirements)
    assert not any(line.startswith("sam2-adapt") for line in requirements)  # a name no registry has
    assert 'ADAPTER = "me/sam2-demo"' in (folder / "app.py").read_text()
    header = ModelCard.load(folder / "README.md").data
    assert header.sdk == "gradio" and header.app_file == "app.py" and header.pipeline_tag == "mask-generation"

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the shipped wheel, not this checkout
    env.update(
        HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1"
    )

    def run(*args: str) -> str:
        result = subprocess.run([python, *args], cwd=folder, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    run("-m", "pip", "install", "--no-deps", "--no-index", str(wheel))
    run("-m", "pip", "install", "--dry-run", "--no-index", "-r", "requirements.txt")
    shown = run(
        "-c", "import runpy, adapt; page = runpy.run_path('app.py')['demo']; print(type(page).__name__, adapt.__file__)"
    )
    kind, origin = shown.split()
    assert kind == "Blocks" and origin.startswith(str(venv)), shown
    assert not (stage(adapter, "me/x", tmp_path / "plain") / "app.py").exists()


def test_page_opens_a_2d_image_with_a_fixed_slice_slider(adapter, tmp_path):
    """A PNG has one slice: the page's upload handler opens it (Gradio refuses a 0..0 slider)."""
    from adapt.app.page import build_page

    page = build_page(load_predictor(adapter, propagation="boxes"), tmp_path / "saved")
    [opened] = [f for f in page.fns.values() if f.name == "opened"]
    png = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(0).random((40, 50)) * 255).astype(np.uint8)).save(png)
    *_, slider, _, status = opened.fn([str(png)], None)
    assert status == "opened photo.png: 1 slice(s) of (40, 50) (rows, columns)"
    assert not slider.interactive


def test_page_saves_each_dicom_series_under_its_own_name_and_offers_a_zip(adapter, tmp_path):
    """Slice files uploaded through the page have no folder name: each series is named by its UID, so two
    series saved in one session keep two masks (both were ``series_mask`` before), and the download is a zip
    of the mask series (Gradio cannot serve the folder: saving failed after writing it)."""
    import zipfile

    from adapt.app.page import build_page

    page = build_page(load_predictor(adapter, propagation="boxes"), tmp_path / "saved")
    handlers = {f.name: f.fn for f in page.fns.values() if f.name in ("opened", "segmented", "saved")}
    folders = load_user_folders()
    session, saved = None, []
    for seed in (0, 1):
        stored = (np.random.default_rng(seed).random((30, 34, 4 + seed)) * 300).astype(np.int32) + 900
        series = folders.write_dicom_series(tmp_path / f"upload{seed}", stored)
        uid = pydicom.dcmread(next(series.iterdir())).SeriesInstanceUID
        session, *_, status = handlers["opened"]([str(f) for f in sorted(series.iterdir())], session)
        assert status.startswith(f"opened {uid}: {4 + seed} slice(s)"), status
        session, *_, status = handlers["segmented"]("box 4,4,28,24 slice=1", session)
        download, path, status = handlers["saved"](session)
        assert status == f"saved {path}" and Path(path) == tmp_path / "saved" / f"{uid}_mask"
        with zipfile.ZipFile(download) as archive:
            assert sorted(n for n in archive.namelist() if not n.endswith("/")) == sorted(
                f"{uid}_mask/{f.name}" for f in Path(path).iterdir()
            )
        saved.append((Path(path), read_mask(Path(path))))
    for path, mask in saved:  # the first series' mask is still there, as it was saved
        np.testing.assert_array_equal(read_mask(path), mask)
    assert [m.shape for _, m in saved] == [(34, 30, 4), (34, 30, 5)]


@pytest.fixture
def served(adapter, tmp_path):
    """``python -m adapt.app`` serving the adapter on a free port (propagation by boxes, masks to tmp)."""
    with serve_app(
        [f"adapter={adapter}", "propagation=boxes", "device=cpu", f"out_dir={tmp_path / 'saved'}"], tmp_path
    ) as url:
        yield url


@pytest.mark.slow
def test_page_in_a_headless_browser_saves_what_predict_writes(adapter, browser, served, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    volume = write_volume(tmp_path / "ct.nii.gz")
    wait = WebDriverWait(browser, 180)
    value = lambda css: browser.find_element(By.CSS_SELECTOR, css).get_attribute("value")  # noqa: E731
    status = lambda: value("#status textarea")  # noqa: E731
    source = lambda: browser.find_element(By.CSS_SELECTOR, "#view img").get_attribute("src")  # noqa: E731
    browser.get(served)
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"))
    browser.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(volume))
    wait.until(lambda b: status().startswith("opened"))
    assert "5 slice(s)" in status() and value("#slice input[type=number]") == "2"

    first = wait.until(lambda b: source())  # scroll two slices up and back: the slice shown changes and returns
    browser.find_element(By.CSS_SELECTOR, "#slice input[type=range]").send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)
    wait.until(lambda b: source() != first and value("#slice input[type=number]") == "4")
    browser.find_element(By.CSS_SELECTOR, "#slice input[type=range]").send_keys(Keys.ARROW_LEFT, Keys.ARROW_LEFT)
    wait.until(lambda b: source() == first)

    click_shown_image(browser, 0.22, 0.24)  # the box: two opposite corners drawn on the image
    wait.until(lambda b: status().startswith("box"))
    click_shown_image(browser, 0.75, 0.72)
    wait.until(lambda b: value("#prompt textarea").startswith("box "))
    prompt = value("#prompt textarea")
    assert prompt.endswith("slice=2")
    browser.find_element(By.CSS_SELECTOR, "#segment").click()
    wait.until(lambda b: status().startswith(("mask", "error")))
    assert status().startswith("mask: ") and "on 5 of 5 slice(s)" in status(), (status(), prompt)
    wait.until(lambda b: source() != first)  # the mask is drawn over the slice
    browser.find_element(By.CSS_SELECTOR, "#save").click()
    wait.until(lambda b: status().startswith(("saved", "error")))
    saved = Path(value("#saved_path textarea"))
    assert saved == tmp_path / "saved" / "ct.nii.gz", status()

    expected = predict_file(adapter, volume, tmp_path / "predicted.nii.gz", prompt)
    np.testing.assert_array_equal(read_mask(saved), read_mask(expected))
    assert read_mask(saved).any() and np.allclose(nib.load(saved).affine, nib.load(expected).affine)


def test_app_config_passes_its_schema_and_names_what_is_missing(tmp_path):
    from adapt.app.__main__ import build
    from adapt.schema import validate

    cfg = OmegaConf.load(CONFIG_DIR / "app.yaml")
    validate(cfg, "app")
    with pytest.raises(ConfigError, match="adapter= is required"):
        build(cfg)
    cfg.port, cfg.backend = 0, "tensorrt"
    with pytest.raises(ConfigError, match="port=0 must be") as refused:
        build(cfg)
    assert "backend='tensorrt' is not one of" in str(refused.value)
