"""One runner: nothing outside ``adapt/inference/`` (and the training tasks and the models
themselves) calls SAM2's forward primitives or its submodules.

An AST scan of every module of ``adapt/``: a forward primitive (``decode``, ``upsample_logits``,
``click_rounds``, ``class_logits``, ``image_embeddings``) imported from ``adapt.models`` or called
through a module of it, or a SAM2 submodule reached as an attribute (``model.mask_decoder``,
``.vision_encoder``, ...), is a second runner in the making: export, the app, predict and
evaluation ask ``adapt.inference.runner.Predictor`` (logits included: ``Predictor.logits``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

import adapt
from adapt.adapters.loading import LoadedAdapter
from adapt.inference.runner import Predictor
from adapt.models.sam2 import load_sam2

PACKAGE = Path(adapt.__file__).parent
#: Where SAM2 may be called: the runner, the training tasks and the model code itself.
ALLOWED = ("inference", "tasks", "models")
PRIMITIVES = {"decode", "upsample_logits", "click_rounds", "class_logits", "image_embeddings"}
SUBMODULES = {
    "vision_encoder",
    "prompt_encoder",
    "mask_decoder",
    "memory_encoder",
    "memory_attention",
    "shared_image_embedding",
    "no_memory_embedding",
    "obj_ptr_proj",
    "mask_downsample",
    "get_image_embeddings",
    "get_image_features",
    "get_prompt_embeddings",
}


def model_calls(source: str) -> list[str]:
    """What ``source`` reaches of SAM2's forward path: ``line: name`` for each primitive or submodule."""
    tree = ast.parse(source)
    aliases = set()  # names bound to a module of adapt.models
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("adapt.models"):
            found += [f"{node.lineno}: {a.name}" for a in node.names if a.name in PRIMITIVES]
            aliases |= {a.asname or a.name for a in node.names if a.name not in PRIMITIVES}
        elif isinstance(node, ast.ImportFrom) and node.module == "adapt":
            aliases |= {a.asname or a.name for a in node.names if a.name == "models"}
        elif isinstance(node, ast.Import):
            aliases |= {a.asname or a.name.split(".")[0] for a in node.names if a.name.startswith("adapt.models")}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        if node.attr in SUBMODULES:
            found.append(f"{node.lineno}: .{node.attr}")
        elif node.attr in PRIMITIVES and isinstance(base := _root(node.value), ast.Name) and base.id in aliases:
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def _root(node: ast.expr) -> ast.expr:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node


@pytest.mark.parametrize(
    "source, flagged",
    [
        ("from adapt.models.primitives import decode\n", ["1: decode"]),
        ("from adapt.models.primitives import preprocess as p, upsample_logits as up\n", ["1: upsample_logits"]),
        ("from adapt.models.interactive import click_rounds\n", ["1: click_rounds"]),
        ("from adapt.models import semantic\nsemantic.class_logits(m, e)\n", ["2: semantic.class_logits"]),
        (
            "import adapt.models.primitives\nadapt.models.primitives.image_embeddings(m, x)\n",
            ["2: adapt.models.primitives.image_embeddings"],
        ),
        ("out = loaded.model.mask_decoder(**inputs)\n", ["1: .mask_decoder"]),
        ("feats = base_model(model).vision_encoder(pixels)\n", ["1: .vision_encoder"]),
        ("emb = model.get_image_embeddings(pixels)\n", ["1: .get_image_embeddings"]),
        ("ids = encoding.decode(array, path)\n", []),  # a label encoding's decode is not the model's
        ("text = archive.read(name).decode()\n", []),
        ("from adapt.models.primitives import preprocess\nspec = {'modules': ['mask_decoder']}\n", []),
    ],
)
def test_the_scan_flags_model_calls_and_nothing_else(source, flagged):
    assert model_calls(source) == flagged


def test_nothing_outside_the_runner_calls_sam2():
    """Every module of adapt/ outside inference/, tasks/ and models/ reaches SAM2 only through the runner."""
    scanned, offenders = 0, {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] in ALLOWED:
            continue
        scanned += 1
        found = model_calls(path.read_text())
        if found:
            offenders[str(relative)] = found
    assert scanned > 50  # the scan saw the package (export/, app/, evaluation/, predict.py, ...)
    assert not offenders, (
        "these modules call SAM2 themselves; use adapt.inference.runner.Predictor "
        f"(embed, decode, logits, masks, classify) instead: {offenders}"
    )


def test_logits_come_at_the_requested_size_and_are_the_masks_before_the_threshold():
    """``Predictor.logits``: at the planes' size ``> 0`` is the runner's mask; at the decoder's own
    side (``S/4``) they are its best candidate's low-resolution logits, nothing interpolated."""
    model, info = load_sam2("tiny")
    predictor = Predictor(LoadedAdapter(model, {}, {}, {}, info, Path("none")), device="cpu")
    images = np.random.default_rng(0).random((2, 3, 40, 52), dtype=np.float32)
    boxes = np.array([[5, 6, 30, 28], [10, 4, 50, 36]], np.float32)
    points, labels = np.array([[[20, 15]], [[30, 20]]], np.float32), np.array([[1], [1]])
    with torch.inference_mode():
        embeddings = predictor.embed(images)
        boxed = predictor.decode(embeddings, predictor.model_prompts(40, 52, boxes))
        clicked = predictor.decode(embeddings, predictor.model_prompts(40, 52, None, points, labels))
    assert boxed.low_res.shape[2] == 1 and clicked.low_res.shape[2] == 3  # a lone click: SAM2's three candidates
    logits = predictor.logits(images, boxes)
    assert logits.shape == (2, 40, 52) and logits.dtype == torch.float32
    assert torch.equal(logits > 0, Predictor.masks(boxed, 40, 52)) and 0 < int((logits > 0).sum()) < logits.numel()
    low = predictor.size // 4
    assert torch.equal(predictor.logits(images, boxes, size=(low, low)), boxed.best()[:, 0].float())
    assert torch.equal(predictor.logits(images, None, points, labels, size=(low, low)), clicked.best()[:, 0].float())
