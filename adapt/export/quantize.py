"""int8 weights for exported graphs: onnxruntime's dynamic quantisation.

``quantize_dynamic`` stores the weights of the graph's matrix multiplications (``MatMul``,
``Gemm``: every linear layer of Hiera's attention and MLPs and of the mask decoder, where
almost all of SAM2's parameters are) as int8 with one scale per tensor; activations are
quantised on the fly, per batch, so no calibration data is needed. Convolutions (the patch
embedding, the FPN necks, the decoder's upscaling) stay float32: they hold few weights, and
onnxruntime's integer convolution is no faster on CPU. What the quantisation costs in accuracy
is measured, not assumed: ``python -m adapt.evaluate backend=onnx`` puts an int8 export next
to its torch adapter, and ``benchmarks/export.py`` reports frames/s and Dice of both.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Iterator, Sequence

from adapt.errors import ConfigError

#: Operators whose weights become int8.
OPERATORS = ("MatMul", "Gemm")


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime's quantiser logs a warning on the root logger for every tensor whose type its
    shape inference cannot follow (the Hiera window slices); those tensors are simply left in float."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_graph(source: str | Path, target: str | Path, operators: Sequence[str] = OPERATORS) -> Path:
    """Write ``source`` (a float32 ONNX graph) with int8 weights to ``target``.

    Raises:
        ConfigError: onnxruntime's quantisation tools are not installed.
    """
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        raise ConfigError('quantize=int8 needs onnxruntime: pip install -e ".[export]"') from None
    with _quiet_root_logger():
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, op_types_to_quantize=list(operators))
    return Path(target)


def quantize_graphs(paths: dict[str, Path], out_dir: str | Path) -> dict[str, Path]:
    """Quantise each graph of ``paths`` into ``out_dir`` under the same file name."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return {key: quantize_graph(path, out_dir / path.name) for key, path in paths.items()}


def weight_bytes(paths: dict[str, Path]) -> int:
    """Total size of the graph files, in bytes (to report what int8 saves)."""
    return sum(Path(p).stat().st_size for p in paths.values())
