"""Personal data: field-level encryption under per-subject keys, erasure, export (docs/privacy.md).

- `cipher`: data keys, their wrapping by the key-encryption key, field tokens, the blind index;
- `fields`: which fields of which events are personal;
- `keystore`: the key-store protocol and its PostgreSQL-table implementation;
- `codec`: sealing on append and opening at the edges of reading (the store's `codec` hook);
- `erasure`: erasing a subject, exporting what is held about them, the erasure report.
"""

from ledger.privacy.cipher import DataKey, Keyring
from ledger.privacy.codec import PersonalDataCodec, subject_for
from ledger.privacy.keystore import KeyStore, MemoryKeyStore, PgKeyStore

__all__ = [
    "DataKey",
    "KeyStore",
    "Keyring",
    "MemoryKeyStore",
    "PersonalDataCodec",
    "PgKeyStore",
    "subject_for",
]
