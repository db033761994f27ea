"""The API key file and its check (server/api_keys.py), which gRPC and HTTP share."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.api_keys import ApiKeys
from server.errors import PermissionDenied, Unauthenticated

SERVICES = ("sift.v1.IntentService", "sift.v1.RetrievalService", "grpc.health.v1.Health")
ALL = "key-for-every-service-0001"
INTENT = "key-for-intent-only-00002"


def _keys(tmp_path: Path, text: str, open_services: tuple[str, ...] = ()) -> ApiKeys:
    path = tmp_path / "keys.txt"
    path.write_text(text)
    keys = ApiKeys(path, SERVICES, open_services)
    keys.reload()
    return keys


def test_a_key_without_services_calls_every_one_and_a_listed_key_only_its_own(tmp_path: Path) -> None:
    keys = _keys(tmp_path, f"# comment\n\n{ALL}\n{INTENT}  IntentService\n")
    assert len(keys) == 2
    keys.check(f"Bearer {ALL}", "sift.v1.RetrievalService")
    keys.check(f"bearer {INTENT}", "sift.v1.IntentService")
    with pytest.raises(PermissionDenied, match="may not call sift.v1.RetrievalService") as denied:
        keys.check(f"Bearer {INTENT}", "sift.v1.RetrievalService")
    assert INTENT not in str(denied.value)


@pytest.mark.parametrize(
    "sent", [None, "", "Bearer ", "Basic abc", ALL, f"Bearer {ALL}x", f"Bearer {ALL[:-1]}"]
)
def test_missing_or_unknown_keys_are_unauthenticated_without_echoing_them(
    tmp_path: Path, sent: str | None
) -> None:
    keys = _keys(tmp_path, f"{ALL}\n")
    with pytest.raises(Unauthenticated) as refused:
        keys.check(sent, "sift.v1.IntentService")
    assert ALL[:10] not in str(refused.value)


def test_open_services_need_no_key(tmp_path: Path) -> None:
    keys = _keys(tmp_path, f"{ALL}\n", open_services=("grpc.health.v1.Health",))
    keys.check(None, "grpc.health.v1.Health")
    with pytest.raises(Unauthenticated):
        keys.check(None, "sift.v1.IntentService")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("short\n", "line 1: the key is shorter than 16"),
        (f"{ALL}\n{ALL} IntentService\n", "line 2: the key is listed twice"),
        (f"{ALL} NopeService\n", r"line 1: unknown services \['NopeService'\]"),
        (f"{ALL} IntentService extra\n", "line 1: expected a key and at most one"),
    ],
)
def test_a_bad_file_is_refused_naming_the_line_and_the_keys_in_force_stay(
    tmp_path: Path, text: str, problem: str
) -> None:
    keys = _keys(tmp_path, f"{INTENT}\n")
    keys.path.write_text(text)
    with pytest.raises(ValueError, match=problem) as refused:
        keys.reload()
    assert ALL not in str(refused.value)
    keys.check(f"Bearer {INTENT}", "sift.v1.IntentService")  # still in force


def test_reload_replaces_the_keys(tmp_path: Path) -> None:
    keys = _keys(tmp_path, f"{INTENT}\n")
    keys.path.write_text(f"{ALL}\n")
    assert keys.reload() == 1
    keys.check(f"Bearer {ALL}", "sift.v1.IntentService")
    with pytest.raises(Unauthenticated):
        keys.check(f"Bearer {INTENT}", "sift.v1.IntentService")


def test_an_unreadable_file_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read the API key file"):
        ApiKeys(tmp_path / "absent", SERVICES).reload()
