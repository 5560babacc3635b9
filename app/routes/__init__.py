"""One router per resource; app.main serves their routes, all under API_PREFIX but /healthz."""

API_PREFIX = "/api/v1"
