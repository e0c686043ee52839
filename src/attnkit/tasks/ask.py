"""Questions over a pile of documents: two levels of attention, as a person would skim.

1. **Passages.** The question's MiniLM embedding (all-MiniLM-L6-v2 running in attnkit's own
   layers, :func:`attnkit.models.load_bert`) is the query; the passages' embeddings are the keys
   and the values. ``attnkit.attention(score="cosine", scale=τ)`` gives a real attention
   distribution over every passage of the collection: ``softmax_j(τ · cos(q, k_j))``.
2. **Sentences.** Inside the best passages the question attends again, over each passage's
   sentences (one softmax per passage, padded sentences masked with ``KeyLengths``).

The answer lists the passages with their weights and the sentences with theirs; it prints as
text and renders as a self-contained HTML page with each sentence highlighted by the share of
the question's attention that reached it (passage weight × sentence weight).

Softmax weights always sum to 1, so a question that no document answers still puts its weight
somewhere. An answer is therefore flagged as *unanswered* when even its closest passage is no
closer to the question (cosine) than unrelated text often is: below :data:`UNRELATED_COSINE`,
the cosine that separates the built-in collection's summary lines from their own docstring's
best passage and from other docstrings' passages with equal errors (docs/experiments.md).
A folder's passage index (:func:`attnkit.data.documents.build_index`) is built once and cached;
an edited, added or removed file updates it. Sentence embeddings are computed at question time
for the few passages shown.

Metric (:func:`evaluate_retrieval`): accuracy@k of finding a docstring from its held-out
one-line summary among the test split's docstrings, beside BM25 (``rank-bm25``) on the same
documents. A document's score is its best passage's weight.

Shape legend: Q questions, N passages, D documents, E embedding size, P passages shown,
M most sentences in a shown passage.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

import attnkit
from attnkit.data.documents import (
    DocEntry,
    Document,
    FolderReport,
    Passage,
    PassageIndex,
    build_index,
    encode_in_batches,
    read_folder,
)
from attnkit.data.documents.shipped import ShippedIndex, file_fingerprint
from attnkit.explain._files import as_path, write_atomic

TEMPERATURE = 20.0  # τ over passages; chosen on the validation split (docs/experiments.md)
SENTENCE_TEMPERATURE = 10.0  # τ over the sentences of one passage
MAX_WORDS = 100  # words per passage
# The equal-error point between real question-answer pairs and unrelated ones: as many
# summary lines' own best passage fall below it as passages of other docstrings rise above it,
# about 6 % each (docs/experiments.md).
UNRELATED_COSINE = 0.24


def encoder_id(path: str | Path | None = None) -> str:
    """Names the MiniLM checkpoint (path, size, mtime of its weights) for the index cache."""
    from attnkit.models.bert import default_model_path

    folder = default_model_path() if path is None else Path(path)
    weights = folder / "model.safetensors"
    stat = weights.stat()
    return f"{weights.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def shipped_index(max_words: int = MAX_WORDS) -> ShippedIndex | None:
    """The built-in collection's index shipped with attnkit, when it fits the installed
    MiniLM and ``max_words`` (else ``None``: the passages are encoded)."""
    from attnkit.models.bert import default_model_path

    index = ShippedIndex.read()
    if index is None or index.max_words != max_words:
        return None
    if index.encoder != file_fingerprint(default_model_path() / "model.safetensors"):
        return None
    return index


def passage_attention(queries: Tensor, keys: Tensor, temperature: float) -> Tensor:
    """Attention of each question over all passages: ``softmax_j(τ · cos(q_i, k_j))``.

    Args:
        queries: ``(Q, E)`` question embeddings.
        keys: ``(N, E)`` passage embeddings.
        temperature: ``τ`` > 0.

    Returns:
        ``(Q, N)`` weights; each row sums to 1.

    Raises:
        ValueError: shapes that do not fit, or ``τ`` ≤ 0.
    """
    _check_temperature(temperature)
    if queries.dim() != 2 or keys.dim() != 2 or queries.shape[1] != keys.shape[1]:
        raise ValueError(
            f"queries must be (Q, E) and keys (N, E) with the same E, got "
            f"{tuple(queries.shape)} and {tuple(keys.shape)}"
        )
    k = keys[None, None].to(queries.dtype)  # (1, 1, N, E)
    weights = attnkit.attention_weights(
        queries[None, None], k, score="cosine", scale=temperature
    )  # (1, 1, Q, N)
    return weights[0, 0]  # (Q, N)


def sentence_attention(
    query: Tensor, sentences: Sequence[Tensor], temperature: float
) -> list[Tensor]:
    """Attention of one question over the sentences of each of several passages.

    Args:
        query: ``(E,)`` the question's embedding.
        sentences: per passage, its sentence embeddings ``(n_p, E)``, ``n_p`` ≥ 1.
        temperature: ``τ`` > 0.

    Returns:
        Per passage, ``(n_p,)`` weights summing to 1.

    Raises:
        ValueError: no passages, an empty passage, mismatched sizes or ``τ`` ≤ 0.
    """
    _check_temperature(temperature)
    if not sentences or any(s.dim() != 2 or s.shape[0] < 1 for s in sentences):
        raise ValueError(
            f"sentences must be a non-empty list of (n, E) tensors with n ≥ 1, got shapes "
            f"{[tuple(s.shape) for s in sentences]}"
        )
    if query.dim() != 1 or any(s.shape[1] != query.shape[0] for s in sentences):
        raise ValueError(
            f"query must be (E,) matching the sentences' E, got {tuple(query.shape)} and "
            f"{[tuple(s.shape) for s in sentences]}"
        )
    lengths = torch.tensor([s.shape[0] for s in sentences])  # (P,)
    keys = torch.nn.utils.rnn.pad_sequence(list(sentences), batch_first=True)  # (P, M, E)
    keys = keys.unsqueeze(1).to(query.dtype)  # (P, 1, M, E)
    q = query.expand(len(sentences), -1).reshape(len(sentences), 1, 1, -1)  # (P, 1, 1, E)
    weights = attnkit.attention_weights(
        q, keys, score="cosine", scale=temperature, mask=attnkit.KeyLengths(lengths)
    )  # (P, 1, 1, M)
    return [weights[p, 0, 0, : int(n)] for p, n in enumerate(lengths)]


def _check_temperature(temperature: float) -> None:
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not (0 < temperature < float("inf"))
    ):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")


@dataclass
class Hit:
    """One passage of the answer: its attention weight and its sentences' weights."""

    passage: Passage
    weight: float
    sentence_weights: list[float]

    @property
    def best_sentence(self) -> str:
        best = max(range(len(self.sentence_weights)), key=self.sentence_weights.__getitem__)
        return self.passage.sentences[best]


@dataclass
class Answer:
    """The best passages for a question, in order of weight, out of ``passages`` in total.

    ``best_cosine`` is the cosine between the question and its best passage; ``answered``
    says whether that passage is closer than unrelated text usually is
    (:data:`UNRELATED_COSINE`)."""

    question: str
    hits: list[Hit]
    passages: int
    documents: int
    best_cosine: float = 1.0

    @property
    def answered(self) -> bool:
        return self.best_cosine >= UNRELATED_COSINE


class Asker:
    """Answers questions over one indexed collection.

    Args:
        index: the passage index (its embeddings come from ``encoder``).
        encoder: a :class:`attnkit.models.BertEncoder` (``.encode(texts) -> (N, E)``).
        temperature, sentence_temperature: ``τ`` of the two levels of attention.
    """

    def __init__(
        self,
        index: PassageIndex,
        encoder: object,
        *,
        temperature: float = TEMPERATURE,
        sentence_temperature: float = SENTENCE_TEMPERATURE,
    ) -> None:
        _check_temperature(temperature)
        _check_temperature(sentence_temperature)
        self.index, self.encoder = index, encoder
        self.temperature, self.sentence_temperature = temperature, sentence_temperature

    @classmethod
    def from_documents(
        cls,
        documents: Sequence[Document],
        *,
        collection: str | None,
        encoder: object | None = None,
        encoder_name: str | None = None,
        max_words: int = MAX_WORDS,
        progress: bool = False,
        shipped: ShippedIndex | None = None,
        announce: Callable[[str], object] | None = None,
        **kwargs: float,
    ) -> Asker:
        """Index ``documents`` (cached under ``collection``; ``None``: no cache) with MiniLM
        (loaded when ``encoder`` is None; then ``encoder_name`` defaults to its checkpoint),
        taking what ``shipped`` holds instead of encoding it; ``announce`` hears how long
        the encoding will take (see :func:`~attnkit.data.documents.build_index`)."""
        if encoder is None:
            from attnkit.models import load_bert

            encoder, encoder_name = load_bert(), encoder_name or encoder_id()
        if encoder_name is None:
            raise ValueError("encoder_name is needed with a custom encoder (it keys the cache)")
        index = build_index(
            documents,
            _encode_fn(encoder),
            collection=collection,
            encoder_id=encoder_name,
            max_words=max_words,
            progress=progress,
            shipped=shipped,
            announce=announce,
        )
        return cls(index, encoder, **kwargs)

    @classmethod
    def from_folder(cls, folder: str | Path, **kwargs: object) -> tuple[Asker, FolderReport]:
        """Index the ``.txt``/``.md`` files of ``folder`` (see :func:`read_folder`); returns the
        asker and the folder report (skipped files and why)."""
        report = read_folder(folder)
        collection = f"folder:{report.folder.resolve()}"
        return cls.from_documents(report.documents, collection=collection, **kwargs), report

    def encode(self, texts: Sequence[str]) -> Tensor:
        """MiniLM embeddings ``(len(texts), E)``."""
        return encode_in_batches(_encode_fn(self.encoder), list(texts))

    def passage_weights(self, questions: Sequence[str]) -> Tensor:
        """First-level attention ``(Q, N)`` of each question over every passage."""
        return passage_attention(self.encode(questions), self.index.embeddings, self.temperature)

    def document_scores(self, weights: Tensor) -> Tensor:
        """``(Q, D)``: each document's best passage weight (documents in index order)."""
        doc = self.index.document_of()  # (N,)
        scores = weights.new_zeros(weights.shape[0], len(self.index.documents))  # (Q, D)
        return scores.scatter_reduce(1, doc.expand_as(weights), weights, reduce="amax")

    def ask(self, question: str, *, top: int = 3) -> Answer:
        """The ``top`` passages by attention weight, each with its sentence weights.

        Raises:
            ValueError: an empty question or ``top`` < 1.
        """
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"question must be a non-empty string, got {question!r}")
        if isinstance(top, bool) or not isinstance(top, int) or top < 1:
            raise ValueError(f"top must be a positive integer, got {top!r}")
        query = self.encode([question])  # (1, E)
        weights = passage_attention(query, self.index.embeddings, self.temperature)[0]  # (N,)
        best = weights.topk(min(top, weights.shape[0])).indices.tolist()
        passages = [self.index.passages[i] for i in best]
        flat = [s for p in passages for s in p.sentences]
        embedded = self.encode(flat)  # (sum n_p, E)
        per_passage = list(embedded.split([len(p.sentences) for p in passages]))
        sentence_weights = sentence_attention(query[0], per_passage, self.sentence_temperature)
        hits = [
            Hit(p, float(weights[i]), [float(w) for w in sw])
            for i, p, sw in zip(best, passages, sentence_weights, strict=True)
        ]
        closest = torch.nn.functional.cosine_similarity(
            query, self.index.embeddings[best[0]][None].to(query.dtype)
        )  # (1,)
        return Answer(question, hits, len(self.index), len(self.index.documents), float(closest))


def _encode_fn(encoder: object) -> Callable[[list[str]], Tensor]:
    encode = getattr(encoder, "encode", None)
    if not callable(encode):
        raise TypeError(f"encoder must have .encode(texts) -> (N, E), got {type(encoder).__name__}")
    return encode


# ---------------------------------------------------------------------------------------------
# Showing the answer


def render_text(answer: Answer, *, width: int = 100) -> str:
    """The answer as plain text: passages with weights, sentences with theirs (» the best)."""
    lines = [
        f"Q: {answer.question}",
        f"   ({answer.passages} passages of {answer.documents} documents; weights are the "
        f"question's attention)",
    ]
    if not answer.answered:
        lines.append(f"   ! {unanswered_note(answer)}")
    for rank, hit in enumerate(answer.hits, start=1):
        bar = "█" * max(1, round(20 * hit.weight))
        p = hit.passage
        lines.append(f"\n{rank}. {p.document} · passage {p.number + 1}   {hit.weight:.3f} {bar}")
        best = max(hit.sentence_weights)
        for sentence, w in zip(p.sentences, hit.sentence_weights, strict=True):
            mark = "»" if w == best else " "
            text = sentence if len(sentence) <= width else sentence[: width - 1] + "…"
            lines.append(f"   {mark} {w:5.3f}  {text}")
    return "\n".join(lines)


_STYLE = """
body { font: 16px/1.5 system-ui, sans-serif; max-width: 52rem; margin: 2rem auto; padding: 0 1rem;
       color: #222; }
h1 { font-size: 1.4rem; } .note { color: #666; font-size: 0.9rem; }
section { border: 1px solid #ddd; border-radius: 6px; padding: 0.6rem 1rem; margin: 1rem 0; }
header { display: flex; gap: 0.8rem; align-items: center; font-size: 0.9rem; color: #444; }
.doc { font-weight: 600; } .track { flex: 1; background: #eee; height: 0.6rem; border-radius: 3px; }
.bar { background: #3a7bd5; height: 100%; border-radius: 3px; }
.s { border-radius: 3px; padding: 0 1px; }
.warn { background: #fff3cd; border: 1px solid #e0c36c; border-radius: 6px; padding: 0.5rem 1rem; }
"""


def unanswered_note(answer: Answer) -> str:
    """One sentence saying why the answer is flagged as unanswered."""
    return (
        f"no document seems to answer this: the closest passage has cosine "
        f"{answer.best_cosine:.2f} with the question, below {UNRELATED_COSINE:.2f}, where "
        "unrelated text usually lies; the weights below only say which passages are least far"
    )


def render_html(answer: Answer) -> str:
    """A self-contained HTML page: passages with weight bars, each sentence highlighted by the
    share of the question's attention that reached it (passage weight × sentence weight; the
    strongest sentence on the page fully coloured, exact weights in each tooltip), and a
    warning when the answer is flagged as unanswered. All document text is HTML-escaped."""
    esc = html.escape
    reached = [hit.weight * w for hit in answer.hits for w in hit.sentence_weights]
    strongest = max(reached, default=0.0) or 1.0
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>attnkit ask: {esc(answer.question)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{esc(answer.question)}</h1>",
        f'<p class="note">The question attended over {answer.passages} passages of '
        f"{answer.documents} documents (first level), then over the sentences of the best "
        "passages (second level). Bars: passage weight. Highlight: the weight that reached "
        "each sentence (its passage's weight × its weight within the passage).</p>",
    ]
    if not answer.answered:
        parts.append(f'<p class="warn">{esc(unanswered_note(answer))}.</p>')
    for hit in answer.hits:
        p = hit.passage
        spans = " ".join(
            f'<span class="s" title="weight reaching this sentence {hit.weight * w:.4f} '
            f'(passage {hit.weight:.3f} × {w:.3f} within it)" '
            f'style="background: rgba(255, 190, 0, {0.85 * hit.weight * w / strongest:.3f})">'
            f"{esc(s)}</span>"
            for s, w in zip(p.sentences, hit.sentence_weights, strict=True)
        )
        parts += [
            "<section><header>",
            f'<span class="doc">{esc(p.document)}</span><span>passage {p.number + 1}</span>',
            f'<div class="track"><div class="bar" style="width: {100 * hit.weight:.1f}%">'
            "</div></div>",
            f"<span>{hit.weight:.3f}</span></header>",
            f"<p>{spans}</p></section>",
        ]
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_html(answer: Answer, path: str | Path) -> Path:
    """Write :func:`render_html` to ``path`` (``.html``) atomically; returns the path."""
    target = as_path(path, suffix=".html", argument="html path")
    return write_atomic(target, render_html(answer).encode("utf-8"))


# ---------------------------------------------------------------------------------------------
# Evaluation: which docstring does a summary line come from?


def ranks_of_gold(scores: Tensor) -> Tensor:
    """``(Q,)`` 0-based rank of document ``i`` for question ``i`` in ``scores (Q, D)``; ties
    count against it (a question tied with every document is not found)."""
    gold = scores.diagonal().unsqueeze(1)  # (Q, 1)
    above = (scores > gold).sum(dim=1)
    ties = (scores == gold).sum(dim=1) - 1
    return above + ties


def bm25_scores(documents: Sequence[str], questions: Sequence[str]) -> Tensor:
    """BM25 (Okapi, ``rank-bm25``) scores ``(Q, D)``, words by scikit-learn's English analyzer
    (lower case, stop words removed)."""
    from rank_bm25 import BM25Okapi
    from sklearn.feature_extraction.text import CountVectorizer

    analyze = CountVectorizer(stop_words="english").build_analyzer()
    bm25 = BM25Okapi([analyze(d) or ["<empty>"] for d in documents])
    rows = [torch.from_numpy(bm25.get_scores(analyze(q))).float() for q in questions]
    return torch.stack(rows)  # (Q, D)


def accuracy_at(ranks: Tensor, k: int) -> float:
    """Percentage of ranks below ``k`` (the gold document among the first ``k``)."""
    return 100.0 * float((ranks < k).float().mean())


def gold_nll(asker: Asker, weights: Tensor, gold: Tensor) -> float:
    """Mean ``-log P(gold document)`` over questions: ``weights (Q, N)`` the passage attention,
    ``gold (Q,)`` each question's document (index order); ``P`` = the attention mass on the
    document's passages."""
    doc = asker.index.document_of()  # (N,)
    mass = weights.new_zeros(weights.shape[0], len(asker.index.documents))  # (Q, D)
    mass = mass.scatter_add(1, doc.expand_as(weights), weights)
    return float(-torch.log(mass.gather(1, gold[:, None]).clamp_min(1e-12)).mean())


def evaluate_retrieval(
    entries: Sequence[DocEntry],
    *,
    asker: Asker | None = None,
    ks: Sequence[int] = (1, 5),
    progress: bool = False,
) -> dict[str, float]:
    """Accuracy@k of MiniLM two-level-attention retrieval and of BM25 at finding each entry's
    docstring body from its summary line, among ``entries``' bodies.

    Returns:
        ``{"attention@1": ..., "bm25@1": ..., ..., "nll": ..., "questions": Q,
        "passages": N}`` (accuracies in percent; ``nll`` of the gold document under the
        passage attention at the asker's temperature).

    Raises:
        ValueError: fewer than two entries.
    """
    if len(entries) < 2:
        raise ValueError(f"need at least two docstrings to rank, got {len(entries)}")
    if asker is None:
        documents = [Document.from_text(e.name, e.body) for e in entries]
        asker = Asker.from_documents(documents, collection="docstrings:eval", progress=progress)
    questions = [e.summary for e in entries]
    weights = asker.passage_weights(questions)  # (Q, N)
    order = {name: i for i, name in enumerate(asker.index.documents)}
    columns = torch.tensor([order[e.name] for e in entries])
    attention_ranks = ranks_of_gold(asker.document_scores(weights)[:, columns])
    bm25_ranks = ranks_of_gold(bm25_scores([e.body for e in entries], questions))
    result: dict[str, float] = {}
    for k in ks:
        result[f"attention@{k}"] = accuracy_at(attention_ranks, k)
        result[f"bm25@{k}"] = accuracy_at(bm25_ranks, k)
    result["nll"] = gold_nll(asker, weights, columns)
    result["questions"], result["passages"] = float(len(entries)), float(len(asker.index))
    return result
