"""attnkit inside other libraries.

- :mod:`attnkit.integrations.transformers`: attnkit as a Hugging Face ``transformers``
  attention backend (``attn_implementation="attnkit"``). Needs the ``hf`` extra.
- :mod:`attnkit.integrations.hf_models`: building and loading ``transformers`` models for
  attnkit's own tools (``attnkit explain --hf``, the benchmarks).

This package is the only place in attnkit that imports those libraries, and only when one of
its modules is imported: ``import attnkit`` never does.
"""
