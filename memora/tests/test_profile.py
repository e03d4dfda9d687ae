"""GET/PATCH /api/v1/profile/: the fields, the display name, and the timezone rule (a change takes
effect at the next local midnight of the current zone, at most once per 7 days)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import time_machine

from devices.tests.helpers import auth_hash
from players.models import PlayerProfile

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/v1/profile/"
UTC = dt.UTC


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def assert_code(response, status, code):
    assert response.status_code == status, response.content
    assert response.json()["code"] == code, response.json()
    return response.json()


def test_get_profile(student_factory):
    student = student_factory(timezone="Africa/Cairo")
    response = student.get(URL)
    assert response.status_code == 200
    body = response.json()
    assert body == {
        "id": student.player_id,
        "username": student.username,
        "display_name": student.username.title(),
        "timezone": "Africa/Cairo",
        "timezone_pending": None,
        "created_at": body["created_at"],
    }
    assert body["created_at"].endswith("Z")


def test_patch_display_name(student):
    response = student.patch(URL, {"display_name": "  Amira the Brave "})
    assert response.status_code == 200
    assert response.json()["display_name"] == "Amira the Brave"
    assert student.get(URL).json()["display_name"] == "Amira the Brave"
    assert set(response.json()) == {"id", "username", "display_name", "timezone", "timezone_pending", "created_at"}


def test_an_empty_patch_changes_nothing(student):
    before = student.get(URL).json()
    response = student.patch(URL, {})
    assert response.status_code == 200
    assert response.json() == before


def test_unknown_fields_are_not_writable(student):
    before = student.get(URL).json()
    response = student.patch(URL, {"username": "someone_else", "id": 1, "created_at": "2020-01-01T00:00:00Z"})
    assert response.status_code == 200
    assert response.json() == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"display_name": ""}, "display_name"),
        ({"display_name": "bad\x1bname"}, "display_name"),
        ({"display_name": "x" * 65}, "display_name"),
        ({"display_name": None}, "display_name"),
        ({"display_name": 42}, "display_name"),
        ({"display_name": ["a"]}, "display_name"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timezone": ""}, "timezone"),
        ({"timezone": 3}, "timezone"),
        ({"timezone": {"name": "UTC"}}, "timezone"),
    ],
)
def test_patch_validation(student, body, field):
    result = assert_code(student.patch(URL, body), 400, "validation_error")
    assert field in result["errors"]
    if body == {"timezone": "Mars/Olympus"}:
        assert result["errors"]["timezone"] == ["Unknown time zone 'Mars/Olympus'."]


@pytest.mark.parametrize("raw", ["[]", '"x"', "null", "42"])
def test_patch_needs_an_object(student, raw):
    response = student.client.patch(URL, raw, content_type="application/json", **student.headers())
    assert "body" in assert_code(response, 400, "validation_error")["errors"]


def test_patch_needs_json(student):
    response = student.client.patch(URL, "display_name=x", content_type="text/plain", **student.headers())
    assert_code(response, 415, "unsupported_media_type")


def test_a_timezone_change_waits_for_the_next_local_midnight(student_factory):
    with time_machine.travel(at("2026-11-26T09:00:00"), tick=False) as traveller:
        student = student_factory(timezone="Africa/Cairo")
        response = student.patch(URL, {"timezone": "Europe/Paris"})
        assert response.status_code == 200
        body = response.json()
        assert body["timezone"] == "Africa/Cairo"
        assert body["timezone_pending"] == {"timezone": "Europe/Paris", "effective_at": "2026-11-26T22:00:00Z"}
        assert student.get(URL).json()["timezone_pending"]["timezone"] == "Europe/Paris"

        traveller.move_to(at("2026-11-26T21:59:59"))
        assert student.get(URL).json()["timezone"] == "Africa/Cairo"
        traveller.move_to(at("2026-11-26T22:00:00"))
        after = student.get(URL).json()
        assert after["timezone"] == "Europe/Paris"
        assert after["timezone_pending"] is None


@pytest.mark.parametrize(
    ("now", "zone", "effective_at"),
    [
        # Europe/Paris springs forward at 02:00 on 29 March 2026: midnight before it is +01:00 ...
        ("2026-03-28T12:00:00", "Europe/Paris", "2026-03-28T23:00:00Z"),
        # ... and the one after it is +02:00.
        ("2026-03-29T12:00:00", "Europe/Paris", "2026-03-29T22:00:00Z"),
        ("2026-10-24T12:00:00", "Europe/Paris", "2026-10-24T22:00:00Z"),
        ("2026-10-25T12:00:00", "Europe/Paris", "2026-10-25T23:00:00Z"),
        # Havana springs forward at midnight (00:00 does not exist on 8 March 2026): the day starts
        # at 01:00 CDT.
        ("2026-03-07T12:00:00", "America/Havana", "2026-03-08T05:00:00Z"),
        # Havana falls back at 01:00 on 1 November 2026: the day starts at the first 00:00 (CDT).
        ("2026-10-31T12:00:00", "America/Havana", "2026-11-01T04:00:00Z"),
        # East of UTC, the local day can already be tomorrow's.
        ("2026-11-26T20:00:00", "Pacific/Kiritimati", "2026-11-27T10:00:00Z"),
        ("2026-11-26T09:00:00", "UTC", "2026-11-27T00:00:00Z"),
    ],
)
def test_effective_at_is_the_next_local_midnight_of_the_current_zone(student_factory, now, zone, effective_at):
    with time_machine.travel(at(now), tick=False):
        student = student_factory(timezone=zone)
        target = "Asia/Tokyo"
        response = student.patch(URL, {"timezone": target})
        assert response.status_code == 200
        assert response.json()["timezone_pending"] == {"timezone": target, "effective_at": effective_at}


def test_a_second_change_within_seven_days_is_refused(student_factory):
    with time_machine.travel(at("2026-11-26T09:00:00"), tick=False) as traveller:
        student = student_factory(timezone="Africa/Cairo")
        assert student.patch(URL, {"timezone": "Europe/Paris"}).status_code == 200
        traveller.move_to(at("2026-11-28T09:00:00"))
        assert student.get("/api/v1/session/").status_code == 200
        body = assert_code(student.patch(URL, {"timezone": "Asia/Tokyo"}), 403, "timezone_change_cooldown")
        assert body["next_allowed_at"] == "2026-12-03T09:00:00Z"
        assert body["detail"] == "You can change your time zone once every 7 days."
        # Asking again for the zone already pending or current is not a change.
        assert student.patch(URL, {"timezone": "Europe/Paris"}).status_code == 200
        # The refusal changed nothing.
        profile = PlayerProfile.objects.get(pk=student.player_id)
        assert (profile.timezone, profile.timezone_pending) == ("Europe/Paris", "")
        # The display name is not subject to the cooldown.
        assert student.patch(URL, {"display_name": "New name"}).status_code == 200

        traveller.move_to(at("2026-12-03T08:59:59"))
        assert_code(student.patch(URL, {"timezone": "Asia/Tokyo"}), 403, "timezone_change_cooldown")
        traveller.move_to(at("2026-12-03T09:00:00"))
        response = student.patch(URL, {"timezone": "Asia/Tokyo"})
        assert response.status_code == 200
        assert response.json()["timezone"] == "Europe/Paris"
        assert response.json()["timezone_pending"]["timezone"] == "Asia/Tokyo"


def test_going_back_to_the_current_zone_cancels_the_pending_change(student_factory):
    with time_machine.travel(at("2026-11-26T09:00:00"), tick=False):
        student = student_factory(timezone="Africa/Cairo")
        assert student.patch(URL, {"timezone": "Europe/Paris"}).status_code == 200
        # Cancelling is itself a change, under the cooldown.
        assert_code(student.patch(URL, {"timezone": "Africa/Cairo"}), 403, "timezone_change_cooldown")


def test_the_same_zone_is_not_a_change(student_factory):
    student = student_factory(timezone="Africa/Cairo")
    assert student.patch(URL, {"timezone": "Africa/Cairo"}).json()["timezone_pending"] is None
    # So it does not start the cooldown either.
    assert student.patch(URL, {"timezone": "Europe/Paris"}).status_code == 200


def test_the_session_check_knows_the_pending_zone(student_factory):
    with time_machine.travel(at("2026-11-26T09:00:00"), tick=False):
        student = student_factory(timezone="Africa/Cairo")
        assert student.patch(URL, {"timezone": "Europe/Paris"}).status_code == 200
        cached = auth_hash(student.player_id)
        assert (cached["tz"], cached["tzp"]) == ("Africa/Cairo", "Europe/Paris")
        assert float(cached["tze"]) == at("2026-11-26T22:00:00").timestamp()
        assert json.loads(json.dumps(cached))  # plain strings only


def test_the_cooldown_follows_its_setting(student_factory, settings):
    settings.MEMORA_TIMEZONE_CHANGE_COOLDOWN = 3 * 24 * 3600
    with time_machine.travel(at("2026-11-26T09:00:00"), tick=False) as traveller:
        student = student_factory(timezone="Africa/Cairo")
        assert student.patch(URL, {"timezone": "Europe/Paris"}).status_code == 200
        traveller.move_to(at("2026-11-28T09:00:00"))
        body = assert_code(student.patch(URL, {"timezone": "Asia/Tokyo"}), 403, "timezone_change_cooldown")
        assert body == {
            "code": "timezone_change_cooldown",
            "detail": "You can change your time zone once every 3 days.",
            "next_allowed_at": "2026-11-29T09:00:00Z",
        }
