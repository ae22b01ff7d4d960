"""The wire contract shared by every process: one JSON codec, the stream-id rule, the envelope.

- `codec`: JSON with exact decimals, out (`dumps`, `dumps_canonical`) and in (`parse_json`);
- `streams`: the `order-<uuid>` naming of event streams (`stream_id_of`, `order_id_of`).
"""
