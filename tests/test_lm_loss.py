"""The chunked next-token loss Taylor scoring uses equals the model's own loss, value and gradients, per family."""

from __future__ import annotations

import pytest
import torch

from compressor.arch import spec_for
from compressor.prune.importance.base import decoder_layers
from compressor.prune.importance.lm_loss import chunked_lm_loss, supports_chunked_loss
from compressor.tiny import FAMILIES, build_model, make_inputs


def _grads(model, loss) -> dict[str, torch.Tensor]:
    """Gradients of the first decoder layer's weights (where Taylor scoring reads them)."""
    spec, _ = spec_for(model.config.to_dict())
    params = dict(decoder_layers(model, spec)[0].named_parameters())
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    out = {n: g for n, g in zip(params, grads) if g is not None}
    assert out, "the loss reached no weight of the first decoder layer"
    return out


@pytest.mark.parametrize("frozen_head", [True, False], ids=["frozen head", "trained head"])
@pytest.mark.parametrize("family", FAMILIES)
def test_chunked_loss_equals_the_models_own(family, frozen_head):
    """A frozen head (as in Taylor scoring) takes the one-pass gradient, a trained one the checkpointed chunks."""
    model = build_model(family, seed=0).eval()
    if frozen_head:
        for p in model.parameters():
            p.requires_grad_(False)
        spec, _ = spec_for(model.config.to_dict())
        for p in decoder_layers(model, spec)[0].parameters():
            p.requires_grad_(True)
    assert supports_chunked_loss(model)
    batch = make_inputs(family, model.config, batch_size=2, seed=3)
    labels = batch.pop("labels")
    labels[0, : labels.shape[1] // 3] = -100  # unlabelled prompt positions, as in SFT rows
    own = model(**batch, labels=labels, use_cache=False).loss
    chunked = chunked_lm_loss(model, batch, labels, chunk=5)  # many chunks, the last one short
    assert chunked.item() == pytest.approx(own.item(), rel=1e-5)
    expected = _grads(model, own)
    for name, g in _grads(model, chunked).items():
        torch.testing.assert_close(g, expected[name], rtol=1e-4, atol=1e-6, msg=name)


def test_the_lm_head_never_computes_full_logits():
    """The head's own forward is bypassed during the model's forward: what it returns has one column."""
    model = build_model("llava", seed=0).eval()
    batch = make_inputs("llava", model.config, batch_size=1, seed=1)
    labels = batch.pop("labels")
    head = model.get_output_embeddings()
    shapes: list[tuple[int, ...]] = []
    handle = head.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape)))
    try:
        chunked_lm_loss(model, batch, labels, chunk=4)
        model(
            **batch, use_cache=False
        )  # positive control: the plain forward's head output has the vocabulary
    finally:
        handle.remove()
    vocab = model.config.text_config.vocab_size
    assert shapes[0][-1] == 1
    assert shapes[-1][-1] == vocab
    assert "forward" not in vars(head)  # the head is itself again


@pytest.mark.parametrize("frozen_head", [True, False], ids=["frozen head", "trained head"])
def test_a_softcapped_head_is_capped_the_same_way(frozen_head):
    """Gemma's causal LM caps its logits with tanh (final_logit_softcapping): value and gradients still match."""
    from transformers import Gemma3ForCausalLM

    from compressor.tiny import tiny_config

    text = tiny_config("gemma3").text_config
    text.final_logit_softcapping = 2.0
    model = Gemma3ForCausalLM(text).eval()
    ids = torch.randint(3, text.vocab_size, (2, 11), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[1, :4] = -100
    layer = model.model.layers[0]
    if frozen_head:
        for p in model.parameters():
            p.requires_grad_(False)
        for p in layer.parameters():
            p.requires_grad_(True)
    own = model(input_ids=ids, labels=labels, use_cache=False).loss
    chunked = chunked_lm_loss(model, {"input_ids": ids}, labels, chunk=3)
    assert chunked.item() == pytest.approx(own.item(), rel=1e-5)
    params = list(layer.parameters())
    for g, want in zip(torch.autograd.grad(chunked, params), torch.autograd.grad(own, params)):
        torch.testing.assert_close(g, want, rtol=1e-4, atol=1e-6)
