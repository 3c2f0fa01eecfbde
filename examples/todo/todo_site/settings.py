"""Django settings for the todo example: Django's defaults, SQLite, no static pipeline.

The database is the file named by ``TODO_DB`` (run.py points it at a temporary directory
unless you give your own path). The secret key is a demo one; set ``TODO_SECRET_KEY`` for
anything that is not a demo on your own machine.
"""

from __future__ import annotations

import os

SECRET_KEY = os.environ.get("TODO_SECRET_KEY", "demo-only-not-secret-todo-example")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "todos",
]

# Django's defaults, CsrfViewMiddleware included (the page's fetch calls and pusher-js's
# auth requests carry the token), plus Tidings' LiveMiddleware: it reads the X-Socket-ID
# header the page sends with each write, so the live event of that write skips the tab
# that made it (see todos/static/todo.js).
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "tidings.integrations.django.LiveMiddleware",
]

ROOT_URLCONF = "todo_site.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
            ],
        },
    }
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("TODO_DB", ""),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "lists"
LOGOUT_REDIRECT_URL = "login"

USE_TZ = True
TIME_ZONE = "UTC"
