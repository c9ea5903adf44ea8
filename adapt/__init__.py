"""sam2-adapt: fine-tune a frozen SAM2 with LoRA or adapter layers on your own domain."""

__version__ = "0.1.0"

__all__ = ["__version__"]
