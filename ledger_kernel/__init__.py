"""The shared kernel: what every floor of the house uses and nothing of the house below it.

Settings, observability (logs, metrics) and the wire package (the JSON codec with exact
decimals, the `orders.events` envelope, the stream-id rule). It imports only the standard
library and third-party libraries (docs/architecture.md#layers).
"""
