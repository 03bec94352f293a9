"""The reference store: stored references (store, the public API), where they live on disk
(layout), what a manifest holds (manifest), reading statistics files (statsfiles), the
catalog of published references (catalog, catalog.json) and fetching them (pull)."""
