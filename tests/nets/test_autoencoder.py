"""SequenceAutoencoder: shapes, soft input, teacher forcing against generation, validation."""

import pytest
import torch

from seiko.nets import SequenceAutoencoder

V, L, D = 7, 9, 4


def tiny() -> SequenceAutoencoder:
    torch.manual_seed(0)
    return SequenceAutoencoder(V, L, latent_dim=D, embed_dim=8, encoder_hidden=8, decoder_hidden=8)


def test_encode_accepts_ids_and_one_hot_alike_and_carries_gradient():
    ae = tiny()
    ids = torch.randint(0, V, (3, L))
    mean, logvar = ae.encode(ids)
    assert mean.shape == logvar.shape == (3, D)
    one_hot = torch.nn.functional.one_hot(ids, V).float().requires_grad_(True)
    mean2, _ = ae.encode(one_hot)
    torch.testing.assert_close(mean2, mean)
    mean2.sum().backward()
    assert one_hot.grad is not None and one_hot.grad.abs().sum() > 0


def test_greedy_generation_is_the_argmax_of_teacher_forcing_on_its_own_output():
    ae = tiny().eval()
    z = torch.randn(5, D)
    ids = ae.generate(z)
    assert ids.shape == (5, L) and ids.dtype == torch.long
    # Feeding the generated tokens back with teacher forcing must reproduce them step by step.
    assert torch.equal(ae(z, ids).argmax(-1), ids)
    sampled = ae.generate(z, temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert sampled.shape == (5, L) and ((sampled >= 0) & (sampled < V)).all()


def test_input_dropout_only_in_training():
    ae = tiny().eval()
    z, ids = torch.randn(2, D), torch.randint(0, V, (2, L))
    torch.testing.assert_close(ae(z, ids, input_dropout=0.9), ae(z, ids))
    ae.train()
    assert not torch.allclose(ae(z, ids, input_dropout=0.9), ae(z, ids))


def test_bad_sizes_raise():
    with pytest.raises(ValueError, match="vocab_size"):
        SequenceAutoencoder(1, L)
    with pytest.raises(ValueError, match=f"expected {L} tokens"):
        tiny().encode(torch.zeros(2, L + 1, dtype=torch.long))


def test_beam_search_finds_the_most_likely_sequence_when_wide_enough():
    # 3 symbols, 4 positions: a beam of 27 = 3^3 keeps every prefix, so it is an exhaustive
    # search; compare with the log-probability of all 81 sequences under teacher forcing.
    torch.manual_seed(0)
    ae = SequenceAutoencoder(3, 4, latent_dim=D, embed_dim=8, encoder_hidden=8, decoder_hidden=8)
    ae.eval()
    z = 2 * torch.randn(6, D)
    every = torch.cartesian_prod(*[torch.arange(3)] * 4)  # (81, 4)

    def log_prob(tokens: torch.Tensor, zz: torch.Tensor) -> torch.Tensor:
        logits = ae(zz, tokens)
        return torch.log_softmax(logits, -1).gather(-1, tokens[..., None])[..., 0].sum(-1)

    with torch.no_grad():
        scores = torch.stack([log_prob(every, zi.expand(81, -1)) for zi in z])  # (6, 81)
        best = every[scores.argmax(-1)]
        beam = ae.generate(z, beam_width=27)
        greedy = ae.generate(z)
        assert torch.equal(beam, best)
        assert (log_prob(beam, z) >= log_prob(greedy, z) - 1e-5).all()
        assert torch.equal(ae.generate(z, beam_width=1), greedy)
        narrow = ae.generate(z, beam_width=2)
    assert narrow.shape == (6, 4)
    with pytest.raises(ValueError, match="beam_width"):
        ae.generate(z, beam_width=0)
