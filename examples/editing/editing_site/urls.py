from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path
from tidings.integrations.django import urls as tidings_urls

from documents import views
from editing_site.realtime import rt

urlpatterns = [
    path("", views.document_list, name="document-list"),
    path("docs/<int:pk>/", views.document_detail, name="document"),
    path("docs/<int:pk>/save", views.save, name="document-save"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),  # POST only (Django 5)
    path("pusher.min.js", views.pusher_js),
    path("editors.js", views.editors_js),
    # pusher/auth (and pusher/user-auth): signs the presence channel for request.user,
    # with the member the @rt.presence rule in realtime.py returns.
    *tidings_urls(rt),
]
