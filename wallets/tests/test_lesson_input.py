"""The lesson's score is read without the input serializer for the usual bodies (issue 14): every
body gets the same answer as from the serializer."""

from __future__ import annotations

from typing import Any

import pytest

from core.errors import ApiError
from wallets.serializers import LessonCompleteInput
from wallets.views import lesson_score

BODIES: list[dict[str, Any]] = [
    {},
    {"score": None},
    {"score": 0},
    {"score": 80},
    {"score": 100},
    {"score": 80.0},
    {"score": 80.5},
    {"score": True},
    {"score": False},
    {"score": "80"},
    {"score": 101},
    {"score": -1},
    {"score": 2**70},
    {"score": [80]},
    {"other": 1},
    {"score": 80, "other": 1},
]


def _answer(fn: Any) -> tuple[str, Any]:
    try:
        return "ok", fn()
    except ApiError as exc:
        return "error", exc.extra.get("errors")
    except Exception as exc:  # DRF's ValidationError, before the project's handler maps it
        return "error", getattr(exc, "detail", str(exc))


def _serializer(body: dict[str, Any]) -> int | None:
    data = LessonCompleteInput(data=body)
    data.is_valid(raise_exception=True)
    return data.validated_data.get("score")  # type: ignore[no-any-return]


@pytest.mark.parametrize("body", BODIES, ids=[repr(b) for b in BODIES])
def test_the_fast_path_answers_as_the_serializer(body):
    assert _answer(lambda: lesson_score(body)) == _answer(lambda: _serializer(body))


def test_a_bool_is_not_a_score():
    kind, errors = _answer(lambda: lesson_score({"score": True}))
    assert kind == "error" and "score" in errors
