"""Typed errors meet HTTP once, at the edge (service/errors.py's PROBLEMS, asked by the app's
middleware): a file error keeps its type across the agent channel and reaches the client as
the same JSON problem, whichever API surface asked. No kernel, no jail: the fast tier."""

from pathlib import Path

import pytest

from cogbox.agent import wire
from cogbox.kernel.files import FileError, PathNotFoundError
from cogbox.service.errors import PROBLEMS, ServiceError, listed_problem, problem
from cogbox.service.vfolder_files import new_upload, open_for_download
from tests.fakes.agent import FakeAgent
from tests.service.test_backendai_fast import Api, served


@pytest.mark.parametrize("kind", list(PROBLEMS), ids=lambda kind: kind.__name__)
def test_every_error_the_edge_maps_keeps_its_type_across_the_agent_channel(
    kind: type[Exception],
) -> None:
    crossed = wire.error_in(wire.error_out(kind("'x.txt' said so")))
    assert (type(crossed), str(crossed)) == (kind, "'x.txt' said so")


def test_the_most_specific_listed_class_decides_the_problem() -> None:
    class Unlisted(PathNotFoundError):
        pass

    assert [(p.status, p.code) for p in map(listed_problem, (Unlisted("m"), FileError("m")))] == [
        (404, "not-found"),
        (400, "file-error"),
    ]


def test_an_error_the_table_does_not_know_is_left_to_the_edge_as_internal() -> None:
    assert problem(RuntimeError("a bug")) is None


def test_file_problems_reach_backendai_clients_as_typed_json(tmp_path: Path) -> None:
    async def test(api: Api, agent: FakeAgent) -> None:
        await api.call("POST", "/session", {"lang": "python", "name": "box1"})
        answers = [
            await api.call("GET", "/session/box1/files?path=nowhere"),
            await api.call("GET", "/session/box1/download?files=gone.txt"),
            await api.call("GET", "/session/box1/files?path=../etc"),
        ]
        assert answers == [
            (404, _problem(404, "not-found", "'nowhere' does not exist in /home/work")),
            (404, _problem(404, "not-found", "'gone.txt' does not exist in /home/work")),
            (
                400,
                _problem(
                    400,
                    "invalid-path",
                    "path '../etc' contains '..'; it must stay inside /home/work",
                ),
            ),
        ]

    served(test, tmp_path)


def _problem(status: int, code: str, message: str) -> dict[str, object]:
    return {
        "error": code,
        "status": status,
        "type": "https://api.backend.ai/probs/" + code,
        "title": message,
        "msg": message,
    }


def test_a_storage_folders_file_errors_are_worded_for_the_folder_and_keep_their_codes(
    tmp_path: Path,
) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "link").symlink_to("/etc")
    answers = []
    for call in (
        lambda: open_for_download(tmp_path, "gone.txt", 1 << 20),
        lambda: open_for_download(tmp_path, "../x", 1 << 20),
        lambda: open_for_download(tmp_path, "link/passwd", 1 << 20),
        lambda: open_for_download(tmp_path, "d", 1 << 20),
        lambda: new_upload(tmp_path, "link/x"),
    ):
        with pytest.raises(ServiceError) as refused:
            call()
        answers.append((refused.value.status, refused.value.code, refused.value.message))
    assert answers == [
        (404, "not-found", "'gone.txt' does not exist in the folder"),
        (400, "invalid-path", "path '../x' contains '..'; it must stay inside the folder"),
        (400, "invalid-path", _LINK.format("link/passwd")),
        (400, "file-error", "cannot download 'd': it is not a regular file"),
        (400, "invalid-path", _LINK.format("link/x")),
    ]


_LINK = (
    "refused {!r}: 'link' is a symbolic link, and links in the folder are never followed "
    "from the host"
)
