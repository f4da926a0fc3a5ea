"""The dlaas domain: manifests, runs and their states, the run store, storage, settings."""
