"""Concerns wrapped around a phase or the whole attempt, each a small Hook (worker/pipeline.py)."""
