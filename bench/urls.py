"""The project's URL map plus the ceiling of the HTTP benchmark: a plain DRF view."""

from django.urls import path
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from memora_project.urls import handler404
from memora_project.urls import urlpatterns as project_urlpatterns

__all__ = ["handler404", "urlpatterns"]


class PlainView(APIView):
    """No authentication, no store: what Django + DRF + gunicorn cost on their own."""

    authentication_classes: list[type] = []
    permission_classes = [AllowAny]

    def get(self, request: Request) -> Response:
        return Response({"ok": True})


# Under /api/v1/ so that it passes the same middleware as the student endpoints.
urlpatterns = [path("api/v1/bench/plain/", PlainView.as_view()), *project_urlpatterns]
