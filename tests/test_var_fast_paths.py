"""VAR's fast sampling paths (issue #16): the static KV cache, the compiled per-scale step and CUDA-graph replay
give the tokens of the plain eager sampler for the same draws; the compiled code and the graphs are made once per
batch size and reused. The CUDA tests run where a GPU is (the device machine), and are skipped elsewhere."""
from __future__ import annotations

import pytest
import torch

from genvpt.generators.var import VAR, build_var_config

PATCH_NUMS = (1, 2, 3)


class _Quantizer(torch.nn.Module):
    """The two things VAR's sampler needs from the multi-scale VQ-VAE: the codebook and the next scale's input."""

    def __init__(self, vocab: int, Cvae: int, last: int):
        super().__init__()
        self.embedding = torch.nn.Embedding(vocab, Cvae)
        self.last = last

    def get_next_autoregressive_input(self, si, K, f_hat, h):
        h = torch.nn.functional.interpolate(h, size=(self.last, self.last), mode="bicubic")
        f_hat = f_hat + h
        if si == K - 1:
            return f_hat, f_hat
        nxt = PATCH_NUMS[si + 1]
        return f_hat, torch.nn.functional.interpolate(f_hat, size=(nxt, nxt), mode="area")


def _model(device="cpu"):
    torch.manual_seed(0)
    m = VAR(build_var_config(3, embed_dim=64, num_heads=4, vocab_size=48, Cvae=8, num_classes=5,
                             patch_nums=PATCH_NUMS, drop_path_rate=0.1)).eval()
    tok = _Quantizer(48, 8, PATCH_NUMS[-1])
    return m.to(device), tok.to(device)


def _draw(m, tok, device="cpu", **kw):
    g = torch.Generator(device=device).manual_seed(7)
    labels = torch.tensor([0, 3, 4], device=device)
    return m.sample(labels, tokenizer=tok, generator=g, cfg=1.5, top_k=20, top_p=0.9, **kw)


def _prefix(device="cpu"):
    return torch.randn(1, 2, 64, generator=torch.Generator().manual_seed(3)).to(device)


def _same(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def test_static_cache_step_equals_the_uncached_sampler():
    m, tok = _model()
    assert _same(_draw(m, tok), _draw(m, tok, use_cache=False))
    pre = _prefix()
    assert _same(_draw(m, tok, prefix_embeds=pre), _draw(m, tok, prefix_embeds=pre, use_cache=False))


def test_compiled_step_gives_the_eager_tokens_and_compiles_once_per_scale():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    m, tok = _model()
    eager = _draw(m, tok)
    compiled = _draw(m, tok, compile=True)
    assert _same(compiled, eager)
    graphs = counters["stats"]["unique_graphs"]
    # one graph per scale for the blocks (all blocks share it: their weights are inputs) and one for the head
    assert graphs == 2 * len(PATCH_NUMS)
    again = _draw(m, tok, compile=True)  # same batch size: the compiled steps are reused
    assert _same(again, eager)
    assert counters["stats"]["unique_graphs"] == graphs
    steppers = m.__dict__["_steppers"]
    assert len(steppers) == 1 and next(iter(steppers.values())).caches[0].k.shape[0] == 6  # 3 rows + guidance's 3


def test_fast_paths_refuse_what_they_cannot_do():
    m, tok = _model()
    with pytest.raises(ValueError, match="cuda_graphs needs the model on a CUDA device"):
        _draw(m, tok, cuda_graphs=True)
    with pytest.raises(ValueError, match="need the KV cache"):
        _draw(m, tok, compile=True, use_cache=False)


def test_sample_params_carry_the_fast_path_switches():
    from genvpt.generators.params import VARSampleParams

    d = VARSampleParams().model_dump()
    assert d["compile"] is False and d["cuda_graphs"] is False
    with pytest.raises(Exception, match="cuda_graphs"):
        VARSampleParams(cuda_graphs="sometimes")


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (the device machine)")


@cuda
@pytest.mark.parametrize("bf16", [False, True])
def test_cuda_graph_replay_gives_the_eager_tokens(bf16):
    m, tok = _model("cuda")
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else torch.autocast("cuda", enabled=False)
    pre = _prefix("cuda")
    with ctx:
        eager = _draw(m, tok, "cuda")
        eager_pre = _draw(m, tok, "cuda", prefix_embeds=pre)
        first = _draw(m, tok, "cuda", cuda_graphs=True)       # captures one graph per scale
        second = _draw(m, tok, "cuda", cuda_graphs=True)      # replays them
        with_prefix = _draw(m, tok, "cuda", cuda_graphs=True, prefix_embeds=pre)
    assert _same(first, eager) and _same(second, eager) and _same(with_prefix, eager_pre)
    steppers = [s for s in m.__dict__["_steppers"].values() if s.cuda_graphs]
    assert len(steppers) == 2 and all(len(s.graphs) == len(PATCH_NUMS) for s in steppers)


@cuda
def test_compiled_cuda_graphs_agree_with_eager():
    m, tok = _model("cuda")
    eager = _draw(m, tok, "cuda")
    both = _draw(m, tok, "cuda", compile=True, cuda_graphs=True)
    a = torch.cat([t.flatten() for t in both])
    b = torch.cat([t.flatten() for t in eager])
    assert float((a == b).float().mean()) >= 0.95  # compiled kernels round differently; the draws stay the same
