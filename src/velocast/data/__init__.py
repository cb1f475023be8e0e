"""The data layer: schema, ingest, store, splits, calendars, weather and synthetic data."""
