"""Adapters that let outside evaluation frameworks run m2bench models (lm-eval: ``lm_eval.py``)."""
