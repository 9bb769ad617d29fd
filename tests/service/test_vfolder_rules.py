"""Storage folders' pure rules: names and mount paths (Backend.AI's), no service needed."""

import pytest

from cogbox.service.errors import ServiceError
from cogbox.service.vfolders import check_name, mount_destination, parse_mount_args


@pytest.mark.parametrize(
    ("name", "requested", "expected"),
    [
        ("data", None, "/home/work/data"),
        ("data", "inputs/train", "/home/work/inputs/train"),
        ("data", "/home/work/x", "/home/work/x"),
        (".local", None, "/home/work/.local"),
    ],
)
def test_mount_destination_follows_backendai_rules(
    name: str, requested: str | None, expected: str
) -> None:
    assert mount_destination(name, requested) == expected


@pytest.mark.parametrize(
    ("requested", "words"),
    [
        ("../x", "'..'"),
        ("/etc", "system folder"),
        ("/usr/local/x", "system folder"),
        ("/home/work", "would hide"),
        ("/", "would hide"),
        ("/data", "under /home/work only"),
        ("a\0b", "NUL"),
    ],
)
def test_mount_destination_refuses_with_400_naming_the_rule(requested: str, words: str) -> None:
    with pytest.raises(ServiceError) as caught:
        mount_destination("data", requested)
    assert (caught.value.status, words in caught.value.message) == (400, True), caught.value


@pytest.mark.parametrize("name", ["data", "my-set_1.v2", ".local", "x" * 64])
def test_folder_names_backendai_accepts(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "x" * 65, ".bashrc", ".ssh", 3, None])
def test_folder_names_refused(name: object) -> None:
    with pytest.raises(ServiceError) as caught:
        check_name(name)
    assert caught.value.status == 400


def test_mount_args_split_like_backendai_prepare_mount_arg() -> None:
    assert parse_mount_args(["a", "b=x/y", "c:/home/work/z"]) == (
        ["a", "b", "c"],
        {"b": "x/y", "c": "/home/work/z"},
    )
