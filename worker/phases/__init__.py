"""The steps of a run's life on the worker, each a Phase (worker/pipeline.py), in the order
worker/training.py lists them."""
