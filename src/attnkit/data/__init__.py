"""Data for attnkit's applications: translation pairs, tokenizers and batching.

>>> from attnkit.data import load_pairs, Tokenizer, encode_pairs, BucketBatcher
>>> splits = load_pairs("num2words:de-en")          # or bible:en-es, gettext:fr, tsv:PATH
>>> src_tok = Tokenizer.train([s for s, _ in splits.train], kind=splits.src_tokenizer_kind)
>>> tgt_tok = Tokenizer.train([t for _, t in splits.train], kind=splits.tgt_tokenizer_kind)
>>> batches = BucketBatcher(encode_pairs(splits.train, src_tok, tgt_tok), batch_size=64)
"""

from attnkit.data.batching import Batch, BucketBatcher, collate, encode_pairs, make_batches
from attnkit.data.errors import DataError, DataFileNotFoundError, MissingPackageError
from attnkit.data.registry import available_sources, register_source
from attnkit.data.splits import Splits
from attnkit.data.tokenizer import Tokenizer
from attnkit.data.translation import DEFAULT_SPEC, describe_sources, load_pairs

__all__ = [
    "DEFAULT_SPEC",
    "Batch",
    "BucketBatcher",
    "DataError",
    "DataFileNotFoundError",
    "MissingPackageError",
    "Splits",
    "Tokenizer",
    "available_sources",
    "collate",
    "describe_sources",
    "encode_pairs",
    "load_pairs",
    "make_batches",
    "register_source",
]
