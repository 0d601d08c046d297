"""The local Cloud Build runner does with a build file what Cloud Build does (seconds each)."""

from __future__ import annotations

import re

import pytest

from tests.backend_process import free_port
from tests.cloudbuild_runner import BuildFailed, run_build
from tests.dockerd import Registry

pytestmark = [pytest.mark.cloudbuild, pytest.mark.slow]

BUILD = """steps:
  - id: write
    name: busybox
    dir: sub
    env: ["GREETING=hello ${_WHO}"]
    args: [sh, -c, 'echo "$$GREETING $PROJECT_ID $${BUILD_ID}" > out.txt']
  - name: busybox
    waitFor: [write]
    automapSubstitutions: true
    script: cat sub/out.txt > script.txt; echo "$_WHO" >> script.txt
  - name: gcr.io/cloud-builders/docker
    waitFor: ["-"]
    args: [tag, busybox, "${_IMAGE}"]
images: ["${_IMAGE}"]
substitutions: {_WHO: world, _IMAGE: ""}
"""


def run(tmp_path, engine, text: str, **substitutions):
    (tmp_path / "sub").mkdir(exist_ok=True)
    (tmp_path / "cloudbuild.yaml").write_text(text)
    return run_build(tmp_path / "cloudbuild.yaml", tmp_path, engine, substitutions=substitutions)


def test_steps_substitutions_script_and_images(docker_engine, tmp_path):
    registry = Registry(tmp_path, free_port())
    try:
        done = run(tmp_path, docker_engine, BUILD, _WHO="there", _IMAGE=f"{registry.host}/a/b:1")
        assert registry.layers("a/b", "1")  # pushed
    finally:
        registry.stop()
    out = f"hello there test-project {done.build_id}\n"
    assert (tmp_path / "sub/out.txt").read_text() == out  # dir, env, $$, built-ins in env
    assert (tmp_path / "script.txt").read_text() == out + "there\n"  # automap


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (("${_WHO}", "${_NOBODY}"), 'key in the template "_NOBODY"'),
        (("waitFor: [write]", "waitFor: [later]"), "waits for unknown step later"),
        (("    dir: sub", "    directory: sub"), "unknown field(s) ['directory']"),
        (("args: [tag", "timeout: 1s\n    entrypoint: sh\n    args: [-c, sleep 9, x"), "timed out"),
        (("images: [", "images: [missing, "), "failed to push missing"),
    ],
)
def test_a_bad_build_fails_as_on_cloud_build(docker_engine, tmp_path, change, error):
    with pytest.raises(BuildFailed, match=re.escape(error)):
        run(tmp_path, docker_engine, BUILD.replace(*change), _IMAGE="local/thing:1")


def test_loose_substitution_allows_undefined_and_unused(docker_engine, tmp_path):
    loose = BUILD.replace("${_WHO}", "${_NOBODY}") + "options: {substitutionOption: ALLOW_LOOSE}\n"
    with pytest.raises(BuildFailed, match="not matched in the template"):
        run(tmp_path, docker_engine, BUILD, _IMAGE="local/thing:1", _EXTRA="x")
    loose = loose.replace("images: [", "images: [] #")
    run(tmp_path, docker_engine, loose, _IMAGE="local/thing:1", _EXTRA="x")
    assert (tmp_path / "sub/out.txt").read_text().startswith("hello  test-project")
