"""Head masking correctness: every mode replaces exactly its slice, zero-masking is the old head_mask, and
hooks that mask nothing change nothing."""
import contextlib

import pytest
import torch

from codesearch.errors import UserError
from heads.hooks import GradientMask, HeadMask, MeanAccumulator, hook_z, output_projection
from heads.models import load_encoder
from heads.naming import (
    HeadId,
    HeadSpecError,
    head_set_name,
    parse_head_name,
    parse_head_spec,
)

TEXTS = ["def add(a, b): return a + b", "sum two numbers", "for item in items: total += item", "x",
         "read the file and parse every line of it"]


def batch_of(encoder, texts=TEXTS):
    ids = encoder.tokenize(texts, 64)
    batch = next(encoder.length_sorted_batches(ids, len(texts)))
    input_ids, mask = batch.input_ids, batch.attention_mask
    return input_ids, mask


def last_hidden(encoder, input_ids, mask):
    with torch.no_grad():
        return encoder.model(input_ids=input_ids, attention_mask=mask).last_hidden_state


def capture_z(encoder, input_ids, mask, layer, fn=None):
    """z entering layer `layer`'s output projection, after `fn` (if any) has edited it."""
    seen = {}
    with hook_z(encoder.model, fn, mask, layers=[layer]) if fn else contextlib.nullcontext():
        # Registered after the editing hook, this one sees what the projection will get.
        handle = output_projection(encoder.model, layer).register_forward_pre_hook(
            lambda _m, args: seen.setdefault("z", args[0]))
        try:
            last_hidden(encoder, input_ids, mask)
        finally:
            handle.remove()
    z = seen["z"]
    return z.view(*z.shape[:-1], encoder.n_heads, encoder.head_dim)


@pytest.fixture(params=["tiny_bert_dir", "tiny_roberta_dir"])
def encoder(request):
    return load_encoder(str(request.getfixturevalue(request.param)))


def test_zero_mask_equals_zeroed_output_projection_columns(encoder):
    """The classic head mask: the head's columns of W_O set to zero, no hook at all."""
    input_ids, mask = batch_of(encoder)
    head = HeadId(1, 2)
    with hook_z(encoder.model, HeadMask([head], "zero")):
        hooked = last_hidden(encoder, input_ids, mask)
    dense = output_projection(encoder.model, head.layer)
    saved = dense.weight.detach().clone()
    try:
        with torch.no_grad():
            dense.weight[:, head.index * encoder.head_dim:(head.index + 1) * encoder.head_dim] = 0
        edited = last_hidden(encoder, input_ids, mask)
    finally:
        with torch.no_grad():
            dense.weight.copy_(saved)
    torch.testing.assert_close(hooked, edited, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(hooked, last_hidden(encoder, input_ids, mask))  # the head did matter


def test_hooks_that_mask_nothing_change_nothing_exactly(encoder):
    input_ids, mask = batch_of(encoder)
    plain = last_hidden(encoder, input_ids, mask)
    with hook_z(encoder.model, lambda layer, z, attention_mask: None):
        assert torch.equal(last_hidden(encoder, input_ids, mask), plain)
    ones = torch.ones(encoder.n_layers, encoder.n_heads)
    with hook_z(encoder.model, GradientMask(ones)):
        assert torch.equal(last_hidden(encoder, input_ids, mask), plain)
    # A mask on the last layer only leaves every earlier layer's output alone.
    with hook_z(encoder.model, HeadMask([HeadId(encoder.n_layers - 1, 0)], "zero")):
        masked = last_hidden(encoder, input_ids, mask)
    assert not torch.equal(masked, plain)


@pytest.mark.parametrize("mode", ["zero", "mean", "resample"])
def test_each_mode_replaces_exactly_its_slice(encoder, mode):
    input_ids, mask = batch_of(encoder)
    layer, heads = 1, [0, 3]
    means = {layer: torch.randn(encoder.n_heads, encoder.head_dim)}
    original = capture_z(encoder, input_ids, mask, layer)
    head_mask = HeadMask([HeadId(layer, h) for h in heads], mode, means)
    edited = capture_z(encoder, input_ids, mask, layer, head_mask)
    others = [h for h in range(encoder.n_heads) if h not in heads]
    assert torch.equal(edited[:, :, others], original[:, :, others])
    for h in heads:
        if mode == "zero":
            assert torch.count_nonzero(edited[:, :, h]) == 0
        elif mode == "mean":
            assert torch.equal(edited[:, :, h], means[layer][h].expand_as(edited[:, :, h]))
        else:
            real = mask.bool()
            for row in range(len(mask)):
                donor = (row + 1) % len(mask)
                donor_real = real[donor]
                length = int(donor_real.sum())
                # Real donor positions: the donor's own output there.
                assert torch.equal(edited[row, :length, h], original[donor, :length, h])
                # Beyond the donor's length: the donor's mean over its real tokens.
                if length < mask.shape[1]:
                    expected = original[donor, :length, h].mean(0)
                    torch.testing.assert_close(edited[row, length:, h], expected.expand_as(edited[row, length:, h]))


def test_mean_accumulator_excludes_padding(tiny_bert_dir):
    encoder = load_encoder(str(tiny_bert_dir))
    input_ids, mask = batch_of(encoder)
    accumulator = MeanAccumulator()
    with hook_z(encoder.model, accumulator, mask):
        last_hidden(encoder, input_ids, mask)
    z = capture_z(encoder, input_ids, mask, 0)
    real = mask.bool()
    expected = z[real].double().mean(0).float()
    torch.testing.assert_close(accumulator.means()[0], expected, atol=1e-6, rtol=1e-5)
    with pytest.raises(UserError, match="has no tokens"):
        MeanAccumulator().means()


def test_mask_errors():
    with pytest.raises(UserError, match="unknown masking mode 'blur'"):
        HeadMask([HeadId(0, 0)], "blur")
    with pytest.raises(UserError, match="needs each head's mean output"):
        HeadMask([HeadId(2, 0)], "mean", {0: torch.zeros(4, 8)})
    resample = HeadMask([HeadId(0, 0)], "resample")
    with pytest.raises(UserError, match="at least two inputs"):
        resample(0, torch.zeros(1, 3, 4, 8), torch.ones(1, 3))


@pytest.mark.parametrize("spec, expected", [
    ("3.5", [(3, 5)]),
    ("L3H5", [(3, 5)]),
    ("3.10", [(3, 10)]),
    ("1.*", [(1, h) for h in range(12)]),
    ("*.0", [(layer, 0) for layer in range(6)]),
    ("L*H11, 0.0", [(0, 0)] + [(layer, 11) for layer in range(6)]),
    ("3.5,4.1,3.5", [(3, 5), (4, 1)]),
])
def test_head_specs(spec, expected):
    assert [(h.layer, h.index) for h in parse_head_spec(spec, 6, 12)] == sorted(expected)


@pytest.mark.parametrize("spec, message", [
    ("", "empty head spec"),
    ("3", "malformed head spec part '3'"),
    ("3.5;4.1", "malformed head spec part"),
    ("6.0", "layer 6 is out of range \\(the model has layers 0..5\\)"),
    ("0.12", "head 12 is out of range"),
])
def test_bad_head_specs(spec, message):
    with pytest.raises(HeadSpecError, match=message):
        parse_head_spec(spec, 6, 12)


def test_one_name_for_a_head():
    head = parse_head_name("L3H7")
    assert (head.name, head.spec, str(head)) == ("L3H7", "3.7", "L3H7")
    assert parse_head_name("3.7") == head
    assert head_set_name("3.5,4.1") == "L3H5+L4H1" and head_set_name("3.*") == "L3H*"
    # One set, one name, however the spec lists it.
    assert head_set_name("4.1, 3.5,3.5") == "L3H5+L4H1" and head_set_name("2.10,L5H*,2.9") == "L2H9+L2H10+L5H*"
