"""The operator side of the gateway: the HTTP API (``api``), its generated OpenAPI document
(``openapi``), the role table for every endpoint and WebSocket message (``roles``), the
Prometheus metrics (``metrics``) and the regulator's alerts (``alerts``).
``docs/operator-api.md`` describes the API."""
