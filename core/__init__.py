"""The kernel every app uses and that imports no app: Redis access (identity, breaker, Lua
loading), the error type and its DRF handler, the rate limiter, the client address, metrics,
OpenAPI helpers, the API guard middleware and the service's deploy checks."""
