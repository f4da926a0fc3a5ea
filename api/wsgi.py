"""The gunicorn entry point: `gunicorn api.wsgi:app`."""

from gunicorn.errors import AppImportError

from api.app import create_app
from common.frameworks import RegistryError

try:
    app = create_app()
except RegistryError as exc:
    # gunicorn prints this one line and stops (no traceback, no worker respawned).
    raise AppImportError(f"dlaas-api: {exc}") from None
