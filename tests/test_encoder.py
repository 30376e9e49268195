"""Loading encoders, pooling recipes, length-sorted batching, the cross-encoder inputs, and failing fast offline."""
import time

import numpy as np
import pytest
import torch
from tiny_models import make_tiny_roberta

from codesearch.errors import UserError
from heads.models import (
    ModelNotAvailable,
    builtin_model_path,
    choose_recipe,
    load_encoder,
)

TEXTS = ["def add(a, b): return a + b", "sum two numbers", "for item in items: total += item",
         "x", "read the file and parse every line of it into a list of records"]


@pytest.mark.parametrize("fixture", ["tiny_bert_dir", "tiny_roberta_dir"])
def test_sorted_batches_equal_one_at_a_time(request, fixture):
    encoder = load_encoder(str(request.getfixturevalue(fixture)))
    batched = encoder.encode(TEXTS, max_length=64, batch_size=3, progress=False)
    single = torch.cat([encoder.encode([t], max_length=64, batch_size=1, progress=False) for t in TEXTS])
    assert batched.shape == (len(TEXTS), encoder.model.config.hidden_size)
    torch.testing.assert_close(batched, single, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(batched.norm(dim=1), torch.ones(len(TEXTS)))  # generic recipe: normalised


@pytest.mark.parametrize("pooling", ["cls", "mean", "pooler"])
def test_pooling_matches_the_model_outputs(tiny_bert_dir, pooling):
    encoder = load_encoder(str(tiny_bert_dir), pooling=pooling, normalize=False)
    got = encoder.encode(TEXTS[:2], max_length=64, progress=False)
    batch = encoder.tokenizer(TEXTS[:2], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = encoder.model(**batch)
    if pooling == "cls":
        expected = out.last_hidden_state[:, 0]
    elif pooling == "pooler":
        expected = out.pooler_output
    else:
        mask = batch["attention_mask"].unsqueeze(-1).float()
        expected = (out.last_hidden_state * mask).sum(1) / mask.sum(1)
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-4)


def test_builtin_model_matches_sentence_transformers(builtin_encoder):
    """An independent implementation of the same model: sentence-transformers reading the same folder."""
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(builtin_model_path()), device="cpu")
    expected = torch.as_tensor(reference.encode(TEXTS, convert_to_numpy=True))
    got = builtin_encoder.encode(TEXTS, max_length=256, batch_size=2, progress=False)
    assert builtin_encoder.info.recipe["pooling"] == "mean" and builtin_encoder.info.recipe["normalize"]
    assert (builtin_encoder.n_layers, builtin_encoder.n_heads, builtin_encoder.head_dim) == (6, 12, 32)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_code_search_recipes_by_model_name():
    assert choose_recipe("microsoft/codebert-base", "").pooling == "pooler"
    assert choose_recipe("microsoft/graphcodebert-base", "").normalize is False
    unixcoder = choose_recipe("microsoft/unixcoder-base", "")
    assert (unixcoder.pooling, unixcoder.normalize) == ("mean", True)
    assert unixcoder.prefix_tokens == ("<encoder-only>", "</s>")  # <s> <encoder-only> </s> text </s>
    overridden = choose_recipe("microsoft/unixcoder-base", "", pooling="cls", normalize=False)
    assert (overridden.pooling, overridden.normalize) == ("cls", False)
    with pytest.raises(UserError, match="model.pooling='max'"):
        choose_recipe("x", "", pooling="max")


def test_unixcoder_mode_token_follows_the_first_special_token(tmp_path):
    folder = make_tiny_roberta(tmp_path / "tiny-unixcoder", extra_special_tokens=("<encoder-only>",))
    encoder = load_encoder(str(folder))
    ids = encoder.tokenize(["sum two"], max_length=16)[0]
    tokens = encoder.tokenizer.convert_ids_to_tokens(ids)
    assert tokens[:3] == ["<s>", "<encoder-only>", "</s>"] and tokens[-1] == "</s>"  # UniXcoder's own layout
    assert len(encoder.tokenize(["word " * 50], max_length=16)[0]) == 16


@pytest.mark.parametrize("fixture, query_start", [("tiny_bert_dir", 1), ("tiny_roberta_dir", 1)])
def test_cross_encoder_segments(request, fixture, query_start):
    encoder = load_encoder(str(request.getfixturevalue(fixture)))
    pair = encoder.tokenize_pair("sum two", "def add(a, b): return a + b", max_length=64, max_query_tokens=32)
    segment = pair.segments
    tokens = encoder.tokenizer.convert_ids_to_tokens(pair.ids)
    assert segment[0] == 0 and segment[query_start] == 1
    assert set(segment) == {0, 1, 2}
    first_code = segment.index(2)
    assert "".join(tokens[query_start:first_code]).replace("##", "").replace("Ġ", "").count("sum") == 1
    # Special tokens carry no segment.
    special = set(encoder.tokenizer.all_special_ids)
    assert all((token in special) == (seg == 0) for token, seg in zip(pair.ids, segment))
    # The code is cut first: a long code loses its tail, the query is whole; a long query is cut to its budget.
    long_pair = encoder.tokenize_pair("sum two", "x = 1\n" * 200, max_length=24, max_query_tokens=8)
    assert len(long_pair.ids) == 24 and pair.segments.count(1) == long_pair.segments.count(1)
    long_query = encoder.tokenize_pair("word " * 50, "y = 2", max_length=64, max_query_tokens=8)
    assert long_query.segments.count(1) == 8 and long_query.segments.count(2) > 0


def test_unreachable_hub_fails_fast_with_a_local_copy_recipe(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    started = time.perf_counter()
    with pytest.raises(ModelNotAvailable) as info:
        load_encoder("microsoft/codebert-base")
    assert time.perf_counter() - started < 10
    message = str(info.value)
    assert "cannot be reached" in message
    assert "huggingface-cli download microsoft/codebert-base --local-dir codebert-base" in message
    assert "model.name=./codebert-base" in message


def test_missing_or_broken_local_models(tmp_path):
    with pytest.raises(ModelNotAvailable, match="does not exist"):
        load_encoder(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotAvailable, match="has no config.json"):
        load_encoder(str(tmp_path / "empty"))
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(tmp_path / "gpt")
    with pytest.raises(ModelNotAvailable, match="'gpt2' model; supported families: bert, roberta"):
        load_encoder(str(tmp_path / "gpt"))


def test_encoding_is_deterministic(tiny_roberta_dir):
    encoder = load_encoder(str(tiny_roberta_dir))
    a = encoder.encode(TEXTS, max_length=32, batch_size=2, progress=False)
    b = encoder.encode(TEXTS, max_length=32, batch_size=2, progress=False)
    assert np.array_equal(a.numpy(), b.numpy())
