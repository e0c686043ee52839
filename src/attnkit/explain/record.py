"""Recording the attention weights of every attnkit attention layer in a model.

::

    with attnkit.explain.record(model) as rec:
        model(x)
    rec.names()                    # ['encoder.layers.0.attn', 'encoder.layers.1.attn', ...]
    rec["encoder.layers.0.attn"]   # [weights (B, H, Lq, Lk)], one entry per call
    rec.single("encoder.layers.0.attn")  # (B, H, Lq, Lk) of a layer that ran once
    rec.stack("encoder.layers.*")  # (N, B, H, L, L): one call of each matching layer
    rec.concat("decoder.cross")    # (B, H, steps, Lk): the calls of one layer, query by query

    with attnkit.explain.record(model, weights="key_totals") as rec:  # long inputs
        model(x)
    rec["encoder.layers.0.attn"]   # [(B, H, Lk)]: the attention each key received in total

Every attnkit attention layer subclasses :class:`attnkit.layers.base.AttentionLayer`, whose
``attention_recorder`` hook is ``None`` except inside :func:`record`; the layer then asks its
kernel for the exact weights, or for the summary ``weights=`` names (``"heads_mean"``,
``"key_totals"``, ``attnkit.TopK(k)``: made by the kernel without the full weights, so long
inputs fit; a layer that computes the full weights anyway has them reduced on arrival), and
reports them. Nothing in the model's code changes, and outside the block nothing is recorded
and nothing is computed in addition.

Attention that runs through attnkit outside its layers (the Hugging Face ``transformers``
backend of :mod:`attnkit.integrations.transformers`) is recorded too: such a backend registers
a test of whether a model's attention runs through it (:func:`register_foreign_attention`);
then :func:`record` accepts the model, and while the block is open any module of it may ask
:func:`recorded_weights` and :func:`report_weights`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any

import torch
from torch import Tensor, nn

from attnkit import statistics
from attnkit.layers.base import AttentionLayer, Recorder


class Recording:
    """The weights recorded by one :func:`record` block, per layer (qualified module name).

    It reads like a ``Mapping[str, list[Tensor]]``: ``rec[name]`` is the list of the
    ``(B, H, Lq, Lk)`` weights reported by that layer, one per call, in call order. The root
    module, if it is itself an attention layer, is named ``""`` (as in ``named_modules``).
    The recording stays readable after the block ends.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        include: Sequence[str] | None,
        device: torch.device | None,
        transform: Callable[[Tensor], Any] | None = None,
        weights: statistics.ReturnWeights = True,
    ) -> None:
        #: what each layer reports: ``True`` (the full weights) or a summary of them
        self.weights = weights
        self._layers: dict[str, nn.Module] = {}
        for name, module in model.named_modules():
            if isinstance(module, AttentionLayer) and _included(name, include):
                self._layers[name] = module
        self._names = {id(module): name for name, module in self._layers.items()}
        # Foreign attention: any module of the model may report; known only once it does.
        self._foreign = any(runs_through(model) for runs_through in _FOREIGN)
        self._order: dict[int, tuple[int, str]] = {}
        if self._foreign:
            self._order = {
                id(module): (i, name)
                for i, (name, module) in enumerate(model.named_modules())
                if _included(name, include) and not isinstance(module, AttentionLayer)
            }
        self._calls: dict[str, list[Any]] = {}
        self._device = device
        self._transform = transform
        # by id(layer): the recorder found on entry and the one this block set
        self._saved: dict[int, Recorder | None] = {}
        self._mine: dict[int, Recorder] = {}
        self._active = False
        self._used = False

    # -- the context manager -------------------------------------------------------------

    def __enter__(self) -> Recording:
        if self._used:
            raise RuntimeError("a record() block can be entered only once; call record() again")
        self._used = self._active = True
        if self._foreign:
            _OPEN.append(self)
        for layer in self._layers.values():
            previous = layer.attention_recorder
            self._saved[id(layer)] = previous
            self._mine[id(layer)] = _ChainedRecorder(self, id(layer), previous)
            layer.attention_recorder = self._mine[id(layer)]
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._active = False
        if self in _OPEN:
            _OPEN.remove(self)
        for layer in self._layers.values():
            if not isinstance(layer, AttentionLayer):
                continue  # a foreign module: nothing was set on it
            if layer.attention_recorder is self._mine[id(layer)]:
                layer.attention_recorder = _live(self._saved[id(layer)], id(layer))
            # Otherwise a block entered after this one is still open (blocks exited out of
            # order): it restores the recorder below ours when it exits, skipping closed ones.

    def _watches(self, module: nn.Module) -> bool:
        """Whether ``module`` is a foreign attention module this open block records."""
        return self._active and id(module) in self._order

    def _store(self, layer: nn.Module, weights: Tensor) -> None:
        name = self._names.get(id(layer))
        if name is None and id(layer) in self._order:  # a foreign module, first report
            name = self._order[id(layer)][1]
            self._layers[name] = layer
            self._names[id(layer)] = name
            self._layers = dict(
                sorted(self._layers.items(), key=lambda item: self._position(item[1]))
            )
        if name is None:  # a layer that was not in the model when the block began
            return
        full = isinstance(weights, Tensor) and weights.dim() == 4
        if full and self.weights is not True:
            weights = statistics.reduce(weights, self.weights)  # type: ignore[arg-type]
        elif not full and not _is_summary(weights, self.weights):
            raise ValueError(
                f"attention layer {name!r} ({type(layer).__name__}) reported "
                f"{_described(weights)}; expected (B, H, Lq, Lk)"
                + ("" if self.weights is True else f" or return_weights={self.weights!r}'s")
            )
        weights = _moved(weights, self._device)
        kept = weights if self._transform is None else self._transform(weights)
        self._calls.setdefault(name, []).append(kept)

    def _position(self, module: nn.Module) -> int:
        """Where ``module`` comes in the model (for foreign modules; attnkit layers first
        in their own order, which is the model's)."""
        return self._order.get(id(module), (-1, ""))[0]

    # -- reading -------------------------------------------------------------------------

    def layers(self) -> dict[str, nn.Module]:
        """The attention layers being recorded, by qualified name (model order); for a
        foreign backend, the modules that have reported so far."""
        return dict(self._layers)

    def names(self) -> list[str]:
        """The names of the layers that reported weights, in model order."""
        return [name for name in self._layers if name in self._calls]

    def keys(self) -> list[str]:
        return self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._calls)

    def __contains__(self, name: object) -> bool:
        return name in self._calls

    def __getitem__(self, name: str) -> list[Tensor]:
        """The weights ``(B, H, Lq, Lk)`` reported by layer ``name``, one per call."""
        if name not in self._calls:
            raise KeyError(
                f"no weights recorded for layer {name!r}; recorded: {self.names()}; "
                f"attention layers in the model: {list(self._layers)}"
            )
        return list(self._calls[name])

    def items(self) -> list[tuple[str, list[Tensor]]]:
        return [(name, self[name]) for name in self.names()]

    def single(self, name: str) -> Tensor:
        """The weights ``(B, H, Lq, Lk)`` of a layer that ran exactly once.

        Raises:
            KeyError: nothing was recorded for ``name``.
            ValueError: the layer ran several times (use ``rec[name]`` or :meth:`concat`).
        """
        calls = self[name]
        if len(calls) != 1:
            raise ValueError(
                f"layer {name!r} ran {len(calls)} times; use rec[{name!r}] for the list of "
                f"calls or rec.concat({name!r}) to join them along the queries"
            )
        return calls[0]

    def concat(self, name: str) -> Any:
        """All calls of one layer joined along the queries: ``(B, H, ΣLq, max Lk)``.

        Made for step-by-step decoding, where each call sees one new query: cross-attention
        gives the target × source alignment, and self-attention with a growing KV cache gives
        the lower triangle (shorter calls are padded with zero weight on the right, which is
        where the keys they could not yet see sit, since queries align bottom-right).
        Summaries join the same way: ``"heads_mean"`` ``(B, ΣLq, max Lk)``, ``TopK``'s
        ``(values, indices)`` ``(B, H, ΣLq, k)`` each, and ``"key_totals"`` ``(B, H, max Lk)``
        **added** over the calls (what each key received from all the queries of all calls).

        Raises:
            KeyError: nothing was recorded for ``name``.
            ValueError: the calls differ in batch size or heads.
        """
        calls = self[name]
        if isinstance(self.weights, statistics.TopK):
            values, indices = zip(*calls, strict=True)
            return self._joined(name, list(values)), self._joined(name, list(indices))
        return self._joined(name, calls, add=self.weights == "key_totals")

    def _joined(self, name: str, calls: list[Tensor], add: bool = False) -> Tensor:
        """Tensors ``(..., L, K)`` padded to the widest ``K`` and joined along ``L`` (or
        ``(..., K)`` padded and added, with ``add``)."""
        lead = {tuple(w.shape[: -1 if add else -2]) for w in calls}
        if len(lead) != 1:
            raise ValueError(
                f"cannot join the calls of layer {name!r}: their leading sizes (B, H) differ: "
                f"{[tuple(w.shape) for w in calls]}"
            )
        width = max(w.shape[-1] for w in calls)
        padded = [torch.nn.functional.pad(w, (0, width - w.shape[-1])) for w in calls]
        return torch.stack(padded).sum(dim=0) if add else torch.cat(padded, dim=-2)

    def stack(
        self,
        pattern: str | None = None,
        *,
        layer_type: type[nn.Module] | None = None,
        call: int | None = None,
    ) -> Tensor:
        """The weights of several layers of the same kind stacked: ``(N, B, H, Lq, Lk)``, in
        model order — the input of :func:`attnkit.explain.rollout`.

        Args:
            pattern: ``fnmatch`` pattern on the qualified names (``"encoder.layers.*.attn"``);
                ``None`` takes every recorded layer.
            layer_type: keep only layers that are instances of this class.
            call: which call of each layer to take (``-1`` for the last); by default each
                selected layer must have run exactly once.

        Raises:
            ValueError: no recorded layer matches, a layer ran several times and ``call`` was
                not given, or the selected weights differ in shape (the message lists them).
        """
        names = [
            n
            for n in self.names()
            if (pattern is None or fnmatch.fnmatchcase(n, pattern))
            and (layer_type is None or isinstance(self._layers[n], layer_type))
        ]
        if not names:
            raise ValueError(
                f"no recorded layer matches pattern={pattern!r}, layer_type="
                f"{getattr(layer_type, '__name__', None)}; recorded: {self.names()}"
            )
        chosen: list[Tensor] = []
        for n in names:
            calls = self._calls[n]
            if call is None and len(calls) != 1:
                raise ValueError(
                    f"layer {n!r} ran {len(calls)} times; pass call=i to pick one of them"
                )
            index = 0 if call is None else call
            if not -len(calls) <= index < len(calls):
                raise ValueError(
                    f"call={call} is out of range for layer {n!r} ({len(calls)} calls)"
                )
            chosen.append(calls[index])
        shapes = {_described(w) for w in chosen}
        if len(shapes) != 1:
            seen = ", ".join(f"{n}: {_described(w)}" for n, w in zip(names, chosen, strict=True))
            raise ValueError(f"cannot stack weights of different shapes ({seen})")
        if isinstance(chosen[0], tuple):  # TopK: (values, indices), each (N, B, H, Lq, k)
            return tuple(torch.stack(part) for part in zip(*chosen, strict=True))
        return torch.stack(chosen)  # (N, B, H, Lq, Lk) (or the summary's shape after N)

    def __repr__(self) -> str:
        parts = ", ".join(f"{n!r}: {len(c)}×{_described(c[0])}" for n, c in self.items())
        return f"Recording({{{parts}}})"


def _is_summary(reported: Any, wanted: statistics.ReturnWeights) -> bool:
    """Whether ``reported`` has the form of the summary ``wanted``."""
    if isinstance(wanted, statistics.TopK):
        return (
            isinstance(reported, tuple) and len(reported) == 2
            and all(isinstance(t, Tensor) and t.dim() == 4 for t in reported)
            and reported[0].shape[-1] == wanted.k
        )
    return wanted is not True and isinstance(reported, Tensor) and reported.dim() == 3


def _described(reported: Any) -> str:
    if isinstance(reported, Tensor):
        return f"shape {tuple(reported.shape)}"
    if isinstance(reported, tuple):
        return "(" + ", ".join(_described(t) for t in reported) + ")"
    return type(reported).__name__


def _moved(reported: Any, device: torch.device | None) -> Any:
    """``reported`` (a tensor or a tuple of them) detached, on ``device`` if given."""
    if isinstance(reported, tuple):
        return tuple(_moved(t, device) for t in reported)
    reported = reported.detach()
    return reported if device is None else reported.to(device)


def record(
    model: nn.Module,
    *,
    include: str | Sequence[str] | None = None,
    device: str | torch.device | None = None,
    transform: Callable[[Tensor], Any] | None = None,
    weights: statistics.ReturnWeights = True,
) -> Recording:
    """Record the attention weights of every attnkit attention layer in ``model``.

    Use as a context manager: ``with record(model) as rec: model(x)``. On entry every
    :class:`~attnkit.layers.base.AttentionLayer` in ``model`` gets a recorder; on exit (also
    on an exception) the previous one is restored, ``None`` outside any recording. Blocks nest:
    an inner block records what runs inside it, and the outer block sees that too.

    Args:
        model: any ``nn.Module`` (it may itself be an attention layer).
        include: ``fnmatch`` pattern(s) on qualified module names: record only those layers
            (the others do no extra work).
        device: move recorded weights there (e.g. ``"cpu"`` to spare accelerator memory).
        transform: applied to each call's weights ``(B, H, Lq, Lk)`` as they arrive; what it
            returns is kept instead (e.g. a compressed form, so that the full weights of one
            layer are dropped before the next layer runs). ``rec[name]`` then lists what it
            returned; :meth:`Recording.stack`, :meth:`~Recording.concat` and
            :meth:`~Recording.single` need it to return tensors.
        weights: what each layer records: ``True`` (default), the full weights
            ``(B, H, Lq, Lk)``; or a summary of them, as :func:`attnkit.attention`'s
            ``return_weights`` names it: ``"heads_mean"`` ``(B, Lq, Lk)``, ``"key_totals"``
            ``(B, H, Lk)`` (what each key received in total), ``attnkit.TopK(k)``
            ``(values, indices)`` ``(B, H, Lq, k)`` each. Layers whose kernel can make the
            summary never hold the full weights (long inputs fit); the others (those that
            use their full weights themselves) have them reduced as they arrive. Forward
            only: the summaries carry no gradient.

    Returns:
        A :class:`Recording` (a context manager; see its methods for reading the weights).

    Raises:
        TypeError: ``model`` is not an ``nn.Module``, ``include`` is not str(s), or
            ``weights`` is none of the above.
        ValueError: ``weights=False`` (nothing to record), an unknown summary name.
        ValueError: ``model`` holds no attnkit attention layer (or none matches ``include``)
            and its attention does not run through a foreign backend (see
            :func:`register_foreign_attention`).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    patterns: list[str] | None
    if include is None:
        patterns = None
    elif isinstance(include, str):
        patterns = [include]
    elif isinstance(include, Sequence) and all(isinstance(p, str) for p in include):
        patterns = list(include)
    else:
        raise TypeError(f"include must be a str, a sequence of str or None, got {include!r}")
    if transform is not None and not callable(transform):
        raise TypeError(f"transform must be callable or None, got {type(transform).__name__}")
    try:
        wanted = statistics.resolve(weights)
    except (TypeError, ValueError) as err:
        raise type(err)(str(err).replace("return_weights", "record: weights")) from None
    if wanted is False:
        raise ValueError("record: weights=False records nothing; pass True or a summary")
    rec = Recording(
        model,
        include=patterns,
        device=torch.device(device) if device is not None else None,
        transform=transform,
        weights=wanted,
    )
    if not rec.layers() and not rec._foreign:
        found = sum(isinstance(m, AttentionLayer) for m in model.modules())
        raise ValueError(
            f"{type(model).__name__} holds {found} attnkit attention layer(s)"
            + (f", none matching include={patterns}" if patterns is not None else "")
            + "; only layers subclassing attnkit.layers.base.AttentionLayer can be recorded"
        )
    return rec


class _ChainedRecorder:
    """The recorder one :class:`Recording` sets on one layer: stores the weights while its
    block is open, then hands them to the recorder it replaced (an enclosing block's)."""

    def __init__(self, owner: Recording, key: int, previous: Recorder | None) -> None:
        self.owner, self.key, self.previous = owner, key, previous

    @property
    def weights(self) -> statistics.ReturnWeights:
        """What the layer must compute: this block's summary if the recorders below want the
        same, else the full weights (each block reduces them to its own)."""
        below = self.owner.weights if self.previous is None else getattr(
            self.previous, "weights", True)
        return self.owner.weights if below == self.owner.weights else True

    def __call__(self, layer: AttentionLayer, weights: Any) -> None:
        if self.owner._active:
            self.owner._store(layer, weights)
        if self.previous is not None:
            self.previous(layer, weights)


def _live(recorder: Recorder | None, key: int) -> Recorder | None:
    """The first recorder down the chain whose block is still open (or whatever else
    was set by someone other than :func:`record`), ``None`` if there is none."""
    while isinstance(recorder, _ChainedRecorder) and not recorder.owner._active:
        recorder = recorder.owner._saved[key]
    return recorder


def _included(name: str, patterns: Sequence[str] | None) -> bool:
    return patterns is None or any(fnmatch.fnmatchcase(name, p) for p in patterns)


# -- attention that runs through attnkit outside AttentionLayer ------------------------------

# Tests of whether a model's attention runs through a foreign backend (one per backend).
_FOREIGN: list[Callable[[nn.Module], bool]] = []
# The open record() blocks that watch foreign modules, outermost first.
_OPEN: list[Recording] = []


def register_foreign_attention(runs_through: Callable[[nn.Module], bool]) -> None:
    """Let :func:`record` accept models whose attention runs through attnkit outside
    :class:`~attnkit.layers.base.AttentionLayer` (a backend inside another library).

    ``runs_through(model)`` says whether ``model``'s attention runs through that backend; it may
    raise ``ValueError`` to say what to change (e.g. the model runs another backend). The
    backend's attention function asks :func:`recorded_weights` and calls :func:`report_weights`.
    Registering the same function twice has no effect.
    """
    if not callable(runs_through):
        raise TypeError(f"runs_through must be callable, got {type(runs_through).__name__}")
    if runs_through not in _FOREIGN:
        _FOREIGN.append(runs_through)


def recorded_weights(module: nn.Module) -> statistics.ReturnWeights:
    """What ``module``'s attention must compute for the open blocks recording it
    (``return_weights``): ``False`` if none does, their common summary, else ``True``."""
    wanted = {rec.weights for rec in _OPEN if rec._watches(module)} if _OPEN else set()
    return wanted.pop() if len(wanted) == 1 else bool(wanted)


def wants_weights(module: nn.Module) -> bool:
    """Whether an open :func:`record` block records ``module`` (so its attention must
    compute what :func:`recorded_weights` says and :func:`report_weights` it). Cheap when
    nothing is recorded."""
    return recorded_weights(module) is not False


def report_weights(module: nn.Module, weights: Any) -> None:
    """Hand ``module``'s weights ``(B, H, Lq, Lk)`` of one call (or the summary
    :func:`recorded_weights` asked for) to every open block recording it."""
    for rec in list(_OPEN):
        if rec._watches(module):
            rec._store(module, weights)
