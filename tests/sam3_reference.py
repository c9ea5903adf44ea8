"""Meta's ``sam3`` package (PyPI ``sam3==0.1.4``) as the reference for the SAM 3 tracker's image path.

Meta's builder makes only the full 474 M-parameter model, downloads weights and imports
CUDA-only code (triton kernels); ``sam3/__init__.py`` imports the detector, which imports
torchvision. So, as ``meta_reference`` does for Meta's sam2:

* ``meta_sam3()`` imports Meta's modules through an empty package module whose ``__path__`` is
  the installed ``sam3/`` folder (``sam3/__init__.py`` never runs), with timm behind
  ``timm_reference``'s torchvision stand-ins; the modules used here import no triton.
* ``build_meta_tracker_image(size)`` builds, at a small size, the pieces of Meta's tracker
  that an image meets, with the arguments Meta's ``model_builder`` gives them (ViT with
  windowed and global attention, rotary positions, tiled absolute positions and a class token
  in its pretraining embedding; the dual ViTDet neck with the SAM2-style convolutions the
  tracker reads; SAM's prompt encoder and mask decoder as ``Sam3TrackerBase._build_sam_heads``
  makes them), every tensor drawn at random.
* ``to_transformers(meta)`` maps those weights onto transformers' ``Sam3TrackerModel`` names:
  the ViT's fused ``qkv`` split into ``q/k/v_proj``, the class token's position dropped, the
  neck's ``sam2_convs`` onto ``fpn_layers``; the prompt encoder, mask decoder and no-memory
  embedding through the project's own Meta converter (SAM2's names, which SAM 3 keeps).
* ``meta_image_path`` runs Meta's modules as Meta's tracker does for an image: neck, drop the
  lowest level (``scalp=1``), ``conv_s0``/``conv_s1``, no-memory embedding on the last level,
  then prompt encoder and mask decoder as ``SAM3InteractiveImagePredictor._predict`` calls them.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

import timm_reference
import torch
from torch import nn

from adapt.models.meta_checkpoint import convert_meta_state_dict

MODULES = (
    "sam3.model.vitdet",
    "sam3.model.necks",
    "sam3.model.position_encoding",
    "sam3.sam.prompt_encoder",
    "sam3.sam.mask_decoder",
    "sam3.sam.transformer",
)


def meta_sam3() -> types.SimpleNamespace:
    """Meta's sam3 modules used here, imported without running ``sam3/__init__.py``.

    Raises:
        RuntimeError: the package is not installed (``pip install --no-deps sam3``, the dev extra).
    """
    current = sys.modules.get("sam3")
    if current is None or getattr(current, "__file__", None):  # not yet the empty package made here
        spec = importlib.util.find_spec("sam3")
        if spec is None or spec.origin is None:
            raise RuntimeError(
                "the SAM 3 parity tests need Meta's sam3 package: pip install --no-deps sam3==0.1.4 "
                "iopath portalocker einops"
            )
        package = types.ModuleType("sam3")
        package.__path__ = [str(Path(spec.origin).parent)]
        sys.modules["sam3"] = package
    timm_reference.with_timm()
    return types.SimpleNamespace(**{name.rsplit(".", 1)[1]: importlib.import_module(name) for name in MODULES})


#: The ViT of the small reference; ``RELEASED_VIT`` is Meta's ``_create_vit_backbone`` (SAM 3 as released).
SMALL_VIT = dict(
    pretrain_img_size=56, embed_dim=32, depth=4, num_heads=2, mlp_ratio=2.0, window_size=4, global_att_blocks=(1, 3)
)
RELEASED_VIT = dict(
    pretrain_img_size=336,
    embed_dim=1024,
    depth=32,
    num_heads=16,
    mlp_ratio=4.625,
    window_size=24,
    global_att_blocks=(7, 15, 23, 31),
)


def build_meta_neck(meta: types.SimpleNamespace, size: int, hidden: int, vit: dict | None = None) -> nn.Module:
    """Meta's ViT and dual ViTDet neck (with the SAM2-style convolutions), Meta's arguments; ``vit``: its sizes."""
    vit = meta.vitdet.ViT(
        img_size=size,
        patch_size=14,
        norm_layer="LayerNorm",
        drop_path_rate=0.0,
        qkv_bias=True,
        use_abs_pos=True,
        tile_abs_pos=True,
        rel_pos_blocks=(),
        use_rope=True,
        use_interp_rope=True,
        pretrain_use_cls_token=True,
        retain_cls_token=False,
        ln_pre=True,
        ln_post=False,
        return_interm_layers=False,
        bias_patch_embed=False,
        **(vit or SMALL_VIT),
    )
    position = meta.position_encoding.PositionEmbeddingSine(
        num_pos_feats=hidden, normalize=True, scale=None, temperature=10000
    )
    return meta.necks.Sam3DualViTDetNeck(
        position_encoding=position, d_model=hidden, scale_factors=[4.0, 2.0, 1.0, 0.5], trunk=vit, add_sam2_neck=True
    )


def randomize(model: nn.Module) -> nn.Module:
    """Every tensor of ``model`` drawn from N(0, 0.2) (Meta zero-initialises some): a wrong mapping shows."""
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.2)
    return model.eval()


def build_meta_tracker_image(size: int = 112, hidden: int = 128, seed: int = 0) -> nn.ModuleDict:
    """Meta's ViT + neck + SAM heads of the tracker at a small size, random weights (module docstring)."""
    meta = meta_sam3()
    torch.manual_seed(seed)
    neck = build_meta_neck(meta, size, hidden)
    grid = size // 14
    prompt = meta.prompt_encoder.PromptEncoder(
        embed_dim=hidden, image_embedding_size=(grid, grid), input_image_size=(size, size), mask_in_chans=16
    )
    decoder = meta.mask_decoder.MaskDecoder(
        num_multimask_outputs=3,
        transformer=meta.transformer.TwoWayTransformer(depth=2, embedding_dim=hidden, mlp_dim=2048, num_heads=8),
        transformer_dim=hidden,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
        use_high_res_features=True,
        iou_prediction_use_sigmoid=True,
        pred_obj_scores=True,
        pred_obj_scores_mlp=True,
        use_multimask_token_for_obj_ptr=True,
        dynamic_multimask_via_stability=True,
        dynamic_multimask_stability_delta=0.05,
        dynamic_multimask_stability_thresh=0.98,
    )
    model = nn.ModuleDict({"neck": neck, "prompt": prompt, "decoder": decoder})
    model.no_mem_embed = nn.Parameter(torch.zeros(1, 1, hidden))
    return randomize(model)


#: Meta's neck convolutions (per level) -> transformers' FPN layer parts.
NECK = {
    "dconv_2x2_0": "scale_layers.0",
    "dconv_2x2_1": "scale_layers.2",
    "dconv_2x2": "scale_layers.0",
    "conv_1x1": "proj1",
    "conv_3x3": "proj2",
}
VIT = {
    "norm1": "layer_norm1",
    "norm2": "layer_norm2",
    "attn.proj": "attention.o_proj",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}


def to_transformers(meta: nn.ModuleDict) -> dict[str, torch.Tensor]:
    """Meta's weights (``build_meta_tracker_image``) under transformers' ``Sam3TrackerModel`` names."""
    heads = {f"sam_prompt_encoder.{k}": v for k, v in meta["prompt"].state_dict().items()}
    heads.update({f"sam_mask_decoder.{k}": v for k, v in meta["decoder"].state_dict().items()})
    heads["no_mem_embed"] = meta.no_mem_embed.detach()
    return {**neck_to_transformers(meta["neck"].state_dict()), **heads_to_transformers(heads)}


def neck_to_transformers(neck: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Meta's ViT and neck weights (``Sam3DualViTDetNeck``'s state dict) under transformers' vision encoder names."""
    out: dict[str, torch.Tensor] = {}
    backbone = "vision_encoder.backbone"
    for key, value in neck.items():
        parts = key.split(".")
        if key == "trunk.pos_embed":
            out[f"{backbone}.embeddings.position_embeddings"] = value[:, 1:]  # without the class token's
        elif key == "trunk.patch_embed.proj.weight":
            out[f"{backbone}.embeddings.patch_embeddings.projection.weight"] = value
        elif key.startswith("trunk.ln_pre."):
            out[f"{backbone}.layer_norm.{parts[-1]}"] = value
        elif key.startswith("trunk.blocks.") and ".attn.qkv." in key:
            for name, chunk in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                out[f"{backbone}.layers.{parts[2]}.attention.{name}.{parts[-1]}"] = chunk
        elif key.startswith("trunk.blocks.") and not key.endswith("freqs_cis"):
            inner = ".".join(parts[3:-1])
            out[f"{backbone}.layers.{parts[2]}.{VIT[inner]}.{parts[-1]}"] = value
        elif key.startswith("sam2_convs."):
            out[f"vision_encoder.neck.fpn_layers.{parts[1]}.{NECK[parts[2]]}.{parts[-1]}"] = value
    return out


def heads_to_transformers(heads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Meta's tracker weights outside the image encoder, under SAM2's Meta names, through the project's converter.

    SAM 3 keeps SAM2's names for the prompt encoder, mask decoder and memory parameters, except
    that its two-way transformer names its MLP ``lin1``/``lin2`` where SAM2's has ``layers.0/1``.
    """
    renamed = {
        k.replace(".mlp.lin1.", ".mlp.layers.0.").replace(".mlp.lin2.", ".mlp.layers.1."): v for k, v in heads.items()
    }
    converted = convert_meta_state_dict(renamed)
    if converted.unknown:
        raise AssertionError(f"Meta keys without a transformers name: {converted.unknown}")
    return converted.state_dict


def meta_image_path(
    meta: nn.ModuleDict, pixels: torch.Tensor, boxes: torch.Tensor, multimask: bool
) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Meta's tracker on normalised ``pixels`` ``[B, 3, S, S]`` with one box per image ``[B, 4]`` (model grid).

    Returns:
        The decoder's three embedding levels, low-res logits ``[B, M, h, w]`` and IoU ``[B, M]``.
    """
    with torch.no_grad():
        _, _, levels, _ = meta["neck"](pixels)
        levels = list(levels[:-1])  # the tracker's backbone drops the lowest resolution (scalp=1)
        levels[0] = meta["decoder"].conv_s0(levels[0])
        levels[1] = meta["decoder"].conv_s1(levels[1])
        levels[-1] = levels[-1] + meta.no_mem_embed.view(1, -1, 1, 1)
        corners = boxes.reshape(-1, 2, 2)
        labels = torch.tensor([[2, 3]], dtype=torch.int32).expand(len(boxes), -1)
        sparse, dense = meta["prompt"](points=(corners, labels), boxes=None, masks=None)
        low_res, iou, _, _ = meta["decoder"](
            image_embeddings=levels[-1],
            image_pe=meta["prompt"].get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
            repeat_image=False,
            high_res_features=levels[:2],
        )
    return levels, low_res, iou
