"""The HTTP server: the Ollama native API and the OpenAI API on Falcon, under gunicorn.

``create_app(settings, store, scheduler)`` builds the WSGI app over given
collaborators; ``get_app()`` builds it over the real ones (for gunicorn);
``serve(settings)`` runs it (``a3s-power serve``).
"""

from __future__ import annotations

from power.server.app import create_app, get_app
from power.server.serve import serve

__all__ = ["create_app", "get_app", "serve"]
