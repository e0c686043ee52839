"""attnkit as a Hugging Face ``transformers`` attention backend.

::

    from attnkit.integrations import transformers as attnkit_hf
    attnkit_hf.register()
    model = AutoModel.from_pretrained(path, attn_implementation="attnkit")
    # or, on a model already loaded: model.set_attn_implementation("attnkit")

Built on transformers' public extension points: :func:`register` adds
:func:`attention_forward` to ``AttentionInterface`` and the mask builder of
:mod:`attnkit.integrations._hf_masks` to ``AttentionMaskInterface``, both under ``"attnkit"``.
Every model whose attention goes through ``ALL_ATTENTION_FUNCTIONS`` can then run on attnkit.

- **Weights only when asked.** With ``output_attentions=True`` (or ``config.output_attentions``,
  or inside :func:`attnkit.explain.record`) the weights come from attnkit's exact weights path
  and become ``outputs.attentions``; otherwise attnkit's fastest kernel runs and no weights
  are computed.
- **Masks in attnkit's form**: padding as key lengths, causal as ``causal=True``, a sliding
  window as ``window=`` (see :mod:`~attnkit.integrations._hf_masks`); anything else as the
  dense boolean mask.
- **Local attention for any model**: :func:`set_window`.
- **Every keyword is honoured or refused** (:data:`HONOURED`, :data:`PASSENGERS`,
  :data:`REFUSED`); an unknown keyword with a value is refused too, never ignored.

This module (and :mod:`attnkit.integrations`) is the only place where attnkit imports
``transformers``; install it with the ``hf`` extra.

Shape legend: B batch, Hq query heads, Hkv key/value heads, Lq queries, Lk keys, D head dim.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import Tensor, nn
from transformers import AttentionInterface, PreTrainedModel
from transformers.masking_utils import AttentionMaskInterface
from transformers.utils import output_capturing

import attnkit
from attnkit.explain.record import recorded_weights, register_foreign_attention, report_weights
from attnkit.flex import soft_capping
from attnkit.integrations._hf_masks import AttnkitMask, build_mask
from attnkit.normalizers import Normalizer

NAME = "attnkit"

# Keywords attention_forward acts on (see its docstring for how).
HONOURED = frozenset(
    {"output_attentions", "is_causal", "sliding_window", "position_bias", "position_ids",
     "softcap", "s_aux", "sinks"}
)
# Keywords that travel in transformers' **kwargs past the attention function and mean nothing
# to attention itself.
PASSENGERS = frozenset(
    {
        "output_hidden_states",
        "output_router_logits",
        "use_cache",
        "num_items_in_batch",
        "return_dict",
        "cache_position",
    }
)
# Features some models ask for that attnkit's attention() cannot compute: refused by name.
REFUSED = {
    "head_mask": "masking whole heads (head_mask)",
    "cu_seq_lens_q": "packed sequences given as cu_seq_lens (flash-attention varlen)",
    "cu_seq_lens_k": "packed sequences given as cu_seq_lens (flash-attention varlen)",
    "max_length_q": "packed sequences given as max_length (flash-attention varlen)",
    "max_length_k": "packed sequences given as max_length (flash-attention varlen)",
    "seq_idx": "packed sequences given as seq_idx",
    "indices": "sparse attention over selected keys (indices)",
    "block_indices": "block-sparse attention (block_indices)",
    "cache": "a paged KV cache (continuous batching)",
}

# set_window: the window of each self-attention module, without touching the modules.
_WINDOWS: weakref.WeakKeyDictionary[nn.Module, tuple[int, int]] = weakref.WeakKeyDictionary()


def register() -> None:
    """Register attnkit under the name ``"attnkit"`` in transformers' ``AttentionInterface``
    and ``AttentionMaskInterface``, and let :func:`attnkit.explain.record` record models that
    run on it. Idempotent."""
    AttentionInterface.register(NAME, attention_forward)
    AttentionMaskInterface.register(NAME, build_mask)
    register_foreign_attention(runs_on_attnkit)


def attention_forward(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: AttnkitMask | Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[Tensor, Tensor | None]:
    """transformers' attention-function signature, computed by :func:`attnkit.attention`.

    Args:
        module: the model's attention module (its class names the model in errors).
        query: ``(B, Hq, Lq, D)``; key, value: ``(B, Hkv, Lk, D)`` (``Hkv`` divides ``Hq``).
        attention_mask: what :func:`~attnkit.integrations._hf_masks.build_mask` built, or a
            4-D tensor (bool, True = may attend; or float, added to the scores), or ``None``.
        scaling: multiplies ``q kᵀ``; ``None``: ``1/√D``.
        dropout: dropout on the weights (transformers passes 0 outside training).
        kwargs: ``output_attentions``: return the weights. ``position_bias`` ``(1|B, Hq, Lq,
            Lk)``: added to the scores (T5). ``is_causal`` and ``sliding_window``: the mask
            transformers built for the layer already holds them (as eager relies on); only
            without a mask they are applied, as sdpa does. ``position_ids``: packed sequences
            found from them are in that mask too. ``softcap`` (Gemma 2): the scaled scores
            become ``softcap · tanh(score / softcap)`` before the mask, as a ``score_mod``
            (so the block kernels run it). ``s_aux`` (gpt-oss's attention sinks, one logit
            per query head): the softmax gets that logit in its denominator
            (:func:`attnkit.normalizers.softmax_with_sinks`: the ``chunked`` kernel, or
            ``local`` on a narrow sliding window, merges it into each row's log-sum-exp,
            with the weights too).
            ``sinks`` ``(B, Hq, Lq, 1)`` (Inkling 2): the same with a logit per query, given
            as the extra column eager concatenates. The :data:`PASSENGERS` are not about
            attention. Anything else with a value is refused.

    Returns:
        ``(out (B, Lq, Hq, D), weights (B, Hq, Lq, Lk) or None)``: the exact softmax weights
        (before dropout) when asked for, else ``None``.

    Raises:
        ValueError: a refused keyword (naming the module class, the model type and the
            feature), a mask built for other sizes, or attnkit's own errors.
    """
    _refuse_unsupported(module, kwargs)
    lq, lk = query.shape[2], key.shape[2]
    arguments = _mask_arguments(module, attention_mask, lq, lk, kwargs)
    position_bias = kwargs.get("position_bias")
    if position_bias is not None:
        arguments["mask"] = _with_bias(position_bias, arguments["mask"], lk)
    if kwargs.get("softcap") is not None:
        arguments["score_mod"] = soft_capping(float(kwargs["softcap"]))
    sinks = _sinks(kwargs)
    if sinks is not None:
        arguments["normalize"] = Normalizer("softmax_with_sinks", sinks=sinks)
    asked = _weights_asked(kwargs)
    recording = recorded_weights(module)
    result = attnkit.attention(
        query,
        key,
        value,
        scale=scaling,
        dropout_p=float(dropout),
        return_weights=True if asked else recording,
        **arguments,
    )
    out, weights = result if isinstance(result, tuple) else (result, None)
    if recording is not False and weights is not None:
        report_weights(module, weights)
    if asked and weights is not None:
        weights = weights.to(query.dtype)
    return out.transpose(1, 2).contiguous(), weights if asked else None  # (B, Lq, Hq, D)


def set_window(model: nn.Module, window: tuple[int, int] | None) -> list[str]:
    """Make every self-attention layer of ``model`` attend locally: the query at position
    ``p`` sees keys ``p − left .. p + right`` (with a causal mask, ``right`` is 0 anyway),
    computed by attnkit's ``local`` kernel when the window is narrow. ``None`` removes it.

    Self-attention layers are the modules transformers records as ``attentions`` (not
    ``cross_attentions``) in the model's ``can_record_outputs``; cross-attention is left
    alone. The window is intersected with the model's own mask (its padding, causality and
    ``sliding_window``). Nothing is stored on the modules; the model must run on
    ``attn_implementation="attnkit"`` (before or after this call).

    Returns:
        The qualified names of the modules given the window.

    Raises:
        TypeError: ``model`` is not a ``transformers.PreTrainedModel``.
        ValueError: a bad window, or a model that declares no self-attention modules.
    """
    if not isinstance(model, PreTrainedModel):
        raise TypeError(
            f"set_window: model must be a transformers PreTrainedModel, got {type(model).__name__}"
        )
    if window is not None and (
        not isinstance(window, (tuple, list))
        or len(window) != 2
        or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 0 for w in window)
    ):
        raise ValueError(
            f"set_window: window must be (left, right) ints ≥ 0 or None, got {window!r}"
        )
    modules = _self_attention_modules(model)
    if not modules:
        raise ValueError(
            f"set_window: {type(model).__name__} declares no self-attention modules in its "
            "can_record_outputs ('attentions'), so there is nothing to give a window"
        )
    for module in modules.values():
        if window is None:
            _WINDOWS.pop(module, None)
        else:
            _WINDOWS[module] = (int(window[0]), int(window[1]))
    return list(modules)


def runs_on_attnkit(model: nn.Module) -> bool:
    """Whether ``model``'s attention runs on this backend (for :func:`attnkit.explain.record`).

    Raises:
        ValueError: ``model`` is a transformers model running another ``attn_implementation``
            (the message says how to switch).
    """
    models = [m for m in model.modules() if isinstance(m, PreTrainedModel)]
    if not models:
        return False
    if any(m.config._attn_implementation == NAME for m in models):
        return True
    used = sorted({str(m.config._attn_implementation) for m in models})
    raise ValueError(
        f"{type(model).__name__} runs attn_implementation={used[0]!r}: attnkit.explain.record "
        f"sees its weights only on attnkit's backend; call "
        f"attnkit.integrations.transformers.register() and model.set_attn_implementation("
        f"{NAME!r}) (or load it with attn_implementation={NAME!r})"
    )


# ---------------------------------------------------------------------------------------------


def _sinks(kwargs: dict[str, Any]) -> Tensor | None:
    """The attention sinks a model passes: ``s_aux (Hq,)``, one logit per query head
    (gpt-oss), or ``sinks (B, Hq, Lq, 1)``, one per query as the column eager appends to the
    scores (Inkling 2), as ``(B, Hq, Lq)``; ``None`` without."""
    if kwargs.get("s_aux") is not None:
        return kwargs["s_aux"]
    sinks = kwargs.get("sinks")
    if sinks is None:
        return None
    if not isinstance(sinks, Tensor) or sinks.dim() != 4 or sinks.shape[-1] != 1:
        shape = tuple(sinks.shape) if isinstance(sinks, Tensor) else type(sinks).__name__
        raise ValueError(f"sinks must be (B, Hq, Lq, 1), one logit per query, got {shape}")
    return sinks.squeeze(-1)  # (B, Hq, Lq)


def _owner(module: nn.Module) -> str:
    """The module class and model type, for messages: ``GPT2Attention (model type 'gpt2')``."""
    model_type = getattr(getattr(module, "config", None), "model_type", None)
    return type(module).__name__ + (f" (model type {model_type!r})" if model_type else "")


def _refuse_unsupported(module: nn.Module, kwargs: dict[str, Any]) -> None:
    for key, value in kwargs.items():
        if value is None or key in HONOURED or key in PASSENGERS:
            continue
        if key in REFUSED:
            raise ValueError(
                f"{_owner(module)} asks its attention function for {REFUSED[key]}, which the "
                f"attnkit backend does not support; load this model with another "
                f"attn_implementation (e.g. 'eager')"
            )
        raise ValueError(
            f"{_owner(module)} passes {key}={_brief(value)} to its attention function; the "
            f"attnkit backend does not know this keyword and refuses rather than ignore it"
        )
    if kwargs.get("is_causal") is not None and not isinstance(kwargs["is_causal"], bool):
        raise TypeError(f"{_owner(module)}: is_causal must be a bool, got {kwargs['is_causal']!r}")


def _brief(value: object) -> str:
    return f"<tensor {tuple(value.shape)}>" if isinstance(value, Tensor) else repr(value)


def _weights_asked(kwargs: dict[str, Any]) -> bool:
    """Whether the caller wants this call's weights: ``output_attentions=True`` reached the
    function, or transformers' output capturing is collecting attentions right now (it reads
    ``output_attentions`` from the forward's arguments or the config, and some attention
    modules, GPT-2's, do not pass it on). The collector is transformers' own context variable;
    there is no public accessor."""
    if kwargs.get("output_attentions"):
        return True
    collector = getattr(output_capturing, "_active_collector", None)  # None: a later version
    collected = collector.get() if collector is not None else None
    return bool(collected) and any(key.endswith("attentions") for key in collected)


def _mask_arguments(
    module: nn.Module, mask: object, lq: int, lk: int, kwargs: dict[str, Any]
) -> dict[str, Any]:
    """``mask``, ``causal``, ``window`` for :func:`attnkit.attention`."""
    window = _WINDOWS.get(module)
    if isinstance(mask, AttnkitMask):
        if (mask.q_len, mask.kv_len) != (lq, lk):
            raise ValueError(
                f"{_owner(module)}: the mask was built for {mask.q_len} queries × {mask.kv_len} "
                f"keys but the attention call has {lq} × {lk}"
            )
        if window is not None and not mask.aligned:
            raise ValueError(
                f"{_owner(module)}: set_window needs the last query to sit at the last key; this "
                "call's mask places them otherwise (a static cache?): use a dynamic cache"
            )
        return mask.arguments(window)
    if mask is None:
        is_causal = kwargs.get("is_causal")
        causal = bool(getattr(module, "is_causal", True) if is_causal is None else is_causal)
        causal = causal and lq > 1
        if causal and lq != lk:
            raise ValueError(
                f"{_owner(module)}: causal attention with no mask and {lq} queries for {lk} keys: "
                "where the queries sit is ambiguous; pass an attention mask"
            )
        sliding = kwargs.get("sliding_window")
        band: tuple[int | None, int | None] = (None, 0) if causal else (None, None)
        if sliding is not None:
            band = (sliding - 1, 0) if causal else (sliding, sliding)
        return AttnkitMask(lq, lk, band=band).arguments(window)
    if isinstance(mask, Tensor):
        if mask.dim() != 4:
            raise ValueError(
                f"{_owner(module)}: a tensor attention mask must be 4-D (B, 1|H, Lq, Lk), got "
                f"shape {tuple(mask.shape)}"
            )
        # Static caches hand over masks as long as the cache; the keys are its first Lk slots.
        return {"mask": mask[..., :lk], "causal": False, "window": window}
    raise TypeError(
        f"{_owner(module)}: the attnkit backend got an attention mask of type "
        f"{type(mask).__name__}; it takes the masks transformers builds for it, 4-D tensors "
        "or None"
    )


def _with_bias(position_bias: Tensor, mask: Tensor | attnkit.KeyLengths | None, lk: int) -> Tensor:
    """The additive bias ``(1|B, Hq, Lq, Lk)`` with the mask folded in (-inf where hidden):
    attnkit takes one of a bool mask, a float bias or key lengths (causal and window stay
    separate)."""
    bias = position_bias[..., :lk]
    if isinstance(mask, attnkit.KeyLengths):
        mask = mask.as_mask(lk)  # (B, 1, 1, Lk) bool
    if mask is None:
        return bias
    if mask.dtype != torch.bool:
        return bias + mask  # both additive
    return torch.where(mask, bias, float("-inf"))


def attention_modules(model: PreTrainedModel) -> dict[str, tuple[nn.Module, str]]:
    """The modules of ``model`` that run attention, by qualified name, each with ``"self"`` or
    ``"cross"``: what transformers records as ``attentions`` or ``cross_attentions`` in the
    ``can_record_outputs`` of the (sub)model they belong to, and every module inside them
    (the one passed to the attention function may sit inside: T5's ``SelfAttention``)."""
    found: dict[str, tuple[nn.Module, str]] = {}

    def matches(name: str, module: nn.Module, spec: object) -> bool:
        target = getattr(spec, "target_class", spec if isinstance(spec, type) else None)
        class_name = spec if isinstance(spec, str) else getattr(spec, "class_name", None)
        layer = getattr(spec, "layer_name", None)
        hit = (target is not None and isinstance(module, target)) or (
            class_name is not None and name.endswith(class_name)
        )
        return hit and (layer is None or f".{layer.strip('.')}." in f"{name}.")

    def specs(owner: PreTrainedModel, key: str) -> list[object]:
        given = owner.can_record_outputs.get(key, [])
        return list(given) if isinstance(given, list) else [given]

    def walk(module: nn.Module, name: str, owner: PreTrainedModel) -> None:
        if isinstance(module, PreTrainedModel):
            owner = module
        for key, kind in (("cross_attentions", "cross"), ("attentions", "self")):
            if any(matches(name, module, spec) for spec in specs(owner, key)):
                for sub_name, sub in module.named_modules(prefix=name):
                    found[sub_name.lstrip(".")] = (sub, kind)
                return
        for child_name, child in module.named_children():
            walk(child, f"{name}.{child_name}", owner)

    walk(model, "", model)
    return found


def _self_attention_modules(model: PreTrainedModel) -> dict[str, nn.Module]:
    return {name: m for name, (m, kind) in attention_modules(model).items() if kind == "self"}
