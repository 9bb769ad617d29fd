"""Where cogbox keeps its state on disk (one place decides it)."""

import os
from pathlib import Path

REPO_IMAGES_DIR = Path(__file__).resolve().parents[2] / "images"


def data_dir() -> Path:
    """`COGBOX_DATA_DIR`, else /var/lib/cogbox for root, else ~/.local/share/cogbox."""
    configured = os.environ.get("COGBOX_DATA_DIR")
    if configured:
        return Path(configured)
    if os.geteuid() == 0:
        return Path("/var/lib/cogbox")
    return Path.home() / ".local" / "share" / "cogbox"


def recipes_dir() -> Path:
    """Folder holding `<name>/recipe.yml`: `COGBOX_IMAGES_DIR`, else the repository's images/."""
    return Path(os.environ.get("COGBOX_IMAGES_DIR", REPO_IMAGES_DIR))
