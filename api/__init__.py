"""The HTTP front end (Flask), its HTTP client and the `dlaas` CLI."""
