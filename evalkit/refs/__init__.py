"""The reference store: stored references (store), the catalog of published references
(catalog, catalog.json) and fetching them (pull)."""
