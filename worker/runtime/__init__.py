"""Files the worker puts on a run's PYTHONPATH (see sitecustomize.py)."""
