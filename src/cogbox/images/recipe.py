"""The image recipe (`images/<name>/recipe.yml`): its model and validation."""

import re
from pathlib import Path, PurePosixPath
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cogbox.errors import CogboxError
from cogbox.images.paths import WORKDIR
from cogbox.sizes import parse_size
from cogbox.yamlsource import YamlDocument

# Suites debootstrap can build from Debian's registry, with the glibc each ships (wheel tags).
DEBIAN_SUITES: dict[str, tuple[int, int]] = {
    "bullseye": (2, 31),
    "bookworm": (2, 36),
    "trixie": (2, 41),
}

_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[A-Za-z0-9.+!_-]+)$")
_DEB_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class RecipeError(CogboxError):
    """A recipe that cannot be loaded: the message names the file, line and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _absolute(path: str) -> str:
    p = PurePosixPath(path)
    if not p.is_absolute() or ".." in p.parts:
        raise ValueError(f"must be an absolute path without '..', got {path!r}")
    return str(p)


AbsPath = Annotated[str, Field(min_length=1)]


class Base(_Strict):
    suite: str

    @field_validator("suite")
    @classmethod
    def _known_suite(cls, v: str) -> str:
        if v not in DEBIAN_SUITES:
            raise ValueError(f"unknown Debian suite {v!r}; known: {', '.join(DEBIAN_SUITES)}")
        return v


class PythonSpec(_Strict):
    interpreter: AbsPath
    version: str = Field(pattern=r"^\d\.\d+$")
    abi: str = Field(pattern=r"^cp\d+m?u?$")
    pip: str
    setuptools: str
    packages: list[str] = []

    _abs = field_validator("interpreter")(_absolute)

    @field_validator("packages")
    @classmethod
    def _pinned(cls, packages: list[str]) -> list[str]:
        seen: set[str] = set()
        for spec in packages:
            match = _PIN.fullmatch(spec)
            if match is None:
                raise ValueError(f"{spec!r} is not pinned to an exact version (write name==X.Y)")
            key = canonical_name(match["name"])
            if key in seen:
                raise ValueError(f"{match['name']!r} is listed twice")
            seen.add(key)
        return packages

    def pins(self) -> dict[str, str]:
        """Canonical package name -> exact version, including pip and setuptools."""
        pins = {"pip": self.pip, "setuptools": self.setuptools}
        for spec in self.packages:
            name, version = spec.split("==")
            pins[canonical_name(name)] = version
        return pins


class Link(_Strict):
    path: AbsPath
    target: str

    _abs = field_validator("path")(_absolute)


class FileToAdd(_Strict):
    src: str
    dest: AbsPath
    mode: int = 0o644

    _abs = field_validator("dest")(_absolute)


class User(_Strict):
    name: str = "work"
    uid: int = Field(1000, ge=1000, le=65535)
    gid: int = Field(1000, ge=1000, le=65535)
    home: AbsPath = WORKDIR


class KernelInfo(_Strict):
    """What the kernel runner needs to know; also rendered as Backend.AI image labels."""

    runtime_type: str = "python"
    runtime_path: AbsPath
    features: list[str] = ["batch", "query", "uid-match"]
    min_cpu: float = Field(1, gt=0)
    min_memory: str = "256m"
    # Modules a pooled kernel imports before it is handed out, so importing them is instant.
    preload: list[str] = []
    # IPython extensions the kernel loads instead of the default (`wurlitzer`, where the image
    # has it and ipykernel < 6): e.g. an image's own filter of its libraries' noise.
    extensions: list[str] = []

    @field_validator("preload", "extensions")
    @classmethod
    def _modules(cls, names: list[str]) -> list[str]:
        for name in names:
            if not _MODULE.fullmatch(name):
                raise ValueError(f"{name!r} is not a Python module name")
        return names

    @field_validator("min_memory")
    @classmethod
    def _size(cls, v: str) -> str:
        parse_size(v)
        return v


class Recipe(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    description: str = ""
    base: Base
    debian_packages: list[str] = []
    python: PythonSpec
    env: dict[str, str] = {}
    user: User = User()
    links: list[Link] = []
    files: list[FileToAdd] = []
    run: list[str] = []
    kernel: KernelInfo
    policy: str = "policy.yml"

    @field_validator("debian_packages")
    @classmethod
    def _deb_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not _DEB_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a Debian package name")
        return names

    @field_validator("env")
    @classmethod
    def _env_keys(cls, env: dict[str, str]) -> dict[str, str]:
        for key in env:
            if not _ENV_KEY.fullmatch(key):
                raise ValueError(f"{key!r} is not a valid environment variable name")
        return env


class LoadedRecipe(BaseModel):
    """A validated recipe plus the folder it came from (files and policy are relative to it)."""

    model_config = ConfigDict(frozen=True)

    recipe: Recipe
    folder: Path

    @property
    def name(self) -> str:
        return self.recipe.name

    @property
    def policy_path(self) -> Path:
        return self.folder / self.recipe.policy

    def file_source(self, item: FileToAdd) -> Path:
        return self.folder / item.src


def canonical_name(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def load_recipe(folder: Path) -> LoadedRecipe:
    """Load and validate `folder/recipe.yml`; errors name the file, line and field."""
    path = folder / "recipe.yml"
    if not path.is_file():
        raise RecipeError(f"no recipe at {path}")
    try:
        doc = YamlDocument.from_path(path)
    except ValueError as exc:
        raise RecipeError(str(exc)) from exc
    if not isinstance(doc.data, dict):
        raise RecipeError(f"{path}:1: a recipe must be a mapping of fields")
    if doc.duplicates:
        raise RecipeError(
            "invalid recipe:\n"
            + "\n".join(
                f"{path}:{line}: {'.'.join(map(str, loc))}: is given twice"
                for loc, line in doc.duplicates
            )
        )
    try:
        recipe = Recipe.model_validate(doc.data)
    except ValidationError as exc:
        raise RecipeError(f"invalid recipe:\n{doc.describe(exc)}") from exc
    loaded = LoadedRecipe(recipe=recipe, folder=folder)
    for i, item in enumerate(recipe.files):
        if not loaded.file_source(item).is_file():
            line = doc.line_of(("files", i, "src"))
            raise RecipeError(f"{path}:{line}: files.{i}.src: no such file {item.src!r}")
    if not loaded.policy_path.is_file():
        raise RecipeError(
            f"{path}:{doc.line_of(('policy',))}: policy: no such file {recipe.policy!r}"
        )
    return loaded
