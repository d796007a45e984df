"""Datasets: determinism, balance, captions agreeing with attributes, digits, few-shot selection."""
from __future__ import annotations

import numpy as np
import pytest

from genvpt.config import SHAPE_CLASSES, DatasetParams, validate_params
from genvpt.datasets import build_dataset, select_items
from genvpt.datasets.shapes import COLOURS, POSITIONS, ShapesDataset, caption_for


def _pixels(rec):
    return np.asarray(rec.image, dtype=np.uint8)


def test_shapes_same_seed_same_bytes_other_seed_differs():
    a = ShapesDataset(32, "textured", 3, seed=5)
    b = ShapesDataset(32, "textured", 3, seed=5)
    c = ShapesDataset(32, "textured", 3, seed=6)
    ra, rb, rc = list(a), list(b), list(c)
    assert all(np.array_equal(_pixels(x), _pixels(y)) and x.caption == y.caption for x, y in zip(ra, rb))
    assert sum(not np.array_equal(_pixels(x), _pixels(y)) for x, y in zip(ra, rc)) > len(ra) // 2


def test_shapes_subset_of_classes_renders_same_images():
    full = ShapesDataset(32, "flat", 2, seed=1)
    sub = ShapesDataset(32, "flat", 2, classes=["star", "circle"], seed=1)
    star_full = [r for r in full if r.class_name == "star"]
    star_sub = [r for r in sub if r.class_name == "star"]
    assert [r.source_id for r in star_full] == [r.source_id for r in star_sub]
    assert all(np.array_equal(_pixels(x), _pixels(y)) for x, y in zip(star_full, star_sub))
    assert sub.class_names == ["star", "circle"] and {r.label for r in star_sub} == {0}


def test_new_shape_classes_are_drawn_only_when_named():
    """NEW_SHAPE_CLASSES (the held-out-classes column) render on request; the default class list stays the source's
    12, and naming them does not change the images of the others."""
    from genvpt.datasets.shape_vocab import NEW_SHAPE_CLASSES

    assert ShapesDataset(32, "flat", 1).class_names == list(SHAPE_CLASSES)
    assert not set(NEW_SHAPE_CLASSES) & set(SHAPE_CLASSES)
    mixed = ShapesDataset(32, "flat", 3, classes=[*NEW_SHAPE_CLASSES, "star"], seed=1, size_scale=1.6,
                          rotation_range=0, positions=["center"])
    recs = list(mixed)
    assert sorted(r.class_name for r in recs) == sorted([*NEW_SHAPE_CLASSES, "star"] * 3)
    assert all(r.class_name in r.caption for r in recs)
    means = {r.class_name: [] for r in recs}
    for r in recs:  # the shape covers part of the canvas, not none or all of it
        px = _pixels(r).reshape(-1, 3)
        means[r.class_name].append(float((np.abs(px - px[0]).sum(1) > 30).mean()))
    assert all(0.05 < m < 0.9 for v in means.values() for m in v), means
    star_alone = [r for r in ShapesDataset(32, "flat", 3, classes=["star", "circle"], seed=1, size_scale=1.6,
                                            rotation_range=0, positions=["center"]) if r.class_name == "star"]
    star_mixed = [r for r in recs if r.class_name == "star"]
    assert [r.source_id for r in star_mixed] == [r.source_id for r in star_alone]
    assert all(np.array_equal(_pixels(x), _pixels(y)) for x, y in zip(star_mixed, star_alone))
    with pytest.raises(Exception, match="never appear in the source domain"):
        DatasetParams(shapes={"classes": ["circle", "octagon"]})
    assert DatasetParams(shapes={"classes": ["tee", "ell"]}).shapes.classes == ["tee", "ell"]


def test_shapes_class_balance_and_size():
    ds = ShapesDataset(24, "outlined", 4, seed=0)
    recs = list(ds)
    assert len(recs) == 4 * len(SHAPE_CLASSES) and len(SHAPE_CLASSES) >= 10
    counts = np.bincount([r.label for r in recs])
    assert counts.tolist() == [4] * len(SHAPE_CLASSES)
    assert all(r.image.size == (24, 24) and r.image.mode == "RGB" for r in recs)


def test_captions_agree_with_attributes_and_pixels():
    ds = ShapesDataset(32, "flat", 6, seed=3)
    for label, shape in enumerate(ds.class_names):
        for i in range(6):
            attrs = ds.attributes(shape, i)
            rec = ds.make(label, i)
            cap = caption_for(attrs)
            assert rec.caption == cap
            assert attrs.colour in cap and attrs.size in cap and f"{attrs.background} background" in cap
            assert (shape in cap) if attrs.count == 1 else (shape[:4] in cap and cap.split()[0] in ("two", "three"))
            if attrs.count == 1:
                assert POSITIONS[attrs.positions[0]][0] in cap
            px = _pixels(rec).reshape(-1, 3).astype(float)
            d_fg = np.linalg.norm(px - np.array(COLOURS[attrs.colour]), axis=1)
            d_bg = np.linalg.norm(px - np.array(COLOURS[attrs.background]), axis=1)
            assert (d_fg < 30).sum() >= 8, cap  # the named shape colour is really drawn
            assert (d_bg < 30).mean() > 0.3, cap  # and the named background dominates


def test_domains_differ_in_style():
    flat = ShapesDataset(32, "flat", 5, seed=0)
    tex = ShapesDataset(32, "textured", 5, seed=0)
    def n_colours(recs):  # plain backgrounds have far fewer distinct colours than patterned ones
        return np.mean([len(np.unique(_pixels(r).reshape(-1, 3), axis=0)) for r in recs])
    assert n_colours(list(tex)) > 1.5 * n_colours(list(flat))
    assert all(any(t in r.caption for t in ("striped", "dotted", "checkered", "gradient")) for r in tex)


def test_digits_dataset():
    p = validate_params({"dataset": {"name": "digits", "image_size": 16}}).dataset
    ds = build_dataset(p)
    items = list(ds.items())
    assert len(items) == 1797 and len(ds.class_names) == 10
    rec = items[0].load()
    assert rec.image.size == (16, 16) and rec.image.mode == "RGB" and rec.caption is None
    assert rec.class_name == ds.class_names[rec.label]


def test_few_shot_selection_is_seeded_and_exact():
    p = DatasetParams(name="shapes", shapes={"images_per_class": 20}, few_shot={"images_per_class": 5, "num_classes": 4, "seed": 3})
    ds = build_dataset(p)
    sel = select_items(ds.items(), ds.class_names, p)
    sel2 = select_items(build_dataset(p).items(), ds.class_names, p)
    assert len(sel.class_names) == 4
    counts = np.bincount([sel.label_map[it.label] for it in sel.train], minlength=4)
    assert counts.tolist() == [5, 5, 5, 5]
    assert [it.source_id for it in sel.train] == [it.source_id for it in sel2.train]
    # validation keeps every remaining image of the kept classes, disjoint from train
    assert len(sel.val) == 4 * 4  # 20 per class, val_fraction 0.2
    assert not {it.source_id for it in sel.train} & {it.source_id for it in sel.val}
    p3 = DatasetParams(name="shapes", shapes={"images_per_class": 20}, few_shot={"images_per_class": 5, "num_classes": 4, "seed": 4})
    sel3 = select_items(build_dataset(p3).items(), ds.class_names, p3)
    assert [it.source_id for it in sel3.train] != [it.source_id for it in sel.train]


def test_few_shot_too_many_classes_is_an_error():
    p = DatasetParams(name="digits", few_shot={"num_classes": 11})
    ds = build_dataset(p)
    with pytest.raises(ValueError, match="num_classes=11"):
        select_items(ds.items(), ds.class_names, p)


def test_size_scale_draws_larger_shapes_inside_the_canvas():
    small = ShapesDataset(32, "flat", 4, max_count=1, seed=2)
    big = ShapesDataset(32, "flat", 4, max_count=1, seed=2, size_scale=1.5)
    grew = 0
    for label, shape in enumerate(small.class_names):
        for i in range(4):
            attrs = small.attributes(shape, i)
            assert big.attributes(shape, i) == attrs  # same attributes and caption, only the radius changes
            fg = np.array(COLOURS[attrs.colour], dtype=float)
            area = [int((np.linalg.norm(_pixels(d.make(label, i)).reshape(-1, 3) - fg, axis=1) < 30).sum())
                    for d in (small, big)]
            grew += area[1] > area[0]
            mask = np.linalg.norm(_pixels(big.make(label, i)).astype(float) - fg, axis=2) < 30
            border = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
            assert not border.any(), f"{shape} {i} touches the edge"  # centres are pulled in for big shapes
    assert grew >= 0.9 * 4 * len(small.class_names)
    with pytest.raises(Exception, match="size_scale"):
        validate_params({"dataset": {"shapes": {"size_scale": 3.0}}})


def test_colour_palette_and_rotation_range():
    ds = ShapesDataset(32, "textured", 6, max_count=1, seed=4, colours=["white", "black", "red"], rotation_range=30)
    for label, shape in enumerate(ds.class_names):
        for i in range(6):
            a = ds.attributes(shape, i)
            assert {a.colour, a.background} <= {"white", "black", "red"} and a.colour != a.background
            assert -15.0 <= a.rotation <= 15.0
    full = ShapesDataset(32, "flat", 6, seed=4)
    assert any(not 0 <= full.attributes(s, i).rotation < 15 for s in full.class_names for i in range(6))
    with pytest.raises(ValueError, match="enough contrast"):
        validate_params({"dataset": {"shapes": {"colours": ["red", "orange"]}}})
    with pytest.raises(ValueError, match="dataset.shapes.colours"):
        validate_params({"dataset": {"shapes": {"colours": ["mauve", "red"]}}})


def test_positions_and_sizes_restrict_single_shapes():
    ds = ShapesDataset(32, "flat", 8, max_count=1, seed=2, positions=["center"], sizes=["medium", "large"],
                       size_scale=1.6)
    seen_sizes = set()
    for label, shape in enumerate(ds.class_names):
        for i in range(8):
            a = ds.attributes(shape, i)
            assert a.positions == ("center",) and "in the center" in caption_for(a)
            seen_sizes.add(a.size)
            # the shape's colour covers the middle pixel: it is drawn at the centre
            px = _pixels(ds.make(label, i))[16, 16].astype(float)
            if shape not in ("ring", "crescent"):
                assert np.linalg.norm(px - np.array(COLOURS[a.colour], dtype=float)) < 60, (shape, i)
    assert seen_sizes == {"medium", "large"}
    # the default (None) keeps every position: same draws as before the option existed
    full = ShapesDataset(32, "flat", 8, max_count=1, seed=2)
    assert len({full.attributes(s, i).positions for s in full.class_names for i in range(8)}) > 4
    with pytest.raises(ValueError, match="dataset.shapes.positions"):
        validate_params({"dataset": {"shapes": {"positions": ["middle"]}}})
    with pytest.raises(ValueError, match="source.shapes.sizes"):
        validate_params({"source": {"shapes": {"sizes": ["huge"]}}})
    with pytest.raises(ValueError, match="unknown positions"):
        ShapesDataset(32, "flat", 2, positions=["nowhere"])
