"""Routes of the recipe project."""

from django.urls import path

from . import views

urlpatterns = [
    path("charges", views.charge),
    path("charges/async", views.charge_async),
    path("healthz", views.healthz),
]
