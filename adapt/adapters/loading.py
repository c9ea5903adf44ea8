"""Load an adapter (local folder, run directory or Hub repo) onto the base it was trained on.

An adapter is only useful on the exact base it was trained on, so ``sam2_adapt.json``
records the base model id and revision (and the image size, and whether the weights were
pretrained or seeded random ones) and ``load_adapter`` rebuilds that base itself. A base
passed explicitly must be the same model -- same Hub id, same architecture -- or it is
refused before any weight is touched, rather than failing later on a shape error or,
worse, loading silently onto the wrong weights. A folder with broken files (truncated or
foreign weights, broken JSON, NaN weights) is refused by name before any model is loaded.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from torch import nn

from adapt.adapters.io import CONFIG_FILE, METADATA_FILE, WEIGHTS_FILE, load_adapter_weights, read_metadata
from adapt.errors import ArtefactError, ConfigError, ModelNotFoundError
from adapt.guards import check_weights
from adapt.models.provenance import base_fingerprint, check_fingerprint, describe
from adapt.models.backbones import BACKBONES, TINY_NAMES, backbone_of, backbone_of_type
from adapt.models.families import trunk_fields
from adapt.models.sam2 import HIERA_ARCHITECTURES, HUB_IDS, ModelInfo, load_sam2, random_config, warn_once

log = logging.getLogger(__name__)

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def default_api() -> Any:
    """``huggingface_hub.HfApi()``: token from ``HF_TOKEN`` or ``hf auth login``."""
    from huggingface_hub import HfApi

    return HfApi()


@dataclass
class LoadedAdapter:
    """A ready-to-use adapted SAM2 and what is needed to feed it.

    Attributes:
        model: base model with the adapter applied (or merged), in eval mode.
        preprocessing: the data card's intensity preprocessing the adapter was trained with.
        label_map: label names and values of the training data.
        metadata: the full ``sam2_adapt.json``.
        model_info: what base was loaded (id, revision, image size, pretrained or not).
        path: the local directory the adapter was read from.
    """

    model: nn.Module
    preprocessing: dict[str, Any]
    label_map: dict[str, Any]
    metadata: dict[str, Any] = field(repr=False)
    model_info: ModelInfo
    path: Path

    @property
    def prompt(self) -> dict[str, Any]:
        """The prompt protocol of training (kind, jitter, ...)."""
        return dict(self.metadata.get("prompt") or {})


def architecture(config: Any) -> dict[str, Any]:
    """The fields of a model config that decide whether adapter weights fit (not image size).

    SAM2's fields are as recorded since the first release; another backbone's start with its
    ``backbone`` key, so two backbones never compare equal.
    """
    backbone = config.vision_config.backbone_config
    row = backbone_of_type(str(config.model_type))
    if row.key != "sam2":
        fields = {
            "backbone": row.key,
            **trunk_fields(config),
            "fpn_hidden_size": config.vision_config.fpn_hidden_size,
            "mask_decoder_hidden_size": config.mask_decoder_config.hidden_size,
        }
        return json.loads(json.dumps(fields))  # tuples as lists: compares equal to what a JSON file records
    return {
        "hidden_size": backbone.hidden_size,
        "blocks_per_stage": list(backbone.blocks_per_stage),
        "embed_dim_per_stage": list(backbone.embed_dim_per_stage),
        "num_attention_heads_per_stage": list(backbone.num_attention_heads_per_stage),
        "global_attention_blocks": list(backbone.global_attention_blocks),
        "fpn_hidden_size": config.vision_config.fpn_hidden_size,
        "mask_decoder_hidden_size": config.mask_decoder_config.hidden_size,
    }


def expected_architecture(metadata: dict[str, Any]) -> dict[str, Any] | None:
    """The base architecture an adapter needs: recorded, or known from its base id; else ``None``."""
    if metadata.get("architecture"):
        return dict(metadata["architecture"])
    name = (metadata.get("base_model") or {}).get("name")
    if name in TINY_NAMES or name in HIERA_ARCHITECTURES:
        return architecture(random_config(name))
    return None


def adapter_dir(path: str | Path) -> Path:
    """The adapter folder of ``path``: itself, or the ``adapter/`` subfolder of a run directory.

    Raises:
        ConfigError: neither holds ``adapter_config.json`` (or a merged model's ``config.json``).
    """
    path = Path(path)
    for candidate in (path, path / "adapter"):
        merged = (candidate / METADATA_FILE).exists() and (candidate / "config.json").exists()
        if (candidate / CONFIG_FILE).exists():
            check_adapter_files(candidate)
            return candidate
        if merged:
            return candidate
    raise ConfigError(
        f"{path} is not an adapter: neither it nor {path / 'adapter'} holds {CONFIG_FILE}. "
        "Pass a run directory written by `python -m adapt.train` or its adapter/ folder."
    )


def check_adapter_files(path: Path) -> None:
    """Refuse, before any model is loaded, an adapter folder whose files are broken.

    ``sam2_adapt.json`` must be there (it is named first: nothing else can be read without it),
    the JSON files must parse, the weights file must be there, readable as safetensors and
    finite: a copy cut short, a file of another format or a diverged run's NaN weights would
    otherwise fail later as "does not fit the base", or score Dice 0 without a word.

    Raises:
        ArtefactError: names the file and how to get a good copy.
    """
    fix = (
        "copy the adapter folder again from its run (<run dir>/adapter), pull it again "
        "(python -m adapt.hub pull repo_id=<user/name> out_dir=DIR), or train it again"
    )
    if not (path / METADATA_FILE).is_file():
        raise ArtefactError(
            f"{path / METADATA_FILE} is missing: without it the adapter's base model, preprocessing "
            f"and labels are unknown (a folder written by plain peft, or a copy without it); {fix}"
        )
    for name in (CONFIG_FILE, METADATA_FILE):
        if (path / name).exists():
            try:
                content = json.loads((path / name).read_text())
                if not isinstance(content, dict):
                    raise ValueError("not a JSON object")
                if name == CONFIG_FILE and "peft_type" not in content:  # every layout names its kind there
                    raise ValueError("no peft_type: not an adapter's config")
            except (ValueError, UnicodeDecodeError) as err:
                raise ArtefactError(f"{path / name}: broken ({type(err).__name__}: {err}); {fix}") from None
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        if (path / "adapter_model.bin").is_file():  # peft's older format: read by peft itself
            return
        raise ArtefactError(f"{weights} is missing: the folder holds the adapter's config but not its weights; {fix}")
    try:
        tensors = load_file(weights)
    except Exception as err:  # safetensors raises its own error types for truncated or foreign files
        raise ArtefactError(
            f"{weights}: not a readable safetensors file, it is truncated or of another format "
            f"({type(err).__name__}: {err}); {fix}"
        ) from None
    check_weights(
        tensors,
        weights,
        "the adapter was saved from a diverged run (its outputs would be meaningless); "
        "train it again (lower optim.lr) or use another adapter",
    )


def check_peft_weights_fit(model: nn.Module, weights: Path) -> None:
    """Refuse a peft adapter whose weights file does not hold the weights its config describes.

    peft loads a state dict non-strictly and only warns about missing keys, so a weights file
    of another adapter or model would leave the new LoRA layers at their initial values and
    the adapter would silently act as the bare base.

    Raises:
        ArtefactError: names the file and how many weights are missing.
    """
    from peft import PeftModel, get_peft_model_state_dict
    from safetensors import safe_open

    if not isinstance(model, PeftModel) or not weights.is_file():
        return
    with safe_open(str(weights), framework="pt") as file:
        stored = set(file.keys())
    expected = set(get_peft_model_state_dict(model))
    missing = sorted(expected - stored)
    if missing:
        raise ArtefactError(
            f"{weights} does not fit the adapter its {CONFIG_FILE} describes: {len(missing)} of "
            f"{len(expected)} weights are missing (e.g. {missing[:2]}); it belongs to another adapter "
            "or model. Copy the adapter folder again from its run, or pull it again from the Hub"
        )


def resolve(
    source: str | Path,
    revision: str | None = None,
    api: Any = None,
    local_dir: str | Path | None = None,
    key: str = "adapter",
) -> Path:
    """A local adapter folder for ``source``: a path as is, a Hub repo id downloaded (or cached). ``key``: the
    option that gave it (``compare=`` names another adapter than ``adapter=``), named in the errors.

    Raises:
        ModelNotFoundError: the repo is neither cached nor downloadable (offline, private, typo).
        ConfigError: ``source`` is neither an existing path nor a repo id.
    """
    if Path(source).exists():
        return adapter_dir(source)
    source = str(source)
    if not REPO_ID.match(source):
        raise ConfigError(f"{key}={source!r}: no such directory, and not a Hub repo id of the form user/name")
    api = api or default_api()
    try:
        path = api.snapshot_download(repo_id=source, revision=revision, local_dir=local_dir)
    except Exception as err:  # huggingface_hub raises many types: offline, 401, 404, bad revision
        rev = f" (revision {revision})" if revision else ""
        raise ModelNotFoundError(
            f"cannot download the adapter {source}{rev}: {type(err).__name__}: {err}\n"
            f"{source!r} is not a local directory, so it was looked up on the Hub. Fix one of: check the "
            "repo id and revision, log in (`hf auth login` or HF_TOKEN) for a private repo, go online once "
            f"(unset HF_HUB_OFFLINE), or download it elsewhere with `hf download {source} --local-dir DIR` "
            "and pass the directory."
        ) from None
    return adapter_dir(path)


def _base_name(metadata: dict[str, Any]) -> str:
    base = metadata.get("base_model") or {}
    if not base.get("name"):
        raise ConfigError(f"{METADATA_FILE} has no base_model.name: the adapter cannot say what it was trained on")
    return str(base["name"])


def check_base(metadata: dict[str, Any], base: str | nn.Module) -> None:
    """Refuse a base model that is not the one the adapter was trained on.

    A Hub id must equal the recorded one; a local directory or a model object must have the
    recorded architecture (when it is known).

    Raises:
        ConfigError: the id or the architecture differs; says which base to use.
    """
    expected = _base_name(metadata)
    check_backbone(metadata, base)
    if isinstance(base, (str, Path)) and not Path(base).is_dir():
        given = HUB_IDS.get(str(base), str(base)).removeprefix("random:")
        if given != expected:
            raise ConfigError(
                f"base={str(base)!r} does not match the adapter's base model {expected!r} "
                f"(revision {(metadata.get('base_model') or {}).get('revision')}); an adapter only works on "
                "the base it was trained on. Drop base= to load the recorded one."
            )
        return
    if isinstance(base, nn.Module):
        name = getattr(base.config, "_name_or_path", "") or ""
        if REPO_ID.match(name) and not Path(name).exists() and name != expected:
            raise ConfigError(f"the base model passed was loaded from {name!r}, but the adapter needs {expected!r}")
        config = base.config
    else:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(str(base))
    wanted = expected_architecture(metadata)
    if wanted is None:
        log.warning("architecture of %s is unknown offline; trusting the base model passed", expected)
        return
    got = architecture(config)
    if got != wanted:
        diff = {k: (got[k], wanted[k]) for k in wanted if got.get(k) != wanted[k]}
        raise ConfigError(
            f"the base model passed has another architecture than the adapter's base {expected!r}: "
            f"{diff} (given, expected). Use the SAM2 size the adapter was trained on."
        )


def check_backbone(metadata: dict[str, Any], base: str | Path | nn.Module) -> None:
    """Refuse a base of another backbone than the adapter's (``model.backbone`` in ``sam2_adapt.json``).

    Adapters written before backbones were recorded were trained on SAM2.

    Raises:
        ConfigError: both backbones named, and how to load the right one.
    """
    recorded = BACKBONES.get(str((metadata.get("model") or {}).get("backbone") or "sam2"), BACKBONES["sam2"])
    given = backbone_of_type(str(base.config.model_type)) if isinstance(base, nn.Module) else backbone_of(str(base))
    if given.key != recorded.key:
        raise ConfigError(
            f"the adapter was trained on the {recorded.title} backbone ({_base_name(metadata)}), but the "
            f"base given ({type(base).__name__ if isinstance(base, nn.Module) else base}) is "
            f"{given.title}: an adapter's weights only fit the backbone it was trained on. Drop base= "
            "to load the recorded one"
        )


def load_base(
    metadata: dict[str, Any],
    base: str | nn.Module | None = None,
    checkpoint: str | None = None,
    video: bool = False,
    allow_base_mismatch: bool = False,
    where: Any = "",
) -> tuple[nn.Module, ModelInfo]:
    """The adapter's recorded base (same id, revision, image size, random seed), or ``base`` once checked.

    Also the zero-shot model an adapter is compared with (``adapt.evaluate compare=none``). The
    weights loaded are fingerprinted and compared with the adapter's ``base_fingerprint``
    (``adapt.models.provenance``): other weights under the same name are refused unless
    ``allow_base_mismatch`` (then a loud warning).
    """
    recorded = metadata.get("model") or {}
    if isinstance(base, nn.Module):
        check_base(metadata, base)
        name = getattr(base.config, "_name_or_path", "") or _base_name(metadata)
        size = int(base.config.prompt_encoder_config.image_size)
        return base, ModelInfo(name, None, bool(recorded.get("pretrained", True)), size, video)
    if base is not None:
        check_base(metadata, base)
    name = str(base) if base is not None else _base_name(metadata)
    local = Path(name).is_dir()  # a copy of the base on disk: no Hub revision applies
    fingerprint = metadata.get("base_fingerprint") or {}
    pinned = fingerprint.get("revision") if fingerprint.get("kind") == "hub" and fingerprint.get("id") == name else None
    # the commit trained on, where no revision was asked for: the same weights, not whatever main is now
    revision = None if local else (metadata.get("base_model") or {}).get("revision") or pinned
    checkpoint = checkpoint or recorded.get("checkpoint")
    if checkpoint and not Path(checkpoint).exists():
        raise ModelNotFoundError(
            f"the adapter's base is {describe(metadata.get('base_fingerprint') or {'kind': 'checkpoint', 'file': checkpoint, 'architecture': name})}, "
            f"and {checkpoint!r} is not on this machine; pass checkpoint=<path to that .pt file>"
        )
    if not recorded.get("pretrained", True) and name not in TINY_NAMES and not checkpoint and not local:
        # Trained on seeded random weights of this architecture: rebuild exactly those.
        warn_once(
            f"adapter was trained on RANDOM weights of {name} (offline/test run)", f"random:{HUB_IDS.get(name, name)}"
        )
        name = f"random:{name}"
    model, info = load_sam2(
        name,
        revision=revision,
        checkpoint=checkpoint,
        image_size=recorded.get("image_size"),
        video=video,
        offline_fallback="random" if checkpoint else "error",
    )
    check_fingerprint(metadata.get("base_fingerprint"), base_fingerprint(info), where, allow_base_mismatch)
    return model, info


def load_adapter(
    source: str | Path,
    revision: str | None = None,
    base: str | nn.Module | None = None,
    checkpoint: str | None = None,
    video: bool | None = None,
    trainable: bool = False,
    api: Any = None,
    allow_base_mismatch: bool = False,
) -> LoadedAdapter:
    """Load an adapter (Hub repo id, run directory or adapter folder) onto its base model.

    Args:
        source: ``user/name`` on the Hub, a run directory or an adapter folder; a merged
            model folder (``merge=true``) loads as is.
        revision: Hub branch, tag or commit of the adapter repo.
        base: a base model id, directory or model to use instead of the recorded one; it must
            be the same model (refused otherwise).
        checkpoint: the Meta ``.pt`` checkpoint when the base was built from one.
        video: load ``Sam2VideoModel``; default: as in training.
        trainable: keep the adapter weights trainable (to continue training).
        api: an ``HfApi``-like client (tests pass a local one).
        allow_base_mismatch: load onto weights whose fingerprint differs from the recorded one
            (warned loudly); refused otherwise.

    Raises:
        ConfigError: not an adapter, a mismatching ``base``, or other weights than the adapter's.
        ModelNotFoundError: the adapter or its base cannot be had.
    """
    path = resolve(source, revision, api)
    metadata = read_metadata(path)
    if not metadata:
        what = (
            f"{path / METADATA_FILE} is empty" if (path / METADATA_FILE).exists() else f"{path} has no {METADATA_FILE}"
        )
        raise ConfigError(f"{what}: it was not written by sam2-adapt, so its base model is unknown")
    video = bool((metadata.get("model") or {}).get("video", False)) if video is None else video
    if not (path / CONFIG_FILE).exists():  # a merged model: the weights are the whole model
        if base is not None:
            raise ConfigError(f"{path} is a merged model (adapter already folded in); base= does not apply")
        model, info = load_sam2(str(path), video=video)
    else:
        base_model, info = load_base(metadata, base, checkpoint, video, allow_base_mismatch, path)
        try:
            model = load_adapter_weights(base_model, path, trainable=trainable)
        except (RuntimeError, ValueError, KeyError) as err:
            raise ConfigError(f"the adapter in {path} does not fit the base {info.name!r}: {err}") from None
        check_peft_weights_fit(model, path / WEIGHTS_FILE)
    return LoadedAdapter(
        model.eval(),
        dict(metadata.get("preprocessing") or {}),
        dict(metadata.get("label_map") or {}),
        metadata,
        info,
        path,
    )
