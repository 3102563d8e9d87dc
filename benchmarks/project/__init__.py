"""A tiny Django project for the ASGI benchmark (served by uvicorn)."""
