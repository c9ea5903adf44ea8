"""Shared fixtures. Tests never touch the network: the Hub is switched off before imports.

Under pytest-xdist (``-n 2``) each worker computes with one thread (torch, and the subprocesses a
test starts, through ``OMP_NUM_THREADS``), so the workers share the cores instead of fighting
over them; alone, a run uses two.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1, ... under pytest-xdist
if WORKER:
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import contextlib  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1 if WORKER else min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _root_logging():
    """The root logger's handlers as they were before the test: a command run in-process (Hydra's main)
    adds a handler on the stream of that moment (a test's captured stderr), which is closed once the
    test ends; a later test's warnings would print "--- Logging error ---" into what it asserts on."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(autouse=True)
def _data_cache(tmp_path_factory, monkeypatch):
    """Generated datasets (and base-weight digests) go to a per-session temp dir, never to the user's cache."""
    monkeypatch.setenv("SAM2_ADAPT_DATA", str(tmp_path_factory.getbasetemp() / "data-cache"))
    monkeypatch.setenv("SAM2_ADAPT_CACHE", str(tmp_path_factory.getbasetemp() / "sam2-adapt-cache"))


@pytest.fixture
def decode_calls(monkeypatch):
    """Every mask decoding through ``adapt.models.interactive.decode``, as ``(prompts, prediction)``.

    Callers that imported ``decode`` by name before the test keep the original (unrecorded).
    """
    from adapt.models import interactive

    calls = []
    real = interactive.decode

    def recording(model, embeddings, multimask, **prompts):
        prediction = real(model, embeddings, multimask, **prompts)
        calls.append((prompts, prediction))
        return prediction

    monkeypatch.setattr(interactive, "decode", recording)
    return calls


@pytest.fixture
def box_batch():
    """Two 128 px images with one square object each, box prompts in pixel coordinates."""
    torch.manual_seed(0)
    image = torch.rand(2, 1, 128, 128) * 0.2
    label = torch.zeros(2, 1, 128, 128)
    label[0, 0, 30:70, 40:90] = 1
    label[1, 0, 60:100, 20:60] = 1
    image = image + 0.6 * label
    boxes = torch.tensor([[[40.0, 30.0, 89.0, 69.0]], [[20.0, 60.0, 59.0, 99.0]]])
    return {"image": image, "label": label, "boxes": boxes}


def _module_of(file: str, name: str):
    """``tests/data/<file>`` as a module, loaded from its path because ``tests/`` is not a package."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).parent / "data" / file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_fake_data():
    """``tests/data/generate.py`` as a module: fake datasets in every shipped card's layout.

    Test modules that need it at import time call this (``from conftest import load_fake_data``),
    tests use ``fake_data``.
    """
    return _module_of("generate.py", "fake_data_generate")


def load_user_folders():
    """``tests/data/user_folders.py`` as a module: folders of data the way a user's own looks."""
    return _module_of("user_folders.py", "user_folders")


@pytest.fixture(scope="session")
def fake_data():
    """The fake-data generator module (see ``load_fake_data``)."""
    return load_fake_data()


@pytest.fixture(scope="session")
def meta_sam2():
    """Meta's SAM2 (``sam2==1.1.0``, its PyPI source distribution, cached) importable as ``sam2``.

    See ``tests/meta_reference.py``: no torchvision, no Hydra initialisation on import. The
    first run downloads the sdist; without network a test that needs it fails (never skips).
    """
    import meta_reference

    with meta_reference.meta_package() as meta:
        yield meta


# --- shared helpers: test modules import these from here, never from each other -------------------

#: Small non-square phantoms (x != y: a transposed plane cannot go unnoticed).
PHANTOM_SHAPE = (40, 48, 8)

#: Overrides that shrink any recipe to two training steps of the tiny model at 64 px, offline.
TWO_STEPS = [
    "model=tiny",
    "model.image_size=64",
    "trainer.max_steps=2",
    "trainer.max_epochs=-1",
    "trainer.val_check_interval=null",
    "trainer.check_val_every_n_epoch=1000",
    "trainer.limit_val_batches=1",
    "validate_before=false",
    "data.batch_size=1",
    "data.val_batch_size=2",
    "optim.warmup_steps=1",
    "embedding_cache.mode=off",
    "logger=csv",
    "data.num_workers=0",
]


def compose_cfg(out_dir, *overrides: str):
    """The training config as ``python -m adapt.train <overrides>`` composes it, writing to ``out_dir``."""
    from hydra import compose, initialize_config_dir

    from adapt.conf import CONFIG_DIR, register_recipes, register_resolvers

    register_resolvers()
    register_recipes()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=[*overrides, f"out_dir={out_dir}"], return_hydra_config=False)


def tiny_task_args(adapter=None, **changes):
    """Keyword arguments of a task on the tiny model (128 px), for tests that build a task directly."""
    args = dict(
        model={"name": "tiny", "image_size": 128},
        adapter=adapter or {"kind": "lora", "rank": 4, "targets": ["decoder_attn"]},
        optim={"lr": 1e-3, "weight_decay": 0.0, "warmup_steps": 1, "min_lr_ratio": 0.1},
        loss={"dice": 1.0, "pixel_term": 1.0, "iou": 1.0, "pixel": "bce"},
    )
    return {**args, **changes}


def train_tiny(run_dir, data_root, *extra: str):
    """A tiny LoRA run trained for two steps on the phantoms at ``data_root``."""
    from adapt.train import train

    overrides = [
        "recipe=demo",
        "model=tiny",
        "model.image_size=128",
        "trainer.max_steps=2",
        "data.batch_size=2",
        "data.val_batch_size=4",
        "optim.warmup_steps=1",
        "validate_before=false",
        "data.val_max_slices_per_case=2",
        f"data.root={data_root}",
        *extra,
    ]
    train(compose_cfg(run_dir, *overrides))
    return run_dir


@contextlib.contextmanager
def phantom_data(base):
    """Three small non-square phantoms under ``base/phantoms``, the data cache under ``base/cache``."""
    from adapt.data.synthetic import write_ct_phantoms

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SAM2_ADAPT_DATA", str(base / "cache"))
        data = base / "phantoms"
        write_ct_phantoms(data, num_cases=3, shape=PHANTOM_SHAPE)
        yield data


class LocalHub:
    """An ``HfApi`` stand-in whose repos are folders ``root/<user>/<name>/<revision>``."""

    def __init__(self, root: Path):
        self.root = root
        self.repos: dict[str, dict] = {}

    def create_repo(self, repo_id, private=None, exist_ok=False, **kw):
        if repo_id in self.repos and not exist_ok:
            raise RuntimeError("exists")
        self.repos.setdefault(repo_id, {"private": private, "branches": {"main"}})

    def create_branch(self, repo_id, branch, exist_ok=False, **kw):
        self.repos[repo_id]["branches"].add(branch)

    def upload_folder(self, repo_id, folder_path, revision=None, commit_message=None, **kw):
        assert (revision or "main") in self.repos[repo_id]["branches"], "upload to a branch that was not created"
        target = self.root / repo_id / (revision or "main")
        shutil.copytree(folder_path, target, dirs_exist_ok=True)
        return SimpleNamespace(commit_url=f"local://{repo_id}@{revision or 'main'}", message=commit_message)

    def snapshot_download(self, repo_id, revision=None, local_dir=None, **kw):
        path = self.root / repo_id / (revision or "main")
        if not path.exists():
            raise FileNotFoundError(f"{repo_id}@{revision} not on the local hub")
        if local_dir:
            shutil.copytree(path, local_dir, dirs_exist_ok=True)
            return str(local_dir)
        return str(path)


# --- notebooks: run one top to bottom in a kernel, as Jupyter would ------------------------------


def figures(book) -> int:
    """How many figures the executed notebook shows."""
    return sum(
        "image/png" in out.get("data", {})
        for cell in book.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )


def errors(book) -> list[str]:
    """The exception names of the executed notebook's failed cells."""
    return [
        out.get("ename", "")
        for cell in book.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]


# --- faults: a user's mistake under the command lines' printer ------------------------------------


class ModelLoaded(BaseException):
    """Raised when a fault that must be found before any model is loaded loads one (not an
    ``Exception``: no ``except Exception`` on the way can swallow it)."""


def run_user_action(action):
    """``action()`` under the command lines' printer (``adapt.cli.user_errors``): ``(exit status, stderr, seconds)``."""
    import io
    import time

    from adapt.cli import user_errors

    stderr = io.StringIO()
    start = time.perf_counter()
    code = None
    with contextlib.redirect_stderr(stderr):
        try:
            with user_errors():
                action()
        except SystemExit as exit_:
            code = exit_.code
    return code, stderr.getvalue(), time.perf_counter() - start


def forbid_model_loads(monkeypatch) -> None:
    """Make every SAM2 load raise ``ModelLoaded`` for the rest of the test."""

    def tripwire(*args, **kwargs):
        raise ModelLoaded("a model was loaded before the fault was reported")

    for module in ("adapt.tasks.base", "adapt.adapters.loading", "adapt.evaluation.models", "adapt.models.sam2"):
        monkeypatch.setattr(f"{module}.load_sam2", tripwire, raising=False)


@pytest.fixture
def forbid_model(monkeypatch):
    """Any SAM2 load fails the test: its fault must be found before a model is loaded."""
    forbid_model_loads(monkeypatch)


#: Code put around a notebook by ``execute(..., probe=True)``: before its cells, ``plt.show`` records what
#: each figure draws (drawn first, so text has its final place); after them, the records are printed.
FIGURE_PROBE = """
import json as _json
import matplotlib.pyplot as _plt
from matplotlib.colors import to_hex as _hex
from matplotlib.contour import ContourSet as _ContourSet

_figures, _show = [], _plt.show


def _overlaps(boxes):
    return any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def _legend(legend):
    if legend is None:
        return []
    colour = lambda h: _hex(h.get_color() if hasattr(h, "get_color") else h.get_facecolor())  # noqa: E731
    return [{"text": t.get_text(), "colour": colour(h)} for t, h in zip(legend.get_texts(), legend.legend_handles)]


def _describe(fig):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    axes = [ax for ax in fig.axes if ax.get_visible()]
    boxes = [ax.get_window_extent(renderer) for ax in axes if ax.axison]
    found = []
    for ax in axes:
        ticks = {name: [t for t in getattr(ax, f"get_{name}ticklabels")() if t.get_visible() and t.get_text()]
                 for name in ("x", "y")}
        legend = ax.get_legend()
        found.append({
            "title": ax.get_title(), "xlabel": ax.get_xlabel(),
            "xticks": [t.get_text() for t in ticks["x"]],
            "ticks_overlap": any(_overlaps([t.get_window_extent(renderer) for t in ticks[n]]) for n in ticks),
            "contours": [_hex(c.get_edgecolor()[0]) for c in ax.collections
                         if isinstance(c, _ContourSet) and any(len(p.vertices) for p in c.get_paths())],
            "overlays": [_hex(im.get_cmap()(1.0)) for im in ax.get_images()[1:]],
            "legend": _legend(legend),
            "legend_covers_axes": legend is not None and any(
                legend.get_window_extent(renderer).overlaps(box) for box in boxes),
        })
    return {"suptitle": fig._suptitle.get_text() if fig._suptitle else "", "axes": found,
            "legend": [entry for legend in fig.legends for entry in _legend(legend)]}


def _probing_show(*args, **kwargs):
    _figures.extend(_describe(_plt.figure(n)) for n in _plt.get_fignums())
    return _show(*args, **kwargs)


_plt.show = _probing_show
"""


def execute(name: str, env: dict[str, str], monkeypatch, probe: bool = False):
    """``notebooks/<name>`` executed with ``env`` set (inline figures); the executed notebook.

    With ``probe``, ``book.metadata["figures"]`` says what each figure it showed draws (``FIGURE_PROBE``):
    per axes its title, x tick labels, whether tick labels overlap, the colours of ground-truth contours
    and of mask overlays, its legend (text, colour) and whether that legend covers an axes; and the
    figure's own legend.
    """
    import json

    import nbformat
    from nbclient import NotebookClient

    from adapt.conf import REPO_ROOT

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    book = nbformat.read(REPO_ROOT / "notebooks" / name, as_version=4)
    if probe:
        book.cells = [
            nbformat.v4.new_code_cell(FIGURE_PROBE),
            *book.cells,
            nbformat.v4.new_code_cell("print(_json.dumps(_figures))"),
        ]
    NotebookClient(book, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(REPO_ROOT)}}).execute()
    if probe:
        printed = book.cells.pop()
        book.cells.pop(0)
        book.metadata["figures"] = json.loads(
            "".join(o.get("text", "") for o in printed.outputs if o.get("name") == "stdout")
        )
    return book


# --- the app's page in a real headless browser (Debian's chromium + chromedriver, Selenium) -----------


def _browser() -> tuple[str, str] | None:
    import shutil

    binary = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    return (binary, driver) if binary and driver else None


@pytest.fixture
def browser():
    """A headless chromium under Selenium. Skipped only where no browser is installed locally; in CI
    (``CI=true``, where ``.ci/run`` installs Debian's chromium and chromium-driver) its absence fails."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    found = _browser()
    if found is None:
        message = "no chromium + chromedriver (apt-get install chromium chromium-driver)"
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"CI must run the browser test: {message}")
        pytest.skip(message)
    options = Options()
    options.binary_location = found[0]
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(found[1]), options=options)
    yield driver
    driver.quit()


@contextlib.contextmanager
def serve_app(arguments: list[str], cwd):
    """``python -m adapt.app <arguments> port=<a free port>`` started in ``cwd``; yields the page's URL once
    it answers (fails with the app's log if it exits first), and stops it."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log_path = cwd / f"app-{port}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "adapt.app", *arguments, f"port={port}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        url = f"http://127.0.0.1:{port}/"
        try:
            for _ in range(600):
                if process.poll() is not None:
                    pytest.fail(f"the app exited: {log_path.read_text()[-3000:]}")
                try:
                    urllib.request.urlopen(url, timeout=2)
                    break
                except OSError:
                    time.sleep(0.5)
            yield url
        finally:
            process.terminate()
            process.wait(30)


def read_mask(path: Path):
    """The stored values of a mask predict or the page wrote: a DICOM series (a folder), NIfTI, GeoTIFF or PNG."""
    import numpy as np

    if path.is_dir():
        from adapt.data.formats import read_raster

        return read_raster(path).array[0]
    if path.name.endswith(".nii.gz"):
        import nibabel as nib

        return np.asarray(nib.load(path).dataobj)
    if path.suffix == ".tif":
        import tifffile

        return tifffile.imread(path)
    from PIL import Image

    return np.asarray(Image.open(path))


def click_shown_image(browser, fx: float, fy: float) -> None:
    """A click at fraction (fx, fy) of the page's shown image (it is scaled down to fit, centred), once the
    browser has decoded and laid it out (the status line can say "opened" a moment before: no size yet)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    measure = (
        "const r = arguments[0].getBoundingClientRect();"
        "return [r.width, r.height, arguments[0].naturalWidth, arguments[0].naturalHeight];"
    )
    # Each look scrolls the image it finds to the centre: the page loads its image lazily, so one that a later
    # layout moved off the (headless) screen, or a new image in its place, is never fetched.
    look = "arguments[0].scrollIntoView({block: 'center'});" + measure
    WebDriverWait(browser, 60, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda b: all(b.execute_script(look, b.find_element(By.CSS_SELECTOR, "#view img")))
    )
    image = browser.find_element(By.CSS_SELECTOR, "#view img")
    width, height, natural_w, natural_h = browser.execute_script(measure, image)
    scale = min(width / natural_w, height / natural_h, 1)
    ActionChains(browser).move_to_element_with_offset(
        image, int((fx - 0.5) * natural_w * scale), int((fy - 0.5) * natural_h * scale)
    ).click().perform()
