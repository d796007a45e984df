"""params.yaml validation: errors name the key and what is allowed."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from genvpt.config import ConfigError, load_params, validate_params

ROOT = Path(__file__).resolve().parents[1]


def test_repo_params_yaml_is_valid_and_complete():
    p = load_params(ROOT / "params.yaml")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    # every section the code knows is spelled out in params.yaml (DVC tracks keys that exist in the file)
    assert set(type(p).model_fields) == set(raw)
    assert p.dataset.name == "shapes" and p.source.shapes.domain == "flat" and p.dataset.shapes.domain == "textured"


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"dataset": {"name": "cifar"}}, ["dataset.name", "'shapes'", "'digits'", "'imagefolder'"]),
        ({"dataset": {"nmae": "digits"}}, ["dataset.nmae", "unknown key", "name", "image_size"]),
        ({"source": {"shapes": {"domain": "neon"}}}, ["source.shapes.domain", "'flat'", "'textured'", "'outlined'"]),
        ({"dataset": {"shapes": {"classes": ["blob", "star"]}}}, ["dataset.shapes.classes", "blob", "circle"]),
        ({"dataset": {"name": "imagefolder"}}, ["dataset", "path is required"]),
        ({"prepare": {"max_reject_fraction": 2}}, ["prepare.max_reject_fraction", "less than or equal to 1"]),
        ({"typo_section": {}}, ["typo_section", "unknown key", "dataset"]),
    ],
)
def test_bad_params_name_key_and_allowed_values(data, expected):
    with pytest.raises(ConfigError) as err:
        validate_params(data, "params.yaml")
    msg = str(err.value)
    assert "params.yaml" in msg
    for part in expected:
        assert part in msg, (part, msg)


def test_load_params_errors_for_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("dataset: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_params(bad)


def test_readme_params_examples_validate():
    """The params.yaml snippets in the README are real: every key exists and every value is allowed."""
    import re
    from pathlib import Path

    import yaml

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", readme, re.S)
    assert len(blocks) >= 2
    for blk in blocks:
        validate_params(yaml.safe_load(blk))
