"""Published dataset layouts; each module registers a loader with datasets.catalog.register_layout."""
