"""``python -m adapt.export``: write an adapter, merged into its base, for deployment.

::

    python -m adapt.export adapter=outputs/demo/<run> format=onnx out=export/demo
    python -m adapt.export adapter=outputs/demo/<run> format=onnx quantize=int8 out=export/demo-int8
    python -m adapt.export adapter=user/sam2-ct-liver format=safetensors out=export/merged

``format=onnx`` writes ``image_encoder.onnx``, ``prompt_decoder.onnx``,
``prompt_decoder_multimask.onnx``, ``export.json`` (preprocessing, label map, prompt encoding)
and ``sam2_adapt.json``; run it with ``python -m adapt.predict adapter=<out> backend=onnx ...``.
``format=safetensors`` writes a folder that ``transformers.Sam2Model.from_pretrained`` loads.
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig

from adapt.cli import command_line, register_cli_config, user_errors
from adapt.outputs import claimed
from adapt.errors import ConfigError
from adapt.schema import validate


def run(cfg: DictConfig) -> Path:
    """Export as ``configs/export.yaml`` says; returns the output folder."""
    from adapt.export.build import export_adapter  # lazy: start-up

    validate(cfg, "export")
    if not cfg.get("adapter") or not cfg.get("out"):
        raise ConfigError(
            "adapter= and out= are required: python -m adapt.export adapter=<run or adapter dir | "
            "user/name> format=onnx|safetensors [quantize=int8] out=DIR"
        )
    return export_adapter(
        cfg.adapter,
        str(cfg.format),
        cfg.out,
        str(cfg.quantize),
        cfg.get("revision"),
        bool(cfg.overwrite),
        bool(cfg.check),
        bool(cfg.get("allow_base_mismatch", False)),
    )


@hydra.main(version_base="1.3", config_path=None, config_name=register_cli_config("export"))
def main(cfg: DictConfig) -> None:
    """Hydra entry point; user errors are printed without a traceback (exit code 2)."""
    from adapt.inference.record import RECORD_FILE  # lazy: start-up

    with user_errors(), claimed(cfg.get("out"), "out"):
        out = run(cfg)
        record = json.loads((out / RECORD_FILE).read_text())
        print(f"wrote {sorted(p.name for p in out.iterdir())} to {out}")
        if record.get("check"):
            print(
                "check against torch (one random plane): "
                + ", ".join(f"{k}={v:.3g}" for k, v in record["check"].items())
            )


if __name__ == "__main__":
    command_line(main, "export")
