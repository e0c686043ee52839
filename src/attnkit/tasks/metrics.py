"""Text metrics, computed by the well-kept libraries (sacrebleu for BLEU and chrF)."""

from __future__ import annotations

from collections.abc import Sequence


def translation_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU and chrF (sacrebleu, default settings) and exact match, each in 0..100.

    Raises:
        ValueError: different numbers of hypotheses and references, or none.
    """
    import sacrebleu

    if len(hypotheses) != len(references) or not references:
        raise ValueError(
            f"need as many hypotheses as references (at least one), got {len(hypotheses)} "
            f"and {len(references)}"
        )
    hyps, refs = list(hypotheses), list(references)
    exact = sum(h.strip() == r.strip() for h, r in zip(hyps, refs, strict=True))
    return {
        "bleu": float(sacrebleu.corpus_bleu(hyps, [refs]).score),
        "chrf": float(sacrebleu.corpus_chrf(hyps, [refs]).score),
        "exact": 100.0 * exact / len(refs),
    }
