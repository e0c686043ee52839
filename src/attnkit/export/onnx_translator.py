"""A trained Transformer translator as ONNX files, and translating with onnxruntime.

:func:`export_translator` writes a folder:

- ``encoder.onnx``: encodes the source and takes the first decoding step from ``<bos>``;
- ``decoder_step.onnx``: one more step, its self-attention keys/values in and out;
- ``source_tokenizer.json``, ``target_tokenizer.json``: attnkit's tokenizer format (its
  ``tokenizer`` field is a Hugging Face ``tokenizers`` JSON; ids 0-3 are ``<pad>``, ``<bos>``,
  ``<eos>``, ``<unk>``);
- ``manifest.json``: every graph's inputs and outputs (names, dtypes, shapes with the dynamic
  axes named), the tokenizer files, the special ids, the ONNX opset, the attnkit and torch
  versions, the training settings, and the largest difference from PyTorch measured at export.

:func:`load_onnx_translator` reads such a folder into a
:class:`~attnkit.tasks.translate.Translator` whose model (:class:`ExportedTransformer`) runs
the two graphs in onnxruntime, so greedy decoding and beam search are the very functions the
PyTorch model uses.

Shape legend: B batch, S source length, V target vocabulary.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from attnkit._version import __version__
from attnkit.data.tokenizer import Tokenizer
from attnkit.export.onnx import (
    EXPORT_PACKAGES,
    OnnxGraph,
    Runner,
    describe,
    opset,
    require,
    save_onnx,
)
from attnkit.export.translator import translator_graphs
from attnkit.models import Seq2SeqTransformer
from attnkit.models.seq2seq import DecodingState, Seq2Seq, Special, check_source
from attnkit.tasks._settings import settings_from
from attnkit.tasks.translate import TranslateSettings, Translator
from attnkit.training.store import read_format_json

FORMAT = "attnkit.onnx-translator"
VERSION = 1
MANIFEST = "manifest.json"
TOLERANCE = 1e-4  # largest |ONNX − PyTorch| accepted at export, on logits and caches
RUNS = {
    "encoder": "encodes the source and takes the first decoding step from <bos>",
    "decoder_step": "takes one more decoding step; present_* become the next step's past_*",
}


def export_translator(run_dir: str | Path, out: str | Path) -> Path:
    """Export the translator of ``run_dir`` (a run folder, a ``best``/``last`` pointer or a
    checkpoint) to ONNX files in the new folder ``out``; return the manifest's path.

    The folder appears whole or not at all (written beside ``out``, then renamed). Before it
    is published, both graphs run in onnxruntime at sizes other than the example's and must
    agree with PyTorch within :data:`TOLERANCE`.

    Raises:
        MissingExtraError: the ``export`` extra is not installed.
        FileNotFoundError: nothing at ``run_dir``.
        ValueError: ``out`` exists and is not an empty folder; the run is not a Transformer
            translator (the RNN translators do not export); the ONNX graphs disagree with
            PyTorch.
    """
    require(*EXPORT_PACKAGES)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"out: {out} exists and is not an empty folder; choose a new one")
    translator = Translator.load(run_dir)
    model = translator.model
    if not isinstance(model, Seq2SeqTransformer):
        raise ValueError(
            f"{run_dir}: a {translator.settings.model!r} translator does not export to ONNX; "
            "only Transformer translators do (train one with --model transformer)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        graphs = translator_graphs(model)
        for name, graph in graphs.items():
            save_onnx(graph, graph.export(), tmp / f"{name}.onnx")
        error = round_trip_error(model, tmp)
        if not error <= TOLERANCE:
            raise ValueError(
                f"the ONNX graphs differ from PyTorch by {error:.3g} (> {TOLERANCE}); "
                "nothing was written"
            )
        for side, tokenizer in (("source", translator.source), ("target", translator.target)):
            (tmp / f"{side}_tokenizer.json").write_text(tokenizer.to_json(), encoding="utf-8")
        manifest = _manifest(model, translator.settings, tmp, error, run_dir)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o755)
        if out.exists():
            out.rmdir()  # empty, checked above
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / MANIFEST


def _manifest(
    model: Seq2SeqTransformer,
    settings: TranslateSettings,
    folder: Path,
    error: float,
    run_dir: str | Path,
) -> dict[str, Any]:
    graphs = {
        name: {"file": f"{name}.onnx", "runs": RUNS[name], **describe(folder / f"{name}.onnx")}
        for name in RUNS
    }
    return {
        "format": FORMAT,
        "version": VERSION,
        "attnkit_version": __version__,
        "torch_version": torch.__version__,
        "opset": opset(folder / "encoder.onnx"),
        "model": "transformer",
        "layers": len(model.decoder_layers),
        "special": dataclasses.asdict(model.special),
        "graphs": graphs,
        "tokenizers": {
            side: {"file": f"{side}_tokenizer.json", "format": "attnkit.tokenizer"}
            for side in ("source", "target")
        },
        "max_abs_error": error,
        "settings": dataclasses.asdict(settings),
        "exported_from": str(run_dir),
    }


def round_trip_error(model: Seq2SeqTransformer, folder: Path) -> float:
    """The largest ``|onnxruntime − PyTorch|`` over every output of both graphs in ``folder``,
    run at sizes other than the traced example's (batch 3, source length 7, 2 past steps)."""
    worst = 0.0
    for name, graph in translator_graphs(model, batch=3, source=7, past=2).items():
        with torch.no_grad():
            expected = graph.module(*graph.args)
        got = OnnxGraph(folder / f"{name}.onnx")(graph.named_args())
        for output, want in zip(graph.output_names, expected, strict=True):
            worst = max(worst, float((got[output] - want).abs().max()))
    return worst


def load_onnx_translator(folder: str | Path) -> Translator:
    """The translator exported to ``folder``, decoding with onnxruntime.

    Raises:
        MissingExtraError: ``onnxruntime`` is not installed.
        FileNotFoundError: ``folder`` has no manifest (or a file it names is missing).
        ValueError: the manifest is not an attnkit ONNX translator's, or of another version.
    """
    require("onnxruntime")
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: with --runtime onnx, give the folder that "
            "'attnkit export RUN --format onnx --out DIR' wrote"
        )
    manifest = read_format_json(path, FORMAT, VERSION, "an attnkit ONNX translator manifest")
    source, target = (
        Tokenizer.from_json(
            (folder / manifest["tokenizers"][side]["file"]).read_text(encoding="utf-8")
        )
        for side in ("source", "target")
    )
    settings = settings_from(TranslateSettings, manifest["settings"])
    graphs = manifest["graphs"]
    encoder, step = (OnnxGraph(folder / graphs[name]["file"]) for name in RUNS)
    model = ExportedTransformer(encoder, step, step.input_names, Special(**manifest["special"]))
    return Translator(model, source, target, settings)


class ExportedState(DecodingState):
    """The decoding state of :class:`ExportedTransformer`: the source lengths, the logits of
    the first step (until :meth:`ExportedTransformer.step` returns them) and every cache tensor
    by the name of the graph output that produced it."""

    def __init__(self, src_lengths: Tensor, outputs: dict[str, Tensor]) -> None:
        self.src_lengths = src_lengths  # (B,)
        self.first: Tensor | None = outputs.pop("logits")  # (B, V)
        self.tensors = outputs

    def reorder(self, index: Tensor) -> None:
        self.src_lengths = self.src_lengths.index_select(0, index)
        if self.first is not None:
            self.first = self.first.index_select(0, index)
        self.tensors = {name: t.index_select(0, index) for name, t in self.tensors.items()}


class ExportedTransformer(Seq2Seq):
    """The two graphs of an exported Transformer translator behind the
    :class:`~attnkit.models.Seq2Seq` interface, so the decoders (greedy, beam search,
    sampling) run them unchanged.

    Args:
        encoder, decoder_step: the graphs as functions from named input tensors to named
            output tensors (:class:`~attnkit.export.onnx.OnnxGraph`, or a
            :class:`torch.export.ExportedProgram` wrapped likewise).
        step_inputs: the decoder step's input names, in order.
        special: the special token ids.
    """

    def __init__(
        self, encoder: Runner, decoder_step: Runner, step_inputs: list[str], special: Special
    ) -> None:
        super().__init__()
        self.encoder, self.decoder_step = encoder, decoder_step
        self.cache_inputs = step_inputs[2:]  # after tokens, src_lengths
        self.special = special

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Tensor:
        raise ValueError(
            "an exported translator only decodes (start/step); teacher forcing runs on the "
            "PyTorch model"
        )

    def start(self, src: Tensor, src_lengths: Tensor) -> ExportedState:
        """Run the encoder graph; its first-step logits wait for :meth:`step`.

        Raises:
            ValueError: ``src``/``src_lengths`` that do not fit (the graph cannot check).
        """
        check_source(src, src_lengths)
        return ExportedState(src_lengths, self.encoder({"src": src, "src_lengths": src_lengths}))

    def step(self, state: ExportedState, tokens: Tensor) -> tuple[Tensor, ExportedState]:  # type: ignore[override]
        """Logits ``(B, V)`` after ``tokens (B,)``; the first call (``<bos>``) returns the
        encoder graph's.

        Raises:
            ValueError: a first step fed anything but ``<bos>``.
        """
        if state.first is not None:
            if not bool((tokens == self.special.bos).all()):
                raise ValueError("the first step of an exported translator is fed <bos>")
            logits, state.first = state.first, None
            return logits, state
        feeds = {"tokens": tokens, "src_lengths": state.src_lengths}
        for name in self.cache_inputs:  # past_self_*: the last step's present_self_*
            feeds[name] = state.tensors[name.replace("past_", "present_", 1)]
        outputs = self.decoder_step(feeds)
        logits = outputs.pop("logits")
        state.tensors.update(outputs)
        return logits, state
