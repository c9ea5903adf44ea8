"""``python -m adapt.app adapter=<run | adapter dir | Hub id | ONNX export> [backend=onnx] [port=7860]``

Loads the adapter once (as ``adapt.predict`` does), serves the page of ``adapt.app.page`` and
saves masks under ``out_dir`` (default ``./masks``). ``host=0.0.0.0`` serves other machines;
``share=true`` asks Gradio for a public link.
"""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from adapt.cli import command_line, register_cli_config, user_errors
from adapt.errors import ConfigError
from adapt.inference.prompt_syntax import quote_argv
from adapt.schema import validate
from adapt.storage import check_writable


def build(cfg: DictConfig):
    """The page for ``configs/app.yaml``'s config (model loaded), not yet served."""
    validate(cfg, "app")
    if not cfg.get("adapter"):
        raise ConfigError("adapter= is required: python -m adapt.app adapter=<run or adapter dir | user/name | "
                          "ONNX export dir backend=onnx>")
    out_dir = check_writable(Path(str(cfg.out_dir)).expanduser(), "out_dir")
    try:
        from adapt.app.page import build_page
    except ImportError as err:
        raise ConfigError(f"the page needs Gradio ({err}): pip install -e \".[app]\"") from None
    from adapt.inference.onnx_backend import load_predictor

    predictor = load_predictor(cfg.adapter, str(cfg.backend), cfg.get("revision"), str(cfg.device),
                               str(cfg.propagation), int(cfg.fill_hole_area), bool(cfg.get("allow_base_mismatch", False)))
    return build_page(predictor, out_dir, str(cfg.get("mask_values") or "card"))


@hydra.main(version_base="1.3", config_path=None, config_name=register_cli_config("app"))
def main(cfg: DictConfig) -> None:
    """Hydra entry point; user errors are printed without a traceback (exit code 2)."""
    with user_errors():
        page = build(cfg)
    print(f"serving on http://{cfg.host}:{cfg.port} (Ctrl+C stops)", flush=True)
    page.launch(server_name=str(cfg.host), server_port=int(cfg.port), share=bool(cfg.share), quiet=True)


if __name__ == "__main__":
    sys.argv = quote_argv(sys.argv)
    command_line(main, "app")
