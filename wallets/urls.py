from django.urls import path

from wallets.views import LessonViewSet, ServiceAwardViewSet, StreakRestoreViewSet, WalletViewSet

urlpatterns = [
    path("wallet/", WalletViewSet.as_view({"get": "retrieve"}), name="wallet"),
    path("wallet/history/", WalletViewSet.as_view({"get": "history"}), name="wallet-history"),
    path("wallet/xp/", ServiceAwardViewSet.as_view({"post": "create"}), name="wallet-award-xp"),
    path(
        "players/<int:player_id>/streak/restore/",
        StreakRestoreViewSet.as_view({"post": "create"}),
        name="streak-restore",
    ),
    path("lessons/<str:lesson_id>/complete/", LessonViewSet.as_view({"post": "complete"}), name="lesson-complete"),
]
