from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path
from tidings.integrations.django import urls as tidings_urls

from todo_site.realtime import rt
from todos import views

urlpatterns = [
    path("", views.list_index, name="lists"),
    path("lists/<int:pk>/", views.list_page, name="list"),
    # The writes: plain POST views, with CSRF and validation; each answers the row (JSON).
    path("lists/<int:pk>/items", views.create, name="item-create"),
    path("items/<int:pk>/done", views.set_done, name="item-done"),
    path("items/<int:pk>/rename", views.rename, name="item-rename"),
    path("items/<int:pk>/move", views.move, name="item-move"),
    path("items/<int:pk>/delete", views.delete, name="item-delete"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),  # POST only (Django 5)
    path("pusher.min.js", views.pusher_js),
    path("todo.js", views.todo_js),
    # pusher/auth: signs private-live.todo.list_id.<id> for members (TodoLive.authorize).
    *tidings_urls(rt),
]
