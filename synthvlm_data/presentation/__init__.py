"""Presentation: everything a person reads. One Jinja environment (`templates`), one module of
matplotlib plots (`plots`), the facts a card or report states about a recipe (`describe`), the
dataset card (`cards`, rendered from every part of the dataset folder), the model card of a
training run (`model_card`) and the quality report (`report`, which never renders a card)."""
