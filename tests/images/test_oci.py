"""The exported cntk image is a real container image: podman, docker and containerd run the
seed in it under the rendered seccomp profile and flags, and a registry round trip keeps its
digest. The engines are private ones (tests/images/engines.py), started for this session."""

import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from cogbox.cli import cli
from cogbox.images import oci
from cogbox.images.oci import Exported, ExportError, write_oci_layout
from cogbox.images.store import Image
from tests.images import engines
from tests.seed import CNTK_SQUARED_ERROR, HELLO_WORLD, KERAS_BACKEND

pytestmark = pytest.mark.slow

# The seed's three snippets in one interpreter: one container start per engine.
SEED = "\n".join([HELLO_WORLD, CNTK_SQUARED_ERROR, KERAS_BACKEND])


def _assert_seed_output(proc: subprocess.CompletedProcess[str]) -> None:
    lines = proc.stdout.splitlines()
    assert (lines[0], lines[-2], lines[-1]) == ("hello world", "[ 29.]", "keras"), proc.stderr
    assert "Using CNTK backend" in proc.stderr


def _config(exported: Exported) -> dict[str, object]:
    manifest = json.loads(oci._blob(exported.layout, exported.manifest_digest))
    config: dict[str, object] = json.loads(oci._blob(exported.layout, manifest["config"]["digest"]))
    return config


def test_export_of_the_same_image_gives_the_same_digests(
    cntk_image: Image, cntk_exported: Exported, engines_dir: Path
) -> None:
    again = write_oci_layout(cntk_image, engines_dir / "cntk-again")
    assert (again.layer_digest, again.manifest_digest) == (
        cntk_exported.layer_digest,
        cntk_exported.manifest_digest,
    )


def test_exported_config_runs_the_work_user_with_the_recipes_env_and_labels(
    cntk_exported: Exported,
) -> None:
    config = _config(cntk_exported)["config"]
    assert isinstance(config, dict)
    assert (config["User"], config["WorkingDir"], config["Cmd"]) == (
        "1000:1000",
        "/home/work",
        ["/usr/bin/python2.7"],
    )
    assert "KERAS_BACKEND=cntk" in config["Env"]
    assert config["Labels"]["ai.backend.runtime-path"] == "/usr/bin/python2.7"
    assert config["Labels"]["ai.backend.jail.policy"] == "/etc/backend.ai/jail/policy.yml"


def test_podman_runs_the_seed_from_the_oci_archive_under_the_rendered_profile(
    podman: engines.Run, cntk_image: Image, cntk_oci_archive: Path, cntk_run_flags: list[str]
) -> None:
    podman("load", "--quiet", "--input", str(cntk_oci_archive))
    ref = f"localhost/{oci.repository_name(cntk_image)}"
    _assert_seed_output(podman("run", "--rm", *cntk_run_flags, ref, "python", "-c", SEED))


def test_the_image_carries_its_jail_policy(
    podman: engines.Run, cntk_image: Image, cntk_oci_archive: Path, cntk_run_flags: list[str]
) -> None:
    podman("load", "--quiet", "--input", str(cntk_oci_archive))
    ref = f"localhost/{oci.repository_name(cntk_image)}"
    proc = podman("run", "--rm", *cntk_run_flags, ref, "cat", "/etc/backend.ai/jail/policy.yml")
    assert proc.stdout == cntk_image.policy_path.read_text()


def test_docker_runs_the_seed_from_the_docker_archive_under_the_rendered_profile(
    docker: engines.Run, cntk_image: Image, cntk_docker_archive: Path, cntk_run_flags: list[str]
) -> None:
    docker("load", "--quiet", "--input", str(cntk_docker_archive))
    ref = oci.repository_name(cntk_image)
    _assert_seed_output(docker("run", "--rm", *cntk_run_flags, ref, "python", "-c", SEED))


def test_containerd_runs_the_seed_from_the_oci_archive_under_the_rendered_profile(
    ctr: engines.Run, cntk_image: Image, cntk_oci_archive: Path, cntk_seccomp_profile: Path
) -> None:
    ctr("images", "import", str(cntk_oci_archive))
    ref = oci.repository_name(cntk_image)  # ctr keeps the archive's name as written
    proc = ctr(
        "run",
        "--rm",
        "--seccomp",
        "--seccomp-profile",
        str(cntk_seccomp_profile),
        ref,
        "cogbox-seed",
        "python",
        "-c",
        SEED,
    )
    _assert_seed_output(proc)


def test_pushed_image_pulled_back_by_podman_has_the_same_digest(
    cntk_image: Image, cntk_exported: Exported, registry: str, podman: engines.Run
) -> None:
    ref = f"{registry}/cogbox/cntk:{cntk_image.digest[:12]}"
    pushed = oci.push(cntk_image, ref, tls_verify=False)
    podman("pull", "--quiet", "--tls-verify=false", ref)
    pulled = podman("image", "inspect", "--format", "{{.Digest}}", ref).stdout.strip()
    assert pulled == pushed == cntk_exported.manifest_digest


def test_image_ls_shows_the_exported_and_pushed_digests(
    cntk_image: Image, cntk_exported: Exported, registry: str
) -> None:
    ref = f"{registry}/cogbox/cntk:ls"
    oci.push(cntk_image, ref, tls_verify=False)
    listed = json.loads(CliRunner().invoke(cli, ["image", "ls", "--json"]).output)
    (entry,) = [i for i in listed if i["digest"] == cntk_image.digest]
    assert entry["exports"]["oci"]["manifest_digest"] == cntk_exported.manifest_digest
    assert {"ref": ref, "digest": cntk_exported.manifest_digest} in entry["exports"]["pushes"]


def test_export_without_umoci_names_the_debian_package(
    cntk_image: Image, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(oci.shutil, "which", lambda cmd: None if cmd == "umoci" else "/bin/x")
    with pytest.raises(ExportError, match="install the Debian package umoci"):
        write_oci_layout(cntk_image, tmp_path / "layout")


def test_cli_export_writes_the_archive_and_prints_its_manifest_digest(
    cntk_exported: Exported, engines_dir: Path
) -> None:
    archive = engines_dir / "cli-cntk.tar"
    result = CliRunner().invoke(
        cli, ["image", "export", "cntk", "--format", "oci", "-o", str(archive)]
    )
    assert result.exit_code == 0, result.output
    assert cntk_exported.manifest_digest in result.output and archive.stat().st_size > 0
