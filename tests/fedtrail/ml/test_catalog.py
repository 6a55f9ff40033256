"""A data source names what is wrong with it in the user's terms."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedtrail.errors import ConfigError
from fedtrail.ml.catalog import load_source


def test_an_empty_image_folder_says_it_has_no_class_sub_folders(tmp_path: Path) -> None:
    """It said 'class names must be a non-empty list of strings' (node init --data FOLDER)."""
    with pytest.raises(ConfigError, match=r"has no class sub-folders \(expected root/<class>/"):
        load_source(str(tmp_path))
