"""Each adapter kind: expected trainable count, training moves only trainable weights, exact save/load."""

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from torch import nn

from adapt.adapters import apply_adapter
from adapt.adapters.io import (
    load_adapter_weights,
    read_metadata,
    save_adapter,
    trainable_state_dict,
)
from adapt.errors import ConfigError
from adapt.models.primitives import preprocess
from adapt.models.sam2 import count_parameters, load_sam2
from adapt.tasks.losses import LossWeights, segmentation_loss

KINDS = {
    "lora": {"kind": "lora", "rank": 4, "alpha": 8, "dropout": 0.0, "targets": ["encoder_attn", "decoder_attn"]},
    "dora": {"kind": "dora", "rank": 4, "alpha": 8, "dropout": 0.0, "targets": ["encoder_attn", "decoder_attn"]},
    "bottleneck": {"kind": "bottleneck", "reduction": 4, "placement": ["attn", "mlp"], "blocks": [], "mlp_scale": 0.5},
    "decoder": {"kind": "decoder", "modules": ["mask_decoder"]},
    "full": {"kind": "full"},
}


def _decoder_attention_linears(model):
    """q/k/v/o projections of the mask decoder's two-way transformer, found by structure."""
    layers = []
    for module in model.mask_decoder.transformer.modules():
        if all(hasattr(module, p) for p in ("q_proj", "k_proj", "v_proj", "o_proj")):
            layers += [getattr(module, p) for p in ("q_proj", "k_proj", "v_proj", "o_proj")]
    return layers


def expected_trainable(kind: str, model: nn.Module) -> int:
    blocks = model.vision_encoder.backbone.blocks
    if kind in ("lora", "dora"):
        linears = [layer for b in blocks for layer in (b.attn.qkv, b.attn.proj)] + _decoder_attention_linears(model)
        lora = sum(4 * (layer.in_features + layer.out_features) for layer in linears)
        return lora + (sum(layer.out_features for layer in linears) if kind == "dora" else 0)  # DoRA magnitude
    if kind == "bottleneck":
        per_adapter = lambda d, h: d * h + h + h * d + d  # noqa: E731
        return sum(2 * per_adapter(b.dim_out, b.dim_out // 4) for b in blocks)
    if kind == "decoder":
        return sum(p.numel() for p in model.mask_decoder.parameters())
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("kind", KINDS)
def test_trainable_count(kind):
    base, _ = load_sam2("tiny")
    expected = expected_trainable(kind, base)
    model = apply_adapter(base, KINDS[kind])
    assert count_parameters(model)[0] == expected


def _loss(model, batch):
    """Dice + BCE. The IoU-regression term is left out here: a random model's logits sit at
    zero, so its IoU target (of the thresholded mask) jumps from step to step."""
    out = model(pixel_values=preprocess(batch["image"]), input_boxes=batch["boxes"], multimask_output=False)
    logits = nn.functional.interpolate(out.pred_masks[:, :, 0], size=(128, 128), mode="bilinear")
    return segmentation_loss(logits[:, :, None], batch["label"], out.iou_scores, LossWeights(iou=0.0))[0]


@pytest.mark.parametrize("kind", KINDS)
def test_steps_lower_loss_and_touch_only_trainable_weights(kind, box_batch):
    torch.manual_seed(0)
    model = apply_adapter(load_sam2("tiny")[0], KINDS[kind])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    first = _loss(model, box_batch)
    for _ in range(6):
        optimizer.zero_grad()
        loss = _loss(model, box_batch)
        loss.backward()
        optimizer.step()
    assert _loss(model, box_batch).item() < first.item()
    for name, param in model.named_parameters():
        changed = not torch.equal(param, before[name])
        if name not in trainable:
            assert not changed, f"frozen {name} changed"
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if n in trainable)


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip_reproduces_outputs_exactly(kind, tmp_path, box_batch):
    torch.manual_seed(1)
    model = apply_adapter(load_sam2("tiny")[0], KINDS[kind])
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    model.eval()
    save_adapter(model, KINDS[kind], tmp_path, {"base_model": {"name": "tiny"}})
    files = {p.name for p in tmp_path.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "sam2_adapt.json"} <= files
    assert read_metadata(tmp_path)["adapter"]["kind"] == kind
    loaded = load_adapter_weights(load_sam2("tiny")[0], tmp_path)
    pixels = preprocess(box_batch["image"])
    with torch.no_grad():
        a = model(pixel_values=pixels, input_boxes=box_batch["boxes"], multimask_output=False).pred_masks
        b = loaded(pixel_values=pixels, input_boxes=box_batch["boxes"], multimask_output=False).pred_masks
    # Weights are bit-identical; outputs may differ in the last bits because CPU matmul
    # kernels depend on buffer alignment, so they are compared to float32 precision.
    saved = trainable_state_dict(model)
    base = loaded.get_base_model() if hasattr(loaded, "get_base_model") else loaded
    restored = dict(base.named_parameters())
    assert saved and all(torch.equal(saved[k], restored[k]) for k in saved)
    assert not any(p.requires_grad for p in loaded.parameters())
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


class FSDPNamed(nn.Module):
    """Holds a block under the attribute name FSDP gives the module it wraps."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self._fsdp_wrapped_module = block


@pytest.mark.parametrize("kind", ["lora", "dora", "bottleneck", "decoder"])
def test_the_adapter_is_saved_from_gathered_weights_under_plain_names(kind, tmp_path):
    """As after an FSDP run: wrapper names in the module, whole weights only in the gathered state dict."""
    model = apply_adapter(load_sam2("tiny")[0], KINDS[kind])
    plain = trainable_state_dict(model)
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    blocks = base.vision_encoder.backbone.blocks
    for i, block in enumerate(blocks):
        blocks[i] = FSDPNamed(block)
    assert any("_fsdp_wrapped_module" in n for n, _ in model.named_parameters())
    assert trainable_state_dict(model).keys() == plain.keys()
    # The gathered weights (full state dict, plain names) differ from the rank's own parameters.
    gathered = {name: torch.full_like(value, 0.5) for name, value in plain.items()}
    prefix = "base_model.model." if isinstance(model, PeftModel) else ""
    weights = {prefix + name: value for name, value in gathered.items()}
    save_adapter(model, KINDS[kind], tmp_path, {"base_model": {"name": "tiny"}}, weights=weights)
    # The same files as saving the unwrapped model, with the gathered values.
    reference = apply_adapter(load_sam2("tiny")[0], KINDS[kind])
    save_adapter(reference, KINDS[kind], tmp_path / "reference", {"base_model": {"name": "tiny"}})
    written, expected = (load_file(d / "adapter_model.safetensors") for d in (tmp_path, tmp_path / "reference"))
    assert written.keys() == expected.keys()
    assert (tmp_path / "adapter_config.json").read_text() == (
        tmp_path / "reference" / "adapter_config.json"
    ).read_text()
    loaded = load_adapter_weights(load_sam2("tiny")[0], tmp_path)
    restored = dict((loaded.get_base_model() if isinstance(loaded, PeftModel) else loaded).named_parameters())
    assert all(torch.equal(restored[name], gathered[name]) for name in plain)


def test_adapters_start_as_the_base_model(box_batch):
    base = load_sam2("tiny")[0].eval()
    pixels = preprocess(box_batch["image"])
    with torch.no_grad():
        ref = base(pixel_values=pixels, input_boxes=box_batch["boxes"], multimask_output=False).pred_masks
    for kind in ("lora", "bottleneck"):
        model = apply_adapter(load_sam2("tiny")[0], KINDS[kind]).eval()
        with torch.no_grad():
            out = model(pixel_values=pixels, input_boxes=box_batch["boxes"], multimask_output=False).pred_masks
        assert torch.equal(out, ref), kind


def test_bottleneck_weights_do_not_fit_another_base(tmp_path):
    model = apply_adapter(load_sam2("tiny")[0], KINDS["bottleneck"])
    save_adapter(model, KINDS["bottleneck"], tmp_path, {})
    other = load_sam2("tiny", image_size=128)[0]
    other.vision_encoder.backbone.blocks = other.vision_encoder.backbone.blocks[:3]
    with pytest.raises(ConfigError, match="does not fit this base model"):
        load_adapter_weights(other, tmp_path)


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"kind": "prefix"}, "adapter.kind='prefix' is not one of"),
        ({"kind": "lora", "targets": ["encoder_everything"]}, "unknown preset 'encoder_everything'"),
        ({"kind": "lora", "rnk": 4}, "adapter=lora: unknown option"),
        ({"kind": "bottleneck", "placement": ["neck"]}, "adapter.placement"),
        ({"kind": "bottleneck", "blocks": [99]}, "index 99 out of range"),
        ({"kind": "decoder", "modules": ["decoder"]}, "'decoder' is not a submodule"),
        ({"kind": "decoder", "modulez": ["mask_decoder"]}, "adapter=decoder: unknown option"),
        ({"kind": "full", "rank": 4}, "adapter=full: unknown option"),
        ({"kind": "decoder", "blocks": 2}, "adapter.blocks is an option of lora, dora and bottleneck"),
    ],
)
def test_bad_adapter_options_are_named(spec, message):
    with pytest.raises(ConfigError, match=message):
        apply_adapter(load_sam2("tiny")[0], spec)


#: What each kind declares it supports (``adapt.adapters.kinds``), written out independently.
SUPPORTS = {  # kind: (saved by peft, takes adapter.blocks, merges into a plain Sam2Model)
    "lora": (True, True, True),
    "dora": (True, True, True),
    "bottleneck": (False, True, False),
    "decoder": (False, False, True),
    "full": (False, False, True),
}


def test_the_kind_table_mirrors_the_declarations_configs_and_schema():
    """A kind is one declaration row, one ``configs/adapter/<kind>.yaml`` and one row of this file's
    tables; the schema's sections and the appliers follow from the row."""
    from adapt.adapters.kinds import KINDS as DECLARED
    from adapt.adapters.registry import applier
    from adapt.conf import CONFIG_DIR
    from adapt.schema import ADAPTER_SCHEMAS

    assert set(KINDS) == set(SUPPORTS) == set(DECLARED) == set(ADAPTER_SCHEMAS)
    assert {path.stem for path in (CONFIG_DIR / "adapter").glob("*.yaml")} == set(DECLARED)
    assert {name: (k.peft, k.in_blocks, k.merges) for name, k in DECLARED.items()} == SUPPORTS
    assert all(callable(applier(kind)) for kind in DECLARED.values())


def test_no_module_outside_the_adapters_names_a_kind():
    """The schema, embedding cache, model card, share, export and sweep ask the declarations."""
    from literals import retyped

    assert retyped(tuple(KINDS), home=("adapters/",)) == []


@pytest.mark.parametrize(
    ("spec", "frozen"),
    [
        ({"kind": "lora", "targets": ["decoder_attn", "memory"]}, True),
        ({"kind": "dora", "targets": "decoder_attn"}, True),
        ({"kind": "lora", "targets": ["encoder_attn", "decoder_attn"]}, False),
        ({"kind": "decoder"}, True),
        ({"kind": "decoder", "modules": ["mask_decoder", "vision_encoder.neck"]}, False),
        ({"kind": "bottleneck"}, False),
        ({"kind": "full"}, False),
        ({"kind": "unknown"}, False),
    ],
)
def test_a_kind_says_whether_its_spec_leaves_the_encoder_frozen(spec, frozen):
    from adapt.models.embedding_cache import encoder_is_frozen

    assert encoder_is_frozen(spec) is frozen


def test_memory_preset_targets_the_video_model():
    model = apply_adapter(load_sam2("tiny", video=True)[0], {"kind": "lora", "rank": 2, "targets": ["memory"]})
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("memory_attention" in n or "memory_encoder" in n for n in names)


@pytest.mark.parametrize("kind", KINDS)
def test_saving_on_a_full_disk_leaves_the_previous_adapter_whole(kind, tmp_path, monkeypatch):
    """A run that fails to write its adapter keeps the one already there loadable, for every kind."""
    import errno

    import adapt.adapters.io as io

    model = apply_adapter(load_sam2("tiny")[0], KINDS[kind])
    save_adapter(model, KINDS[kind], tmp_path / "adapter", {"base_model": {"name": "tiny"}})
    before = {p.name: p.read_bytes() for p in (tmp_path / "adapter").iterdir()}

    def full_disk(tensors, filename, *args, **kwargs):
        open(filename, "wb").write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device", str(filename))

    monkeypatch.setattr(io, "save_file", full_disk)
    monkeypatch.setattr("peft.peft_model.safe_save_file", full_disk)  # peft's own writer (LoRA, DoRA)
    with pytest.raises(ConfigError, match="the adapter folder: the disk holding .* is full"):
        save_adapter(model, KINDS[kind], tmp_path / "adapter", {"base_model": {"name": "tiny"}, "run": 2})
    assert {p.name: p.read_bytes() for p in (tmp_path / "adapter").iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]
