"""One recipe, two renderings: the Dockerfile installs exactly what the local build installs."""

import re
import shlex
from pathlib import Path

import pytest

from cogbox.config import REPO_IMAGES_DIR
from cogbox.images.dockerfile import render_dockerfile
from cogbox.images.plan import Shell, build_steps
from cogbox.images.recipe import canonical_name, load_recipe
from cogbox.images.store import Image


def _dockerfile(name: str) -> str:
    return render_dockerfile(load_recipe(REPO_IMAGES_DIR / name))


def _apt_packages(dockerfile: str) -> set[str]:
    found: set[str] = set()
    for line in re.findall(r"apt-get install -y -q --no-install-recommends ([^'\n]+)", dockerfile):
        found |= set(line.split())
    return found - {"binutils", "python3-pip"}  # installed only to strip/download, then purged


def _pins(dockerfile: str) -> dict[str, str]:
    printf = re.search(r"' ([^']*) > /tmp/cogbox-wheels/requirements.txt'", dockerfile)
    assert printf is not None
    return {canonical_name(n): v for n, v in (x.split("==") for x in printf[1].split())}


@pytest.mark.parametrize("name", ["cntk", "python"])
def test_dockerfile_is_based_on_minideb_of_the_recipes_suite(name: str) -> None:
    suite = load_recipe(REPO_IMAGES_DIR / name).recipe.base.suite
    assert f"\nFROM bitnami/minideb:{suite}\n" in _dockerfile(name)


def test_dockerfile_carries_backend_ai_labels_and_policy() -> None:
    text = _dockerfile("cntk")
    for label in (
        "ai.backend.kernelspec=1",
        "ai.backend.base-distro=debian11",
        "ai.backend.runtime-type=python",
        "ai.backend.runtime-path=/usr/bin/python2.7",
        "ai.backend.resource.min.cpu=1",
        "ai.backend.features=",
    ):
        assert label in text
    assert "COPY policy.yml /etc/backend.ai/jail/policy.yml" in text
    assert "'chmod 644 /etc/backend.ai/jail/policy.yml'" in text
    assert "KERAS_BACKEND=cntk" in text
    assert "USER 1000:1000" in text


def test_dockerfile_copies_only_files_inside_the_build_context() -> None:
    for src in re.findall(r"^COPY (\S+) ", _dockerfile("cntk"), re.MULTILINE):
        assert (REPO_IMAGES_DIR / "cntk" / src).is_file()


def test_dockerfile_download_command_is_valid_shell() -> None:
    download = re.search(r"^\s+'(python3 -m pip download [^']*)'", _dockerfile("cntk"), re.M)
    assert download is not None
    args = shlex.split(download[1])
    assert args[args.index("--abi") + 1] == "cp27mu" and "--no-deps" in args


@pytest.mark.parametrize("name", ["cntk", "python"])
def test_dockerfile_uses_only_syntax_debian_12s_builders_parse(name: str) -> None:
    text = _dockerfile(name)
    assert "<<" not in text  # heredocs: BuildKit and buildah 1.33+ only
    assert "--chmod" not in text and "--mount" not in text  # not in docker's legacy builder
    assert len(re.findall(r"^RUN ", text, re.MULTILINE)) == 1  # cleanup in the same layer


def test_dockerfile_runs_each_build_step_script_verbatim() -> None:
    loaded = load_recipe(REPO_IMAGES_DIR / "cntk")
    text = render_dockerfile(loaded)
    for step in build_steps(loaded):
        if isinstance(step, Shell):
            quoted = " \\\n      ".join(shlex.quote(line) for line in step.script.split("\n"))
            assert f"printf '%s\\n' \\\n      {quoted})\"" in text, step.description


def test_local_cntk_build_installs_what_the_dockerfile_installs(cntk_image: Image) -> None:
    _same_packages(cntk_image, _dockerfile("cntk"))


def test_local_python_build_installs_what_the_dockerfile_installs(python_image: Image) -> None:
    _same_packages(python_image, _dockerfile("python"))


def _same_packages(image: Image, dockerfile: str) -> None:
    installed_python = {canonical_name(k): v for k, v in image.manifest["python_packages"].items()}
    pins = _pins(dockerfile)
    # PyPI's cntk 2.7.post2 wheel says "Version: 2.7" in its own metadata: a post-release
    # pin matches the release it re-packages, and nothing else does.
    matches = {k: installed_python.get(k) in (v, v.split(".post")[0]) for k, v in pins.items()}
    assert [k for k, ok in matches.items() if not ok] == []
    # Nothing was installed beyond the pins (wheel/pkg_resources-style extras included).
    assert set(installed_python) - set(pins) <= {"wheel"}
    debian = image.manifest["debian_packages"]
    assert _apt_packages(dockerfile) <= set(debian)
    assert "binutils" not in debian


def test_rendered_dockerfile_policy_is_the_images_policy(cntk_image: Image) -> None:
    assert (
        cntk_image.policy_path.read_bytes()
        == Path(REPO_IMAGES_DIR / "cntk" / "policy.yml").read_bytes()
    )
