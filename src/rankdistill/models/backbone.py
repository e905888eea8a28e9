"""Loading Hugging Face backbones for students: name resolution, layer truncation, saved-model metadata.

A directory written by rankdistill holds ``rankdistill.json`` (architecture, pooling, similarity, score
space, max lengths), next to the usual Hugging Face and sentence-transformers files, so that
:func:`detect_arch` can tell a bi-encoder from a cross-encoder; for directories written by other tools it
falls back to the sentence-transformers and transformers configs.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from rankdistill.errors import UserInputError
from rankdistill.io import atomic_write
from rankdistill.models import model_id, resolve_model

logger = logging.getLogger(__name__)

METADATA_FILE = "rankdistill.json"
METADATA_FORMAT = "rankdistill-model/1"


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars (we log one line of our own instead)."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    bars = not hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(before)
        if not bars:
            hf_logging.enable_progress_bar()


_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def offline_unless_hub_reachable(timeout: float = 3.0) -> bool:
    """Switch huggingface_hub to offline mode (the local cache only) when its endpoint cannot be reached.

    Without a network every hub request is retried with back-off, for each file a load asks for: a name that
    is not cached took 90 s to fail, and a cached one waited as long before the cache was used. One TCP
    connection to the endpoint (``HF_ENDPOINT``, ``timeout`` seconds) decides instead, once per process. No
    probe where ``HF_HUB_OFFLINE`` is already set or a proxy is configured (a direct connection says nothing
    then). Returns whether the hub is taken as offline."""
    import os
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    global _HUB_PROBED
    chosen = any(v in os.environ for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))  # 0 too: the user decided
    if constants.HF_HUB_OFFLINE or chosen or _HUB_PROBED or any(os.environ.get(v) for v in _PROXY_VARIABLES):
        return bool(constants.HF_HUB_OFFLINE)
    _HUB_PROBED = True
    url = urlparse(constants.ENDPOINT)
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((url.hostname or "", port), timeout=timeout).close()
    except OSError as e:
        constants.HF_HUB_OFFLINE = True
        logger.info("the Hugging Face hub (%s) cannot be reached (%s): models are loaded from the local cache "
                    "only (set HF_HUB_OFFLINE=1 to skip this check)", url.hostname, e.strerror or e)
    return bool(constants.HF_HUB_OFFLINE)


_HUB_PROBED = False


@contextlib.contextmanager
def model_load_errors(name: str | None, fix: str = "give a local model directory (no network here) or the default "
                                                   "encoder") -> Iterator[None]:
    """What transformers and sentence-transformers raise for a folder that is not a model (no usable config: a
    ``ValueError``) or a name that cannot be fetched (an ``OSError``), as one :class:`UserInputError` line.
    Before a hub name is loaded, :func:`offline_unless_hub_reachable` decides whether the hub is asked at all."""
    if name is not None and not Path(str(name)).expanduser().is_dir():
        offline_unless_hub_reachable()
    try:
        yield
    except UserInputError:
        raise
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserInputError(f"cannot load model {name!r} ({first})", fix=fix) from None


def layer_list(model: nn.Module) -> nn.ModuleList:
    """The transformer's stack of layers: the shallowest ``ModuleList`` as long as ``num_hidden_layers``."""
    n = getattr(model.config, "num_hidden_layers", None)
    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return module
    raise UserInputError(f"cannot find the layer stack of {type(model).__name__} (num_hidden_layers={n})",
                         fix="drop --layers for this architecture")


def truncate_layers(model: nn.Module, layers: int | None) -> None:
    """Keep the first ``layers`` transformer layers (in place) and record it in ``model.config``."""
    if layers is None:
        return
    stack = layer_list(model)
    if not 1 <= layers <= len(stack):
        raise UserInputError(f"--layers {layers} is out of range: the model has {len(stack)} layers",
                             fix=f"give 1..{len(stack)}")
    if layers == len(stack):
        return
    del stack[layers:]
    model.config.num_hidden_layers = layers


def transformer_dir(path: str) -> str:
    """For a sentence-transformers folder whose transformer sits in a sub-folder (``0_Transformer``), that
    sub-folder; otherwise ``path``."""
    modules = Path(path) / "modules.json"
    if not modules.is_file() or (Path(path) / "config.json").is_file():
        return path
    with contextlib.suppress(json.JSONDecodeError, TypeError, AttributeError):
        for entry in json.loads(modules.read_text()):
            if str(entry.get("type", "")).endswith("Transformer") and entry.get("path"):
                return str(Path(path) / entry["path"])
    return path


def load_encoder(name_or_path: str | None, layers: int | None = None) -> tuple[nn.Module, object, str]:
    """``(AutoModel, tokenizer, resolved path)`` for an encoder name or directory, truncated to ``layers``.

    Weights are loaded in float32 whatever dtype the checkpoint was saved in: transformers keeps a bf16 or
    fp16 checkpoint's dtype, and AdamW steps of 1e-5 on bf16 weights round away (a student that does not
    learn); mixed precision comes from autocast instead."""
    from transformers import AutoModel, AutoTokenizer

    path = transformer_dir(resolve_model(name_or_path))
    with model_load_errors(name_or_path), quiet_transformers():  # float32 master weights (see above)
        model = AutoModel.from_pretrained(path, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(path)
    truncate_layers(model, layers)
    return model, tokenizer, path


def load_classifier(name_or_path: str | None, layers: int | None = None, pooling_layer: bool = True
                    ) -> tuple[nn.Module, object, str]:
    """A one-logit sequence classifier (cross-encoder); a plain encoder gets a freshly initialised head, on
    a new mean-pooling layer (:func:`add_mean_pooling_layer`) unless ``pooling_layer`` is false."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    path = transformer_dir(resolve_model(name_or_path))
    with model_load_errors(name_or_path):
        config = AutoConfig.from_pretrained(path)
        archs = getattr(config, "architectures", None) or []
        has_head = any(a.endswith("ForSequenceClassification") for a in archs)
        if has_head and getattr(config, "num_labels", 1) != 1:
            raise UserInputError(f"model {name_or_path!r} has a {config.num_labels}-label head; a cross-encoder "
                                 "student needs one logit", fix="start from an encoder or a one-logit model")
        with quiet_transformers():
            model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(path)
    truncate_layers(model, layers)
    if not has_head:
        pooled = pooling_layer and add_mean_pooling_layer(model)
        logger.info("%s has no classification head: initialised a one-logit head%s", model_id(name_or_path),
                    " on a new mean-pooling layer" if pooled else "")
    return model, tokenizer, path


def add_mean_pooling_layer(model: nn.Module) -> bool:
    """Append one transformer layer whose first-token output starts as the mean of the last layer's token
    states (layer-normalised): the state a new classification head reads then carries what mean pooling
    would, instead of a near-constant vector. Returns whether the layout was recognised (BERT-like layers).

    Why: an encoder trained with mean pooling (all-MiniLM-L6-v2 and most sentence-transformers models) leaves
    its first token almost the same for every input (relative spread ~0.4% across SciFact documents), so a
    one-logit head on it sees no difference between documents and a listwise loss stays at log(group size)
    for hundreds of steps. The new layer is a copy of the last one with: query projection 0 (uniform
    attention over the real tokens; the copied keys keep the queries' gradients non-zero), value and
    attention-output projections the identity (so the first token's attention output is the mean of the
    token states), and the feed-forward output 0 (so the block adds nothing at first); layer norms reset to
    identity. Its first-token output is then ``LN(h_cls + mean_j h_j)``. Every weight stays trainable and the
    model stays a plain ``*ForSequenceClassification`` with ``num_hidden_layers + 1`` layers, so
    sentence-transformers and transformers load it as usual.
    """
    import copy

    try:
        stack = layer_list(model)
    except UserInputError:
        return False
    layer = copy.deepcopy(stack[-1])
    attn = getattr(layer, "attention", None)
    self_attn, out = getattr(attn, "self", None), getattr(attn, "output", None)
    ffn_out = getattr(layer, "output", None)
    parts = [getattr(self_attn, "query", None), getattr(self_attn, "value", None), getattr(out, "dense", None),
             getattr(ffn_out, "dense", None), getattr(out, "LayerNorm", None), getattr(ffn_out, "LayerNorm", None)]
    if not all(isinstance(m, (nn.Linear, nn.LayerNorm)) for m in parts):
        return False
    query, value, attn_out, ffn_dense, norm1, norm2 = parts
    with torch.no_grad():
        query.weight.zero_()
        for lin in (value, attn_out):
            if lin.weight.shape[0] != lin.weight.shape[1]:
                return False
            lin.weight.copy_(torch.eye(lin.weight.shape[0], dtype=lin.weight.dtype))
        ffn_dense.weight.zero_()
        for lin in (query, value, attn_out, ffn_dense):
            if lin.bias is not None:
                lin.bias.zero_()
        for norm in (norm1, norm2):
            norm.weight.fill_(1.0)
            norm.bias.zero_()
    stack.append(layer)
    model.config.num_hidden_layers = len(stack)
    if hasattr(layer, "attention") and hasattr(layer.attention.self, "layer_idx"):
        layer.attention.self.layer_idx = len(stack) - 1
    return True


def read_metadata(directory: str | Path) -> dict | None:
    """The ``rankdistill.json`` of a saved model directory, or ``None`` when absent."""
    p = Path(directory) / METADATA_FILE
    if not p.is_file():
        return None
    try:
        meta = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserInputError(f"not valid JSON ({e.msg})", path=p, line=e.lineno,
                             fix="repair it, or save the model again with `train`") from None
    if not isinstance(meta, dict) or meta.get("arch") not in ("bi", "cross"):
        raise UserInputError("expected an object with \"arch\": \"bi\" or \"cross\"", path=p)
    return meta


def write_metadata(directory: str | Path, meta: dict) -> None:
    with atomic_write(Path(directory) / METADATA_FILE) as fh:
        json.dump({"format": METADATA_FORMAT, **meta}, fh, indent=2, sort_keys=True)
        fh.write("\n")


def detect_arch(directory: str | Path, guess: bool = True) -> str | None:
    """``"bi"`` or ``"cross"`` for a model directory (rankdistill metadata, else the library configs). A
    ``config.json`` that names no architectures (or cannot be read) says neither: ``"bi"`` is then a guess, and
    with ``guess`` false the answer is None, for a caller that lets the user say (``rerank --arch``)."""
    d = Path(directory)
    meta = read_metadata(d)
    if meta is not None:
        return str(meta["arch"])
    st_config = d / "config_sentence_transformers.json"
    if st_config.is_file():
        with contextlib.suppress(json.JSONDecodeError):
            if json.loads(st_config.read_text()).get("model_type") == "CrossEncoder":
                return "cross"
    if (d / "modules.json").is_file():
        return "bi"
    config = d / "config.json"
    if config.is_file():
        archs = []
        with contextlib.suppress(json.JSONDecodeError):
            archs = json.loads(config.read_text()).get("architectures") or []
        if any(str(a).endswith("ForSequenceClassification") for a in archs):
            return "cross"
        return "bi" if archs or guess else None
    raise UserInputError("not a model directory (no config.json)", path=d,
                         fix="give the --output folder of `rankdistill train` or a Hugging Face model folder")


def save_backbone(model: nn.Module, tokenizer: object, directory: Path) -> None:
    """Write the Hugging Face model (safetensors) and tokenizer into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    with quiet_transformers():
        model.save_pretrained(directory)  # type: ignore[attr-defined]
        tokenizer.save_pretrained(directory)  # type: ignore[attr-defined]


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
