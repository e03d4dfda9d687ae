from django.urls import path

from devices.views import DeviceViewSet, LoginViewSet, LogoutViewSet, SessionViewSet

urlpatterns = [
    path("auth/login/", LoginViewSet.as_view({"post": "create"}), name="auth-login"),
    path("auth/logout/", LogoutViewSet.as_view({"post": "create"}), name="auth-logout"),
    path("session/", SessionViewSet.as_view({"get": "retrieve"}), name="session"),
    path("devices/", DeviceViewSet.as_view({"get": "list"}), name="devices"),
    path("devices/<str:device_id>/", DeviceViewSet.as_view({"delete": "destroy"}), name="device-detail"),
]
