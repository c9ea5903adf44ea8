"""Where configs, recipes and data cards live, and the Hydra registrations that use them.

Recipes are flat YAML files in ``recipes/``; ``register_recipes`` stores each in Hydra's
ConfigStore as group ``recipe`` with ``package="_global_"``, so ``recipe=ct_liver`` works
from any working directory without a search-path plugin.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The folders a source checkout holds beside the package; a wheel that ships them (the Space's,
#: ``adapt.app.space``) carries them inside the package, under ``SHIPPED``.
SHIPPED_FOLDERS = ("configs", "recipes", "data_cards")
SHIPPED = Path(__file__).resolve().parent / "shipped"
_ROOT = REPO_ROOT if (REPO_ROOT / "configs").is_dir() or not SHIPPED.is_dir() else SHIPPED
CONFIG_DIR = _ROOT / "configs"
RECIPE_DIR = _ROOT / "recipes"
CARD_DIR = _ROOT / "data_cards"


def find_folder(folder: str | Path) -> Path:
    """``folder`` as given if it exists (or is absolute), else found relative to a folder above the
    current one: a notebook's kernel starts in ``notebooks/``, the commands ran one level up."""
    path = Path(folder).expanduser()
    if path.is_absolute() or path.exists():
        return path
    for parent in Path.cwd().resolve().parents:
        if (parent / path).exists():
            return parent / path
    return path


def recipe_names() -> list[str]:
    """Stems of the recipes shipped in ``recipes/``."""
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def register_recipes() -> None:
    """Put every ``recipes/*.yaml`` into the ConfigStore as ``recipe=<stem>``."""
    store = ConfigStore.instance()
    for path in sorted(RECIPE_DIR.glob("*.yaml")):
        store.store(group="recipe", name=path.stem, node=OmegaConf.load(path), package="_global_")


def cuda_possible() -> bool:
    """Whether a CUDA (or ROCm) GPU may be visible, decided without importing torch.

    On Linux a GPU shows as a device node (``/dev/nvidia*``, ROCm's ``/dev/kfd``, WSL's
    ``/dev/dxg``); macOS has no CUDA. Elsewhere only torch can tell, so the answer is yes.
    """
    if sys.platform == "darwin":
        return False
    if sys.platform.startswith("linux"):
        return any(Path(node).exists() for node in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg"))
    return True


def _auto_precision(preferred: str = "bf16-mixed") -> str:
    """``preferred`` on a CUDA GPU that supports it, full precision elsewhere (CPU runs).

    Resolved when a training config is checked at the door, so a machine without a GPU device
    answers without importing torch (``cuda_possible``).
    """
    if not cuda_possible():
        return "32-true"
    import torch  # lazy: start-up

    if not torch.cuda.is_available():
        return "32-true"
    if preferred.startswith("bf16") and not torch.cuda.is_bf16_supported():
        return "16-mixed"
    return preferred


def register_resolvers() -> None:
    """OmegaConf resolvers used in configs (idempotent)."""
    if not OmegaConf.has_resolver("auto_precision"):
        OmegaConf.register_new_resolver("auto_precision", _auto_precision)
