"""SAM2's memory, one frame at a time and with autograd: the tracker behind clips and volumes.

``transformers`` runs SAM2's tracking in ``Sam2VideoModel.forward`` and
``propagate_in_video_iterator``, both under ``torch.inference_mode()``, so nothing trained
through them. ``MemoryTracker`` drives the same sub-modules (vision features, prompt encoder,
mask decoder, memory attention, memory encoder, object-pointer projection) in a loop of ours
that keeps the graph, reusing the model's own memory-selection helpers
(``_gather_memory_frame_outputs``, ``_build_memory_attention_inputs``,
``_get_object_pointers``, ``_process_object_pointers``, ``_use_multimask``) on a memory bank
kept in a ``Sam2VideoInferenceSession``.

Three steps are orchestrated here rather than called, for stated reasons:

* decoding (``Sam2VideoModel._single_frame_forward``, ``_use_mask_as_output``): its best-mask
  selection indexes ``[arange(B), arange(P), argmax]``, which broadcasts to ``[B, B]`` when
  B > 1 objects ride in the batch; transformers only ever calls it with one object.
* memory conditioning (``_prepare_memory_conditioned_features``): its final reshape
  (``squeeze(1)`` then ``view``) is correct only for a batch of one object.
* memory encoding (``_encode_new_memory``): it stores memories in bfloat16, which would
  quantise the training signal; the storage dtype is a parameter here (bfloat16 reproduces
  transformers' inference to the last bit).

The same loop drives the SAM 3 tracker's and EdgeTAM's video models (same helpers, same
names); EdgeTAM's memory encoder is followed by its spatial perceiver, which resamples each
memory map to latent tokens before it is stored, as ``EdgeTamVideoModel._encode_new_memory`` does.
The SAM 3 tracker's memory encoder takes its mask at 16 x the patch grid (1152 at side 1008):
the mask is resized there after the sigmoid (or binarisation) and scaling, as Meta's mask
downsampler does; transformers' ``Sam3TrackerVideoModel`` resizes the logits before them, which
``tests/test_sam3_video_parity.py`` tells apart from Meta's tracker (SAM2 and EdgeTAM take the
mask at their side: no resize).

All objects of a clip are batched (batch = objects), each with its own memory, exactly as
transformers runs them one by one. Conditioning frames are the prompted ones; they are
decoded without memory (SAM2's "initial conditioning frames") and stay in the bank for
every later frame, at temporal position 0.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from transformers.models.sam2_video.modeling_sam2_video import (
    NO_OBJ_SCORE,
    Sam2VideoInferenceSession,
)

from adapt.models.postprocess import fill_holes
from adapt.models.primitives import base_model, resize_bilinear, upsample_logits

#: Logit scale SAM2 gives a mask prompt used directly as output (sigmoid(-10) ~ 0, sigmoid(10) ~ 1).
MASK_OUT_SCALE, MASK_OUT_BIAS = 20.0, -10.0
#: Point labels SAM2 uses for a box's top-left and bottom-right corners.
BOX_CORNER_LABELS = (2, 3)
#: Label of a padding point, ignored by the prompt encoder.
PAD_LABEL = -10


@dataclass
class FrameFeatures:
    """One frame's FPN features as SAM2's memory loop consumes them.

    Attributes:
        levels: ``[HW_l, 1, C_l]`` per level, high resolution first; levels 0 and 1 already
            projected by the mask decoder's ``conv_s0``/``conv_s1`` (``get_image_features``).
        positions: the matching sine positional encodings ``[HW_l, 1, C]``.
    """

    levels: list[torch.Tensor]
    positions: list[torch.Tensor]


def encode_frames(model: torch.nn.Module, pixels: torch.Tensor) -> list[FrameFeatures]:
    """Vision features of ``pixels`` ``[T, 3, S, S]`` (normalised), batched over frames, with autograd."""
    out = base_model(model).get_image_features(pixels, return_dict=True)
    return [
        FrameFeatures(
            [f[:, t : t + 1] for f in out.fpn_hidden_states], [p[:, t : t + 1] for p in out.fpn_position_encoding]
        )
        for t in range(pixels.shape[0])
    ]


@dataclass
class FramePrompt:
    """The prompt of every object on one frame, in the model's pixel grid (``x`` = column).

    Boxes travel as two points with SAM2's corner labels 2 and 3, ahead of any clicks, as
    transformers' video processor and Meta's predictor encode them; padding points carry
    label -10. A mask prompt replaces points (SAM2 uses it directly as the frame's output).

    Attributes:
        points: ``[N, k, 2]`` float or ``None``.
        labels: ``[N, k]`` int or ``None``.
        mask: ``[N, H, W]`` binary or ``None``.
    """

    points: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    @classmethod
    def build(
        cls,
        boxes: torch.Tensor | None = None,
        points: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> "FramePrompt":
        """Combine boxes ``[N, 4]`` (xyxy), clicks ``[N, k, 2]`` + labels ``[N, k]`` or a mask ``[N, H, W]``."""
        if mask is not None:
            if boxes is not None or points is not None:
                raise ValueError("a frame takes either a mask prompt or boxes/points, not both (as in SAM2)")
            if mask.ndim != 3:
                raise ValueError(f"mask prompt must be [N, H, W], got {tuple(mask.shape)}")
            return cls(mask=mask)
        if (points is None) != (labels is None):
            raise ValueError("points and point labels must be given together")
        parts, part_labels = [], []
        if boxes is not None:
            if boxes.ndim != 2 or boxes.shape[-1] != 4:
                raise ValueError(f"boxes must be [N, 4], got {tuple(boxes.shape)}")
            parts.append(boxes.reshape(-1, 2, 2).float())
            part_labels.append(torch.tensor(BOX_CORNER_LABELS, device=boxes.device).expand(len(boxes), 2))
        if points is not None:
            if points.ndim != 3 or labels.shape != points.shape[:2]:
                raise ValueError(
                    f"points must be [N, k, 2] with labels [N, k], got {tuple(points.shape)} and {tuple(labels.shape)}"
                )
            parts.append(points.float())
            part_labels.append(labels)
        if not parts:
            raise ValueError("a prompted frame needs a box, points or a mask")
        return cls(points=torch.cat(parts, 1), labels=torch.cat([p.long() for p in part_labels], 1))

    @property
    def num_objects(self) -> int:
        return len(self.mask if self.mask is not None else self.points)


@dataclass
class StepOutput:
    """SAM2's output on one frame for ``N`` objects.

    Attributes:
        low_res: selected mask logits ``[N, 1, h, w]`` (``NO_OBJ_SCORE`` where the object is judged absent).
        iou: predicted IoU of the selected mask ``[N, 1]``.
        object_score: object-presence logits ``[N, 1]``.
        candidates: all candidate masks ``[N, M, h, w]`` (M = 3 when SAM2 outputs several).
        candidate_iou: their predicted IoUs ``[N, M]``.
        high_res: the selected logits at the model's input size ``[N, 1, S, S]`` (memory input).
        pointer: the object pointer ``[N, C]``.
        decoder_candidates: the mask decoder's candidates ``[N, M, h, w]`` before SAM2 replaces
            those of an object judged absent by ``NO_OBJ_SCORE`` (training losses supervise
            these, so a wrong presence call does not cut the mask gradient); ``None`` = ``candidates``.
    """

    low_res: torch.Tensor
    iou: torch.Tensor
    object_score: torch.Tensor
    candidates: torch.Tensor
    candidate_iou: torch.Tensor
    high_res: torch.Tensor
    pointer: torch.Tensor
    decoder_candidates: torch.Tensor | None = None


def _perceiver(sam: torch.nn.Module) -> bool:
    """Whether the video model resamples each memory to latent tokens (EdgeTAM's spatial perceiver)."""
    return getattr(sam, "spatial_perceiver", None) is not None


def _to_maps(flat: torch.Tensor, size: list[int], batch: int) -> torch.Tensor:
    """``[HW, 1|N, C]`` sequence-first features to ``[N, C, H, W]`` maps."""
    return flat.expand(-1, batch, -1).permute(1, 2, 0).reshape(batch, -1, *size)


class MemoryTracker:
    """SAM2's tracking state for one clip: a memory bank and the per-frame step, differentiable.

    Call ``prompt`` on every conditioning frame first, then ``track`` on the other frames in
    visiting order. Whether the loop is in training or inference follows ``model.training``,
    as in SAM2: in eval, prompted masks are binarised before memory encoding and only
    conditioning frames on the past side contribute object pointers; dropout in memory
    attention is active only in training.

    Args:
        model: a ``Sam2VideoModel``, possibly wrapped by peft (adapter layers stay live).
        num_frames: frames in the clip or volume (normalises the pointers' temporal encoding).
        storage_dtype: dtype the memory bank stores spatial memories in; float32 for training,
            bfloat16 reproduces transformers' inference exactly.
        streaming: the total number of frames is unknown (pointer range = the config maximum).
        fill_hole_area: fill background regions of at most this many low-res pixels in each
            frame's output, as SAM2's video predictor does (``adapt.models.postprocess``); a
            prompted frame is remembered with its filled mask, a tracked frame with its raw
            one, as there. 0 (training's default) leaves the logits differentiable and as decoded.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        num_frames: int,
        storage_dtype: torch.dtype = torch.float32,
        streaming: bool = False,
        fill_hole_area: int = 0,
    ) -> None:
        self.sam = base_model(model)
        self.fill_hole_area = int(fill_hole_area)
        self.num_frames = num_frames
        self.storage_dtype = storage_dtype
        self.streaming = streaming
        self.session = Sam2VideoInferenceSession(dtype=torch.float32)
        self.session.obj_id_to_idx(0)  # one slot; its tensors carry all objects in the batch dim
        self.num_objects: int | None = None

    @property
    def bank(self) -> dict[str, dict[int, dict[str, torch.Tensor]]]:
        """``cond_frame_outputs`` / ``non_cond_frame_outputs``: frame index -> stored memory."""
        return self.session.output_dict_per_obj[0]

    def prompt(self, frame: int, features: FrameFeatures, prompt: FramePrompt) -> StepOutput:
        """Decode a prompted (conditioning) frame without memory and store it as a conditioning memory."""
        self._check_objects(prompt.num_objects)
        sam, n = self.sam, prompt.num_objects
        size = sam.backbone_feature_sizes
        high_res = [_to_maps(f, s, n) for f, s in zip(features.levels[:-1], size[:-1])]
        if prompt.mask is not None:
            out = self._mask_as_output(high_res, _to_maps(features.levels[-1], size[-1], n), prompt.mask)
        else:
            pix_feat = _to_maps(features.levels[-1] + sam.no_memory_embedding, size[-1], n)
            multimask = sam._use_multimask(True, {"point_labels": prompt.labels[:, None]})
            out = self._decode(high_res, pix_feat, prompt.points[:, None], prompt.labels[:, None], None, multimask)
        out = self._filled(out, memory=True)
        self._remember(frame, features, out, from_prompt=True, conditioning=True)
        return out

    def track(self, frame: int, features: FrameFeatures, reverse: bool = False) -> StepOutput:
        """Predict an unprompted frame from the memory bank and add its memory.

        Args:
            frame: index of the frame in the clip.
            features: its vision features.
            reverse: tracking towards lower indices (memories are looked up at ``frame + k``).
        """
        if not self.bank["cond_frame_outputs"]:
            raise ValueError("MemoryTracker.track needs a prompted frame first (call prompt())")
        sam, n = self.sam, self.num_objects
        size = sam.backbone_feature_sizes
        high_res = [_to_maps(f, s, n) for f, s in zip(features.levels[:-1], size[:-1])]
        pix_feat = self.condition(frame, features, reverse)
        out = self._decode(high_res, pix_feat, None, None, None, sam._use_multimask(False, None))
        self._remember(frame, features, out, from_prompt=False, conditioning=False)
        return self._filled(out, memory=False)

    def _filled(self, out: StepOutput, memory: bool) -> StepOutput:
        """``out`` with small holes of its selected mask filled (``fill_hole_area``); with ``memory``
        the memory input (``high_res``) is upsampled from the filled logits too."""
        if self.fill_hole_area <= 0:
            return out
        low_res = fill_holes(out.low_res, self.fill_hole_area)
        return replace(out, low_res=low_res, high_res=self._upsample(low_res) if memory else out.high_res)

    def reset_tracking(self) -> None:
        """Forget tracked frames, keep the prompted ones: the start of an independent direction."""
        self.bank["non_cond_frame_outputs"].clear()

    def forget_beyond(self, frame: int, reverse: bool) -> None:
        """Drop tracked memories behind ``frame`` that no later lookup can reach (bounded memory on long scans)."""
        reach = max(self.sam.num_maskmem, self.sam.config.max_object_pointers_in_encoder)
        stored = self.bank["non_cond_frame_outputs"]
        for t in [t for t in stored if (t - frame if reverse else frame - t) > reach]:
            del stored[t]

    def condition(self, frame: int, features: FrameFeatures, reverse: bool) -> torch.Tensor:
        """The frame's top-level features after memory attention over the bank, ``[N, C, H, W]``.

        Memories: the conditioning frames (temporal position 0) and the ``num_maskmem - 1``
        previous frames in the tracking direction, each with SAM2's temporal encoding; object
        pointers of conditioning and recent frames with their projected sine encoding.
        """
        sam, n = self.sam, self.num_objects
        current = features.levels[-1].expand(-1, n, -1)
        if sam.num_maskmem == 0:
            return _to_maps(current, sam.backbone_feature_sizes[-1], n)
        device, channels = current.device, sam.hidden_dim
        entries = sam._gather_memory_frame_outputs(self.session, 0, frame, reverse)
        memory, memory_pos = sam._build_memory_attention_inputs(entries, device)
        # EdgeTAM's attention tells its spatial memory from the pointers by this count (its memory frames)
        spatial = {"num_spatial_memory_tokens": len(memory)} if _perceiver(sam) else {}
        offsets, pointers, max_pointers = sam._get_object_pointers(
            self.session, 0, frame, self.num_frames, device, reverse, self.streaming
        )
        num_pointer_tokens = 0
        if pointers:
            tokens, tokens_pos = sam._process_object_pointers(offsets, pointers, max_pointers, n, channels, device)
            memory.append(tokens)
            memory_pos.append(tokens_pos)
            num_pointer_tokens = tokens.shape[0]
        fused = sam.memory_attention(
            current_vision_features=current,
            current_vision_position_embeddings=features.positions[-1].expand(-1, n, -1),
            memory=torch.cat(memory).to(current.dtype),
            memory_posision_embeddings=torch.cat(memory_pos).to(current.dtype),
            num_object_pointer_tokens=num_pointer_tokens,
            **spatial,
        )  # [1, N, HW, C]
        height, width = sam.backbone_feature_sizes[-1]
        return fused.reshape(n, height * width, channels).transpose(1, 2).reshape(n, channels, height, width)

    def _check_objects(self, count: int) -> None:
        if self.num_objects is None:
            self.num_objects = count
        elif count != self.num_objects:
            raise ValueError(f"every prompted frame must carry the same objects: {count} vs {self.num_objects}")

    def _decode(
        self,
        high_res: list[torch.Tensor],
        pix_feat: torch.Tensor,
        points: torch.Tensor | None,
        labels: torch.Tensor | None,
        mask_input: torch.Tensor | None,
        multimask: bool,
    ) -> StepOutput:
        """Prompt encoder + mask decoder on ``N`` objects, then SAM2's best-mask and pointer logic."""
        sam, n = self.sam, pix_feat.shape[0]
        if points is None:  # no click: one "not a point" token, as SAM2 pads
            points = pix_feat.new_zeros(n, 1, 1, 2)
            labels = -torch.ones(n, 1, 1, dtype=torch.long, device=pix_feat.device)
        sparse, dense = sam.prompt_encoder(
            input_points=points, input_labels=labels, input_boxes=None, input_masks=mask_input
        )
        masks, iou, tokens, score = sam.mask_decoder(
            image_embeddings=pix_feat,
            image_positional_embeddings=sam.get_image_wide_positional_embeddings().repeat(n, 1, 1, 1),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
            high_resolution_features=high_res,
        )
        masks, iou, tokens, score = masks[:, 0], iou[:, 0], tokens[:, 0], score[:, 0]
        appearing = score > 0  # [N, 1]; an absent object's masks are a hard "nothing", as in SAM2
        raw, masks = masks, torch.where(appearing[:, :, None, None], masks, NO_OBJ_SCORE)
        best = iou.argmax(dim=1)
        rows = torch.arange(n, device=masks.device)
        low_res = masks[rows, best].unsqueeze(1)
        keep = appearing.to(tokens.dtype)
        pointer = keep * sam.object_pointer_proj(tokens[rows, best]) + (1 - keep) * sam.no_object_pointer
        return StepOutput(
            low_res=low_res,
            iou=iou[rows, best].unsqueeze(1),
            object_score=score,
            candidates=masks,
            candidate_iou=iou,
            high_res=self._upsample(low_res),
            pointer=pointer,
            decoder_candidates=raw,
        )

    def _upsample(self, low_res: torch.Tensor) -> torch.Tensor:
        return upsample_logits(low_res, (self.sam.image_size, self.sam.image_size)).to(low_res.dtype)

    def _mask_as_output(self, high_res: list[torch.Tensor], pix_feat: torch.Tensor, mask: torch.Tensor) -> StepOutput:
        """A mask prompt is the frame's output (SAM2's ``_use_mask_as_output``); the decoder gives the pointer."""
        sam, n = self.sam, pix_feat.shape[0]
        present = (mask.flatten(1) > 0).any(dim=1, keepdim=True).to(pix_feat.dtype)
        mask = mask[:, None].to(pix_feat.dtype)
        size = (sam.image_size, sam.image_size)
        if mask.shape[-2:] != size:
            mask = resize_bilinear(mask, size).to(pix_feat.dtype)
        high = mask * MASK_OUT_SCALE + MASK_OUT_BIAS
        low = resize_bilinear(high, tuple(sam.prompt_encoder.mask_input_size)).to(pix_feat.dtype)
        pointer = self._decode(high_res, pix_feat, None, None, sam.mask_downsample(mask), multimask=True).pointer
        pointer = present * pointer + (1 - present) * sam.no_object_pointer
        ones = pix_feat.new_ones(n, 1)
        return StepOutput(
            low_res=low,
            iou=ones,
            object_score=MASK_OUT_SCALE * present + MASK_OUT_BIAS,
            candidates=low,
            candidate_iou=ones,
            high_res=high,
            pointer=pointer,
        )

    def _remember(
        self, frame: int, features: FrameFeatures, out: StepOutput, from_prompt: bool, conditioning: bool
    ) -> None:
        """Encode the frame with its predicted mask into a spatial memory and store it with the pointer."""
        sam, n = self.sam, self.num_objects
        if sam.num_maskmem == 0:
            return
        pix_feat = _to_maps(features.levels[-1], sam.backbone_feature_sizes[-1], n)
        masks = out.high_res
        # Inference binarises prompted masks; training keeps the sigmoid so the memory stays differentiable.
        probs = (masks > 0).to(masks.dtype) if from_prompt and not sam.training else torch.sigmoid(masks)
        probs = probs * sam.config.sigmoid_scale_for_mem_enc + sam.config.sigmoid_bias_for_mem_enc
        size = tuple(4 * s for s in sam.prompt_encoder.mask_input_size)
        if probs.shape[-2:] != size:  # the SAM 3 tracker: 16 x its patch grid (1152) from its side (1008)
            # after the sigmoid, as Meta's mask downsampler resizes (transformers resizes the logits before it)
            probs = resize_bilinear(probs, size).to(masks.dtype)
        memory, memory_pos = sam.memory_encoder(pix_feat, probs)
        if sam.occlusion_spatial_embedding_parameter is not None:
            absent = (out.object_score <= 0).to(memory.dtype)[:, :, None, None]
            memory = memory + absent * sam.occlusion_spatial_embedding_parameter[..., None, None]
        key = "cond_frame_outputs" if conditioning else "non_cond_frame_outputs"
        if _perceiver(sam):  # EdgeTAM: the memory map is resampled to latent tokens [N, L, C], stored as such
            memory, memory_pos = sam.spatial_perceiver(memory, memory_pos.to(masks.dtype))
            stored, stored_pos = memory.to(self.storage_dtype), memory_pos.to(masks.dtype)
        else:
            stored = memory.to(self.storage_dtype).flatten(2).permute(2, 0, 1)
            stored_pos = memory_pos.to(masks.dtype).flatten(2).permute(2, 0, 1)
        self.bank[key][frame] = {
            "maskmem_features": stored,
            "maskmem_pos_enc": stored_pos,
            "object_pointer": out.pointer,
            "object_score_logits": out.object_score,
        }
