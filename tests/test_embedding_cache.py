import pytest
from conftest import tiny_task_args
import torch

from adapt.errors import ConfigError
from adapt.models.embedding_cache import EmbeddingCache, encoder_is_frozen

TASK_ARGS = tiny_task_args({"kind": "decoder", "modules": ["mask_decoder"]}, loss={})


@pytest.mark.parametrize(
    "spec, frozen",
    [
        ({"kind": "decoder"}, True),
        ({"kind": "lora", "targets": ["decoder_attn"]}, True),
        ({"kind": "lora", "targets": ["encoder_attn", "decoder_attn"]}, False),
        ({"kind": "bottleneck"}, False),
        ({"kind": "full"}, False),
    ],
)
def test_encoder_frozen_is_decided_from_the_spec(spec, frozen):
    assert encoder_is_frozen(spec) is frozen


def _batch(box_batch):
    return {**box_batch, "meta": {"case": ["a", "b"], "slice": [3, 7]}}


def _task(mode, tmp_path=None):
    from adapt.tasks.segmentation import SegmentationTask

    torch.manual_seed(0)
    cache = {"mode": mode, "directory": str(tmp_path), "namespace": "n"} if mode != "off" else None
    task = SegmentationTask(**TASK_ARGS, embedding_cache=cache)
    task.log = lambda *args, **kwargs: None
    return task


@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_cache_gives_the_same_loss_and_skips_the_encoder_afterwards(mode, box_batch, tmp_path):
    batch = _batch(box_batch)
    plain, cached = _task("off"), _task(mode, tmp_path)
    calls = []
    cached.model.vision_encoder.register_forward_hook(lambda *args: calls.append(1))
    first_plain, first_cached = plain._step(batch, "train"), cached._step(batch, "train")
    assert torch.allclose(first_plain, first_cached, atol=1e-6)
    assert len(calls) == 1 and cached.embedding_cache.misses == 2
    for _ in range(2):  # later epochs: decoder only
        cached._step(batch, "train")
    assert len(calls) == 1 and cached.embedding_cache.hits == 4
    assert len(cached.embedding_cache) == 2


def test_cache_freezes_the_encoder_side_projections():
    task = _task("memory")
    decoder = task.model.mask_decoder
    assert not any(p.requires_grad for p in decoder.conv_s0.parameters())
    assert any(p.requires_grad for p in decoder.transformer.parameters())


def test_cache_refuses_a_trainable_encoder():
    from adapt.tasks.segmentation import SegmentationTask

    with pytest.raises(ConfigError, match="needs a frozen image encoder"):
        SegmentationTask(**{**TASK_ARGS, "adapter": {"kind": "bottleneck"}}, embedding_cache={"mode": "memory"})


def test_cache_needs_sample_identity(box_batch):
    with pytest.raises(ConfigError, match="meta.case and meta.slice"):
        _task("memory").encode(box_batch)


def test_repeated_keys_compute_once():
    cache = EmbeddingCache()
    seen = []

    def compute(indices):
        seen.append(indices)
        return [torch.arange(len(indices), dtype=torch.float32)[:, None].repeat(1, 2)]

    out = cache.fetch(["x", "y", "x"], compute, torch.device("cpu"), torch.float32)
    assert seen == [[0, 1]] and out[0][:, 0].tolist() == [0.0, 1.0, 0.0]
