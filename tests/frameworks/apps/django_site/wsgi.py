"""WSGI entry point: ``gunicorn --preload -w 4 tests.frameworks.apps.django_site.wsgi``."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.frameworks.apps.django_site.settings")

application = get_wsgi_application()
