"""``python -m adapt.app adapter=<run | adapter dir | Hub id | ONNX export> [backend=onnx] [port=7860] [worklist=]``

Loads the adapter once (as ``adapt.predict`` does), serves the page of ``adapt.app.page`` and
saves masks under ``out_dir`` (default ``./masks``). ``worklist=<out>/worklist.csv`` (of
``python -m adapt.annotate``) adds the annotation loop (``adapt.app.annotation``): its cases in order,
their pre-annotations accepted or corrected and saved as labels, and a retrain. ``host=0.0.0.0`` serves other machines;
``share=true`` asks Gradio for a public link. The address is tried first (``check_port``): a port in
use or a host that cannot be bound ends in one message naming ``port=``/``host=`` before the model
loads, not in a server traceback after it.
"""

import errno
import socket
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from adapt.cli import command_line, register_cli_config, user_errors
from adapt.errors import ConfigError
from adapt.inference.prompt_syntax import quote_argv
from adapt.schema import validate
from adapt.storage import check_writable


def check_port(host: str, port: int) -> None:
    """Bind ``host:port`` once and let it go: refuse an address the server could not listen on.

    Raises:
        ConfigError: the port is taken, or the host is not an address of this machine.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise ConfigError(
            f"host={host}: not an address of this machine ({err.strerror}); use host=127.0.0.1 "
            "(this machine) or host=0.0.0.0 (every network)"
        ) from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is no conflict
        try:
            probe.bind(address)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"port={port}: already in use on {host} (another server, perhaps an earlier "
                    f"python -m adapt.app, listens there); stop it or choose another port, e.g. "
                    f"port={port + 1}"
                ) from None
            raise ConfigError(
                f"host={host} port={port}: cannot listen there ({err.strerror or err}); choose "
                "another port= (1024 or above without root) or host=127.0.0.1"
            ) from None


def build(cfg: DictConfig):
    """The page for ``configs/app.yaml``'s config (model loaded), not yet served."""
    validate(cfg, "app")
    if not cfg.get("adapter"):
        raise ConfigError(
            "adapter= is required: python -m adapt.app adapter=<run or adapter dir | user/name | "
            "ONNX export dir backend=onnx>"
        )
    out_dir = check_writable(Path(str(cfg.out_dir)).expanduser(), "out_dir")
    if cfg.get("worklist"):
        from adapt.app.annotation import Loop  # lazy: start-up

        Loop.open(str(cfg.worklist))  # a worklist without its record is refused before the model loads
    check_port(str(cfg.host), int(cfg.port))
    try:
        from adapt.app.page import build_page  # lazy: start-up
    except ImportError as err:
        raise ConfigError(f'the page needs Gradio ({err}): pip install -e ".[app]"') from None
    from adapt.inference.onnx_backend import load_predictor  # lazy: start-up

    predictor = load_predictor(
        cfg.adapter,
        str(cfg.backend),
        cfg.get("revision"),
        str(cfg.device),
        str(cfg.propagation),
        cfg.fill_hole_area,
        bool(cfg.get("allow_base_mismatch", False)),
    )
    return build_page(predictor, out_dir, str(cfg.get("mask_values") or "card"), cfg.get("worklist"), str(cfg.adapter))


@hydra.main(version_base="1.3", config_path=None, config_name=register_cli_config("app"))
def main(cfg: DictConfig) -> None:
    """Hydra entry point; user errors are printed without a traceback (exit code 2)."""
    with user_errors():
        page = build(cfg)
        print(f"serving on http://{cfg.host}:{cfg.port} (Ctrl+C stops)", flush=True)
        try:
            page.launch(server_name=str(cfg.host), server_port=int(cfg.port), share=bool(cfg.share), quiet=True)
        except OSError as err:  # taken between the check and the launch
            raise ConfigError(
                f"port={cfg.port} on {cfg.host}: the server could not listen there ({err}); choose another port="
            ) from None


if __name__ == "__main__":
    sys.argv = quote_argv(sys.argv)
    command_line(main, "app")
