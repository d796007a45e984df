"""The whole dvc.yaml pipeline at toy size: params.yaml shrunk so that every stage runs in seconds (16 px shapes, a
few images per class, a few training steps with checkpoints every 2 steps, one adaptation configuration per
backbone, three classification configurations on the tiny CLIP ViT), and the stage commands read from dvc.yaml itself (so a stage added there is covered without editing
the tests that use this)."""
from __future__ import annotations

import contextlib
import copy
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

# a prompt method on the AR (class-token prompts) and on VAR with its CLIP loss (MVP): the two adaptation code paths
CONFIGS = ("vpt-ar", "mvp")
# classification: nothing trains (zero-shot), input-independent tokens (IIP), generated tokens (PGN); both inverted
CLASSIFY_CONFIGS = ("zero-shot", "iip", "pgn")


def tiny_params(configs: tuple[str, ...] = CONFIGS, classify: tuple[str, ...] = CLASSIFY_CONFIGS) -> dict:
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p = copy.deepcopy(p)
    for block, n in (("dataset", 5), ("source", 8)):
        p[block]["image_size"] = 16
        p[block]["shapes"]["images_per_class"] = n
        p[block]["shapes"]["classes"] = ["circle", "square", "triangle"]
    p["sample"].update(images_per_class=3, batch_size=5, sampling_seeds=[0, 1], isolate=False)
    p["metrics"].update(batch_size=16, kid_subsets=4, diversity_centers_per_class=2, probe_max_iter=50)
    p["report"]["grid_images_per_class"] = 2
    p["report"]["compare"] = ["vpt-ar:ar"]
    ad = p["adaptation"]
    ad["seeds"] = [0, 1]
    ad["num_threads"] = 1
    ad["train"].update(steps=4, batch_size=4, warmup_steps=1, checkpoint_every=2)
    ad["configs"] = {k: ad["configs"][k] for k in configs}
    # more targets: each keeps the configurations kept above (at least one); digits with as many classes as the tiny
    # source has (the frozen rows' class table), a few train images per class
    p["extra_targets"] = {
        name: {"dataset": {**(t.get("dataset") or {}), "few_shot": {"num_classes": 3, "images_per_class": 5}},
               "configs": [c for c in t["configs"] if c in configs] or [configs[0]]}
        for name, t in (p.get("extra_targets") or {}).items()}
    ct = p["clip"]["train"]
    ct.update(steps=4, batch_size=8, warmup_steps=1, checkpoint_every=2, eval_batch_size=16)
    p["clip"]["batch_size"] = 16
    tok = p["tokenizer"]
    tok["eval_batch_size"] = 16
    tok["data"] = {"textured": {"seed": 2, "shapes": {"domain": "textured", "images_per_class": 4}}}
    tok["tokenize"]["batch_size"] = 16
    tok["vqgan"].update(ch=8, z_channels=8, n_embed=16, embed_dim=4, norm_groups=4)
    tok["msvq"].update(ch=8, z_channels=4, vocab_size=16, patch_nums=[1, 2, 4], norm_groups=4, share_quant_resi=3)
    for fam in ("vqgan", "msvq"):
        tok[fam]["train"].update(steps=4, batch_size=8, warmup_steps=1, checkpoint_every=2, ae_warmup_steps=1,
                                 restart_every=0)
    gen = p["generator"]
    gen["num_threads"] = 1
    gen["ar"].update(n_layer=1, n_head=2, n_embd=16)
    gen["maskgit"].update(hidden_dim=16, depth=1, heads=2, mlp_dim=32)
    gen["maskgit"]["sample"]["steps"] = 2
    gen["var"].update(depth=1, embed_dim=16, num_heads=2)
    for fam in ("ar", "maskgit", "var"):
        gen[fam]["train"].update(steps=4, batch_size=8, warmup_steps=1, checkpoint_every=2, log_every=2,
                                 eval_every=2)
    gen["classifier"].update(width=4, epochs=1, batch_size=8)
    gen["eval"].update(samples_per_class=2, batch_size=6, grid_per_class=2)
    cl = p["classify"]
    cl["seeds"] = [0, 1]
    cl["num_threads"] = 1
    cl["clip"]["batch_size"] = 16  # the tiny CLIP ViT (genvpt-tiny-vit), a few pretraining steps
    cl["clip"]["train"] = dict(steps=4, batch_size=8, warmup_steps=1, checkpoint_every=2, eval_batch_size=16)
    cl["train"].update(steps=4, batch_size=8, checkpoint_every=2, eval_batch_size=16)
    cl["configs"] = {k: cl["configs"][k] for k in classify}
    cl["inversion"]["configs"] = [c for c in cl["inversion"]["configs"] if c in classify]
    return p


def stage_commands(root: Path) -> dict[str, dict]:
    """{stage name: {"cmd", "outs", "deps", "upstream"}} of dvc.yaml as DVC resolves it against ``root``'s
    params.yaml, in dependency order; ``upstream``: the stages whose outputs it reads (root must be a DVC
    repository)."""
    import networkx as nx
    from dvc.repo import Repo

    with contextlib.chdir(root), Repo(str(root)) as repo:
        graph = repo.index.graph
        order = list(reversed(list(nx.topological_sort(graph))))  # edges point dependent -> dependency
        out = {}
        for st in order:
            if not getattr(st, "cmd", None):
                continue
            out[st.addressing] = {
                "cmd": st.cmd,
                "outs": [str(o.def_path) for o in st.outs],
                "deps": [str(d.def_path) for d in st.deps],
                "upstream": {s.addressing for s in graph.successors(st)},
            }
    return out
