"""Meta's ``sam3`` tracker (``Sam3TrackerPredictor``, PyPI ``sam3==0.1.4``) as the reference for the SAM 3 tracker's video path.

Meta's ``model_builder.build_tracker`` makes only the released size, and the tracker's modules
import or call CUDA-only code. So, as ``sam3_reference`` does for the image path:

* ``meta_tracker_modules()`` imports the tracker's modules with stand-ins for what they import
  but the tracker never runs at inference: ``sam3.model.edt`` (a triton kernel, the Euclidean
  distance transform that samples correction clicks in training), ``sam3.train.data.collator``
  (the training batch type, an annotation here; it imports torchvision's datasets) and
  torchvision's ``RoIAlign`` (imported by ``sam3.model.decoder`` for the detector's layers;
  the torchvision stand-ins are taken out again after the import).
* ``on_cpu()`` stands in, while Meta's tracker runs, for the calls that need a GPU: ``Tensor.cuda``
  (Meta moves every memory and the previous mask logits to CUDA unconditionally) and
  ``Tensor.pin_memory`` (the object pointers' temporal positions) return the tensor itself.
  The frames and the state live on the CPU (``offload_state_to_cpu=True``).
* ``build_meta_tracker_video(dims)`` builds the tracker with the arguments ``build_tracker``
  gives it (multimask on the first click and when tracking, the dynamic multimask of the
  decoder, 7 memories, 4 conditioning frames in attention, no hole filling, no memory
  selection), at ``SMALL`` sizes or at ``RELEASED`` ones, every tensor random. Two arguments
  follow the side: the memory encoder's mask resize (``interpol_size``, 16 x the patch grid:
  1152 at 1008) and the memory attention's RoPE grid (the patch grid: 72 at 1008). The memory
  encoder's position encoding skips its CUDA pre-computation (``precompute_resolution``, a cache).
  Its ``__init__`` enters a CUDA autocast for good; that context is left again here.
* ``to_transformers_video`` maps the weights onto transformers' ``Sam3TrackerVideoModel``: the ViT
  and neck as ``sam3_reference`` maps them, the rest renamed to SAM2's Meta names
  (``transformer.encoder`` -> ``memory_attention``, ``maskmem_backbone`` -> ``memory_encoder``)
  and read by the project's own Meta converter.
* ``meta_track`` runs Meta's demo API: ``init_state``, ``add_new_points_or_box`` with a box on
  frame 0, ``propagate_in_video``.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import types
import warnings
from dataclasses import dataclass, field
from typing import Iterator

import meta_reference
import numpy as np
import pytest
import sam3_reference
import torch
import transformers
from torch import nn

from adapt.inference import propagation
from adapt.models import memory
from adapt.models.backbones import BACKBONES, holes_filled
from adapt.models.families import released_image_config, tiny_image_config, video_config
from adapt.models.primitives import pixel_stats, preprocess, resize_video_frames

TRACKER_MODULES = (
    "sam3.model.memory",
    "sam3.model.model_misc",
    "sam3.model.decoder",
    "sam3.model.vl_combiner",
    "sam3.model.sam3_tracking_predictor",
)


@dataclass(frozen=True)
class Dims:
    """Sizes of a reference tracker (the arguments ``build_tracker`` fixes are not here)."""

    size: int
    hidden: int
    memory_layers: int
    feed_forward: int
    vit: dict = field(default_factory=lambda: dict(sam3_reference.SMALL_VIT))
    memory_channels: int = 64
    #: weights drawn as ``meta_reference.randomize`` draws them, scaled by fan-in so that
    #: activations stay of order one through 32 ViT blocks, instead of N(0, 0.2) everywhere
    fan_in: bool = False

    @property
    def grid(self) -> int:
        return self.size // 14


SMALL = Dims(size=112, hidden=128, memory_layers=2, feed_forward=64)
RELEASED = Dims(
    size=1008, hidden=256, memory_layers=4, feed_forward=2048, vit=dict(sam3_reference.RELEASED_VIT), fan_in=True
)


def _refuse(name: str):
    def refuse(*args, **kwargs):
        raise RuntimeError(f"stand-in: {name} is not available in the tests")

    return refuse


def _module(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


def meta_tracker_modules() -> types.SimpleNamespace:
    """``sam3_reference.meta_sam3()``'s modules and the tracker's, imported behind the stand-ins (module docstring)."""
    meta = sam3_reference.meta_sam3()
    stand_ins = {
        "sam3.model.edt": _module("sam3.model.edt", edt_triton=_refuse("sam3.model.edt.edt_triton")),
        "sam3.train.data.collator": _module("sam3.train.data.collator", BatchedDatapoint=object),
        "torchvision": _module("torchvision"),
        "torchvision.ops": _module("torchvision.ops"),
        "torchvision.ops.roi_align": _module("torchvision.ops.roi_align", RoIAlign=_refuse("RoIAlign")),
    }
    added = [name for name in stand_ins if name not in sys.modules]
    for name in added:
        sys.modules[name] = stand_ins[name]
    try:
        modules = {name.rsplit(".", 1)[1]: importlib.import_module(name) for name in TRACKER_MODULES}
    finally:
        for name in added:
            if name.startswith("torchvision"):
                sys.modules.pop(name, None)
    return types.SimpleNamespace(**vars(meta), **modules)


@contextlib.contextmanager
def on_cpu() -> Iterator[None]:
    """Meta's CUDA-only tensor calls as no-ops while the block runs (module docstring)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.Tensor, "cuda", lambda self, *args, **kwargs: self)
        patch.setattr(torch.Tensor, "pin_memory", lambda self, *args, **kwargs: self)
        yield


def build_meta_tracker_video(dims: Dims = SMALL, seed: int = 0) -> nn.Module:
    """Meta's ``Sam3TrackerPredictor`` with its image encoder, at ``dims``, random weights (module docstring)."""
    meta = meta_tracker_modules()
    torch.manual_seed(seed)
    hidden, channels, grid = dims.hidden, dims.memory_channels, dims.grid
    neck = sam3_reference.build_meta_neck(meta, dims.size, hidden, dims.vit)
    backbone = meta.vl_combiner.SAM3VLBackbone(scalp=1, visual=neck, text=None)
    maskmem = meta.memory.SimpleMaskEncoder(
        out_dim=channels,
        in_dim=hidden,
        position_encoding=meta.position_encoding.PositionEmbeddingSine(
            num_pos_feats=channels, normalize=True, scale=None, temperature=10000
        ),
        mask_downsampler=meta.memory.SimpleMaskDownSampler(
            embed_dim=hidden, kernel_size=3, stride=2, padding=1, interpol_size=[16 * grid, 16 * grid]
        ),
        fuser=meta.memory.SimpleFuser(
            layer=meta.memory.CXBlock(
                dim=hidden, kernel_size=7, padding=3, layer_scale_init_value=1e-6, use_dwconv=True
            ),
            num_layers=2,
        ),
    )
    rope = dict(
        embedding_dim=hidden,
        num_heads=1,
        downsample_rate=1,
        dropout=0.1,
        rope_theta=10000.0,
        feat_sizes=[grid, grid],
        use_fa3=False,
        use_rope_real=False,
    )
    layer = meta.decoder.TransformerDecoderLayerv2(
        cross_attention_first=False,
        activation="relu",
        dim_feedforward=dims.feed_forward,
        dropout=0.1,
        pos_enc_at_attn=False,
        pre_norm=True,
        self_attention=meta.transformer.RoPEAttention(**rope),
        d_model=hidden,
        pos_enc_at_cross_attn_keys=True,
        pos_enc_at_cross_attn_queries=False,
        cross_attention=meta.transformer.RoPEAttention(kv_in_dim=channels, rope_k_repeat=True, **rope),
    )
    encoder = meta.decoder.TransformerEncoderCrossAttention(
        remove_cross_attention_layers=[],
        batch_first=True,
        d_model=hidden,
        frozen=False,
        pos_enc_at_input=True,
        layer=layer,
        num_layers=dims.memory_layers,
        use_act_checkpoint=False,
    )
    with warnings.catch_warnings():  # "CUDA is not available ... Disabling autocast"
        warnings.simplefilter("ignore", UserWarning)
        tracker = meta.sam3_tracking_predictor.Sam3TrackerPredictor(
            image_size=dims.size,
            num_maskmem=7,
            backbone=backbone,
            backbone_stride=14,
            transformer=meta.model_misc.TransformerWrapper(encoder=encoder, decoder=None, d_model=hidden),
            maskmem_backbone=maskmem,
            multimask_output_in_sam=True,
            forward_backbone_per_frame_for_eval=True,
            trim_past_non_cond_mem_for_eval=False,
            multimask_output_for_tracking=True,
            multimask_min_pt_num=0,
            multimask_max_pt_num=1,
            always_start_from_first_ann_frame=False,
            non_overlap_masks_for_mem_enc=False,
            non_overlap_masks_for_output=False,
            max_cond_frames_in_attn=4,
            offload_output_to_cpu_for_eval=False,
            sam_mask_decoder_extra_args={
                "dynamic_multimask_via_stability": True,
                "dynamic_multimask_stability_delta": 0.05,
                "dynamic_multimask_stability_thresh": 0.98,
            },
            clear_non_cond_mem_around_input=True,
            fill_hole_area=0,
            use_memory_selection=False,
        )
    tracker.bf16_context.__exit__(None, None, None)
    if dims.fan_in:
        return meta_reference.randomize(tracker, seed, parameters_only=True).eval()
    return sam3_reference.randomize(tracker)


#: Meta's tracker module prefixes -> SAM2's Meta names, which the project's converter reads.
PREFIXES = {"transformer.encoder.": "memory_attention.", "maskmem_backbone.": "memory_encoder."}


def to_transformers_video(tracker: nn.Module) -> dict[str, torch.Tensor]:
    """Meta's tracker weights under transformers' ``Sam3TrackerVideoModel`` names."""
    heads = {}
    for key, value in tracker.state_dict().items():
        if key.startswith("backbone."):
            continue
        for meta, sam2 in PREFIXES.items():
            if key.startswith(meta):
                key = sam2 + key[len(meta) :]
        heads[key] = value
    neck = tracker.backbone.vision_backbone.state_dict()
    return {**sam3_reference.neck_to_transformers(neck), **sam3_reference.heads_to_transformers(heads)}


def our_config(dims: Dims) -> transformers.Sam3TrackerVideoConfig:
    """transformers' config of the same tracker: the project's released or tiny SAM 3 tracker config."""
    row = BACKBONES["sam3_tracker"]
    if dims.fan_in:
        return video_config(released_image_config(row), tiny=False)
    image = tiny_image_config(row)  # Meta's tracker fixes these decoder sizes
    image.mask_decoder_config.mlp_dim, image.mask_decoder_config.num_attention_heads = 2048, 8
    image.mask_decoder_config.iou_head_hidden_dim, image.prompt_encoder_config.mask_input_channels = 256, 16
    return video_config(image, tiny=True)


def build_pair(dims: Dims = SMALL, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """Meta's tracker and transformers' ``Sam3TrackerVideoModel`` holding the same random weights.

    The object-score head's bias is raised so that the object counts as present on every frame
    and tracking has masks to compare.
    """
    tracker = build_meta_tracker_video(dims, seed)
    with torch.no_grad():
        tracker.sam_mask_decoder.pred_obj_score_head.layers[2].bias.fill_(5.0)
    model = transformers.Sam3TrackerVideoModel(our_config(dims)).eval()
    model.load_state_dict(to_transformers_video(tracker), strict=True)
    return tracker, model


def moving_video(frames: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """8-bit RGB frames ``[T, 3, H, W]`` of moving shapes (``meta_reference.natural_image``) and a box on frame 0."""
    video = np.stack([meta_reference.natural_image(height, width, seed=1, t=t) for t in range(frames)])
    box = torch.tensor([0.3 * width, 0.2 * height, 0.7 * width, 0.8 * height]).round()
    return torch.from_numpy(video).permute(0, 3, 1, 2).contiguous(), box


def track_both(tracker: nn.Module, model: nn.Module, frames: torch.Tensor, box: torch.Tensor) -> dict:
    """A box on frame 0 tracked forward by Meta's tracker (``meta_track``) and by our ``propagate``.

    Both get the same normalised pixels: ours resized as our video path resizes frames.

    Returns:
        ``meta`` / ``meta_video`` (``meta_track``), ``steps`` (frame -> our ``StepOutput``),
        ``memories`` (frame -> what our loop stored) and ``result`` (``propagate``'s).
    """
    size, (height, width) = int(model.config.image_size), frames.shape[-2:]
    pixels = preprocess(resize_video_frames(frames, size), size, **pixel_stats(model)).to(model.device)
    meta_steps, meta_video = meta_track(tracker, pixels, box, height, width)
    steps, memories = {}, {}
    with pytest.MonkeyPatch.context() as patch:
        for name, key in (("prompt", "cond_frame_outputs"), ("track", "non_cond_frame_outputs")):
            original = getattr(memory.MemoryTracker, name)

            def recording(self, frame, *args, _original=original, _key=key, **kwargs):
                steps[frame] = out = _original(self, frame, *args, **kwargs)
                memories[frame] = self.bank[_key][frame]
                return out

            patch.setattr(memory.MemoryTracker, name, recording)
        result = propagation.propagate(
            model,
            frames,
            {0: propagation.SlicePrompt(boxes=box.numpy())},
            "forward",
            None,
            fill_hole_area=holes_filled(None, "sam3_tracker"),  # the commands' default
        )
    return dict(meta=meta_steps, meta_video=meta_video, steps=steps, memories=memories, result=result)


def meta_track(
    tracker: nn.Module, pixels: torch.Tensor, box: torch.Tensor, height: int, width: int
) -> tuple[dict[int, dict], dict[int, torch.Tensor]]:
    """Meta's tracker over ``pixels`` ``[T, 3, S, S]`` (normalised) from a box on frame 0 (``[4]``, the video's pixels).

    The box goes in relative to the video's width and height, as Meta's ``add_new_points_or_box``
    takes it by default; the frames are placed in the inference state as its loader would.

    Returns:
        frame -> Meta's stored output (``pred_masks`` low-res logits, ``object_score_logits``, the
        bfloat16 ``maskmem_features``), and frame -> logits at the video's size ``[H, W]``.
    """
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    cpu = pixels.device.type == "cpu"
    with on_cpu() if cpu else contextlib.nullcontext(), torch.inference_mode():
        state = tracker.init_state(
            video_height=height, video_width=width, num_frames=len(pixels), offload_state_to_cpu=cpu
        )
        state["images"] = pixels
        tracker.add_new_points_or_box(state, frame_idx=0, obj_id=1, box=box / scale)
        video = {
            t: masks[0, 0]
            for t, _, _, masks, _ in tracker.propagate_in_video(
                state, 0, len(pixels), reverse=False, tqdm_disable=True, propagate_preflight=True
            )
        }
    stored = state["output_dict"]
    return {**stored["cond_frame_outputs"], **stored["non_cond_frame_outputs"]}, video
