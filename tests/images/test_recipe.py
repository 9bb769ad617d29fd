"""Recipes are validated on load; every error names the file, the line and the field."""

from pathlib import Path

import pytest

from cogbox.images.plan import build_digest
from cogbox.images.recipe import RecipeError, load_recipe


def _edit(folder: Path, old: str, new: str) -> None:
    path = folder / "recipe.yml"
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_repository_recipes_load(recipes: Path) -> None:
    assert load_recipe(recipes / "cntk").recipe.base.suite == "bullseye"
    assert load_recipe(recipes / "python").recipe.base.suite == "bookworm"


def test_cntk_recipe_pins_the_seed_stack(recipes: Path) -> None:
    pins = load_recipe(recipes / "cntk").recipe.python.pins()
    assert (pins["cntk"], pins["keras"], pins["numpy"]) == ("2.7.post2", "2.3.1", "1.13.3")
    assert load_recipe(recipes / "cntk").recipe.env["KERAS_BACKEND"] == "cntk"


def test_unknown_field_is_named_with_its_line(recipes: Path) -> None:
    _edit(recipes / "python", "description:", "colour: blue\ndescription:")
    with pytest.raises(RecipeError, match=r"recipe.yml:3: colour: unknown field"):
        load_recipe(recipes / "python")


def test_unpinned_package_is_refused(recipes: Path) -> None:
    _edit(recipes / "python", "- numpy==2.4.6", "- numpy>=2")
    with pytest.raises(RecipeError, match=r"python\.packages.*'numpy>=2' is not pinned"):
        load_recipe(recipes / "python")


def test_unknown_suite_is_refused(recipes: Path) -> None:
    _edit(recipes / "python", "suite: bookworm", "suite: wheezy-backports")
    with pytest.raises(RecipeError, match=r"recipe.yml:\d+: base.suite: .*unknown Debian suite"):
        load_recipe(recipes / "python")


def test_package_listed_twice_is_refused(recipes: Path) -> None:
    _edit(recipes / "python", "- numpy==2.4.6", "- numpy==2.4.6\n    - NumPy==2.4.5")
    with pytest.raises(RecipeError, match="'NumPy' is listed twice"):
        load_recipe(recipes / "python")


def test_missing_file_to_add_is_named(recipes: Path) -> None:
    (recipes / "cntk" / "files" / "cntk-libs.conf").unlink()
    with pytest.raises(RecipeError, match=r"files.0.src: no such file 'files/cntk-libs.conf'"):
        load_recipe(recipes / "cntk")


def test_relative_destination_is_refused(recipes: Path) -> None:
    _edit(recipes / "cntk", "dest: /etc/ld.so.conf.d/cntk-libs.conf", "dest: ../etc/x")
    with pytest.raises(RecipeError, match=r"files.0.dest: .*absolute path"):
        load_recipe(recipes / "cntk")


def test_invalid_yaml_names_its_line(recipes: Path) -> None:
    (recipes / "python" / "recipe.yml").write_text("name: python\nbase: [unclosed\n")
    with pytest.raises(RecipeError, match=r"recipe.yml:3: not valid YAML"):
        load_recipe(recipes / "python")


def test_digest_follows_recipe_files_and_policy(recipes: Path) -> None:
    before = build_digest(load_recipe(recipes / "cntk"))
    assert build_digest(load_recipe(recipes / "cntk")) == before
    (recipes / "cntk" / "files" / "cntk-libs.conf").write_text("/opt/other\n")
    after_file = build_digest(load_recipe(recipes / "cntk"))
    with (recipes / "cntk" / "policy.yml").open("a") as policy:
        policy.write("\n# edited\n")
    after_policy = build_digest(load_recipe(recipes / "cntk"))
    assert len({before, after_file, after_policy}) == 3


def test_key_given_twice_is_refused_with_the_line_of_the_repeat(recipes: Path) -> None:
    _edit(recipes / "python", "description:", "description: first\ndescription:")
    with pytest.raises(RecipeError, match=r"recipe.yml:4: description: is given twice"):
        load_recipe(recipes / "python")


def test_preload_must_name_python_modules(recipes: Path) -> None:
    _edit(recipes / "cntk", "preload: [cntk]", "preload: [cntk, 'os; rm -rf /']")
    with pytest.raises(RecipeError, match=r"kernel.preload.*'os; rm -rf /' is not a Python module"):
        load_recipe(recipes / "cntk")
