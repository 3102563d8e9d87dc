"""URLs of the demo: pages for people, JSON under /api/."""

from __future__ import annotations

from django.urls import path

from example.bank import views

urlpatterns = [
    path("", views.home, name="home"),
    path("transfer/", views.transfer_form, name="transfer"),
    path("transfers/<int:pk>/", views.transfer_detail, name="transfer-detail"),
    path("batch/", views.batch_form, name="batch"),
    path("parallel/", views.parallel, name="parallel"),
    path("live/", views.live, name="live"),
    path("api/totals/", views.api_totals),
    path("api/events/", views.api_events),
    path("api/accounts/", views.api_accounts),
    path("api/transfers/", views.api_transfer),
    path("api/batches/", views.api_batch),
    path("api/parallel/", views.api_parallel),
    path("api/burst/", views.api_burst),
]

handler400 = "example.bank.views.bad_request"
handler403 = "example.bank.views.permission_denied"
handler404 = "example.bank.views.not_found"
handler500 = "example.bank.views.server_error"
