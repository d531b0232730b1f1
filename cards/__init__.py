"""Jinja templates of the dataset and model cards.

Installed as the package `synthvlm_data.card_templates` (see pyproject.toml), so a wheel carries
them; `synthvlm_data.presentation.templates` finds them in a checkout and in an installed wheel.
"""
