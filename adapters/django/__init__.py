"""Django: an app (model, admin, ``manage.py aqnt_keys``, checks), a
middleware and a Django REST framework authentication class.

.. code-block:: python

    INSTALLED_APPS = [..., "aqnt_auth.adapters.django"]
    MIDDLEWARE = [
        "django.middleware.security.SecurityMiddleware",
        "aqnt_auth.adapters.django.APIKeyMiddleware",
        ...
    ]
    AQNT_AUTH = {"EXEMPT_PATHS": ["/health", "/admin/*"]}

then ``python manage.py migrate``.  DRF users may instead (or as well) put
``aqnt_auth.adapters.django.rest_framework.APIKeyAuthentication`` in
``DEFAULT_AUTHENTICATION_CLASSES``, with
``aqnt_auth.adapters.django.ResponseHeadersMiddleware`` in ``MIDDLEWARE``
for the RateLimit headers of keys with rate limits.

Importing this package imports no model (Django imports it while loading
apps); the store, admin and DRF modules do, and are imported on their own.
"""

from __future__ import annotations

from aqnt_auth.adapters.django.middleware import APIKeyMiddleware, ResponseHeadersMiddleware
from aqnt_auth.adapters.django.settings import get_authenticator

__all__ = ["APIKeyMiddleware", "ResponseHeadersMiddleware", "get_authenticator"]
