"""``adapter.blocks``: adapters in some Hiera blocks only, backward stopping at the first, and the
frozen prefix's output cached (``adapt.models.hiera_prefix``)."""

import json
import re
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from peft import PeftModel

from adapt.adapters import apply_adapter
from adapt.adapters.io import load_adapter_weights, read_metadata, save_adapter
from adapt.conf import CONFIG_DIR, register_recipes, register_resolvers
from adapt.errors import ConfigError
from adapt.models.embedding_cache import prefix_cache_wanted
from adapt.models.hiera_prefix import encode_prefix, encode_suffix, first_trained_block
from adapt.models.primitives import base_model, image_embeddings, preprocess
from adapt.models.sam2 import hiera_blocks, load_sam2

TOTAL = 12  # the tiny model's trunk: stages of 1, 2, 7, 2 blocks (stage ends 0, 2, 9, 11)
LORA = {"kind": "lora", "rank": 2, "alpha": 4, "dropout": 0.0, "targets": ["encoder_attn", "decoder_attn"]}
KINDS = {
    "lora": LORA,
    "dora": {**LORA, "kind": "dora"},
    "bottleneck": {"kind": "bottleneck", "reduction": 4, "placement": ["attn", "mlp"], "mlp_scale": 0.5},
}


def adapted_blocks(model):
    """Indices of the Hiera blocks that hold adapter weights (LoRA/DoRA layers or bottlenecks)."""
    found = set()
    for name, _ in model.named_parameters():
        match = re.search(r"vision_encoder\.backbone\.blocks\.(\d+)\.", name)
        if match and re.search(r"lora_|adapter_attn|adapter_mlp", name):
            found.add(int(match.group(1)))
    return sorted(found)


def decoder_adapters(model):
    return sorted(
        n for n in map(lambda item: item[0], model.named_parameters()) if "mask_decoder" in n and "lora_" in n
    )


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "blocks, expected",
    [
        (None, list(range(TOTAL))),
        ([], list(range(TOTAL))),
        (4, [8, 9, 10, 11]),
        (1, [11]),
        (TOTAL, list(range(TOTAL))),
        ([0, 5, 11], [0, 5, 11]),
        ([3, 3, 2], [2, 3]),
    ],
)
def test_adapters_go_into_the_chosen_blocks_only(kind, blocks, expected):
    model = apply_adapter(load_sam2("tiny")[0], {**KINDS[kind], "blocks": blocks})
    assert adapted_blocks(model) == expected
    trained = {
        int(m.group(1))
        for n, p in model.named_parameters()
        if p.requires_grad
        for m in [re.search(r"backbone\.blocks\.(\d+)\.", n)]
        if m
    }
    assert trained == set(expected)
    if kind != "bottleneck":  # decoder-side targets are not restricted
        everywhere = apply_adapter(load_sam2("tiny")[0], KINDS[kind])
        assert decoder_adapters(model) == decoder_adapters(everywhere) != []


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "blocks, message",
    [
        (0, r"adapter\.blocks=0 is out of range: .*12 blocks.*1\.\.12"),
        (13, r"adapter\.blocks=13 is out of range: .*1\.\.12"),
        (-2, r"adapter\.blocks=-2 is out of range"),
        ([12], r"adapter\.blocks: index 12 out of range; .*indices in 0\.\.11"),
        ([-1, 3], r"adapter\.blocks: index -1 out of range"),
        ("4", r"adapter\.blocks='4': .*1\.\.12"),
        (True, r"adapter\.blocks=True"),
        ([1.5], r"1\.5 is not a block index"),
    ],
)
def test_out_of_range_blocks_are_refused_with_the_valid_range(kind, blocks, message):
    with pytest.raises(ConfigError, match=message):
        apply_adapter(load_sam2("tiny")[0], {**KINDS[kind], "blocks": blocks})


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"kind": "decoder", "blocks": 4}, "adapter.blocks is an option of lora, dora and bottleneck"),
        ({"kind": "full", "blocks": [1]}, "adapter.blocks is an option of lora, dora and bottleneck"),
        ({**LORA, "targets": ["decoder_attn"], "blocks": 4}, r"adapter\.blocks=4 places LoRA in trunk blocks"),
    ],
)
def test_blocks_without_encoder_adapters_are_refused(spec, message):
    with pytest.raises(ConfigError, match=message):
        apply_adapter(load_sam2("tiny")[0], spec)


@pytest.mark.parametrize("kind, blocks", [("lora", 4), ("dora", [2, 7]), ("bottleneck", 3)])
def test_a_last_n_adapter_loads_with_the_same_placement(kind, blocks, tmp_path, box_batch):
    spec = {**KINDS[kind], "blocks": blocks}
    torch.manual_seed(0)
    model = apply_adapter(load_sam2("tiny")[0], spec)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    model.eval()
    save_adapter(model, spec, tmp_path, {"base_model": {"name": "tiny"}})
    assert read_metadata(tmp_path)["adapter"]["blocks"] == blocks
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    if kind == "bottleneck":
        assert config["blocks"] == blocks
    else:  # peft's own file carries the placement, so plain PeftModel.from_pretrained repeats it
        regex, chosen = config["target_modules"], adapted_blocks(model)
        matched = [i for i in range(TOTAL) if re.fullmatch(regex, f"vision_encoder.backbone.blocks.{i}.attn.qkv")]
        assert matched == chosen and len(chosen) < TOTAL
    loaded = load_adapter_weights(load_sam2("tiny")[0], tmp_path)
    assert adapted_blocks(loaded) == adapted_blocks(model) and adapted_blocks(model) != list(range(TOTAL))
    pixels = preprocess(box_batch["image"])
    with torch.no_grad():
        a = model(pixel_values=pixels, input_boxes=box_batch["boxes"], multimask_output=False).pred_masks
        b = loaded(pixel_values=pixels, input_boxes=box_batch["boxes"], multimask_output=False).pred_masks
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def saved_tensors_per_block(model, pixels):
    """How many tensors autograd saves for backward while each Hiera block runs forward."""
    blocks = hiera_blocks(model)
    current, counts = [None], [0] * len(blocks)
    for index, block in enumerate(blocks):
        block.register_forward_pre_hook(lambda *_, i=index: current.__setitem__(0, i))
        block.register_forward_hook(lambda *_: current.__setitem__(0, None))

    def pack(tensor):
        if current[0] is not None:
            counts[current[0]] += 1
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        embeddings = image_embeddings(model, pixels)
    return counts, embeddings


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("blocks, start", [(4, 8), ([5, 9], 5), (None, 0)])
def test_backward_stops_at_the_first_adapted_block(kind, blocks, start):
    model = apply_adapter(load_sam2("tiny")[0], {**KINDS[kind], "blocks": blocks}).train()
    assert first_trained_block(base_model(model)) == start
    outputs = {}
    for index, block in enumerate(hiera_blocks(model)):
        block.register_forward_hook(lambda _m, _a, out, i=index: outputs.__setitem__(i, out))
    counts, embeddings = saved_tensors_per_block(model, preprocess(torch.rand(1, 1, 128, 128)))
    # The frozen prefix builds no graph and keeps no activations; every adapted block does.
    assert all(outputs[i].grad_fn is None for i in range(start))
    assert all(counts[i] == 0 for i in range(start)), counts
    assert outputs[start].grad_fn is not None and counts[start] > 0
    embeddings[-1].sum().backward()  # the lowest-resolution level: the last stage's output
    encoder = [p for n, p in model.named_parameters() if p.requires_grad and "backbone.blocks" in n]
    assert encoder and all(p.grad is not None for p in encoder)


def _trained_lora(blocks=4):
    torch.manual_seed(0)
    model = apply_adapter(load_sam2("tiny")[0], {**LORA, "blocks": blocks}).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("start", [0, 1, 3, 5, 8, 10, 11, 12])  # 1, 3, 10, 12: right after a stage end
def test_the_encoder_from_a_cached_prefix_equals_the_whole_encoder(start):
    model = _trained_lora()
    sam = base_model(model)
    pixels = preprocess(torch.rand(2, 1, 128, 128))
    with torch.no_grad():
        sam.no_memory_embedding.add_(0.1 * torch.randn_like(sam.no_memory_embedding))  # zeros in a random model
        reference = image_embeddings(model, pixels)
        state = [t.clone() for t in encode_prefix(sam, pixels, start)]  # as the cache hands it back
        resumed = encode_suffix(sam, state, start)
    assert len(state) == 1 + sum(end < start for end in (0, 2, 9, 11))
    assert [r.shape for r in resumed] == [r.shape for r in reference]
    for got, want in zip(resumed, reference):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


TASK_ARGS = dict(
    model={"name": "tiny", "image_size": 128},
    adapter={**LORA, "blocks": 4},
    optim={"lr": 1e-2, "weight_decay": 0.0, "warmup_steps": 1, "min_lr_ratio": 0.1},
    loss={},
)


def _task(mode, tmp_path=None, **changes):
    from adapt.tasks.segmentation import SegmentationTask

    torch.manual_seed(0)
    cache = {"mode": mode, "directory": str(tmp_path), "namespace": "n"} if mode != "off" else None
    task = SegmentationTask(**{**TASK_ARGS, **changes}, embedding_cache=cache)
    task.log = lambda *args, **kwargs: None
    return task


@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_training_from_the_cached_prefix_matches_uncached_training(mode, box_batch, tmp_path):
    batch = {**box_batch, "meta": {"case": ["a", "b"], "slice": [3, 7]}}
    plain, cached = _task("off"), _task(mode, tmp_path)
    assert cached.prefix_start == 8 and plain.prefix_start is None
    runs = {"plain": [], "cached": []}
    prefix_calls, suffix_calls = [], []
    blocks = hiera_blocks(cached.model)
    blocks[0].register_forward_hook(lambda *args: prefix_calls.append(1))
    blocks[8].register_forward_hook(lambda *args: suffix_calls.append(1))
    for name, task in (("plain", plain), ("cached", cached)):
        optimizer = torch.optim.AdamW([p for p in task.model.parameters() if p.requires_grad], lr=1e-2)
        for _ in range(3):
            loss = task._step(batch, "train")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            runs[name].append(loss.item())
    assert runs["plain"][0] != runs["plain"][-1]  # the adapter trained, so equal losses mean something
    torch.testing.assert_close(torch.tensor(runs["cached"]), torch.tensor(runs["plain"]), rtol=1e-5, atol=1e-6)
    assert len(prefix_calls) == 1 and len(suffix_calls) == 3  # the prefix ran for the first step only
    assert cached.embedding_cache.misses == 2 and cached.embedding_cache.hits == 4


def test_disk_caches_of_different_prefixes_do_not_share_entries(tmp_path):
    four, two = _task("disk", tmp_path), _task("disk", tmp_path, adapter={**LORA, "blocks": 2})
    assert (four.prefix_start, two.prefix_start) == (8, 10)
    assert four.embedding_cache.directory != two.embedding_cache.directory
    assert four.embedding_cache.directory.parent == Path(tmp_path)


def test_a_cache_with_adapters_in_every_block_is_refused():
    with pytest.raises(ConfigError, match="needs a frozen image encoder, or adapters in the last Hiera blocks"):
        _task("memory", adapter=LORA)


@pytest.mark.parametrize(
    "adapter, mode, augment, wanted",
    [
        ({**LORA, "blocks": 4}, "auto", False, True),
        ({**LORA, "blocks": 4}, "auto", True, False),  # auto never switches augmentation off for it
        ({**LORA, "blocks": 4}, "memory", True, True),
        ({**LORA, "blocks": None}, "auto", False, False),
        ({"kind": "bottleneck", "blocks": [10, 11]}, "disk", False, True),
        ({"kind": "decoder"}, "auto", False, False),
    ],
)
def test_when_the_prefix_is_cached(adapter, mode, augment, wanted):
    assert prefix_cache_wanted(adapter, mode, augment) is wanted


@pytest.mark.parametrize(
    "overrides, mode, augment",
    [
        (["adapter.blocks=4", "data.augment=false"], "memory", False),
        (["adapter.blocks=4"], "off", True),
        (["adapter.blocks=4", "embedding_cache.mode=memory"], "memory", False),
        (["data.augment=false"], "off", False),
    ],
)
def test_the_training_config_turns_the_prefix_cache_on(overrides, mode, augment, tmp_path):
    from adapt.training.cache_policy import resolve_embedding_cache

    register_resolvers()
    register_recipes()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, f"out_dir={tmp_path}"])
    assert resolve_embedding_cache(cfg)["mode"] == mode
    assert cfg.data.augment is augment


def test_a_peft_model_is_unwrapped_for_the_prefix():
    model = _trained_lora()
    assert isinstance(model, PeftModel) and first_trained_block(base_model(model)) == 8
