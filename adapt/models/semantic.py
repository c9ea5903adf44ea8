"""Promptless multi-class segmentation with SAM2's mask decoder (SAMed style).

Instead of a user's box or click, each class owns learnable prompt tokens that are fed to
the mask decoder exactly where encoded points and boxes would go. One forward then gives
one mask per class — background included, so the classes compete in a softmax — with no
prompt from the user. The tokens live in the model as ``class_prompts`` so they are saved
with the adapter like any other trainable weight.
"""

from __future__ import annotations

import torch
from torch import nn

from adapt.models.primitives import base_model

ATTRIBUTE = "class_prompts"


class ClassPrompts(nn.Module):
    """``tokens`` learnable sparse-prompt embeddings per class (index 0 = background)."""

    def __init__(self, num_classes: int, hidden_size: int, tokens: int = 2):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"a semantic head needs background + at least one class, got {num_classes}")
        self.embeddings = nn.Parameter(torch.randn(num_classes, tokens, hidden_size) * 0.02)

    @property
    def num_classes(self) -> int:
        return self.embeddings.shape[0]


def add_class_prompts(model: nn.Module, num_classes: int, tokens: int = 2) -> ClassPrompts:
    """Attach trainable class prompts to a SAM2 model (call before wrapping it with an adapter)."""
    sam = base_model(model)
    prompts = ClassPrompts(num_classes, sam.config.prompt_encoder_config.hidden_size, tokens)
    setattr(sam, ATTRIBUTE, prompts)
    return prompts


def class_logits(model: nn.Module, embeddings: list[torch.Tensor]) -> torch.Tensor:
    """Low-resolution logits ``[B, K, h, w]`` of every class from image embeddings.

    Drives SAM2's mask decoder directly with the class tokens as sparse prompts and the
    "no mask" dense embedding, as the prompt encoder would for a prompt without a mask.
    """
    sam = base_model(model)
    prompts: ClassPrompts = getattr(sam, ATTRIBUTE)
    batch = embeddings[-1].shape[0]
    sparse = prompts.embeddings.unsqueeze(0).expand(batch, -1, -1, -1)
    encoder = sam.prompt_encoder
    dense = encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, *encoder.image_embedding_size)
    positional = sam.get_image_wide_positional_embeddings().repeat(batch, 1, 1, 1)
    low_res, _, _, _ = sam.mask_decoder(
        image_embeddings=embeddings[-1],
        image_positional_embeddings=positional,
        sparse_prompt_embeddings=sparse.to(embeddings[-1].dtype),
        dense_prompt_embeddings=dense,
        multimask_output=False,
        high_resolution_features=embeddings[:-1],
    )
    return low_res[:, :, 0]
