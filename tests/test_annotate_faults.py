"""Faults a user makes in the files of the annotation loop, each refused before a model loads or a label is
written, naming the file, the line or field, and the fix: a prompts file as a spreadsheet saves it (read as
meant) or with a wrong column, a duplicate row, a box or slice outside its image; a worklist edited by hand;
an ``annotate.json`` cut short; a reviewed mask that training could not use; ``save cases=id,id`` typed as
the README shows it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import load_user_folders
from PIL import Image

from adapt.annotate.prompts import read_prompts
from adapt.annotate.save import record, save
from adapt.annotate.scores import PlaneScore
from adapt.annotate.worklist import case_rows, rank, write
from adapt.data.card_writer import init_card
from adapt.data.cards import load_card
from adapt.data.sources import data_root, partition_cases
from adapt.errors import AdaptError, ConfigError
from adapt.inference.prompt_syntax import FREE_TEXT_KEYS, quote_argv

folders = load_user_folders()


def unlabelled_cases(folder: Path) -> tuple:
    """The card ``data init`` drafts for ``folder`` (licence filled in) and its unlabelled cases."""
    card_path, _, _ = init_card(folder, folder.parent / f"{folder.name}.yaml")
    text = card_path.read_text().splitlines()
    text = [
        "license: CC0-1.0"
        if t.startswith("license:")
        else "citation: Doe J. (2026)"
        if t.startswith("citation:")
        else t
        for t in text
    ]
    card_path.write_text("\n".join(text) + "\n")
    card = load_card(str(card_path))
    return card, partition_cases(card, data_root(card))[1]


@pytest.fixture(scope="module")
def pngs(tmp_path_factory):
    """An ultrasound folder (72 x 88 PNGs) with the unlabelled cases scan_08 and scan_09."""
    return unlabelled_cases(folders.write_ultrasound_folder(tmp_path_factory.mktemp("us") / "us", unlabelled=2))


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    """An MSD-style folder (10-slice volumes) with the unlabelled cases organ_004 and organ_005."""
    return unlabelled_cases(folders.write_msd_style_folder(tmp_path_factory.mktemp("msd") / "msd", unlabelled=2))


H, GOOD = "case,prompt\n", 'scan_08,"box 20,15,60,50"\nscan_09,"point 44,36"\n'
#: what the file holds -> (the cases it is read for, what the refusal says; None: read as meant)
PROMPT_FILES = {
    "a renamed column": ("pngs", 'id,prompt\nscan_08,"box 20,15,60,50"\n', "needs the columns case,prompt; found"),
    "an empty file": ("pngs", "", "needs the columns case,prompt; the file is empty"),
    "a header alone": ("pngs", "case,prompt\n", "holds no prompt row"),
    "a case twice": ("pngs", H + GOOD + 'scan_08,"point 4,4"\n', "lines 2 and 4: case scan_08 is prompted twice"),
    "an unquoted comma": ("pngs", "case,prompt\nscan_08,box 20,15,60,50\n", "line 2: more fields than the header"),
    "a box outside the image": ("pngs", H + 'scan_08,"box 2,1,99,5"\n', "(case scan_08): prompt point (99, 5) is"),
    "a slice on a 2D image": ("pngs", 'case,prompt\nscan_08,"point 4,4 slice=3"\n', "is a 2D image: slice=3"),
    "a slice past the volume": (
        "volumes",
        H + 'organ_004,"box 12,10,32,30 slice=10"\n',
        "line 2 (case organ_004): prompt slice=10 is outside",
    ),
    "no slice on a volume": ("volumes", 'case,prompt\norgan_004,"point 22,20"\n', "is a volume of 10 slices"),
    "a point past the volume's plane": (
        "volumes",
        H + 'organ_004,"point 22,40 slice=5"\n',
        "(22, 40) is outside",  # the file named, then its plane: 44x40
    ),
    "Excel's byte-order mark": ("pngs", "\ufeffcase,prompt\n" + GOOD, None),
    "a European separator": ("pngs", "case;prompt\nscan_08;box 20,15,60,50\nscan_09;point 44,36\n", None),
    "spaces around the header": ("pngs", "case , prompt\n" + GOOD, None),
}


@pytest.mark.parametrize("fault", PROMPT_FILES)
def test_a_prompts_file_is_read_as_meant_or_refused_naming_file_line_and_fix(fault, request, tmp_path):
    which, text, refusal = PROMPT_FILES[fault]
    card, cases = request.getfixturevalue(which)
    path = tmp_path / "prompts.csv"
    path.write_text(text, encoding="utf-8")
    if refusal is None:
        given = read_prompts(path, cases, card.slice_axis)
        assert sorted(given) == ["scan_08", "scan_09"]
        assert given["scan_08"].box.tolist() == [20, 15, 60, 50] and given["scan_09"].points.tolist() == [[44, 36]]
        return
    with pytest.raises(ConfigError) as refused:
        read_prompts(path, cases, card.slice_axis)
    assert str(refused.value).startswith(f"prompts={path}") and refusal in str(refused.value)


@pytest.fixture
def round1(pngs, tmp_path):
    """A worklist of the two unlabelled PNGs as ``python -m adapt.annotate`` writes it (its pre-annotations:
    a square of the card's stored value 255), and the label paths ``save`` would write."""
    card, cases = pngs
    out = tmp_path / "round1"
    groups = []
    for n, case in enumerate(cases):
        pre = out / "pre" / Path(case.image).name
        pre.parent.mkdir(parents=True, exist_ok=True)
        mask = np.zeros((72, 88), np.uint8)
        mask[20:40, 30:50] = 255
        Image.fromarray(mask).save(pre)
        plane = PlaneScore(plane=0, objects=1, iou=0.95 - n * 0.5, agreement=0.95)
        groups.append(case_rows(case.id, "prompt", Path(case.image), pre, [plane], False, None, 0.85))
    write(rank(groups), out)
    record(out, card, None, cases)
    yield out, [Path(c.label) for c in cases]
    for case in cases:
        Path(case.label).unlink(missing_ok=True)  # the module's folder serves every test


def edit_column(worklist: Path, column: str, value: str) -> None:
    lines = worklist.read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[1].split(",")
    cells[header.index(column)] = value
    worklist.write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n")


def write_mask(shape: tuple[int, int], value: int):
    def edit(out: Path) -> None:
        mask = np.zeros(shape, np.uint8)
        mask[2:6, 2:6] = value
        for pre in (out / "pre").iterdir():
            Image.fromarray(mask).save(pre)

    return edit


#: the edit -> (cases=, what the refusal says)
WORKLIST_EDITS = {
    "a flag typed wrong": (lambda out: edit_column(out / "worklist.csv", "flag", "acept"), "accepted", "flag 'acept'"),
    "a column deleted": (
        lambda out: (out / "worklist.csv").write_text(
            "\n".join(line.rsplit(",", 1)[0] for line in (out / "worklist.csv").read_text().splitlines())
        ),
        "all",
        "needs the columns rank,case,slice",
    ),
    "the worklist emptied": (lambda out: (out / "worklist.csv").write_text(""), "all", "the file is empty"),
    "every case row removed": (
        lambda out: (out / "worklist.csv").write_text((out / "worklist.csv").read_text().splitlines()[0] + "\n"),
        "all",
        "it lists no case",
    ),
    "annotate.json cut short": (
        lambda out: (out / "annotate.json").write_text((out / "annotate.json").read_text()[:40]),
        "all",
        "annotate.json: not the record python -m adapt.annotate writes",
    ),
    "nothing flagged accept": (
        lambda out: (out / "worklist.csv").write_text(
            (out / "worklist.csv").read_text().replace(",accept,", ",review,")
        ),
        "accepted",
        "none of the 2 case(s)",
    ),
    "a mask saved as something else": (
        lambda out: next((out / "pre").iterdir()).write_bytes(b"not a png"),
        "all",
        "its mask cannot become its label",
    ),
    "a mask on another grid": (write_mask((30, 30), 255), "all", "correct the mask of case"),
    "a mask of a value the card does not list": (write_mask((72, 88), 7), "all", "stores values [7]"),
}


@pytest.mark.parametrize("fault", WORKLIST_EDITS)
def test_a_hand_edited_worklist_or_a_broken_mask_is_refused_and_no_label_written(fault, round1):
    out, labels = round1
    edit, cases, refusal = WORKLIST_EDITS[fault]
    edit(out)
    with pytest.raises(AdaptError) as refused:
        save(out / "worklist.csv", cases)
    assert refusal in str(refused.value), str(refused.value)
    assert not any(label.exists() for label in labels)


def test_the_untouched_worklist_saves_its_masks_as_labels(round1):
    out, labels = round1
    assert ",accept," in (out / "worklist.csv").read_text()  # the fixture's first case: a fault above needs it
    assert sorted(save(out / "worklist.csv", "all")) == sorted(labels)
    for label in labels:
        stored = np.asarray(Image.open(label))
        assert stored.shape == (72, 88) and set(np.unique(stored).tolist()) == {0, 255}
        assert int((stored == 255).sum()) == 400


def test_save_cases_as_the_readme_types_them_reach_hydra_as_one_string():
    argv = ["annotate", "action=save", "worklist=round1/worklist.csv", "cases=scan_07,scan_11"]
    assert quote_argv(argv, (*FREE_TEXT_KEYS, "cases"))[-1] == "cases='scan_07,scan_11'"
    assert quote_argv(["x", "cases=all"], (*FREE_TEXT_KEYS, "cases"))[-1] == "cases=all"
