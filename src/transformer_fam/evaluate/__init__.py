"""Evaluation: PassKey retrieval (passkey.py) and position-bucketed next-token metrics (perplexity.py)."""
