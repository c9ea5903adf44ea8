"""Speed patches to transformers' SAM2 modules: work that does not change is done once. Outputs unchanged.

transformers' SAM2 (5.x, the range ``pyproject.toml`` pins) repeats work whose result depends
only on the input size or on frozen weights, and copies tensors it does not need to copy.
Measured on hiera-tiny at 1024 px with one CPU thread, per image:

* the sine positional encodings of the four FPN levels, about 0.27 CPU s:
  ``Sam2SinePositionEmbedding`` memoises its builder with ``lru_cache(maxsize=1)``, and the
  neck asks for four shapes in turn, so the cache never hits. Meta's SAM2 keeps them per size.
* Hiera's windowed positional embedding (``_get_pos_embed``: a bicubic resize of ``pos_embed``
  to the patch grid plus the tiled window embedding), about 0.15 s. Meta recomputes it too.
* a dead product in ``Sam2MultiScaleAttention.forward``: ``(query * scale) @ key^T`` and its
  softmax are computed and never used (the attention itself runs in SDPA), about 0.12 s.
* in the mask decoder, ``repeat_interleave(1)`` copies of the image embedding, its positional
  encoding and both high-resolution maps for a single prompt per image, about 0.01 s of a
  0.13 s decoding (Meta repeats only the positional encoding).
* in the video model's memory attention, the rotary ``cos``/``sin`` repeated once per memory
  frame in every cross-attention layer (4 x 14 MB per frame at 512 px with 7 memory frames):
  about 6 of its 14 ms per layer.

Together about 14 % of the 3.9 s encoder and 8 % of the decoder. ``patch_sam2`` removes them
from one model instance by giving these submodules a subclass of their own class
(``module.__class__ = ...``): transformers' classes are not modified; parameters, buffers,
state-dict keys, hooks and ``isinstance`` checks stay as they were; peft's adapter layers
inside the modules keep running; ``unpatch_sam2`` gives the classes back. Each subclass
overrides one method and computes exactly what transformers computes
(``tests/test_sam2_patches.py`` compares every output with an unpatched model holding the
same weights with ``torch.equal``: batches, several prompts per image, autograd,
frozen and trainable embeddings, weights changed in place, image and video models, LoRA):

* ``CachedSinePositionEmbedding``: one ``[1, C, H, W]`` encoding per (size, device, dtype),
  returned expanded to the batch (no copy; Meta's ``repeat`` copies it).
* ``CachedPosEmbedHiera``: the windowed embedding per (grid, device, dtype) and per state of
  the two parameters (their storage and in-place version counter, so a loaded checkpoint or an
  optimizer step invalidates it); recomputed with autograd whenever they train.
* ``LeanMultiScaleAttention``: ``Sam2MultiScaleAttention.forward`` without the dead product.
* ``LeanMaskDecoder`` / ``LeanVideoMaskDecoder``: ``Sam2MaskDecoder.forward`` without the copies
  when there is one prompt per image.
* ``LeanRoPEAttention``: ``Sam2VideoRoPEAttention.forward`` with the keys of all memory frames
  rotated by broadcasting one frame's ``cos``/``sin``.

The last three copy transformers' forward (minus the waste); the test keeps them honest when
transformers changes. Under ``torch.compile``, ``torch.export`` and the TorchScript tracer
(``adapt.export``'s ONNX graphs) the cached paths step aside: the graph computes the constants
as transformers does.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers.models.sam2.modeling_sam2 import (
    ALL_ATTENTION_FUNCTIONS,
    Sam2HieraDetModel,
    Sam2MaskDecoder,
    Sam2MultiScaleAttention,
    Sam2SinePositionEmbedding,
    do_pool,
    eager_attention_forward,
)
from transformers.models.sam2_video.modeling_sam2_video import (
    Sam2VideoMaskDecoder,
    Sam2VideoRoPEAttention,
    apply_rotary_pos_emb_2d,
    rotate_pairwise,
)


def _compiling() -> bool:
    """Under ``torch.compile`` / ``torch.export`` or the TorchScript tracer (ONNX export), where the
    graph should compute the constants itself rather than capture a cached tensor."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


def _constant(build: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``build()`` as an ordinary tensor without autograd, also when called under inference mode
    (an inference tensor could not be used later by a forward that records a graph)."""
    with torch.inference_mode(False), torch.no_grad():
        return build()


class CachedSinePositionEmbedding(Sam2SinePositionEmbedding):
    """The FPN's sine positional encoding, computed once per size, device and dtype."""

    _cache: dict

    def forward(
        self, shape: torch.Size, device: torch.device | str, dtype: torch.dtype, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if mask is not None or _compiling():
            return super().forward(shape, device, dtype, mask)
        key = (int(shape[-2]), int(shape[-1]), torch.device(device), dtype)
        if key not in self._cache:
            one = (1, *tuple(shape)[1:])
            self._cache[key] = _constant(lambda: super(CachedSinePositionEmbedding, self).forward(one, device, dtype))
        return self._cache[key].expand(shape[0], -1, -1, -1)


class CachedPosEmbedHiera(Sam2HieraDetModel):
    """Hiera whose windowed positional embedding is reused while ``pos_embed`` and
    ``pos_embed_window`` stay as they are (or recomputed with autograd when they train)."""

    _cache: dict

    def _get_pos_embed(self, hw: tuple[int, int]) -> torch.Tensor:
        params = (self.pos_embed, self.pos_embed_window)
        if _compiling() or (torch.is_grad_enabled() and any(p.requires_grad for p in params)):
            return super()._get_pos_embed(hw)
        key = (tuple(int(x) for x in hw), *((p.data_ptr(), p._version, p.device, p.dtype) for p in params))
        cached = self._cache.get("pos_embed")
        if cached is None or cached[0] != key:
            cached = (key, _constant(lambda: super(CachedPosEmbedHiera, self)._get_pos_embed(hw)))
            self._cache["pos_embed"] = cached  # one entry: a model runs at one size
        return cached[1]


class LeanMultiScaleAttention(Sam2MultiScaleAttention):
    """``Sam2MultiScaleAttention`` without the attention weights it computes and discards."""

    def forward(self, hidden_states: torch.Tensor, **kwargs) -> torch.Tensor:
        batch_size, height, width, _ = hidden_states.shape
        qkv = self.qkv(hidden_states).reshape(batch_size, height * width, 3, self.num_attention_heads, -1)
        query, key, value = torch.unbind(qkv, 2)
        if self.query_stride:  # Q pooling (downsampling at stage changes)
            query = do_pool(query.reshape(batch_size, height, width, -1), self.query_stride)
            height, width = query.shape[1:3]
            query = query.reshape(batch_size, height * width, self.num_attention_heads, -1)
        attention: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        output, _ = attention(
            self,
            query.transpose(1, 2),
            key.transpose(1, 2),
            value.transpose(1, 2),
            attention_mask=None,
            is_causal=self.is_causal,
            scaling=self.scale,
            **kwargs,
        )
        return self.proj(output.reshape(batch_size, height, width, -1))


def _lean_mask_decoder_forward(
    self,
    image_embeddings: torch.Tensor,
    image_positional_embeddings: torch.Tensor,
    sparse_prompt_embeddings: torch.Tensor,
    dense_prompt_embeddings: torch.Tensor,
    multimask_output: bool,
    high_resolution_features: list[torch.Tensor],
    attention_similarity: torch.Tensor | None = None,
    target_embedding: torch.Tensor | None = None,
    **kwargs,
):
    """``Sam2MaskDecoder.forward`` (and the video model's identical copy) without copying the image
    embedding, its positional encoding and the two high-resolution maps once per prompt when
    there is one prompt per image (``repeat_interleave(1)`` copies them: ~16 MB at 1024 px)."""
    batch_size, num_channels, height, width = image_embeddings.shape
    point_batch_size = sparse_prompt_embeddings.shape[1]
    output_tokens = torch.cat([self.obj_score_token.weight, self.iou_token.weight, self.mask_tokens.weight], dim=0)
    output_tokens = output_tokens.repeat(batch_size, point_batch_size, 1, 1)
    if sparse_prompt_embeddings.shape[0] != 0:
        tokens = torch.cat((output_tokens, sparse_prompt_embeddings), dim=2)
    else:
        tokens = output_tokens
    point_embeddings = tokens.to(self.iou_token.weight.dtype)

    def per_prompt(x: torch.Tensor) -> torch.Tensor:
        return x if point_batch_size == 1 else x.repeat_interleave(point_batch_size, dim=0)

    image_embeddings = per_prompt(image_embeddings + dense_prompt_embeddings)
    point_embeddings, image_embeddings = self.transformer(
        point_embeddings=point_embeddings,
        image_embeddings=image_embeddings,
        image_positional_embeddings=per_prompt(image_positional_embeddings),
        attention_similarity=attention_similarity,
        target_embedding=target_embedding,
        **kwargs,
    )
    iou_token_out = point_embeddings[:, :, 1, :]
    mask_tokens_out = point_embeddings[:, :, 2 : (2 + self.num_mask_tokens), :]

    image_embeddings = image_embeddings.transpose(2, 3).view(batch_size * point_batch_size, num_channels, height, width)
    feat_s0, feat_s1 = (per_prompt(f) for f in high_resolution_features)
    upscaled_embedding = self.upscale_conv1(image_embeddings) + feat_s1
    upscaled_embedding = self.activation(self.upscale_layer_norm(upscaled_embedding))
    upscaled_embedding = self.activation(self.upscale_conv2(upscaled_embedding) + feat_s0)
    hyper_in = torch.stack(
        [mlp(mask_tokens_out[:, :, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=2
    )
    _, num_channels, height, width = upscaled_embedding.shape
    upscaled_embedding = upscaled_embedding.view(batch_size, point_batch_size, num_channels, height * width)
    masks = (hyper_in @ upscaled_embedding).view(batch_size, point_batch_size, -1, height, width)
    iou_pred = self.iou_prediction_head(iou_token_out)
    object_score_logits = self.pred_obj_score_head(point_embeddings[:, :, 0, :])

    if multimask_output:
        mask_slice = slice(1, None)
        masks, iou_pred = masks[:, :, mask_slice, :, :], iou_pred[:, :, mask_slice]
    elif self.dynamic_multimask_via_stability and not self.training:
        mask_slice = slice(0, 1)
        masks, iou_pred = self._dynamic_multimask_via_stability(masks, iou_pred)
    else:
        mask_slice = slice(0, 1)
        masks, iou_pred = masks[:, :, mask_slice, :, :], iou_pred[:, :, mask_slice]
    return masks, iou_pred, mask_tokens_out[:, :, mask_slice], object_score_logits


class LeanMaskDecoder(Sam2MaskDecoder):
    """``Sam2MaskDecoder`` without per-prompt copies of the image features for one prompt per image."""

    forward = _lean_mask_decoder_forward


class LeanVideoMaskDecoder(Sam2VideoMaskDecoder):
    """``Sam2VideoMaskDecoder`` (the same code as ``Sam2MaskDecoder``), lean as ``LeanMaskDecoder``."""

    forward = _lean_mask_decoder_forward


def _rope_2d(
    query: torch.Tensor,
    key: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    repeat_freqs_k: bool,
    num_k_exclude_rope: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``apply_rotary_pos_emb_2d`` without repeating ``cos``/``sin`` once per memory frame: the keys of
    ``r`` frames are viewed as ``[..., r, positions, dim]`` and rotated by broadcasting (the same
    products, so the same numbers; ~40 % of the op at 512 px with 7 memory frames)."""
    positions = query.shape[-2]
    rotated = key.shape[-2] - num_k_exclude_rope
    if not repeat_freqs_k or rotated == positions or rotated == 0 or rotated % positions:
        return apply_rotary_pos_emb_2d(
            query, key, cos, sin, repeat_freqs_k=repeat_freqs_k, num_k_exclude_rope=num_k_exclude_rope
        )
    q = query.float()
    q = q * cos + rotate_pairwise(q) * sin
    k = key[..., :rotated, :].float().unflatten(-2, (rotated // positions, positions))
    k = (k * cos + rotate_pairwise(k) * sin).flatten(-3, -2)
    return q.type_as(query), torch.cat([k.type_as(key), key[..., rotated:, :]], dim=-2)


class LeanRoPEAttention(Sam2VideoRoPEAttention):
    """The memory attention's RoPE attention, its keys rotated by ``_rope_2d``."""

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        num_k_exclude_rope: int = 0,
        **kwargs,
    ):
        batch_size, point_batch_size = query.shape[:2]
        new_shape = (batch_size * point_batch_size, -1, self.num_attention_heads, self.head_dim)
        query = self.q_proj(query).view(*new_shape).transpose(1, 2)
        key = self.k_proj(key).view(*new_shape).transpose(1, 2)
        value = self.v_proj(value).view(*new_shape).transpose(1, 2)
        cos, sin = position_embeddings
        query, key = _rope_2d(query, key, cos, sin, self.rope_k_repeat, num_k_exclude_rope)
        attention: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        output, weights = attention(
            self,
            query,
            key,
            value,
            attention_mask=None,
            dropout=0.0 if not self.training else self.dropout_p,
            scaling=self.scaling,
            is_causal=self.is_causal,
            **kwargs,
        )
        output = output.reshape(batch_size, point_batch_size, -1, self.num_attention_heads * self.head_dim).contiguous()
        return self.o_proj(output), weights


#: transformers' class -> its patched subclass.
PATCHES = {
    Sam2SinePositionEmbedding: CachedSinePositionEmbedding,
    Sam2HieraDetModel: CachedPosEmbedHiera,
    Sam2MultiScaleAttention: LeanMultiScaleAttention,
    Sam2MaskDecoder: LeanMaskDecoder,
    Sam2VideoMaskDecoder: LeanVideoMaskDecoder,
    Sam2VideoRoPEAttention: LeanRoPEAttention,
}


def patch_sam2(model: torch.nn.Module) -> int:
    """Apply the patches to every matching submodule of ``model`` (image or video SAM2, wrapped
    by peft or not); returns how many modules were patched. Patching twice changes nothing."""
    patched = 0
    for module in model.modules():
        patch = PATCHES.get(type(module))
        if patch is None:
            continue
        module.__class__ = patch
        module.__dict__.setdefault("_cache", {})  # the caching patches' store, kept across unpatch/patch
        patched += 1
    return patched


def unpatch_sam2(model: torch.nn.Module) -> int:
    """Give every patched submodule of ``model`` its transformers class back (to compare, or to
    measure what the patches save); returns how many modules were restored."""
    originals = {patch: original for original, patch in PATCHES.items()}
    restored = 0
    for module in model.modules():
        original = originals.get(type(module))
        if original is not None:
            module.__class__ = original
            restored += 1
    return restored
