"""The ASGI application of the end-to-end run:
``uvicorn tests.adapters.django.asgi:application``."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.adapters.django.server_settings")

application = get_asgi_application()
