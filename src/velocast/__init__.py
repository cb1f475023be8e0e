"""velocast: hourly bike-count forecasting with a champion/challenger lifecycle."""

__version__ = "0.1.0"
