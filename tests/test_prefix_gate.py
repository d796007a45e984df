"""Zero-init gated prompts (issue #17's fair start): with the prefix's attention gated at 0, every non-prompt token of
the AR, MaskGIT and VAR generators computes what the frozen network computes without the prompt; a gate away from 0
lets the prompt in, its gradient is not zero at 0, and the cached samplers give the uncached ones' tokens."""
from __future__ import annotations

import pytest
import torch

from genvpt.generators.common import attend, gated_prefix_attend, prefix_gates
from test_generator_models import tiny_ar, tiny_maskgit, tiny_var
from test_var_fast_paths import _model as small_var

pytestmark = pytest.mark.usefixtures("one_thread")


def _gates(model, value: float) -> torch.Tensor:
    mods = model.gated_attention()
    heads = getattr(mods[0], "heads", None) or mods[0].n_head
    return torch.full((len(mods), heads), float(value))


def test_gated_attention_at_zero_is_the_attention_without_the_prompt():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 8, generator=g) for _ in range(3))
    P = 3
    for causal in (False, True):
        out = gated_prefix_attend(q, k, v, prefix_len=P, gate=torch.zeros(3), causal=causal)
        own = attend(q[..., P:, :], k[..., P:, :], v[..., P:, :], causal=causal)
        torch.testing.assert_close(out[..., P:, :], own, rtol=0, atol=1e-6)
        # prompt queries see the prompt keys only
        torch.testing.assert_close(out[..., :P, :], attend(q[..., :P, :], k[..., :P, :], v[..., :P, :],
                                                           causal=causal), rtol=0, atol=1e-6)
    # a gate adds tanh(gate) x the separate softmax over the prompt keys
    gate = torch.tensor([0.5, -1.0, 2.0])
    out = gated_prefix_attend(q, k, v, prefix_len=P, gate=gate)
    ref = attend(q[..., P:, :], k[..., P:, :], v[..., P:, :]) + torch.tanh(gate).view(1, 3, 1, 1) * attend(
        q[..., P:, :], k[..., :P, :], v[..., :P, :])
    torch.testing.assert_close(out[..., P:, :], ref, rtol=0, atol=1e-6)
    # a cached step (queries = the last keys) gives the full pass's rows
    step = gated_prefix_attend(q[..., 5:, :], k, v, prefix_len=P, gate=gate, causal=True)
    full = gated_prefix_attend(q, k, v, prefix_len=P, gate=gate, causal=True)
    torch.testing.assert_close(step, full[..., 5:, :], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="inside the 3-token prompt"):
        gated_prefix_attend(q[..., 2:, :], k, v, prefix_len=P, gate=gate)


def test_prefix_gates_sets_and_clears_every_layer():
    m = tiny_ar()
    with prefix_gates(m.gated_attention(), 2, _gates(m, 0.0)):
        assert all(a.prefix_gate[0] == 2 for a in m.gated_attention())
    assert all(a.prefix_gate is None for a in m.gated_attention())
    with pytest.raises(ValueError, match="expected \\[2 layers, heads\\]"):
        with prefix_gates(m.gated_attention(), 2, torch.zeros(3, 2)):  # checked on entering
            pass


def test_ar_with_a_zero_gated_prompt_computes_the_frozen_models_loss_and_the_gate_gets_a_gradient():
    m = tiny_ar()
    tokens = torch.randint(0, 32, (3, 4, 4), generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 2])
    logits0, loss0 = m(tokens, labels)
    prompt = torch.randn(1, 5, 16, generator=torch.Generator().manual_seed(2))
    gates = _gates(m, 0.0).requires_grad_(True)
    with prefix_gates(m.gated_attention(), 5, gates):
        logits, loss = m(tokens, labels, prefix_embeds=prompt)
    torch.testing.assert_close(logits, logits0, rtol=0, atol=1e-5)
    loss.backward()
    assert gates.grad is not None and gates.grad.abs().sum() > 0
    _, ungated = m(tokens, labels, prefix_embeds=prompt)
    assert (ungated - loss0).abs() > 1e-4  # without the gate the same prompt moves the frozen model


def test_ar_cached_sampling_with_a_gated_prompt_equals_the_uncached_sampler():
    m = tiny_ar(token_layout="separate")
    prompt = torch.randn(1, 3, 16, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 2])
    draws = []
    for use_cache in (True, False):
        with prefix_gates(m.gated_attention(), 3, _gates(m, 0.7)):
            g = torch.Generator().manual_seed(5)
            draws.append(m.sample(labels, generator=g, prefix_embeds=prompt, cfg=1.0, top_k=8, use_cache=use_cache))
    assert torch.equal(draws[0], draws[1])
    with prefix_gates(m.gated_attention(), 3, _gates(m, 0.0)):  # gate 0: the frozen sampler's tokens
        gated0 = m.sample(labels, generator=torch.Generator().manual_seed(5), prefix_embeds=prompt, cfg=1.0, top_k=8)
    frozen = m.sample(labels, generator=torch.Generator().manual_seed(5), cfg=1.0, top_k=8)
    assert torch.equal(gated0, frozen)


def test_maskgit_with_a_zero_gated_prompt_gives_the_frozen_logits():
    m = tiny_maskgit()
    tokens = torch.randint(0, 32, (2, 16), generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1])
    prompt = torch.randn(1, 4, 16, generator=torch.Generator().manual_seed(2))
    with prefix_gates(m.gated_attention(), 4, _gates(m, 0.0)):
        gated = m(tokens, labels, prefix_embeds=prompt)
    torch.testing.assert_close(gated, m(tokens, labels), rtol=0, atol=1e-5)
    with prefix_gates(m.gated_attention(), 4, _gates(m, 1.0)):
        opened = m(tokens, labels, prefix_embeds=prompt)
    assert (opened - gated).abs().max() > 1e-4


def test_var_with_a_zero_gated_prompt_gives_the_frozen_logits():
    m = tiny_var()
    L = sum(p * p for p in m.patch_nums)
    x = torch.randn(2, L - 1, 4, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 2])
    prompt = torch.randn(1, 3, 16, generator=torch.Generator().manual_seed(2))
    with prefix_gates(m.gated_attention(), 3, _gates(m, 0.0)):
        gated = m(labels, x, prefix_embeds=prompt)
    torch.testing.assert_close(gated, m(labels, x), rtol=0, atol=1e-5)


def test_var_cached_sampling_with_a_gated_prompt_equals_the_uncached_sampler_and_refuses_compiling():
    m, tok = small_var()
    prompt = torch.randn(1, 2, 64, generator=torch.Generator().manual_seed(3))
    labels = torch.tensor([0, 3, 4])
    draws = []
    for use_cache in (True, False):
        with prefix_gates(m.gated_attention(), 2, _gates(m, 0.5)):
            g = torch.Generator().manual_seed(7)
            draws.append(m.sample(labels, tokenizer=tok, generator=g, cfg=1.5, top_k=20, prefix_embeds=prompt,
                                  use_cache=use_cache))
    assert all(torch.equal(a, b) for a, b in zip(*draws))
    with prefix_gates(m.gated_attention(), 2, _gates(m, 0.5)):
        with pytest.raises(ValueError, match="run eagerly"):
            m.sample(labels, tokenizer=tok, generator=torch.Generator().manual_seed(7), prefix_embeds=prompt,
                     compile=True)
