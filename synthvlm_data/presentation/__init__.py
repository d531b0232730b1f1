"""Presentation: everything a person reads. One Jinja environment (`templates`), one module of
matplotlib plots (`plots`), the facts a card or report states about a recipe (`describe`), the
dataset card (`cards`) and the quality report (`report`). Cards and report take data, never each
other's files."""
