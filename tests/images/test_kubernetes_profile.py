"""The Localhost seccomp profile `cogbox kubernetes render` ships to nodes loads in containerd
(the runtime under most kubelets) with the exported image: the seed runs under it, and a
system call the policy forbids is refused."""

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cogbox.cli import cli
from cogbox.images import oci
from cogbox.images.store import Image
from tests.images import engines
from tests.seed import HELLO_WORLD, KERAS_BACKEND

pytestmark = pytest.mark.slow

# unshare(CLONE_NEWUSER) through libc (Python 2.7 in the cntk image has no os.unshare):
# allowed without seccomp, refused (EPERM) by the jail's allow-list profile.
UNSHARE = (
    "import ctypes, os; libc = ctypes.CDLL(None, use_errno=True); "
    "r = libc.syscall(272, 0x10000000); "
    "print('unshare %d %s' % (r, os.strerror(ctypes.get_errno())))"
)


@pytest.fixture(scope="module")
def rendered_profile(engines_dir: Path) -> Path:
    """The cntk profile as the rendered ConfigMap carries it to every node."""
    result = CliRunner().invoke(cli, ["kubernetes", "render", "--session", "cntk"])
    assert result.exit_code == 0, result.output
    (config_map,) = [m for m in yaml.safe_load_all(result.output) if m and m["kind"] == "ConfigMap"]
    path = engines_dir / "kubelet-seccomp" / "cogbox" / "cntk.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config_map["data"]["cntk.json"])
    assert json.loads(path.read_text())["defaultAction"] == "SCMP_ACT_ERRNO"
    return path


def test_containerd_runs_the_seed_under_the_rendered_localhost_profile(
    ctr: engines.Run, cntk_image: Image, cntk_oci_archive: Path, rendered_profile: Path
) -> None:
    ctr("images", "import", str(cntk_oci_archive))
    ref = oci.repository_name(cntk_image)
    seed = "\n".join([HELLO_WORLD, KERAS_BACKEND, UNSHARE])
    proc = ctr(
        "run",
        "--rm",
        "--seccomp",
        "--seccomp-profile",
        str(rendered_profile),
        ref,
        "cogbox-k8s-profile",
        "python",
        "-c",
        seed,
    )
    lines = proc.stdout.splitlines()
    assert (lines[0], lines[-2]) == ("hello world", "keras"), proc.stderr
    assert lines[-1] == "unshare -1 Operation not permitted"


def test_without_the_profile_the_same_call_is_allowed(
    ctr: engines.Run, cntk_image: Image, cntk_oci_archive: Path
) -> None:
    # The control: the refusal above is the profile's doing, not the image's or the runtime's.
    ctr("images", "import", str(cntk_oci_archive))
    ref = oci.repository_name(cntk_image)
    proc = ctr("run", "--rm", ref, "cogbox-k8s-no-profile", "python", "-c", UNSHARE)
    assert proc.stdout.strip() == "unshare 0 Success"
