"""The worked example of attention: a question scored against a few real documents.

The documents are the docstrings of some Python standard-library modules (module docstring
plus the first line of each public function's docstring): real text already on the machine.
Each text becomes a TF-IDF vector. The question is the query, the documents are the keys
and the values: ``attnkit.attention`` scores the query against every key (cosine similarity
times a temperature), normalises with softmax and returns the weighted sum of the values,
whose strongest terms say what the answer is about. Terms are matched by their stem
("compress", "compressed" and "compression" meet) and shown as the word the documents use
most for that stem ("quoting", never the stem "quot").

Shape legend: Q questions, N documents, V vocabulary.
"""

from __future__ import annotations

import importlib
import inspect
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

import attnkit

MODULES = (
    "zipfile",
    "gzip",
    "csv",
    "json",
    "sqlite3",
    "random",
    "secrets",
    "statistics",
    "calendar",
    "smtplib",
    "hashlib",
    "heapq",
)
QUESTIONS = (
    "How do I compress data so the file is smaller?",
    "Read the rows of a comma separated spreadsheet",
    "Send an email message to a mail server",
    "What is the median and the mean of my measurements?",
    "Store records in a database table and query them",
    "Generate a hard to guess token for a password reset",
)
TEMPERATURE = 10.0  # τ in τ·cos(q, k): sharper weights than raw cosine in [-1, 1]
_WORD = re.compile(r"[a-z]+")
_STOP = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "has",
        "have",
        "how",
        "i",
        "if",
        "in",
        "is",
        "it",
        "its",
        "my",
        "of",
        "on",
        "or",
        "so",
        "that",
        "the",
        "this",
        "to",
        "was",
        "what",
        "which",
        "with",
        "do",
        "does",
        "can",
        "not",
        "no",
        "into",
        "all",
        "any",
        "than",
        "then",
        "them",
        "they",
        "these",
        "there",
        "their",
        "will",
        "would",
        "should",
        "could",
        "may",
        "might",
        "also",
        "one",
        "two",
        "use",
        "used",
        "using",
    ]
)


@dataclass
class DemoResult:
    documents: list[str]  # module names, the keys
    questions: list[str]
    weights: Tensor  # (Q, N) attention of each question over the documents
    top_terms: list[list[str]]  # per question, the strongest terms of the weighted sum


def stem(word: str) -> str:
    """A tiny suffix stripper so that "compress", "compressed" and "compression" meet."""
    for suffix in ("ations", "ation", "ions", "ion", "ing", "ed", "es", "s"):
        if suffix == "s" and word.endswith("ss"):
            continue
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    return word


def words(text: str) -> list[str]:
    """The words of ``text`` that can be terms: lower case, no stop words, 3+ letters."""
    return [w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 2]


def terms(text: str) -> list[str]:
    return [stem(w) for w in words(text)]


def module_text(name: str) -> str:
    """The module docstring and the first line of each public function's or class's docstring."""
    module = importlib.import_module(name)
    parts = [module.__doc__ or ""]
    for attr, obj in sorted(vars(module).items()):
        if attr.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        if getattr(obj, "__module__", None) != module.__name__:
            continue
        doc = inspect.getdoc(obj) or ""
        parts.append(f"{attr.replace('_', ' ')}: {doc.splitlines()[0] if doc else ''}")
    return "\n".join(parts)


def tfidf(texts: list[list[str]], vocabulary: list[str], idf: Tensor) -> Tensor:
    """``(len(texts), V)`` TF-IDF rows (sublinear term frequency)."""
    index = {term: i for i, term in enumerate(vocabulary)}
    rows = torch.zeros(len(texts), len(vocabulary))
    for r, words in enumerate(texts):
        for term, count in Counter(words).items():
            if term in index:
                rows[r, index[term]] = 1.0 + math.log(count)
    return rows * idf


def run(questions: tuple[str, ...] = QUESTIONS, modules: tuple[str, ...] = MODULES) -> DemoResult:
    """Score each question against each module's documentation with ``attnkit.attention``."""
    texts = [module_text(name) for name in modules]
    doc_terms = [terms(text) for text in texts]
    vocabulary = sorted({t for words in doc_terms for t in words})
    # how each stem is written most often in the documents, to show it
    spellings: dict[str, Counter[str]] = {}
    for word in (w for text in texts for w in words(text)):
        spellings.setdefault(stem(word), Counter())[word] += 1
    df = Counter(t for words in doc_terms for t in set(words))
    idf = torch.tensor([math.log((1 + len(modules)) / (1 + df[t])) + 1.0 for t in vocabulary])
    keys = tfidf(doc_terms, vocabulary, idf)  # (N, V)
    queries = tfidf([terms(q) for q in questions], vocabulary, idf)  # (Q, V)
    out, weights = attnkit.attention(
        queries[None, None],  # (1, 1, Q, V)
        keys[None, None],  # (1, 1, N, V)
        keys[None, None],
        score="cosine",
        scale=TEMPERATURE,
        return_weights=True,
    )
    weights, out = weights[0, 0], out[0, 0]  # (Q, N), (Q, V)
    top = [
        [spellings[vocabulary[i]].most_common(1)[0][0] for i in row.topk(5).indices.tolist()]
        for row in out
    ]
    return DemoResult(list(modules), list(questions), weights, top)


def report(result: DemoResult, shown: int = 4) -> str:
    """A plain-text table of each question's ``shown`` strongest document weights."""
    lines = []
    for question, row, top in zip(result.questions, result.weights, result.top_terms, strict=True):
        lines.append(f"\nQ: {question}")
        order = row.argsort(descending=True).tolist()
        rest = 1.0 - float(row[order[:shown]].sum())
        for rank, i in enumerate(order[:shown]):
            bar = "█" * round(40 * float(row[i]))
            marker = "  <- best" if rank == 0 else ""
            lines.append(f"  {result.documents[i]:<11} {float(row[i]):6.3f} {bar}{marker}")
        lines.append(f"  {len(order) - shown} others   {rest:6.3f}")
        lines.append(f"  the weighted sum of the values is mostly about: {', '.join(top)}")
    return "\n".join(lines)


def plot(result: DemoResult, path: Path) -> Path:
    """Write the questions × documents weights as a heatmap PNG; returns the path."""
    from attnkit.explain.heatmap import plot_heatmap

    return plot_heatmap(
        result.weights,
        path,
        tokens=list(result.questions),
        key_tokens=result.documents,
        title="attention of each question over the documents",
        query_label="question (query)",
        key_label="module documentation (keys)",
    )
