"""The Django app: ``INSTALLED_APPS = [..., "aqnt_auth.adapters.django"]``."""

from __future__ import annotations

from django.apps import AppConfig


class AQNTAuthConfig(AppConfig):
    """Registers the model, the admin and the system checks.

    The label is ``aqnt_auth`` (not the module's last part, ``django``), so
    migrations, permissions and admin URLs read ``aqnt_auth``.
    """

    name = "aqnt_auth.adapters.django"
    label = "aqnt_auth"
    verbose_name = "API keys"

    def ready(self) -> None:
        # Imported for their side effects: registering checks and the
        # setting_changed receiver.
        import aqnt_auth.adapters.django.checks
        import aqnt_auth.adapters.django.settings  # noqa: F401
