from django.urls import path

from players.views import ProfileViewSet, RegisterViewSet

urlpatterns = [
    path("auth/register/", RegisterViewSet.as_view({"post": "create"}), name="auth-register"),
    path("profile/", ProfileViewSet.as_view({"get": "retrieve", "patch": "partial_update"}), name="profile"),
]
