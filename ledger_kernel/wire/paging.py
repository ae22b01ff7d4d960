"""The page size limit every list route shares (one status, 422, for a limit above it)."""

MAX_PAGE_SIZE = 500
