"""Meta's SAM2 (``sam2==1.1.0`` from PyPI) as a reference implementation for the tests.

DESIGN.md keeps Meta's package out of the project: its ``sam2/__init__.py`` initialises
Hydra globally, and its predictors import torchvision, which does not install next to our
CPU torch. The tests still compare with Meta's own code, obtained and imported like this:

* ``meta_source()`` downloads Meta's source distribution with pip
  (``pip download --no-deps --no-binary :all: sam2==1.1.0``), checks its SHA-256 and
  unpacks it once into ``$XDG_CACHE_HOME/sam2-adapt/meta-sam2-1.1.0`` (default
  ``~/.cache``); later runs reuse the folder. ``SAM2_META_SOURCE`` may name a checkout of
  facebookresearch/sam2 instead. Without network (and without that cache) it raises: CI
  fails loudly rather than skipping the comparison.
* ``meta_package()`` imports Meta's modules through an empty package module whose
  ``__path__`` is the unpacked ``sam2/`` folder, so ``sam2/__init__.py`` never runs.
  While Meta's modules are imported, ``torchvision`` and ``iopath`` are stand-ins defined
  here (only the pieces Meta's predictor code uses); they leave ``sys.modules`` again
  once the import is done. ``sam2._C`` (Meta's CUDA extension) is a CPU stand-in of
  ``get_connected_componnets`` (sic, Meta's name), so Meta's hole filling runs on CPU.

The stand-ins are written from the documented behaviour of what they replace:

* ``Resize((h, w))`` on a float tensor: the tensor unchanged when it already has that
  size, else bilinear interpolation with ``antialias=True, align_corners=False``
  (torchvision >= 0.17's default for tensors).
* ``Normalize(mean, std)``: ``(x - mean) / std`` per channel.
* ``ToTensor()``: an ``H x W x C`` array (or PIL image) to ``C x H x W`` float; uint8
  is divided by 255.
* ``get_connected_componnets(mask uint8 [N, 1, H, W])``: 8-connected components of the
  non-zero pixels (H and W even, as the CUDA kernel requires) as ``(labels, counts)``,
  both int32 ``[N, 1, H, W]``: a component's label is 1 + the flat index of the top-left
  pixel of its first 2x2 block in raster order (the kernel's union-find keeps the
  smallest block index as root), 0 on background; counts hold each pixel's component area
  (0 on background). There is no special case for components touching the border.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import types
from pathlib import Path
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from filelock import FileLock  # torch's own dependency
from torch import nn

VERSION = "1.1.0"
SDIST = f"sam2-{VERSION}.tar.gz"
#: SHA-256 of sam2-1.1.0.tar.gz as published on PyPI.
SDIST_SHA256 = "7e0ea252d43c10d853e3acfce0b5770ac683c30481bd6de311300e9d44f45b74"
#: Meta's config of SAM2.1 hiera-tiny, relative to the ``sam2/`` package folder.
TINY_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
#: Meta's modules imported while the torchvision/iopath stand-ins are in place.
META_MODULES = (
    "sam2.modeling.backbones.hieradet",
    "sam2.modeling.backbones.image_encoder",
    "sam2.modeling.backbones.utils",
    "sam2.modeling.position_encoding",
    "sam2.modeling.memory_attention",
    "sam2.modeling.memory_encoder",
    "sam2.modeling.sam2_utils",
    "sam2.modeling.sam.transformer",
    "sam2.modeling.sam.prompt_encoder",
    "sam2.modeling.sam.mask_decoder",
    "sam2.modeling.sam2_base",
    "sam2.utils.misc",
    "sam2.utils.transforms",
    "sam2.sam2_image_predictor",
    "sam2.sam2_video_predictor",
    "sam2.build_sam",
)


def cache_dir() -> Path:
    """Where the unpacked sdist is kept between runs."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "sam2-adapt" / f"meta-sam2-{VERSION}"


def meta_source() -> Path:
    """The folder holding Meta's ``sam2/`` package: ``SAM2_META_SOURCE`` or the cached sdist.

    Raises:
        RuntimeError: the sdist cannot be downloaded (no network) or is not the published file.
    """
    override = os.environ.get("SAM2_META_SOURCE")
    if override:
        root = Path(override)
        if not (root / "sam2" / "modeling" / "sam2_base.py").is_file():
            raise RuntimeError(
                f"SAM2_META_SOURCE={override} is not a facebookresearch/sam2 checkout (no sam2/modeling/sam2_base.py)"
            )
        return root
    target = cache_dir() / f"sam2-{VERSION}"
    if (target / "sam2" / "sam2_video_predictor.py").is_file():
        return target
    if importlib.util.find_spec("setuptools") is None:
        raise RuntimeError("reading Meta's sdist with pip needs setuptools (its build backend): pip install setuptools")
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):  # pytest-xdist workers: one downloads, the others wait
        if (target / "sam2" / "sam2_video_predictor.py").is_file():
            return target
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            command = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                # pip prepares the sdist's metadata; in an isolated build it would first
                # try to build torch (a build requirement of sam2) from source.
                "--no-build-isolation",
                "--retries",
                "2",
                "--timeout",
                "20",
                f"sam2=={VERSION}",
                "-d",
                tmp,
            ]
            env = {**os.environ, "SAM2_BUILD_CUDA": "0"}  # Meta's setup.py: no CUDA extension
            run = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
            archive = Path(tmp) / SDIST
            if run.returncode or not archive.is_file():
                raise RuntimeError(
                    f"cannot download Meta's sam2=={VERSION} source distribution from the package index, "
                    f"needed to compare with Meta's implementation.\n$ {' '.join(command)}\n"
                    f"{run.stdout[-2000:]}{run.stderr[-3000:]}\n"
                    "Give the tests network access to PyPI once (the unpacked sdist is cached in "
                    f"{cache_dir()}), or set SAM2_META_SOURCE to a facebookresearch/sam2 checkout."
                )
            digest = hashlib.sha256(archive.read_bytes()).hexdigest()
            if digest != SDIST_SHA256:
                raise RuntimeError(f"{SDIST} has SHA-256 {digest}, not the published {SDIST_SHA256}")
            with tarfile.open(archive) as tar:
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp, filter="data")
                else:  # pragma: no cover - Python without extraction filters
                    tar.extractall(tmp)
            try:
                os.replace(Path(tmp) / f"sam2-{VERSION}", target)
            except OSError:  # another process unpacked it first
                if not (target / "sam2" / "sam2_video_predictor.py").is_file():
                    raise
    return target


# --- torchvision stand-ins (only what sam2/utils/transforms.py uses) -----------------------


class Resize(nn.Module):
    """``torchvision.transforms.Resize((h, w))`` for float tensors: antialiased bilinear."""

    def __init__(self, size: Sequence[int]) -> None:
        super().__init__()
        if isinstance(size, int) or len(size) != 2:
            raise NotImplementedError("this stand-in resizes to an explicit (h, w) only")
        self.size = [int(size[0]), int(size[1])]

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if [img.shape[-2], img.shape[-1]] == self.size:
            return img
        batch = img.unsqueeze(0) if img.dim() == 3 else img
        out = F.interpolate(batch, size=self.size, mode="bilinear", align_corners=False, antialias=True)
        return out[0] if img.dim() == 3 else out


class Normalize(nn.Module):
    """``torchvision.transforms.Normalize(mean, std)`` on a ``[..., C, H, W]`` tensor."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=img.dtype, device=img.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=img.dtype, device=img.device).view(-1, 1, 1)
        return (img - mean) / std


class ToTensor:
    """``torchvision.transforms.ToTensor()``: ``H x W x C`` (array or PIL image) to ``C x H x W`` float."""

    def __call__(self, pic) -> torch.Tensor:
        array = np.asarray(pic)
        if array.ndim == 2:
            array = array[:, :, None]
        tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
        if tensor.dtype == torch.uint8:
            return tensor.to(torch.get_default_dtype()).div(255)
        return tensor


# --- sam2._C stand-in -----------------------------------------------------------------------


def get_connected_componnets(inputs: torch.Tensor) -> list[torch.Tensor]:
    """CPU stand-in of Meta's CUDA ``get_connected_componnets`` (see the module docstring)."""
    from scipy import ndimage

    if inputs.ndim != 4 or inputs.shape[1] != 1:
        raise ValueError("inputs must be [N, 1, H, W] shape")
    if inputs.dtype != torch.uint8:
        raise TypeError("inputs must be a uint8 type")
    n, _, height, width = inputs.shape
    if height % 2 or width % 2:
        raise ValueError("height and width must be even numbers")
    masks = inputs.cpu().numpy()[:, 0] != 0
    rows, cols = np.mgrid[0:height, 0:width]
    block = (rows // 2 * 2) * width + cols // 2 * 2  # flat index of each pixel's 2x2 block corner
    labels = np.zeros((n, height, width), np.int32)
    counts = np.zeros((n, height, width), np.int32)
    for i, mask in enumerate(masks):
        components, count = ndimage.label(mask, structure=np.ones((3, 3), int))
        if count == 0:
            continue
        index = np.arange(1, count + 1)
        first_block = ndimage.minimum(block, components, index).astype(np.int64)
        area = np.bincount(components.ravel(), minlength=count + 1)
        labels[i] = np.where(mask, np.concatenate([[0], first_block + 1])[components], 0)
        counts[i] = np.where(mask, area[components], 0)
    shape = (n, 1, height, width)
    return [
        torch.from_numpy(labels).reshape(shape).to(inputs.device),
        torch.from_numpy(counts).reshape(shape).to(inputs.device),
    ]


def _module(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


def _stand_ins() -> dict[str, types.ModuleType]:
    transforms = _module("torchvision.transforms", Resize=Resize, Normalize=Normalize, ToTensor=ToTensor)
    file_io = _module("iopath.common.file_io", g_pathmgr=None)  # Hiera uses it only to read weights files
    return {
        "torchvision": _module("torchvision", transforms=transforms, __version__="stand-in"),
        "torchvision.transforms": transforms,
        "iopath": _module("iopath"),
        "iopath.common": _module("iopath.common", file_io=file_io),
        "iopath.common.file_io": file_io,
    }


class MetaSam2:
    """Meta's modules, imported by ``meta_package``; builders for its models."""

    def __init__(self, source: Path) -> None:
        self.source = source

    @staticmethod
    def module(name: str) -> types.ModuleType:
        """``sam2.<name>`` (e.g. ``utils.misc``)."""
        return importlib.import_module(f"sam2.{name}")

    def build(
        self,
        checkpoint: str | Path | None = None,
        video: bool = False,
        config: str = TINY_CONFIG,
        overrides: Sequence[str] = (),
    ) -> nn.Module:
        """Meta's ``build_sam2`` (or ``build_sam2_video_predictor``) on CPU with Meta's own config.

        ``overrides`` are Hydra overrides added to Meta's own (``hydra_overrides_extra``).
        Hydra is initialised on Meta's config folder for the call only; any global Hydra
        state of the caller is put back afterwards.
        """
        from hydra import initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra

        build_sam = self.module("build_sam")
        builder = build_sam.build_sam2_video_predictor if video else build_sam.build_sam2
        previous = GlobalHydra.instance().hydra
        GlobalHydra.instance().clear()
        try:
            with (
                initialize_config_dir(config_dir=str(self.source / "sam2"), version_base="1.2"),
                torch.random.fork_rng(devices=[]),
            ):
                model = builder(
                    config,
                    ckpt_path=None if checkpoint is None else str(checkpoint),
                    device="cpu",
                    hydra_overrides_extra=list(overrides),
                )
        finally:
            GlobalHydra.instance().clear()
            if previous is not None:
                GlobalHydra.instance().initialize(previous)
        return model.eval()


@contextlib.contextmanager
def meta_package(source: Path | None = None) -> Iterator[MetaSam2]:
    """Meta's ``sam2`` importable (without its ``__init__``) for the duration of the block."""
    source = Path(source) if source is not None else meta_source()
    if any(name == "sam2" or name.startswith("sam2.") for name in sys.modules):
        raise RuntimeError("a module named sam2 is already imported; Meta's package would clash with it")
    package = _module("sam2", _C=_module("sam2._C", get_connected_componnets=get_connected_componnets))
    package.__path__ = [str(source / "sam2")]
    package.__file__ = None
    sys.modules["sam2"] = package
    try:
        stand_ins = _stand_ins()
        saved = {name: sys.modules.get(name) for name in stand_ins}
        sys.modules.update(stand_ins)
        try:
            for name in META_MODULES:
                importlib.import_module(name)
        finally:
            for name, module in saved.items():
                if module is None:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = module
        yield MetaSam2(source)
    finally:
        for name in [name for name in sys.modules if name == "sam2" or name.startswith("sam2.")]:
            del sys.modules[name]


def randomize(model: nn.Module, seed: int, parameters_only: bool = False) -> nn.Module:
    """Draw every tensor of ``model``'s state dict at random (seeded), in place.

    Scaled so that activations stay of order one through the whole network, as trained
    weights keep them: matrices and convolutions ``N(0, 1 / fan_in)``, normalisation scales
    ``1 + N(0, 0.1)``, other vectors (biases, layer scales) ``N(0, 0.1)``, the prompt
    encoder's random-Fourier matrix ``N(0, 1)`` (as Meta draws it), embeddings and tokens
    ``N(0, 0.2)``. (``randn * 0.2`` everywhere would give hiera-tiny features of ~100 and
    logits clamped at +-32: masks without borders to compare.) Meta's state dict holds
    each tensor once, so any draw is a valid checkpoint. ``parameters_only`` leaves buffers
    (e.g. the rotary frequencies of Meta's SAM 3 ViT) as built.
    """
    generator = torch.Generator().manual_seed(seed)
    tensors = model.named_parameters() if parameters_only else model.state_dict().items()
    with torch.no_grad():
        for name, tensor in tensors:
            noise = torch.randn(tensor.shape, generator=generator)
            if name.endswith("positional_encoding_gaussian_matrix"):
                tensor.copy_(noise)
            elif tensor.ndim == 1 and "norm" in name and name.endswith("weight"):
                tensor.copy_(1 + 0.1 * noise)
            elif tensor.ndim == 1:
                tensor.copy_(0.1 * noise)
            elif name.endswith(".weight"):
                tensor.copy_(noise / tensor[0].numel() ** 0.5)
            else:
                tensor.copy_(0.2 * noise)
    return model


# --- what the comparisons with Meta share (tests/test_meta_parity.py, benchmarks/vs_meta.py) --------


def random_checkpoint(meta: MetaSam2, path: str | Path, seed: int) -> Path:
    """Meta's hiera-tiny with random weights (``randomize``) saved as a Meta ``.pt`` at ``path``.

    The object-score head's bias is raised so that the object counts as present on every frame
    and tracking has masks to compare.
    """
    model = randomize(meta.build(), seed)
    with torch.no_grad():
        model.sam_mask_decoder.pred_obj_score_head.layers[2].bias.fill_(5.0)
    torch.save({"model": model.state_dict()}, path)
    return Path(path)


def assert_masks_agree(ours: np.ndarray, meta_logits: np.ndarray, atol: float, what: str) -> None:
    """Masks equal wherever Meta's logit is farther than ``atol`` from the threshold 0."""
    meta = meta_logits > 0
    differ = ours != meta
    decided = differ & (np.abs(meta_logits) > atol)
    dice = 2 * (ours & meta).sum() / max(1, ours.sum() + meta.sum())
    assert not decided.any(), (
        f"{what}: {int(differ.sum())} of {differ.size} pixels differ from Meta's mask (Dice {dice:.5f}), "
        f"{int(decided.sum())} where |Meta's logit| > {atol:.2g} (up to {float(np.abs(meta_logits[decided]).max()):.3g})"
    )


def natural_image(height: int, width: int, seed: int = 0, t: int = 0) -> np.ndarray:
    """``H x W x 3`` uint8: smooth overlapping ellipses on a tinted background, a ripple and noise.

    Shapes are placed in relative coordinates (the same scene at every size); ``t`` moves
    each shape a little along its own direction (video frames).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    image = np.zeros((height, width, 3)) + rng.uniform(0.2, 0.4, 3)
    for _ in range(12):
        cy, cx = rng.uniform(0.1, 0.9, 2) + t * rng.uniform(-0.02, 0.02, 2)
        ry, rx = rng.uniform(0.05, 0.25, 2)
        angle = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = (dx * np.cos(angle) + dy * np.sin(angle)) / rx
        v = (-dx * np.sin(angle) + dy * np.cos(angle)) / ry
        inside = (0.5 - 0.5 * np.tanh((u * u + v * v - 1) * 10))[..., None]  # a soft edge
        image = image * (1 - inside) + inside * rng.uniform(0, 1, 3)
    image += 0.03 * np.sin(40 * xx + 25 * yy)[..., None]
    image += np.random.default_rng([seed, t]).normal(0, 0.04, image.shape)
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def video_overrides(size: int) -> list[str]:
    """Hydra overrides of Meta's config for input side ``size`` (the memory attention's RoPE grid follows)."""
    grid = f"[{size // 16},{size // 16}]"
    return [
        f"++model.image_size={size}",
        f"++model.memory_attention.layer.self_attention.feat_sizes={grid}",
        f"++model.memory_attention.layer.cross_attention.feat_sizes={grid}",
    ]


def clear_cache() -> None:
    """Remove the unpacked sdist (the next ``meta_source`` downloads it again)."""
    shutil.rmtree(cache_dir(), ignore_errors=True)
