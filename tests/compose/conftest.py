"""Fixtures that bring the repository's docker-compose.yml up.

`docker_ready` (once per run), each step failing the tests with its output:
- a Docker engine: the running one, or `dockerd` started here and stopped
  after (its log in the run's temporary directory);
- the base image `overlayd-base:bookworm` with no registry (scripts/base-image:
  debootstrap of Debian bookworm with python3, then `docker import`; cached
  in ~/.cache/overlayd, and the image kept, between runs);
- the Python wheels, built by the host's pip into docker/wheelhouse, so the
  image build (`BASE_IMAGE=overlayd-base:bookworm PIP_NO_INDEX=1`) needs no
  network.

`demo` (the plain demo) and `rr_demo` (with docker-compose.rr.yml): `compose
build` and `compose up -d` under a project name of their own, for one test
module. Teardown is `compose down -v` (containers, network, volume), even
when a step or a test failed; the logs of every service are printed on the
way out.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tests.support import require_programs, require_root
from tools.compose import BASE_IMAGE, ComposeError, ComposeProject, DockerEngine, build_base_image, build_wheels


@pytest.fixture(scope="session")
def docker_ready(tmp_path_factory) -> Iterator[None]:
    require_root()
    require_programs("dockerd", "docker", "debootstrap")
    with DockerEngine(tmp_path_factory.mktemp("docker") / "dockerd.log"):
        build_base_image()
        build_wheels()
        yield


def compose_up(overrides: tuple[str, ...]) -> Iterator[ComposeProject]:
    project = None
    try:
        project = ComposeProject(f"ovlci{secrets.token_hex(3)}", overrides=overrides,
                                 env={"BASE_IMAGE": BASE_IMAGE, "PIP_NO_INDEX": "1"})
        project.compose("build", timeout=900)
        project.compose("up", "-d", timeout=300)
        yield project
    except ComposeError as err:  # before the tests ran: theirs stay in the tests
        pytest.fail(str(err), pytrace=False)
    finally:
        if project is not None:
            print(f"\n--- docker compose logs ({project.name}) ---\n{project.logs()}")
            problem = project.down()
            assert problem is None, f"compose down: {problem}"


@pytest.fixture(scope="module")
def demo(docker_ready) -> Iterator[ComposeProject]:
    yield from compose_up(())


@pytest.fixture(scope="module")
def rr_demo(docker_ready) -> Iterator[ComposeProject]:
    yield from compose_up(("docker-compose.rr.yml",))
