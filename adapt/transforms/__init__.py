"""MONAI-style dictionary transforms: intensity, slices, prompts."""
