"""Cross-domain evaluation: an adapter trained on one card (liver = 6) evaluated on another of the same
structure (liver = 1), label maps matched by name, reported in-domain vs out-of-domain."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import yaml
from conftest import PHANTOM_SHAPE, train_tiny
from omegaconf import OmegaConf

from adapt.conf import CONFIG_DIR
from adapt.data.synthetic import write_ct_phantoms
from adapt.errors import ConfigError
from adapt.evaluation import evaluate


def phantom_card(folder: Path, name: str, labels: dict[str, int], targets: list[str], seed: int) -> Path:
    """Three phantoms (liver 1, spine 2 as generated, then renumbered to ``labels``) and their card."""
    write_ct_phantoms(folder, num_cases=3, shape=PHANTOM_SHAPE, seed=seed)
    lookup = np.zeros(3, np.uint8)
    lookup[[1, 2]] = labels["liver"], labels["spine"]
    for path in sorted((folder / "labelsTr").glob("*.nii.gz")):
        image = nib.load(path)
        nib.save(nib.Nifti1Image(lookup[np.asarray(image.dataobj)], image.affine, image.header), path)
    card = {
        "name": name,
        "title": f"phantoms {name}",
        "modality": "CT",
        "dims": 3,
        "license": "CC0-1.0",
        "citation": "test phantoms",
        "source": {"kind": "msd", "root": str(folder)},
        "labels": labels,
        "targets": targets,
        "intensity": {"window": [-160, 240]},
        "split": {"val": 0.34, "seed": 0},
    }
    path = folder.parent / f"{name}.yaml"
    path.write_text(yaml.safe_dump(card, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("domain")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SAM2_ADAPT_DATA", str(base / "cache"))
        a = phantom_card(base / "a", "phantom_a", {"background": 0, "spine": 3, "liver": 6}, ["liver"], seed=0)
        b = phantom_card(base / "b", "phantom_b", {"background": 0, "liver": 1, "spine": 2}, ["liver", "spine"], seed=5)
        run = train_tiny(base / "run", base / "a", f"data.card={a}")
        yield SimpleNamespace(base=base, a=a, b=b, run=run)


def run_eval(env, out: Path, card: Path, **values):
    cfg = OmegaConf.load(CONFIG_DIR / "evaluate.yaml")
    cfg.merge_with(
        {
            "adapter": str(env.run),
            "out": str(out),
            "clicks": "off",
            "batch_size": 8,
            "device": "cpu",
            "save_masks": "all",
            "data": {"card": str(card)},
            **values,
        }
    )
    return evaluate(cfg)


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def voxels(label_file: str, value: int) -> int:
    return int((np.asarray(nib.load(label_file).dataobj) == value).sum())


def test_labels_are_matched_by_name_and_reported_in_and_out_of_domain(env, tmp_path, capsys):
    out = tmp_path / "cross"
    summary = run_eval(env, out, env.b, compare="none", in_domain=str(env.a))
    # Out-of-domain: the adapter's target (liver) found by name in card B, where it is 1; spine is not a target of it.
    assert summary["label_values"] == {"liver": 1} and list(summary["classes"]) == ["liver"]
    domain = summary["domain"]
    assert (domain["kind"], domain["trained_on"], domain["evaluated_on"]) == ("out-of-domain", "phantom_a", "phantom_b")
    assert domain["classes"] == {"liver": {"trained": 6, "evaluated": 1}} and domain["unmatched"] == []
    for row in rows(out / "cases.csv"):
        assert int(row["gt_voxels"]) == voxels(row["label"], 1) > 0
    mask = next((out / "masks" / "adapter").iterdir())
    assert set(np.unique(np.asarray(nib.load(mask).dataobj)).tolist()) <= {0, 1}  # written with card B's value

    # In-domain: the same models on card A's split, where liver is 6.
    inside = domain["in_domain"]
    assert inside["card"] == "phantom_a" and inside["label_values"] == {"liver": 6}
    for row in rows(out / "in_domain_cases.csv"):
        assert int(row["gt_voxels"]) == voxels(row["label"], 6) > 0 and "/a/" in row["label"]
    for run in ("adapter", "compare"):
        cells = domain["gap"][run]["liver"]["dice"]
        assert cells["in_domain"] == pytest.approx(inside[run]["classes"]["liver"]["dice"]["mean"])
        mine = summary if run == "adapter" else summary["compare"]
        assert cells["out_of_domain"] == pytest.approx(mine["classes"]["liver"]["dice"]["mean"])
        assert cells["gap"] == pytest.approx(cells["out_of_domain"] - cells["in_domain"])
    assert domain["models"]["compare"].startswith("zero-shot")
    assert json.loads((out / "summary.json").read_text())["domain"]["kind"] == "out-of-domain"
    printed = capsys.readouterr().out
    assert "out-of-domain: trained on phantom_a" in printed
    assert "in-domain (phantom_a, val) vs out-of-domain (phantom_b, val)" in printed and "gap" in printed


def test_in_domain_is_said_so_and_unmatched_cards_are_refused(env, tmp_path):
    summary = run_eval(env, tmp_path / "own", env.a)
    assert summary["domain"]["kind"] == "in-domain" and summary["label_values"] == {"liver": 6}
    with pytest.raises(ConfigError, match="this evaluation is in-domain"):
        run_eval(env, tmp_path / "x", env.a, in_domain=True)
    # in_domain=true: the card the adapter carries (a card of one's own, given as a file when training)
    both = run_eval(env, tmp_path / "y", env.b, in_domain=True)
    assert both["domain"]["in_domain"]["card"] == "phantom_a" and both["domain"]["in_domain"]["label_values"] == {
        "liver": 6
    }
    other = yaml.safe_load(env.b.read_text())
    other.update(name="kidneys", labels={"background": 0, "kidney": 1, "spine": 2}, targets=["kidney"])
    card = tmp_path / "kidneys.yaml"
    card.write_text(yaml.safe_dump(other))
    with pytest.raises(ConfigError, match=r"trained on \['liver'\].*names none of them") as error:
        run_eval(env, tmp_path / "z", card)
    assert "kidney" in str(error.value) and "'liver': 6" in str(error.value)
