"""Meta-format ``.pt`` checkpoints load into transformers' SAM2 through our key converter.

Every test builds a random model, writes it in Meta's layout with ``to_meta_state_dict``
and reads it back with ``load_meta_checkpoint``. All weights are drawn at random (not the
models' zero/one initialisations), so a swapped or skipped tensor changes the numbers.
That Meta's real modules use the names we write is checked by ``test_meta_key_names``
against names read from Meta's source (facebookresearch/sam2, ``sam2/modeling``).
"""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import Sam2Config, Sam2Model, Sam2VideoModel
from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

from adapt.errors import ConfigError, ModelNotFoundError
from adapt.models.meta_checkpoint import (
    load_meta_checkpoint,
    to_meta_state_dict,
)
from adapt.models.tiny import tiny_config, tiny_video_config

BOX = torch.tensor([[[20.0, 30.0, 90.0, 100.0]]])


def memory_config():
    """``tiny_video_config`` widened so that memory propagation can run.

    transformers hard-codes the memory cross-attention's key/value width to 64
    (``Sam2VideoMemoryAttentionLayer``) and splits each object pointer into
    ``hidden / memory_channels`` tokens, so a runnable memory path needs 64 memory channels
    and a wider hidden size (128, as 256/64 in the released models).
    """
    config = tiny_video_config()
    hidden = 128
    config.vision_config.fpn_hidden_size = hidden
    config.prompt_encoder_config.hidden_size = hidden
    config.mask_decoder_config.hidden_size = hidden
    config.memory_attention_hidden_size = hidden
    config.memory_encoder_hidden_size = hidden
    config.mask_downsampler_embed_dim = hidden
    config.memory_fuser_embed_dim = hidden
    config.memory_fuser_intermediate_dim = 4 * hidden
    config.memory_encoder_output_channels = 64
    return config


def image_config(video_config):
    """The image-model config with a video config's encoder, prompt encoder and decoder."""
    return Sam2Config(
        vision_config=video_config.vision_config,
        prompt_encoder_config=video_config.prompt_encoder_config.to_dict(),
        mask_decoder_config=video_config.mask_decoder_config.to_dict(),
    )


def random_model(cls, config, seed=0):
    """A model whose every tensor is random, with Meta's single prompt positional matrix.

    transformers initialises its two copies of the random-Fourier matrix independently;
    a model converted from Meta has them equal, and only then is it exportable.
    """
    torch.manual_seed(seed)
    model = cls(config).eval()
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.2)
        model.shared_image_embedding.positional_embedding.copy_(
            model.prompt_encoder.shared_embedding.positional_embedding
        )
    return model


def save_meta(model, path, edit=None):
    meta_sd = to_meta_state_dict(model.state_dict())
    if edit:
        edit(meta_sd)
    torch.save({"model": meta_sd}, path)
    return path


def assert_same_weights(a, b):
    sd_a, sd_b = a.state_dict(), b.state_dict()
    assert sd_a.keys() == sd_b.keys()
    for key in sd_a:
        assert torch.equal(sd_a[key], sd_b[key]), key


@pytest.fixture(scope="module")
def image_model():
    return random_model(Sam2Model, tiny_config())


@pytest.fixture(scope="module")
def video_model():
    return random_model(Sam2VideoModel, memory_config())


@pytest.mark.parametrize(
    "cls, config",
    [
        (Sam2Model, tiny_config),
        (Sam2VideoModel, tiny_video_config),
        (Sam2VideoModel, memory_config),
    ],
    ids=["image", "video-tiny", "video-memory"],
)
def test_round_trip_restores_every_tensor(tmp_path, cls, config):
    original = random_model(cls, config())
    path = save_meta(original, tmp_path / "x.pt")
    fresh = cls(config())
    result = load_meta_checkpoint(fresh, path)
    assert_same_weights(fresh, original)
    assert (result.unknown, result.missing, result.unused) == ([], [], [])
    # Meta holds the prompt positional matrix once and the point embeddings as 4 rows.
    meta_count = len(original.state_dict()) - 1 + 3
    assert result.renamed == meta_count and len(result.state_dict) == len(original.state_dict())


def test_image_model_outputs_match_with_a_box_prompt(tmp_path, image_model):
    fresh = Sam2Model(tiny_config()).eval()
    load_meta_checkpoint(fresh, save_meta(image_model, tmp_path / "x.pt"))
    pixels = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = image_model(pixel_values=pixels, input_boxes=BOX)
        got = fresh(pixel_values=pixels, input_boxes=BOX)
    assert got.pred_masks.shape == (1, 1, 3, 32, 32)
    for name in ("pred_masks", "iou_scores", "object_score_logits"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=0, atol=1e-6)
    assert want.pred_masks.std() > 0.1  # random weights give non-trivial masks


def propagate(model, video):
    """Box on frame 0, then track through the clip; returns every frame's stored outputs."""
    session = Sam2VideoInferenceSession(video=video, video_height=128, video_width=128, dtype=torch.float32)
    session.add_point_inputs(
        session.obj_id_to_idx(1),
        0,
        {
            "point_coords": BOX.reshape(1, 1, 2, 2),
            "point_labels": torch.tensor([[[2, 3]]], dtype=torch.int32),
        },
    )
    session.obj_with_new_inputs = [1]
    model(session, frame_idx=0)
    frames = [out.pred_masks for out in model.propagate_in_video_iterator(session, start_frame_idx=0)]
    stored = session.output_dict_per_obj[0]
    return frames, [stored["cond_frame_outputs"][0], *stored["non_cond_frame_outputs"].values()]


def test_video_model_propagation_matches(tmp_path, video_model):
    fresh = Sam2VideoModel(memory_config()).eval()
    load_meta_checkpoint(fresh, save_meta(video_model, tmp_path / "x.pt"))
    video = torch.rand(3, 3, 128, 128, generator=torch.Generator().manual_seed(4))
    want_masks, want = propagate(video_model, video)
    got_masks, got = propagate(fresh, video)
    assert len(got) == len(want) == 3
    for frame, (a, b) in enumerate(zip(got_masks, want_masks)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=f"frame {frame}")
    # The memory path itself: memory encoder output, object pointers and scores per frame.
    for frame, (a, b) in enumerate(zip(got, want)):
        for name in ("maskmem_features", "object_pointer", "object_score_logits", "high_res_masks"):
            torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6, msg=f"{name}, frame {frame}")


def test_video_checkpoint_into_image_model_skips_memory_weights(tmp_path, video_model, caplog):
    path = save_meta(video_model, tmp_path / "video.pt")
    image = Sam2Model(image_config(memory_config())).eval()  # no memory modules
    with caplog.at_level(logging.INFO, logger="adapt.models.meta_checkpoint"):
        result = load_meta_checkpoint(image, path)
    assert result.unknown == [] and result.missing == []
    assert "memory_attention.layers.0.self_attn.q_proj.weight" in result.unused
    assert {"maskmem_tpos_enc", "no_obj_ptr", "obj_ptr_tpos_proj.weight"} <= set(result.unused)
    assert "not used by the image model" in caplog.text and "memory_encoder.* (" in caplog.text
    video_sd = video_model.state_dict()
    for key, value in image.state_dict().items():
        assert torch.equal(value, video_sd[key]), key


def drop_and_add(meta_sd):
    del meta_sd["sam_mask_decoder.iou_token.weight"]
    meta_sd["sam_mask_decoder.bogus_head.weight"] = torch.zeros(3)


def test_unknown_and_missing_keys_are_named(tmp_path, image_model):
    path = save_meta(image_model, tmp_path / "edited.pt", drop_and_add)
    with pytest.raises(ConfigError) as error:
        load_meta_checkpoint(Sam2Model(tiny_config()), path)
    message = str(error.value)
    assert str(path) in message and "Sam2Model" in message
    assert "1 key(s) have no transformers equivalent (unknown): sam_mask_decoder.bogus_head.weight" in message
    assert "1 key(s) are missing from the file: mask_decoder.iou_token.weight" in message
    assert "strict=False" in message


def test_non_strict_warns_and_loads_the_rest(tmp_path, image_model):
    path = save_meta(image_model, tmp_path / "edited.pt", drop_and_add)
    fresh = Sam2Model(tiny_config())
    before = fresh.mask_decoder.iou_token.weight.clone()
    with pytest.warns(UserWarning, match="bogus_head.weight") as record:
        result = load_meta_checkpoint(fresh, path, strict=False)
    assert "mask_decoder.iou_token.weight" in str(record[0].message)
    assert result.unknown == ["sam_mask_decoder.bogus_head.weight"]
    assert result.missing == ["mask_decoder.iou_token.weight"]
    assert torch.equal(fresh.mask_decoder.iou_token.weight, before)  # kept its own value
    assert torch.equal(fresh.mask_decoder.mask_tokens.weight, image_model.mask_decoder.mask_tokens.weight)


def test_long_key_lists_are_shortened_with_a_count(tmp_path, image_model):
    def add_many(meta_sd):
        meta_sd.update({f"extra.{i:02d}.weight": torch.zeros(1) for i in range(25)})

    path = save_meta(image_model, tmp_path / "x.pt", add_many)
    with pytest.raises(ConfigError) as error:
        load_meta_checkpoint(Sam2Model(tiny_config()), path)
    message = str(error.value)
    assert "25 key(s) have no transformers equivalent (unknown): extra.00.weight, extra.01.weight" in message
    assert "extra.09.weight ... and 15 more" in message and "extra.10.weight" not in message


def test_shape_mismatch_names_the_key_and_the_fix(tmp_path, image_model):
    path = save_meta(image_model, tmp_path / "x.pt")
    config = image_config(memory_config())
    for sub in (config.prompt_encoder_config, config.mask_decoder_config):
        sub.hidden_size = 64
    config.vision_config.fpn_hidden_size = 64
    other = Sam2Model(config)  # hidden 64 instead of the tiny model's 128
    with pytest.raises(
        ConfigError,
        match=r"differ in shape.*vision_encoder\.neck\.convs\.0\.weight "
        r"\(128, 96, 1, 1\) in file vs \(64, 96, 1, 1\) in model.*model\.name=",
    ) as error:
        load_meta_checkpoint(other, path)
    assert str(path) in str(error.value)


def test_video_model_reports_recognised_keys_it_lacks(tmp_path, video_model):
    """A checkpoint with SAM2.1's occlusion embedding into a model configured without it."""
    path = save_meta(video_model, tmp_path / "x.pt")
    config = memory_config()
    config.enable_occlusion_spatial_embedding = False
    expected = r"absent from this Sam2VideoModel \(config mismatch\): no_obj_embed_spatial"
    with pytest.raises(ConfigError, match=expected):
        load_meta_checkpoint(Sam2VideoModel(config), path)


def test_bare_state_dict_with_ddp_prefix_is_accepted(tmp_path, image_model):
    meta_sd = to_meta_state_dict(image_model.state_dict())
    torch.save({f"module.{k}": v for k, v in meta_sd.items()}, tmp_path / "bare.pt")
    fresh = Sam2Model(tiny_config())
    load_meta_checkpoint(fresh, tmp_path / "bare.pt")
    assert_same_weights(fresh, image_model)


def test_unreadable_files_name_the_file(tmp_path):
    with pytest.raises(ModelNotFoundError, match="nope.pt does not exist"):
        load_meta_checkpoint(Sam2Model(tiny_config()), tmp_path / "nope.pt")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match=r"other\.pt holds no SAM2 state dict.*\['epoch', 'lr'\]"):
        load_meta_checkpoint(Sam2Model(tiny_config()), tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=r"junk\.pt is not a checkpoint: it is neither a zip archive nor a pickle"):
        load_meta_checkpoint(Sam2Model(tiny_config()), tmp_path / "junk.pt")
    torch.save({"model": {}, "config": type(tmp_path)("/somewhere")}, tmp_path / "pickled.pt")  # more than tensors
    with pytest.raises(ConfigError, match=r"Cannot read .*pickled\.pt as a weights-only torch checkpoint"):
        load_meta_checkpoint(Sam2Model(tiny_config()), tmp_path / "pickled.pt")


def test_export_refuses_what_meta_cannot_hold(image_model):
    sd = dict(image_model.state_dict())
    sd["shared_image_embedding.positional_embedding"] = sd["shared_image_embedding.positional_embedding"] + 1
    with pytest.raises(ValueError, match="positional_encoding_gaussian_matrix"):
        to_meta_state_dict(sd)
    sd = dict(image_model.state_dict())
    sd["mask_decoder.conv_s0.lora_A.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"mask_decoder\.conv_s0\.lora_A\.weight.*merge_and_unload"):
        to_meta_state_dict(sd)


#: Names read from Meta's modules (sam2/modeling at facebookresearch/sam2 2b90b9f):
#: ``SAM2Base.__init__``/``_build_sam_heads``, ``Hiera``/``MultiScaleBlock`` (hieradet.py),
#: ``FpnNeck`` (``convs[i].conv``), ``PromptEncoder``, ``MaskDecoder``, ``TwoWayTransformer``,
#: ``MemoryAttention(Layer)``, ``MemoryEncoder``/``MaskDownSampler``/``Fuser``/``CXBlock``,
#: and ``MLP`` (``layers`` ModuleList). The same set was also produced by instantiating those
#: modules outside this repository (Meta's package cannot be installed here).
META_NAMES = {
    "image_encoder.trunk.patch_embed.proj.weight": None,
    "image_encoder.trunk.pos_embed": (1, 12, 7, 7),
    "image_encoder.trunk.pos_embed_window": (1, 12, 8, 8),
    "image_encoder.trunk.blocks.0.norm1.weight": (12,),
    "image_encoder.trunk.blocks.0.attn.qkv.weight": (36, 12),
    "image_encoder.trunk.blocks.0.mlp.layers.1.weight": (12, 48),
    "image_encoder.trunk.blocks.1.proj.weight": (24, 12),
    "image_encoder.neck.convs.0.conv.weight": (128, 96, 1, 1),
    "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix": (2, 64),
    "sam_prompt_encoder.point_embeddings.3.weight": (1, 128),
    "sam_prompt_encoder.mask_downscaling.6.weight": (128, 8, 1, 1),
    "sam_mask_decoder.transformer.layers.0.self_attn.q_proj.weight": (128, 128),
    "sam_mask_decoder.transformer.layers.1.cross_attn_image_to_token.out_proj.bias": (128,),
    "sam_mask_decoder.transformer.norm_final_attn.weight": (128,),
    "sam_mask_decoder.output_upscaling.3.weight": None,
    "sam_mask_decoder.output_hypernetworks_mlps.0.layers.2.weight": None,
    "sam_mask_decoder.iou_prediction_head.layers.1.weight": (32, 32),
    "sam_mask_decoder.pred_obj_score_head.layers.2.bias": (1,),
    "memory_attention.layers.0.self_attn.q_proj.weight": (128, 128),
    "memory_attention.layers.0.cross_attn_image.k_proj.weight": (128, 64),
    "memory_attention.layers.1.norm3.weight": (128,),
    "memory_attention.norm.weight": (128,),
    "memory_encoder.mask_downsampler.encoder.1.weight": (4,),
    "memory_encoder.mask_downsampler.encoder.12.weight": (128, 256, 1, 1),
    "memory_encoder.pix_feat_proj.weight": (128, 128, 1, 1),
    "memory_encoder.fuser.layers.1.gamma": (128,),
    "memory_encoder.fuser.layers.0.pwconv1.weight": (512, 128),
    "memory_encoder.out_proj.weight": (64, 128, 1, 1),
    "maskmem_tpos_enc": (7, 1, 1, 64),
    "no_mem_embed": (1, 1, 128),
    "no_mem_pos_enc": (1, 1, 128),
    "no_obj_ptr": (1, 128),
    "no_obj_embed_spatial": (1, 64),
    "obj_ptr_proj.layers.2.weight": (128, 128),
    "obj_ptr_tpos_proj.weight": (64, 128),
    "mask_downsample.weight": (1, 1, 4, 4),
}


def test_meta_key_names(video_model):
    meta_sd = to_meta_state_dict(video_model.state_dict())
    for name, shape in META_NAMES.items():
        assert name in meta_sd, name
        assert shape is None or tuple(meta_sd[name].shape) == shape, name
    # Meta's SAM2Base built with this architecture has 419 state-dict entries.
    assert len(meta_sd) == 419
    assert not any(key.startswith(("vision_encoder.", "mask_decoder.", "prompt_encoder.")) for key in meta_sd)


# --- Against Meta's own modules ------------------------------------------------------------
# Meta's package (sam2==1.1.0, its sdist from PyPI, cached; or a checkout named by
# SAM2_META_SOURCE) is imported by the ``meta_sam2`` fixture (conftest.py,
# tests/meta_reference.py) without its Hydra ``__init__`` and without torchvision. This
# proves what the round trips above cannot: that each Meta tensor lands on the transformers
# tensor that plays the same role (a consistent swap of, say, norm2 and norm3 would survive
# a round trip).


@pytest.fixture
def meta_modules(meta_sam2):
    """``name -> sam2.modeling.<name>`` from Meta's source."""
    return lambda name: meta_sam2.module(f"modeling.{name}")


def build_meta_sam2(modules, config):
    """Meta's ``SAM2Base`` with the architecture of ``config`` and sam2.1's flags."""
    hiera, encoder = modules("backbones.hieradet"), modules("backbones.image_encoder")
    attention, memory = modules("memory_attention"), modules("memory_encoder")
    sine, sam = modules("position_encoding").PositionEmbeddingSine, modules("sam2_base")
    transformer, prompt = modules("sam.transformer"), modules("sam.prompt_encoder")
    decoder = modules("sam.mask_decoder")
    backbone, hidden = config.vision_config.backbone_config, config.vision_config.fpn_hidden_size
    mem, size = config.memory_encoder_output_channels, config.image_size
    trunk = hiera.Hiera(
        embed_dim=backbone.hidden_size,
        num_heads=backbone.num_attention_heads,
        stages=backbone.blocks_per_stage,
        global_att_blocks=backbone.global_attention_blocks,
        window_pos_embed_bkg_spatial_size=backbone.window_positional_embedding_background_size,
        window_spec=backbone.window_size_per_stage,
    )
    neck = encoder.FpnNeck(
        sine(num_pos_feats=hidden),
        d_model=hidden,
        fpn_top_down_levels=[2, 3],
        fpn_interp_model="nearest",
        backbone_channel_list=config.vision_config.backbone_channel_list,
    )
    rope = dict(
        rope_theta=10000.0,
        feat_sizes=config.memory_attention_rope_feat_sizes,
        embedding_dim=hidden,
        num_heads=1,
        downsample_rate=1,
        dropout=0.1,
    )
    layer = attention.MemoryAttentionLayer(
        activation="relu",
        d_model=hidden,
        dim_feedforward=config.memory_attention_feed_forward_hidden_size,
        dropout=0.1,
        pos_enc_at_attn=False,
        pos_enc_at_cross_attn_keys=True,
        pos_enc_at_cross_attn_queries=False,
        self_attention=transformer.RoPEAttention(**rope),
        cross_attention=transformer.RoPEAttention(rope_k_repeat=True, kv_in_dim=64, **rope),
    )
    fuser = memory.Fuser(
        memory.CXBlock(dim=hidden, kernel_size=7, padding=3, layer_scale_init_value=1e-6, use_dwconv=True),
        num_layers=config.memory_fuser_num_layers,
    )
    memory_encoder = memory.MemoryEncoder(
        out_dim=mem,
        mask_downsampler=memory.MaskDownSampler(embed_dim=hidden, kernel_size=3, stride=2, padding=1),
        fuser=fuser,
        position_encoding=sine(num_pos_feats=mem),
        in_dim=hidden,
    )
    dynamic = dict(
        dynamic_multimask_via_stability=True,
        dynamic_multimask_stability_delta=0.05,
        dynamic_multimask_stability_thresh=0.98,
    )
    flags = dict(  # sam2.1_hiera_*.yaml, plus what build_sam_video_predictor overrides
        sigmoid_scale_for_mem_enc=20.0,
        sigmoid_bias_for_mem_enc=-10.0,
        use_mask_input_as_output_without_sam=True,
        directly_add_no_mem_embed=True,
        no_obj_embed_spatial=True,
        use_high_res_features_in_sam=True,
        multimask_output_in_sam=True,
        iou_prediction_use_sigmoid=True,
        use_obj_ptrs_in_encoder=True,
        add_tpos_enc_to_obj_ptrs=True,
        proj_tpos_enc_in_obj_ptrs=True,
        use_signed_tpos_enc_to_obj_ptrs=True,
        only_obj_ptrs_in_the_past_for_eval=True,
        pred_obj_scores=True,
        pred_obj_scores_mlp=True,
        fixed_no_obj_ptr=True,
        multimask_output_for_tracking=True,
        use_multimask_token_for_obj_ptr=True,
        multimask_min_pt_num=0,
        multimask_max_pt_num=1,
        use_mlp_for_obj_ptr_proj=True,
        binarize_mask_from_pts_for_mem_enc=True,
        sam_mask_decoder_extra_args=dynamic,
    )
    model = sam.SAM2Base(
        encoder.ImageEncoder(trunk, neck, scalp=1),
        attention.MemoryAttention(
            d_model=hidden, pos_enc_at_input=True, layer=layer, num_layers=config.memory_attention_num_layers
        ),
        memory_encoder,
        num_maskmem=config.num_maskmem,
        image_size=size,
        **flags,
    )
    # SAM2Base hard-codes the heads' widths of the released models; rebuild them at ours.
    model.sam_prompt_encoder = prompt.PromptEncoder(
        embed_dim=hidden,
        image_embedding_size=(size // 16, size // 16),
        input_image_size=(size, size),
        mask_in_chans=config.prompt_encoder_config.mask_input_channels,
    )
    heads = config.mask_decoder_config
    model.sam_mask_decoder = decoder.MaskDecoder(
        num_multimask_outputs=3,
        transformer_dim=hidden,
        iou_head_depth=3,
        iou_head_hidden_dim=heads.iou_head_hidden_dim,
        transformer=transformer.TwoWayTransformer(
            depth=2, embedding_dim=hidden, mlp_dim=heads.mlp_dim, num_heads=heads.num_attention_heads
        ),
        use_high_res_features=True,
        iou_prediction_use_sigmoid=True,
        pred_obj_scores=True,
        pred_obj_scores_mlp=True,
        use_multimask_token_for_obj_ptr=True,
        **dynamic,
    )
    return model.eval()


def test_matches_meta_reference_implementation(tmp_path, meta_modules):
    config = memory_config()
    meta = build_meta_sam2(meta_modules, config)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for tensor in meta.state_dict().values():
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.2)
        meta.sam_mask_decoder.pred_obj_score_head.layers[2].bias.fill_(5.0)  # object present on every frame
    torch.save({"model": meta.state_dict()}, tmp_path / "meta.pt")
    ours = to_meta_state_dict(random_model(Sam2VideoModel, config).state_dict())
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in meta.state_dict().items()}
    video_model, image_model = Sam2VideoModel(config).eval(), Sam2Model(image_config(config)).eval()
    load_meta_checkpoint(video_model, tmp_path / "meta.pt")
    load_meta_checkpoint(image_model, tmp_path / "meta.pt")
    close = dict(rtol=1e-5, atol=1e-5)

    # Image: what Meta's SAM2ImagePredictor does with one box.
    pixels = torch.rand(1, 3, 128, 128, generator=generator)
    with torch.no_grad():
        _, feats, _, sizes = meta._prepare_backbone_features(meta.forward_image(pixels))
        feats[-1] = feats[-1] + meta.no_mem_embed
        maps = [f.permute(1, 2, 0).view(1, -1, *s) for f, s in zip(feats, sizes)]
        sparse, dense = meta.sam_prompt_encoder(
            points=(BOX.reshape(1, 2, 2), torch.tensor([[2, 3]])), boxes=None, masks=None
        )
        masks, iou, _, objects = meta.sam_mask_decoder(
            image_embeddings=maps[-1],
            image_pe=meta.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
            repeat_image=False,
            high_res_features=maps[:-1],
        )
        out = image_model(pixel_values=pixels, input_boxes=BOX)
    torch.testing.assert_close(out.pred_masks[0], masks, **close)
    torch.testing.assert_close(out.iou_scores[0], iou, **close)
    torch.testing.assert_close(out.object_score_logits[0], objects, **close)

    # Video: Meta's track_step frame by frame, memories kept in bfloat16 as its predictor does.
    video = torch.rand(3, 3, 128, 128, generator=generator)
    history = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    want = []
    with torch.no_grad():
        for t in range(len(video)):
            _, feats, pos, sizes = meta._prepare_backbone_features(meta.forward_image(video[t : t + 1]))
            prompt = {"point_coords": BOX.reshape(1, 2, 2), "point_labels": torch.tensor([[2, 3]], dtype=torch.int32)}
            step = meta.track_step(
                frame_idx=t,
                is_init_cond_frame=t == 0,
                current_vision_feats=feats,
                current_vision_pos_embeds=pos,
                feat_sizes=sizes,
                point_inputs=prompt if t == 0 else None,
                mask_inputs=None,
                output_dict=history,
                num_frames=len(video),
            )
            step["maskmem_features"] = step["maskmem_features"].to(torch.bfloat16)
            history["cond_frame_outputs" if t == 0 else "non_cond_frame_outputs"][t] = step
            want.append(step)
    got_masks, got = propagate(video_model, video)
    for t, step in enumerate(want):
        assert step["object_score_logits"].item() > 0
        torch.testing.assert_close(got_masks[t], step["pred_masks"], **close)
        torch.testing.assert_close(got[t]["object_pointer"].reshape(1, -1), step["obj_ptr"], **close)
        torch.testing.assert_close(got[t]["object_score_logits"].reshape(1, 1), step["object_score_logits"], **close)
