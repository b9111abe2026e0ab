"""Every built-in drafter kind, imported so that each registers itself (`@register_drafter`).

The package (`drafter_service/__init__.py`) imports this module, so `create_drafter`,
`drafter_config_model` and `drafter_kinds` in `drafter_service.base` know every kind however they
are reached. A new kind is a new module with `@register_drafter("kind")`, added to the list below.
This module knows nothing about what the kinds do.
"""

from drafter_service import feature_drafter, hybrid, model_drafter, ngram, plain, steered_drafter

KIND_MODULES = (feature_drafter, hybrid, model_drafter, ngram, plain, steered_drafter)
