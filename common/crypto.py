"""Encrypts the storage credentials kept with a run (Fernet, keys from settings).

`DLAAS_SECRET_KEY` holds one key, or several separated by commas, newest first: the newest
encrypts, every one of them decrypts (MultiFernet). To rotate: put a new key in front on
every API and worker process, run `dlaas admin rotate-key` (re-encrypts what is stored with
the newest key), then drop the old key.
"""

from __future__ import annotations

import json

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class CredentialsError(ValueError):
    """The service's key is missing or cannot read what was stored."""


class CredentialBox:
    def __init__(self, key: str):
        keys = [k.strip() for k in (key or "").split(",") if k.strip()]
        if not keys:
            raise CredentialsError(
                "DLAAS_SECRET_KEY is not set: the service cannot store credentials"
            )
        fernets = []
        for number, one in enumerate(keys, start=1):
            try:
                fernets.append(Fernet(one.encode()))
            except (ValueError, TypeError):
                raise CredentialsError(
                    f"DLAAS_SECRET_KEY: key {number} of {len(keys)} is not a valid Fernet key"
                ) from None
        self.key_count = len(fernets)
        self._fernet = MultiFernet(fernets)

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

    def rotate(self, token: str) -> str:
        """The same secret, encrypted again with the newest key."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken:
            raise CredentialsError("stored credentials cannot be read with this key") from None
