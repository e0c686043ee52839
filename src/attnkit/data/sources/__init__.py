"""The built-in translation data sources; importing this package registers them all."""

from attnkit.data.sources import (  # noqa: F401  (imported to register)
    bible_source,
    gettext_source,
    num2words_source,
    tsv_source,
)
