"""A client generated from the served schema by openapi-python-client runs a student's journey.

The generator, mypy and httpx come from the development lock: nothing is fetched at run time. The
generator's post-generation hooks (ruff on the output) are turned off in its config: the output is
only imported, never committed. The journey (generated_client_journey.py) is type-checked against
the generated package with ``mypy --strict`` before it runs, so a schema that makes the generator
type something wrongly (``format: uuid`` on a header turned into a ``UUID`` that httpx cannot send)
fails here twice: at the type check and at the call.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings as django_settings
from django.test import Client

from memora.tests.test_schema_contract import SCHEMA_URL
from memora_project.wsgi import application

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

BIN = Path(sys.executable).parent
JOURNEY = Path(__file__).with_name("generated_client_journey.py")
PACKAGE = "memora_client"
CONFIG = f"post_hooks: []\nproject_name_override: {PACKAGE}\npackage_name_override: {PACKAGE}\n"
MYPY_CONFIG = f"""[mypy]
strict = True
cache_dir = .mypy_cache
# The generated code is the generator's business; the journey is what a client author writes.
[mypy-{PACKAGE}.*]
ignore_errors = True
"""


def _run(command: list[str], cwd: Path) -> str:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The served schema → a generated package and the journey beside it, type-checked."""
    root = tmp_path_factory.mktemp("generated")
    response = Client().get(SCHEMA_URL)
    assert response.status_code == 200
    (root / "schema.json").write_bytes(response.content)
    (root / "config.yaml").write_text(CONFIG)
    generate = [str(BIN / "openapi-python-client"), "generate", "--path", "schema.json", "--config", "config.yaml"]
    output = _run([*generate, "--meta", "none"], root)
    # A warning means an operation or a model the generator skipped or could not type.
    assert "Warning" not in output and "Error" not in output, output
    assert (root / PACKAGE / "api" / "wallet" / "lesson_complete.py").is_file()

    source = JOURNEY.read_text()
    assert not re.search(r"\bcast\(|#\s*type:\s*ignore", source), "the journey narrows with isinstance only"
    (root / JOURNEY.name).write_text(source)
    (root / "mypy.ini").write_text(MYPY_CONFIG)
    _run([sys.executable, "-m", "mypy", "--config-file", "mypy.ini", JOURNEY.name], root)
    return root


@pytest.fixture
def journey_module(generated: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.syspath_prepend(str(generated))
    yield importlib.import_module(JOURNEY.stem)
    for name in [n for n in sys.modules if n == JOURNEY.stem or n.split(".")[0] == PACKAGE]:
        del sys.modules[name]


def test_the_generated_client_types_the_device_header_as_a_string(generated: Path) -> None:
    source = (generated / PACKAGE / "api" / "session" / "session_get.py").read_text()
    assert "x_device_id: str," in source
    assert "UUID" not in source


def test_a_student_journey_through_the_generated_client(journey_module: Any) -> None:
    journey_module.run_journey(
        base_url="http://testserver",
        httpx_args={"transport": httpx.WSGITransport(app=application)},
        username=f"gen_{uuid.uuid4().hex[:8]}",
        perfect_lesson_xp=django_settings.MEMORA_XP_LESSON_BASE + django_settings.MEMORA_XP_PERFECT_BONUS,
    )
