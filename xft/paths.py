"""Paths in configs: `xft://NAME` names a file or folder shipped in xft/assets.

That lets shipped configs point at the embedded tiny model and demo data in a
way that works from any directory and from a non-editable install.
"""

from pathlib import Path

ASSET_SCHEME = "xft://"
ASSETS_DIR = Path(__file__).resolve().parent / "assets"


def resolve_path(path: str) -> str:
    """Absolute path for `xft://...`; anything else (local path, hub id) unchanged."""
    if isinstance(path, str) and path.startswith(ASSET_SCHEME):
        return str(ASSETS_DIR / path[len(ASSET_SCHEME):])
    return path
