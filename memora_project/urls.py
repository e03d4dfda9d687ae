from django.contrib import admin
from django.http import HttpRequest, JsonResponse
from django.urls import include, path, re_path
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from devices.adminlogin import admin_login
from memora import probes


@csrf_exempt  # an unknown URL answers 404 JSON for every method, not a CSRF page
def api_not_found(request: HttpRequest, *args: object, **kwargs: object) -> JsonResponse:
    """Unknown URLs under /api/ answer JSON, whatever DEBUG says."""
    return JsonResponse({"code": "not_found", "detail": "Not found."}, status=404)


api_v1 = [
    path("", include("players.urls")),
    path("", include("devices.urls")),
    path("", include("wallets.urls")),
]

urlpatterns = [
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    re_path(r"^api/", api_not_found),
    path("healthz", probes.healthz),
    path("readyz", probes.readyz),
    path("status", probes.status),
    path("metrics", probes.metrics),
    # Before the admin's own URLs: the same view, plus the staff device cookie (statement 11).
    path("admin/login/", admin_login),
    path("admin/", admin.site.urls),
]

handler404 = "memora_project.urls.api_not_found_or_default"


def api_not_found_or_default(request: HttpRequest, exception: Exception | None = None) -> object:
    from django.views.defaults import page_not_found

    if request.path.startswith("/api/"):
        return api_not_found(request)
    return page_not_found(request, exception)  # type: ignore[arg-type]
