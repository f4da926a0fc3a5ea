"""Encrypts the storage credentials kept with a run (Fernet, key from settings)."""

from __future__ import annotations

import json

from cryptography.fernet import Fernet, InvalidToken


class CredentialsError(ValueError):
    """The service's key is missing or cannot read what was stored."""


class CredentialBox:
    def __init__(self, key: str):
        if not key:
            raise CredentialsError(
                "DLAAS_SECRET_KEY is not set: the service cannot store credentials"
            )
        try:
            self._fernet = Fernet(key.encode() if isinstance(key, str) else key)
        except (ValueError, TypeError):
            raise CredentialsError("DLAAS_SECRET_KEY is not a valid Fernet key") from None

    @staticmethod
    def generate_key() -> str:
        return Fernet.generate_key().decode()

    def seal(self, value: dict) -> str:
        return self._fernet.encrypt(json.dumps(value, sort_keys=True).encode()).decode()

    def open(self, token: str) -> dict:
        try:
            return json.loads(self._fernet.decrypt(token.encode()))
        except InvalidToken:
            raise CredentialsError("stored credentials cannot be read with this key") from None
