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
        # the tokenizers' broad data: overrides of the source block, checked where they sit
        ({"tokenizer": {"data": {"x": {"shapes": {"domian": "flat"}}}}},
         ["tokenizer.data.x.shapes.domian", "unknown key", "domain"]),
        ({"tokenizer": {"data": {"x": {"name": "cifar"}}}}, ["tokenizer.data.x.name", "'digits'"]),
        ({"tokenizer": {"data": {"Bad Name": {}}}}, ["tokenizer.data", "folder name"]),
        # more targets: configurations of adaptation.configs, dataset overrides checked where they sit
        ({"extra_targets": {"t": {"configs": ["vpt-nope"]}}},
         ["extra_targets.t.configs", "vpt-nope", "not in adaptation.configs"]),
        ({"extra_targets": {"t": {"dataset": {"shapes": {"domian": "flat"}}, "configs": ["x"]},
                            "Bad Name": {"configs": ["x"]}},
          "adaptation": {"configs": {"x": {"backbone": "ar", "method": "vpt"}}}},
         ["extra_targets.t.dataset.shapes.domian", "unknown key", "domain", "extra_targets.Bad Name", "folder name"]),
        ({"extra_targets": {"t": {"configs": ["x"], "datset": {}}}},
         ["extra_targets.t.datset", "unknown key", "configs, dataset"]),
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


def test_dataset_defaults_are_params_yaml():
    """One source of defaults: the models' defaults are params.yaml's dataset / source / prepare blocks."""
    from genvpt.config import DatasetParams, Params, PrepareParams

    repo = load_params(ROOT / "params.yaml")
    defaults = Params()
    for block in ("dataset", "source", "prepare"):
        assert getattr(defaults, block) == getattr(repo, block), block
    assert DatasetParams() == repo.dataset and PrepareParams() == repo.prepare
    assert (repo.dataset.val_fraction, repo.dataset.test_fraction) == (0.2, 0.2)
    assert (repo.source.val_fraction, repo.source.test_fraction) == (0.1, 0.0)


def test_partial_blocks_keep_their_blocks_defaults():
    p = validate_params({"source": {"name": "digits"}, "dataset": {"name": "digits"}})
    assert (p.source.seed, p.source.val_fraction, p.source.test_fraction) == (1, 0.1, 0.0)
    assert (p.dataset.seed, p.dataset.val_fraction, p.dataset.test_fraction) == (0, 0.2, 0.2)
    p = validate_params({"source": {"shapes": {"images_per_class": 7}}, "dataset": {"shapes": {"max_count": 2}}})
    assert (p.source.shapes.domain, p.source.shapes.images_per_class) == ("flat", 7)
    assert (p.dataset.shapes.domain, p.dataset.shapes.images_per_class, p.dataset.shapes.max_count) == ("textured", 100, 2)
    assert validate_params({"source": {"test_fraction": 0.25}}).source.test_fraction == 0.25


@pytest.mark.parametrize(
    "block, expected",
    [
        ({"test_fraction": 1.0}, ["dataset.test_fraction", "less than 1"]),
        ({"test_fraction": -0.1}, ["dataset.test_fraction", "greater than or equal to 0"]),
        ({"val_fraction": 1.0}, ["dataset.val_fraction", "less than 1"]),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, ["dataset:", "val_fraction + test_fraction must be below 1"]),
    ],
)
def test_split_fractions_are_validated(block, expected):
    with pytest.raises(ConfigError) as err:
        validate_params({"dataset": block}, "params.yaml")
    for part in expected:
        assert part in str(err.value), (part, str(err.value))
    assert validate_params({"dataset": {"val_fraction": 0.0, "test_fraction": 0.0}}).dataset.test_fraction == 0.0


def test_dataset_params_import_without_config_or_dataset_code():
    """genvpt/datasets/params.py is import-light and the dataset code never imports genvpt/config.py (no cycle)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import genvpt.datasets.params as dp\n"
        "heavy = [m for m in ('genvpt.config', 'torch', 'numpy', 'PIL', 'genvpt.datasets.registry') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "import genvpt.datasets.prepare, genvpt.datasets.imagefolder, genvpt.datasets.parquet, genvpt.datasets.wds_source\n"
        "import genvpt.datasets.digits, genvpt.datasets.shapes\n"
        "assert 'genvpt.config' not in sys.modules\n"
        "from genvpt.datasets import select_items, load_split\n"
        "import genvpt.config as c\n"
        "assert (c.DatasetParams, c.PrepareParams, c.ShapesParams, c.FewShotParams, c.SHAPE_CLASSES) == "
        "(dp.DatasetParams, dp.PrepareParams, dp.ShapesParams, dp.FewShotParams, dp.SHAPE_CLASSES)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr


def test_params_yaml_spells_out_the_code_defaults():
    """One source of defaults: every value params.yaml gives equals the params models' default (the user lists
    `adaptation.configs`, `sample.configs`, `classify.configs` and `classify.inversion.configs` excepted, and
    `extra_targets` and `metrics.class_judge`, which name configurations), so no default lives twice with two
    values."""
    from genvpt.config import load_params, validate_params

    yaml_ = load_params(ROOT / "params.yaml").model_dump(mode="json")
    code = validate_params({}).model_dump(mode="json")
    for d in (yaml_, code):
        d["adaptation"].pop("configs")
        d["classify"].pop("configs")
        d["classify"]["inversion"].pop("configs")
        d.pop("extra_targets")
        d["metrics"].pop("class_judge")
    diffs = []

    def walk(a, b, path):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k), b.get(k), f"{path}.{k}" if path else k)
        elif a != b:
            diffs.append(f"{path}: params.yaml {a!r} vs code {b!r}")

    walk(yaml_, code, "")
    assert not diffs, "\n".join(diffs)
