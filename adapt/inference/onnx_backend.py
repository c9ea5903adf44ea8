"""``backend=onnx``: the runner with an exported adapter's graphs in place of the torch model.

``OnnxPredictor`` is a ``Predictor`` whose ``embed`` and ``decode`` run onnxruntime sessions of
the graphs ``python -m adapt.export format=onnx`` wrote (``adapt.inference.graphs``); everything
else is the torch runner's own code: reading and intensities (``adapt.inference.io``), the
plane stack of a volume, pixel resize and normalisation (``adapt.models.primitives.preprocess``),
prompt mapping (``Predictor.model_prompts``), the lone-click multimask rule
(``Predictor.decode``), upsampling and thresholding (``Predictor.logits``, ``masks``), and volumes
through ``predict_scan``. The export holds no memory model, so a volume prompted on one slice is
followed by chaining boxes (``propagation=boxes``), and no semantic head.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from adapt.adapters.io import read_metadata
from adapt.inference import graphs
from adapt.inference.record import RECORD_FILE, is_export, read_record
from adapt.adapters.loading import LoadedAdapter, resolve
from adapt.errors import ArtefactError, ConfigError, check_choice
from adapt.inference.names import BACKENDS
from adapt.inference.runner import Predictor
from adapt.models.backbones import BACKBONES, holes_filled
from adapt.models.primitives import preprocess, resize_image
from adapt.models.sam2 import ModelInfo
from adapt.adapters.loading import load_adapter

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def load_export(path: str | Path) -> LoadedAdapter:
    """An ONNX export folder as a ``LoadedAdapter`` without a torch model (``model=None``): its
    preprocessing, label map and metadata, and the model's input side in ``model_info``."""
    path = Path(path)
    record = read_record(path, format="onnx")
    metadata = read_metadata(path)
    base = record.get("base_model") or {}
    info = ModelInfo(str(base.get("name") or "onnx"), base.get("revision"), True, int(record["image_size"]), False)
    metadata = {**metadata, "export": {k: record.get(k) for k in ("format", "quantize", "source")}}
    if record.get("mask_values") and not metadata.get("mask_values"):  # the record alone says how masks are stored
        metadata.update(
            mask_values=record["mask_values"], label_map=metadata.get("label_map") or record.get("label_map")
        )
    return LoadedAdapter(
        None,
        dict(record.get("preprocessing") or {}),
        dict(record.get("label_map") or {}),  # type: ignore[arg-type]
        metadata,
        info,
        path,
    )


def _session(file: Path, device: str, threads: int | None) -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError('backend=onnx needs onnxruntime: pip install -e ".[export]"') from None
    if not file.is_file():
        raise ArtefactError(f"{file} is missing from the export; export the adapter again (python -m adapt.export)")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    kind = "cpu" if device in ("auto", "cpu") else device.split(":")[0]
    if kind == "cuda" and PROVIDERS["cuda"] not in ort.get_available_providers():
        raise ConfigError(
            f"device={device}: this onnxruntime has no CUDA provider (pip install onnxruntime-gpu), or use device=cpu"
        )
    providers = [PROVIDERS.get(kind, PROVIDERS["cpu"])] + ([PROVIDERS["cpu"]] if kind == "cuda" else [])
    try:
        return ort.InferenceSession(str(file), sess_options=options, providers=providers)
    except Exception as err:  # onnxruntime raises its own types for truncated or foreign files
        raise ArtefactError(
            f"{file}: onnxruntime cannot load it ({type(err).__name__}: {err}); "
            "export the adapter again (python -m adapt.export)"
        ) from None


class OnnxSam2:
    """The exported graphs behind the call convention the runner uses for SAM2's decoder
    (``adapt.models.primitives.decode``: ``model(image_embeddings=..., multimask_output=..., **prompts)``
    with ``pred_masks [B, 1, M, h, w]`` and ``iou_scores [B, 1, M]`` out), plus ``encode`` for pixels.

    Args:
        folder: the export folder; ``files``: its graph files by role (``export.json``).
        device, threads: onnxruntime provider and intra-op threads.
    """

    def __init__(
        self,
        folder: Path,
        files: dict[str, str],
        device: str = "auto",
        threads: int | None = None,
        size: int | None = None,
        low_res: int | None = None,
    ):
        names = {
            "image_encoder": graphs.ENCODER_FILE,
            "decoder": graphs.DECODER_FILE,
            "decoder_multimask": graphs.MULTIMASK_FILE,
            **files,
        }
        self.sessions = {key: _session(folder / name, device, threads) for key, name in names.items()}
        if size is not None:
            self._check_sizes(folder, names, size, low_res or size // 4)

    def _check_sizes(self, folder: Path, names: dict[str, str], size: int, low: int) -> None:
        """Refuse graphs traced for another input side than ``export.json``'s ``image_size`` (``low``: the
        side of the decoder's logits, 4 x the backbone's embedding grid)."""
        expected = {"image_encoder": [size, size], "decoder": [low, low], "decoder_multimask": [low, low]}
        for key, session in self.sessions.items():
            node = session.get_inputs()[0] if key == "image_encoder" else session.get_outputs()[0]
            found = list(node.shape[2:])
            if key in expected and all(isinstance(v, int) for v in found) and found != expected[key]:
                raise ArtefactError(
                    f"{folder / names[key]}: {node.name} is {found}, but {folder / 'export.json'} "
                    f"records image_size {size} ({expected[key]}): the graph belongs to another "
                    "export; export the adapter again (python -m adapt.export)"
                )

    @property
    def projects(self) -> bool:
        """The encoder graph holds a learned input projection: it takes the resized C-channel image."""
        return self.sessions["image_encoder"].get_inputs()[0].name == graphs.IMAGE

    def encode(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        """Normalised pixels ``[B, 3, S, S]`` (or, for ``projects``, the resized image ``[B, C, S, S]``)
        -> the decoder's three image embeddings."""
        name = graphs.IMAGE if self.projects else graphs.PIXELS
        outputs = self.sessions["image_encoder"].run(list(graphs.EMBEDDINGS), {name: pixels.float().cpu().numpy()})
        return [torch.from_numpy(o) for o in outputs]

    def __call__(
        self,
        image_embeddings: list[torch.Tensor],
        multimask_output: bool,
        input_boxes: Any = None,
        input_points: Any = None,
        input_labels: Any = None,
        input_masks: Any = None,
        **unused: Any,
    ) -> Any:
        if input_masks is not None:
            raise ConfigError(
                "mask prompts (correction clicks) are not part of the ONNX export; use backend=torch or clicks=off"
            )
        coords, labels = graphs.prompt_points(
            {"input_boxes": input_boxes, "input_points": input_points, "input_labels": input_labels}
        )
        feeds = {name: e.detach().float().cpu().numpy() for name, e in zip(graphs.EMBEDDINGS, image_embeddings)}
        feeds.update(point_coords=coords, point_labels=labels)
        session = self.sessions["decoder_multimask" if multimask_output else "decoder"]
        masks, iou = session.run(list(graphs.OUTPUTS), feeds)
        return SimpleNamespace(pred_masks=torch.from_numpy(masks)[:, None], iou_scores=torch.from_numpy(iou)[:, None])


class OnnxPredictor(Predictor):
    """``Predictor`` over an export folder: same prompts, same masks, graphs run by onnxruntime.

    ``model`` is an ``OnnxSam2``, which answers the runner's decoder call (``Predictor.decode``, which the
    batched engine ``adapt.inference.engine`` uses too) as ``Sam2Model`` does; ``embed`` runs the
    encoder graph after the torch preprocessing.

    Args:
        export: the export folder (``python -m adapt.export format=onnx out=...``) or its ``load_export``.
        device: ``auto``/``cpu`` (CPU provider) or ``cuda`` (needs ``onnxruntime-gpu``).
        propagation: ``auto`` or ``boxes`` (the export has no memory model); ``memory`` is refused.
        fill_hole_area: kept for the runner's interface (memory propagation only).
        threads: onnxruntime intra-op threads (default: onnxruntime's choice).
    """

    def __init__(
        self,
        export: str | Path | LoadedAdapter,
        device: str = "auto",
        propagation: str = "auto",
        fill_hole_area: int | None = None,
        threads: int | None = None,
    ):
        if propagation == "memory":
            raise ConfigError(
                "propagation=memory needs SAM2's memory model, which an ONNX export does not hold; "
                "use propagation=boxes (or auto) with backend=onnx, or backend=torch"
            )
        loaded = export if isinstance(export, LoadedAdapter) else load_export(export)
        record = read_record(loaded.path, format="onnx")
        backbone = BACKBONES[str((loaded.metadata.get("model") or {}).get("backbone") or "sam2")]
        self.loaded, self.propagation = loaded, "boxes"
        self.fill_hole_area = holes_filled(fill_hole_area, backbone.key)
        self.device, self._video = torch.device("cpu"), None
        self.size = int(loaded.model_info.image_size)
        self.model = OnnxSam2(
            loaded.path,
            (record.get("graphs") or {}).get("files") or {},
            device,
            threads,
            self.size,
            backbone.low_res_side(self.size),
        )
        self.quantize = str(record.get("quantize") or "none")
        pixels = dict(record.get("pixels") or {})  # the backbone's mean/std, recorded at export
        self.stats = {key: tuple(pixels[key]) for key in ("mean", "std") if key in pixels}

    def embed(self, images: np.ndarray) -> list[torch.Tensor]:
        """Image embeddings of planes ``[B, C, H, W]`` in [0, 1]: the torch preprocessing, then the encoder graph
        (which projects and normalises the resized planes itself when it holds an input projection)."""
        planes = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        if self.model.projects:
            return self.model.encode(resize_image(planes, self.size))
        return self.model.encode(preprocess(planes, self.size, **self.stats))

    def classify(self, images: np.ndarray) -> np.ndarray:
        raise ConfigError("an ONNX export holds the promptable model only; a semantic adapter needs backend=torch")

    def video_model(self) -> None:
        """No memory model in an export: volumes are followed by chaining boxes."""
        return None


def check_backend(adapter: str | Path, backend: str) -> None:
    """Refuse a backend that cannot run ``adapter``.

    Raises:
        ConfigError: an unknown backend, an ONNX export given to torch or an adapter given to onnx.
    """
    check_choice("backend", backend, BACKENDS)
    onnx_export = is_export(adapter) and read_record(adapter).get("format") == "onnx"
    if backend == "onnx" and not onnx_export:
        raise ConfigError(
            f"backend=onnx runs an ONNX export, and adapter={adapter} is not one (no {RECORD_FILE}); make it with "
            f"python -m adapt.export adapter={adapter} format=onnx out=DIR, then pass adapter=DIR"
        )
    if backend == "torch" and onnx_export:
        raise ConfigError(f"adapter={adapter} is an ONNX export: run it with backend=onnx")


def adapter_preprocessing(adapter: str | Path, backend: str = "torch", revision: str | None = None) -> dict[str, Any]:
    """The preprocessing ``adapter`` records (spacing, slice axis, intensities, ``nonfinite``),
    read without loading any weights, so that inputs can be checked before the model loads.

    Raises:
        ConfigError / ModelNotFoundError: as ``load_predictor`` would.
    """
    check_backend(adapter, backend)
    if backend == "onnx":
        return dict(read_record(adapter).get("preprocessing") or {})
    return dict(read_metadata(resolve(adapter, revision)).get("preprocessing") or {})


def load_predictor(
    adapter: str | Path,
    backend: str = "torch",
    revision: str | None = None,
    device: str = "auto",
    propagation: str = "auto",
    fill_hole_area: int | None = None,
    allow_base_mismatch: bool = False,
) -> Predictor:
    """The runner of ``adapter`` on ``backend``: a ``Predictor`` over the adapter (torch) or an
    ``OnnxPredictor`` over an export folder (onnx). ``allow_base_mismatch``: as ``load_adapter``'s.

    Raises:
        ConfigError: as ``check_backend``.
    """
    check_backend(adapter, backend)
    if backend == "onnx":
        return OnnxPredictor(adapter, device, propagation, fill_hole_area)

    loaded = load_adapter(adapter, revision=revision, video=False, allow_base_mismatch=allow_base_mismatch)
    return Predictor(loaded, device, propagation, fill_hole_area)
