"""Serving: forecasts as users get them (a request's inputs as known at forecast time, the recent
errors forecasts follow) and scoring, which measures every model the same way. See
``velocast.lifecycle``."""
