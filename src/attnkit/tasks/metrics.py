"""Text metrics, computed by the well-kept libraries: sacrebleu (BLEU, chrF), jiwer (WER, CER)."""

from __future__ import annotations

from collections.abc import Sequence


def translation_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU and chrF (sacrebleu, default settings) and exact match, each in 0..100.

    Raises:
        ValueError: different numbers of hypotheses and references, or none.
    """
    import sacrebleu

    hyps, refs = _paired(hypotheses, references)
    return {
        "bleu": float(sacrebleu.corpus_bleu(hyps, [refs]).score),
        "chrf": float(sacrebleu.corpus_chrf(hyps, [refs]).score),
        "exact": exact_match(hyps, refs),
    }


def recognition_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus WER and CER (jiwer: word / character edit distance over the reference length)
    and exact match, each in percent.

    Raises:
        ValueError: different numbers of hypotheses and references, none, or an empty reference.
    """
    import jiwer

    hyps, refs = _paired(hypotheses, references)
    empty = [i for i, r in enumerate(refs) if not r.strip()]
    if empty:
        raise ValueError(f"references must not be empty; empty at positions {empty[:5]}")
    return {
        "wer": 100.0 * float(jiwer.wer(refs, hyps)),
        "cer": 100.0 * float(jiwer.cer(refs, hyps)),
        "exact": exact_match(hyps, refs),
    }


def exact_match(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Share of hypotheses equal to their reference (surrounding blanks ignored), in percent."""
    hyps, refs = _paired(hypotheses, references)
    return 100.0 * sum(h.strip() == r.strip() for h, r in zip(hyps, refs, strict=True)) / len(refs)


def _paired(hypotheses: Sequence[str], references: Sequence[str]) -> tuple[list[str], list[str]]:
    if len(hypotheses) != len(references) or not references:
        raise ValueError(
            f"need as many hypotheses as references (at least one), got {len(hypotheses)} "
            f"and {len(references)}"
        )
    return list(hypotheses), list(references)
