"""Evaluation of trained checkpoints: the offline world suite and lmms-eval (`synthvlm eval`)."""
