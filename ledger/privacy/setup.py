"""Building the personal-data codec from settings (called by each process's composition)."""

from __future__ import annotations

from pathlib import Path

from ledger.privacy.cipher import Keyring
from ledger.privacy.codec import PersonalDataCodec
from ledger.privacy.keystore import PgKeyStore
from ledger.store import Executor
from ledger_kernel.settings import PrivacySettings

__all__ = ["keyring_from_settings", "pg_codec"]


def keyring_from_settings(settings: PrivacySettings) -> Keyring | None:
    """The key-encryption key from `kek` or `kek_file`; None when neither is set (no encryption)."""
    if settings.kek is not None:
        return Keyring.from_base64(settings.kek.get_secret_value())
    if settings.kek_file:
        return Keyring.from_base64(Path(settings.kek_file).read_text())
    return None


def pg_codec(db: Executor, settings: PrivacySettings) -> PersonalDataCodec | None:
    """The codec over the PostgreSQL key store, or None when no key-encryption key is set."""
    keyring = keyring_from_settings(settings)
    if keyring is None:
        return None
    return PersonalDataCodec(PgKeyStore(db, keyring), keyring, cache_s=settings.key_cache_s)
