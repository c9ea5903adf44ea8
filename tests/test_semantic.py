import pytest
import torch

from adapt.adapters.io import load_adapter_weights, save_adapter
from adapt.errors import ConfigError
from adapt.models.sam2 import load_sam2
from adapt.tasks.semantic import class_map

ARGS = dict(
    model={"name": "tiny", "image_size": 128},
    optim={"lr": 3e-3, "weight_decay": 0.0, "warmup_steps": 1, "min_lr_ratio": 0.1},
    loss={},
    classes=["liver", "spine"],
)


def _batch():
    label = torch.zeros(2, 2, 128, 128)
    label[:, 0, 20:60, 20:70] = 1
    label[:, 1, 80:110, 50:80] = 1
    image = 0.1 + 0.5 * label[:, :1] + 0.3 * label[:, 1:]
    return {"image": image, "label": label}


def test_class_map_puts_background_where_no_channel_is_set():
    label = torch.zeros(1, 2, 2, 2)
    label[0, 0, 0, 0] = 1
    label[0, 1, 1, 1] = 1
    assert class_map(label).tolist() == [[[1, 0], [0, 2]]]


@pytest.mark.parametrize("kind", ["lora", "bottleneck", "decoder"])
def test_semantic_head_outputs_one_channel_per_class_and_trains(kind, tmp_path):
    from adapt.tasks.semantic import SemanticTask

    torch.manual_seed(0)
    adapter = {"kind": kind, "rank": 4} if kind == "lora" else {"kind": kind}
    task = SemanticTask(**ARGS, adapter=adapter)
    task.log = lambda *a, **k: None
    batch = _batch()
    assert task(batch["image"]).shape == (2, 3, 128, 128)
    trainable = [n for n, p in task.model.named_parameters() if p.requires_grad]
    assert any("class_prompts" in n for n in trainable)
    optimizer = task.build_optimizer()
    first = task._step(batch, "train").item()
    for _ in range(5):
        optimizer.zero_grad()
        task._step(batch, "train").backward()
        optimizer.step()
    assert task._step(batch, "train").item() < first

    task.model.eval()
    save_adapter(task.model, dict(task.hparams.adapter), tmp_path, {"classes": task.classes})
    loaded = load_adapter_weights(load_sam2("tiny")[0], tmp_path)
    from adapt.models.interactive import image_embeddings
    from adapt.models.sam2 import preprocess
    from adapt.models.semantic import class_logits

    pixels = preprocess(batch["image"])
    with torch.no_grad():
        a = class_logits(task.model, image_embeddings(task.model, pixels))
        b = class_logits(loaded, image_embeddings(loaded, pixels))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_label_channels_must_match_the_classes():
    from adapt.tasks.semantic import SemanticTask

    task = SemanticTask(**ARGS, adapter={"kind": "decoder"})
    batch = _batch()
    batch["label"] = batch["label"][:, :1]
    with pytest.raises(ConfigError, match="expects 2 label channels"):
        task._step(batch, "train")
