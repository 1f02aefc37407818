"""Settings of a minimal Django project that charges with 88Pay (docs/frameworks.md, "Django")."""

from __future__ import annotations

import os
from typing import Any

from eightyeightpay import Policy

# 88Pay: read from the environment here, in one place; payments.py builds the managers from
# this setting. OPTIONS are passed to the managers as they are (policy=, timeout=, ...).
EIGHTY_EIGHT_PAY: dict[str, Any] = {
    "API_KEY": os.environ.get("EIGHTY_EIGHT_PAY_API_KEY", ""),
    "MERCHANT_ID": os.environ.get("EIGHTY_EIGHT_PAY_MERCHANT_ID", ""),
    "BASE_URL": os.environ.get("EIGHTY_EIGHT_PAY_BASE_URL"),  # None: the API key's own host
    # Every worker of every host shares one token through Redis when a URL is configured.
    "STORE": "redis" if os.environ.get("EIGHTY_EIGHT_PAY_REDIS_URL") else "memory",
    "OPTIONS": {},
}
# 88Pay's API limits (60 calls a minute, 1,000 an hour) unless they were raised for this
# merchant: then say so here, and the managers' API governor keeps the raised ones.
_API_LIMITS = {
    field: int(os.environ[name])
    for field, name in (
        ("api_per_minute", "EIGHTY_EIGHT_PAY_API_PER_MINUTE"),
        ("api_per_hour", "EIGHTY_EIGHT_PAY_API_PER_HOUR"),
    )
    if os.environ.get(name)
}
if _API_LIMITS:
    EIGHTY_EIGHT_PAY["OPTIONS"]["policy"] = Policy(**_API_LIMITS)

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "recipe-only-not-a-secret")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
ROOT_URLCONF = "tests.frameworks.apps.django_site.urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []  # an API-only project: no sessions, no CSRF cookies
DATABASES: dict[str, object] = {}
USE_TZ = True
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django": {"handlers": ["console"], "level": "WARNING"}},
}
