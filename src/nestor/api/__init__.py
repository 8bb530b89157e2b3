"""nestor's REST API (FastAPI), served by `nestor serve`; docs/openapi.json is its contract."""
