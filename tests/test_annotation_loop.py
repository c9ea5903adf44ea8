"""The annotation loop of ``python -m adapt.app adapter=<run> worklist=<out>/worklist.csv``: each case of the
worklist opened with its pre-annotation, accepted or corrected, saved into the card's label folder by the code of
``annotate save`` (its refusals end in the page's status line and write nothing), and the retrain command that
warm-starts from the adapter; then the whole loop once in a headless browser.
"""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import click_shown_image, compose_cfg, serve_app
from omegaconf import OmegaConf
from PIL import Image
from readme_commands import command
from test_annotate import annotate_cfg, folders, snapshot, user_card
from test_app import write_volume
from tiny_adapters import make_adapter

from adapt.adapters.io import read_metadata
from adapt.adapters.warm_start import mismatches
from adapt.annotate.command import run
from adapt.annotate.save import save
from adapt.app import retrain
from adapt.app.annotation import Loop
from adapt.app.session import Session, stored_planes
from adapt.conf import CONFIG_DIR
from adapt.errors import ConfigError
from adapt.schema import validate
from adapt.inference.onnx_backend import load_predictor

BOX = "box 20,15,60,50"


@pytest.fixture(scope="module")
def annotated(tmp_path_factory):
    """A PNG folder with 2 unlabelled scans, pre-annotated zero-shot from a prompts file; a tiny adapter for the page."""
    base = tmp_path_factory.mktemp("loop")
    folder = folders.write_ultrasound_folder(base / "data", num_cases=3, unlabelled=2)
    card = user_card(folder, base / "card.yaml")
    (base / "prompts.csv").write_text(f'case,prompt\nscan_03,"{BOX}"\nscan_04,"point 40,30"\n')
    run(
        annotate_cfg(
            "adapter=none",
            "model=tiny",
            f"data.card={card}",
            f"prompts={base / 'prompts.csv'}",
            f"out={base / 'out'}",
            "device=cpu",
        )
    )
    adapter = make_adapter(base / "adapter", 256)
    return base / "out" / "worklist.csv", folder / "masks", adapter


@pytest.fixture
def loop(annotated):
    """The worklist opened afresh; the labels a test saves are removed after it."""
    worklist, masks, _ = annotated
    opened = Loop.open(worklist)
    yield opened
    for row in opened.rows:
        opened.label_path(row["case"]).unlink(missing_ok=True)


@pytest.fixture(scope="module")
def predictor(annotated):
    return load_predictor(annotated[2], propagation="boxes")


def test_each_case_opens_with_its_pre_annotation_is_accepted_or_corrected_into_the_label_folder(
    loop, predictor, tmp_path
):
    session = Session(predictor, tmp_path / "masks")
    first = loop.current
    assert [r["case"] for r in loop.rows] == [r["case"] for r in Loop.open(loop.worklist).rows]  # worklist order
    status = loop.show(session)
    pre = np.asarray(Image.open(first["pre"]))
    assert status.startswith(f"case 1 of 2: {first['case']}") and session.source == Path(first["image"])
    np.testing.assert_array_equal(session.mask, (pre != 0)[None])  # the pre-annotation is the mask shown
    label = loop.accept()
    assert label == loop.label_path(first["case"]) and label.parent.name == "masks"
    assert label.read_bytes() == Path(first["pre"]).read_bytes()  # its values and geometry, as written
    assert loop.status(label) == f"saved case {first['case']}'s label to {label}; 1 of 2 remain"
    assert [row[-1] for row in loop.table()] == ["saved", "to do"]

    second = loop.step(1)
    loop.show(session)
    for x, y in ((10, 8), (70, 60)):
        session.click(x, y, "box")
    assert session.segment().startswith("mask: ")
    label = loop.save_corrected(session)
    stored = np.asarray(Image.open(label))
    image = np.asarray(Image.open(second["image"]))
    assert label == loop.label_path(second["case"]) and stored.shape == image.shape
    np.testing.assert_array_equal(stored, session.mask[0].astype(np.uint8) * 255)  # the card's 0/255 encoding
    assert stored.any() and loop.remaining() == 0 and loop.step(1) == second  # held at the worklist's end
    with pytest.raises(Exception, match=f"case {second['case']} has a label already"):
        save(loop.worklist, second["case"])  # the command and the page: one implementation


def test_a_volumes_label_file_is_shown_on_the_slices_where_it_lies(predictor, tmp_path):
    """A NIfTI label (anisotropic voxels), written as the page writes a mask, read back as the shown mask equals the
    mask it was written from, slice by slice: the stored grid's axes as the page shows them."""
    session = Session(predictor, tmp_path / "saved")  # not the scan's folder: the mask is named as the scan is
    session.open([write_volume(tmp_path / "ct.nii.gz")])
    session.prompt = "box 10,12,30,34 slice=2"  # the mask: random voxels of the scan's stack, as segment leaves it
    session.stack_mask = np.random.default_rng(0).random(session.scan.shape) > 0.7
    session.mask = stored_planes(session.stack_mask.astype(np.uint8), session.scan).astype(bool)
    written, shown = session.save(), session.mask.copy()
    assert session.show_labels(written) == int(shown.sum()) > 0
    np.testing.assert_array_equal(session.mask, shown)
    assert session.prompt == "" and session.stack_mask is None  # a label shown is no prompt's mask


def _change_image(loop: Loop, masks: Path, monkeypatch):
    image = Path(loop.current["image"])
    facts = image.stat()
    os.utime(image, ns=(facts.st_atime_ns, facts.st_mtime_ns + 10**9))  # edited since it was pre-annotated
    return lambda: os.utime(image, ns=(facts.st_atime_ns, facts.st_mtime_ns))


def _label_exists(loop: Loop, masks: Path, monkeypatch):
    loop.label_path(loop.current["case"]).write_bytes(b"a label saved by hand")


def _read_only(loop: Loop, masks: Path, monkeypatch):
    real = tempfile.mkstemp

    def refused(*args, dir=None, **kwargs):  # a read-only mount: refused to root as well
        if Path(dir) == masks:
            raise OSError(30, "Read-only file system")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr("adapt.storage.tempfile.mkstemp", refused)


#: fault -> (how it is made, the page's handler that saves (Accept, Save label), what the status line says)
FAULTS = {
    "the worklist no longer matches the data": (_change_image, "accepted", "the worklist no longer matches the data"),
    "a label exists": (_label_exists, "accepted", "has a label already"),
    "a read-only label folder": (_read_only, "saved_label", "cannot write in"),
}


@pytest.fixture(scope="module")
def handlers(annotated, predictor, tmp_path_factory):
    """The annotation page's handlers by name, as Gradio calls them (user errors become the status line)."""
    from adapt.app.page import build_page

    page = build_page(predictor, tmp_path_factory.mktemp("saved"), worklist=annotated[0])
    return {f.name: f.fn for f in page.fns.values()}


@pytest.mark.parametrize("fault", FAULTS)
def test_a_refused_save_ends_in_the_status_line_and_writes_nothing(annotated, loop, handlers, fault, monkeypatch):
    masks = annotated[1]
    make, handler, message = FAULTS[fault]
    fns = handlers
    session, loop, *_ = fns["first_case"](None, loop)
    if handler == "saved_label":
        session.click(10, 8, "box")
        session.click(70, 60, "box")
        session.segment()
    restore = make(loop, masks, monkeypatch)
    before = snapshot(masks)
    try:
        *_, status = fns[handler](*((loop,) if handler == "accepted" else (session, loop)))
    finally:
        if restore:
            restore()
    assert status.startswith("error: ") and message in status and "Traceback" not in status, status
    assert snapshot(masks) == before


def test_a_worklist_without_its_record_is_refused_before_the_model_loads(tmp_path, forbid_model):
    from adapt.app.__main__ import build

    (tmp_path / "worklist.csv").write_text("rank,case,slice\n")
    cfg = OmegaConf.load(CONFIG_DIR / "app.yaml")
    cfg.merge_with({"adapter": str(tmp_path), "worklist": str(tmp_path / "worklist.csv"), "out_dir": str(tmp_path)})
    with pytest.raises(ConfigError, match="no worklist.csv with its annotate.json there"):
        build(cfg)


def test_the_retrain_command_repeats_the_adapters_settings_so_its_warm_start_fits(annotated, tmp_path):
    """The command composes (Hydra, as ``python -m adapt.train`` would) into a run the adapter's record fits,
    on the worklist's card; from a run folder it repeats the run's own overrides."""
    worklist, _, adapter = annotated
    loop = Loop.open(worklist)
    metadata = read_metadata(adapter)
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text(
        "- recipe=demo\n- model=tiny\n- data.card=old\n- ckpt_path=last\n"
    )
    for folder, expected in ((adapter, None), (run_dir / "adapter", ["recipe=demo", "model=tiny"])):
        argv = retrain.command(str(folder), folder, metadata, loop.record)
        assert argv[1:3] == ["-m", "adapt.train"] and argv[-2:] == [
            f"init_adapter={folder}",
            f"data.card={loop.record['card']}",
        ]
        overrides = argv[3:]
        if expected is not None:
            assert argv[3:-2] == expected
            continue
        cfg = compose_cfg(tmp_path / "new", *overrides)
        validate(cfg, "train")  # the door's schema lets it through
        assert mismatches(metadata, cfg.model.name, OmegaConf.to_container(cfg.adapter), cfg.task) == []
        assert cfg.data.card == loop.record["card"]
    assert retrain.shown(argv).startswith("python -m adapt.train recipe=demo model=tiny init_adapter=")


@pytest.mark.slow
def test_the_loop_in_a_headless_browser(annotated, browser, tmp_path):
    """Open the worklist: the first case shows its pre-annotation; accept it (its label appears in the card's
    folder, equal to the pre-annotation); next case; correct it with a box, save; the retrain command is shown."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    worklist, masks, adapter = annotated
    loop = Loop.open(worklist)
    first, second = loop.rows
    readme = command("python -m adapt.app", "Label less")  # the README's step 3, as written
    places = {"outputs/busi/<run>": str(adapter), "round1/worklist.csv": str(worklist)}
    arguments = [*readme.argv(places)[3:], "device=cpu", f"out_dir={tmp_path / 'saved'}"]
    retrain_pid = None
    try:
        with serve_app(arguments, tmp_path) as url:
            wait = WebDriverWait(browser, 30)
            value = lambda css: browser.find_element(By.CSS_SELECTOR, css).get_attribute("value")  # noqa: E731
            status = lambda: value("#status textarea")  # noqa: E731
            click = lambda id: browser.find_element(By.CSS_SELECTOR, f"#{id}").click()  # noqa: E731
            browser.get(url)
            wait.until(lambda b: status().startswith(("case 1 of 2", "error")))
            assert first["case"] in status() and first["case"] in browser.find_element(By.ID, "worklist").text
            click("accept")
            wait.until(lambda b: status().startswith(("saved", "error")))
            label = loop.label_path(first["case"])
            assert status() == f"saved case {first['case']}'s label to {label}; 1 of 2 remain"
            assert label.read_bytes() == Path(first["pre"]).read_bytes()
            click("next")
            wait.until(lambda b: status().startswith(("case 2 of 2", "error")))
            click_shown_image(browser, 0.1, 0.1)
            wait.until(lambda b: status().startswith("box"))
            click_shown_image(browser, 0.8, 0.8)
            wait.until(lambda b: value("#prompt textarea").startswith("box "))
            click("segment")
            wait.until(lambda b: status().startswith(("mask", "error")))
            click("save_label")
            wait.until(lambda b: status().startswith(("saved", "error")))
            label = loop.label_path(second["case"])
            assert status().endswith("0 of 2 remain") and np.asarray(Image.open(label)).any(), status()
            click("retrain")
            wait.until(lambda b: status().startswith(("retrain started", "error")))
            started = status()
            if started.startswith("retrain started"):
                retrain_pid = int(started.split("pid ")[1].split(")")[0])
            shown = value("#retrain_command textarea")
            assert shown.startswith("python -m adapt.train ") and f"init_adapter={adapter}" in shown, started
            assert Path(started.split("its log: ")[1].split(";")[0]).parent == worklist.parent
    finally:
        if retrain_pid is not None:
            os.kill(retrain_pid, signal.SIGTERM)  # the retrain this test started (its own session)
        for row in loop.rows:
            loop.label_path(row["case"]).unlink(missing_ok=True)
