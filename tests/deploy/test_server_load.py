"""``imgcls serve`` under generated and concurrent traffic: schemathesis requests from the
OpenAPI schema never get a 5xx, and 200 concurrent requests with distinct images get the
labels ``imgcls predict`` gives the same files."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

import imgcls
from imgcls.config import TrainConfig
from tests.conftest import write_class_folders
from tests.server_helpers import running_server

schemathesis = pytest.importorskip(
    "schemathesis", reason="schemathesis is a dev dependency (make test installs it)"
)
from hypothesis import HealthCheck, settings  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("load")
    data = write_class_folders(root / "data")
    config = TrainConfig(backbone="test_efficientnet", pretrained=False, input_size=64)
    imgcls.train(data, root / "run", config=config)
    return root / "run"


def test_generated_requests_never_get_a_server_error(model):
    """Every operation of the OpenAPI schema, with valid and invalid generated requests."""
    from hypothesis.errors import Unsatisfiable
    from schemathesis.generation import GenerationMode

    with running_server(model, "--runtime", "torch") as url:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert {op.path for op in operations} >= {"/predict", "/model", "/health"}
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                try:
                    _no_server_error(url, operation.as_strategy(mode))
                except Unsatisfiable:
                    assert mode is GenerationMode.NEGATIVE  # nothing to get wrong (GET /health)


def _no_server_error(url: str, cases: object) -> None:
    from hypothesis import given

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=cases)
    def check(case) -> None:
        response = case.call(base_url=url, timeout=60)
        assert response.status_code < 500, (case.method, case.path, response.text[:300])

    check()


def test_two_hundred_concurrent_requests_get_the_labels_predict_gives(model, tmp_path):
    images = tmp_path / "distinct"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(200):
        colour = rng.integers(0, 256, 3)
        pixels = np.clip(colour + rng.normal(0, 30, (40, 40, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(images / f"{i:03d}.png")
    command = [
        sys.executable,
        "-m",
        "imgcls",
        "predict",
        str(model),
        str(images),
        "--json",
        "--runtime",
        "torch",
    ]
    expected = {
        Path(row["path"]).name: row["predictions"][0]["label"]
        for row in json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    }
    assert len(expected) == 200 and len(set(expected.values())) > 1

    with running_server(model, "--runtime", "torch", "--max-concurrent", "256") as url:

        def ask(path: Path) -> tuple[str, int, str | None]:
            answer = httpx.post(
                f"{url}/predict", files=[("file", (path.name, path.read_bytes()))], timeout=120
            )
            label = answer.json()[0]["predictions"][0]["label"] if answer.status_code == 200 else None
            return path.name, answer.status_code, label

        with ThreadPoolExecutor(200) as pool:
            answers = list(pool.map(ask, sorted(images.iterdir())))
    assert [code for _, code, _ in answers] == [200] * 200
    assert {name: label for name, _, label in answers} == expected
