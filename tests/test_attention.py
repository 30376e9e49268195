"""Attention statistics: every number against a plain per-example loop, a planted query-to-code head, the
distances between heads against scipy, bad input, and the command end to end."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.spatial.distance import jensenshannon

from attention.capture import measure
from attention.inputs import CODE, QUERY, tokenize_examples
from attention.settings import CONSTRUCTS, STATISTICS, AttentionConfig, AttentionInput
from codesearch.errors import UserError
from codesearch.records import Example
from experiments.cli import main
from heads.models import load_encoder

EXAMPLES = [
    ("sum two numbers", "def add(a, b):\n    return a + b"),
    ("reverse a string and print it",
     "def rev(s):\n    for c in s:\n        print(c)\n    return s[::-1]"),
    ("x", "y = f(1)"),
    ("read the lines of a file",
     "def read(path):\n    if path:\n        return open(path).read().split()\n    return []"),
    ("count words", "def count(text):\n    return len(text.split())"),
]


def examples():
    return [Example(str(i), q, c, "python") for i, (q, c) in enumerate(EXAMPLES)]


@pytest.fixture(params=["tiny_bert_dir", "tiny_roberta_dir"])
def encoder(request):
    return load_encoder(str(request.getfixturevalue(request.param)), attn_implementation="eager")


def reference(encoder, ids, type_ids, segments, separators, constructs):
    """One example alone (no padding), every statistic in plain loops over heads and rows, in float64."""
    values = {}

    def keep(layer):
        def hook(_module, _args, output):
            values[layer] = output.detach()
        return hook

    layers = encoder.model.base_model.encoder.layer
    handles = [layer.attention.self.value.register_forward_hook(keep(i)) for i, layer in enumerate(layers)]
    try:
        with torch.no_grad():
            types = {} if type_ids is None else {"token_type_ids": torch.tensor([type_ids])}
            out = encoder.model(input_ids=torch.tensor([ids]), output_attentions=True, **types)
    finally:
        for handle in handles:
            handle.remove()
    q = [i for i, s in enumerate(segments) if s == QUERY]
    c = [i for i, s in enumerate(segments) if s == CODE]
    real = range(len(ids))
    seps = [i for i, flag in enumerate(separators) if flag]
    stats = {name: np.full((encoder.n_layers, encoder.n_heads), np.nan) for name in STATISTICS}
    mass = {name: np.full((encoder.n_layers, encoder.n_heads), np.nan) for name in CONSTRUCTS}
    d = encoder.head_dim
    for layer in range(encoder.n_layers):
        weight = layers[layer].attention.output.dense.weight.detach().double()
        for h in range(encoder.n_heads):
            a = out.attentions[layer][0, h].double().numpy()
            v = values[layer][0, :, h * d:(h + 1) * d].double()
            norms = [float(torch.linalg.vector_norm(weight[:, h * d:(h + 1) * d] @ v[t])) for t in real]

            def row_mass(rows, columns, matrix=a):
                return np.mean([sum(matrix[r, k] for k in columns) for r in rows]) if rows else np.nan

            s = stats
            s["q2c_mass"][layer, h] = row_mass(q, c)
            s["c2q_mass"][layer, h] = row_mass(c, q)
            s["q2q_mass"][layer, h] = row_mass(q, q)
            s["c2c_mass"][layer, h] = row_mass(c, c)
            s["q2c_max"][layer, h] = max((a[r, k] for r in q for k in c), default=np.nan)
            s["entropy"][layer, h] = np.mean([-sum(p * math.log(p) for p in a[r] if p > 0) for r in real])
            s["sparsity"][layer, h] = np.mean([a[r, k] < 0.01 for r in real for k in real])
            s["cls_mass"][layer, h] = np.mean([a[r, 0] for r in real])
            s["sep_mass"][layer, h] = row_mass(list(real), seps)
            weighted = np.array([[a[r, k] * norms[k] for k in real] for r in real])
            weighted /= weighted.sum(1, keepdims=True)
            s["q2c_value_mass"][layer, h] = row_mass(q, c, weighted)
            source = q if q else c
            for k, name in enumerate(CONSTRUCTS):
                targets = [t for t in c if constructs[t, k]]
                mass[name][layer, h] = row_mass(source, targets) if source else np.nan
    return stats, mass, out.attentions


@pytest.mark.parametrize("kind", [AttentionInput.pair, AttentionInput.code])
def test_every_statistic_equals_a_plain_loop_with_padding_in_the_batch(encoder, kind):
    inputs = tokenize_examples(encoder, examples(), kind, 64, 32, 64)
    assert len({len(ids) for ids in inputs.ids}) > 1          # batches of 3 hold padding
    source = QUERY if kind == AttentionInput.pair else CODE
    measured = measure(encoder, inputs, 3, source, {0, 3}, progress=False)
    for i in range(len(inputs)):
        types = inputs.type_ids[i] if inputs.type_ids else None
        stats, mass, attentions = reference(encoder, inputs.ids[i], types, inputs.segments[i], inputs.separators[i],
                                            inputs.constructs[i])
        for name in STATISTICS:
            np.testing.assert_allclose(measured.values[name][i], stats[name], atol=1e-6, err_msg=name)
        for name in CONSTRUCTS:
            np.testing.assert_allclose(measured.construct_mass[name][i], mass[name], atol=1e-6, err_msg=name)
            codes = inputs.segments[i] == CODE
            np.testing.assert_allclose(measured.construct_share[name][i],
                                       inputs.constructs[i][codes, CONSTRUCTS.index(name)].mean(), atol=1e-12)
    # The distances between heads: scipy's Jensen-Shannon distance, row by row, averaged.
    expected = np.zeros_like(measured.js)
    for i in (0, 3):
        types = inputs.type_ids[i] if inputs.type_ids else None
        _, _, attentions = reference(encoder, inputs.ids[i], types, inputs.segments[i], inputs.separators[i],
                                     inputs.constructs[i])
        heads = torch.cat([layer[0] for layer in attentions]).double().numpy()            # [L*H, S, S]
        for x in range(len(heads)):
            for y in range(len(heads)):
                expected[x, y] += np.mean([jensenshannon(heads[x, r], heads[y, r]) for r in range(heads.shape[1])])
    np.testing.assert_allclose(measured.js, expected / 2, atol=1e-6)


def test_the_statistics_of_code_alone_leave_the_query_out(encoder):
    inputs = tokenize_examples(encoder, examples(), AttentionInput.code, 64, 32, 64)
    measured = measure(encoder, inputs, 2, CODE, set(), progress=False)
    assert np.isnan(measured.values["q2c_mass"]).all() and np.isnan(measured.values["q2c_max"]).all()
    assert np.isfinite(measured.values["c2c_mass"]).all() and measured.js is None
    # Without specials every row's mass to code is 1; specials take the rest.
    assert ((measured.values["c2c_mass"] + measured.values["cls_mass"] <= 1 + 1e-9)).all()


def test_a_planted_query_to_code_head_is_seen(tiny_bert_dir):
    """Head L1H2 made to attend from every query token to the code only (uniformly): q2c_mass 1, q2c_max
    1/|code|, q2q_mass 0; every other head keeps its own (the plain loop's) values."""
    encoder = load_encoder(str(tiny_bert_dir), attn_implementation="eager")
    inputs = tokenize_examples(encoder, examples(), AttentionInput.pair, 64, 32, 64)
    segments_of = {tuple(ids): segments for ids, segments in zip(inputs.ids, inputs.segments)}
    current = {}
    layer, head = 1, 2

    def remember(_module, _args, kwargs):
        current["ids"], current["mask"] = kwargs["input_ids"], kwargs["attention_mask"]

    def plant(_module, _args, output):
        attn_output, weights = output
        weights = weights.clone()
        for row in range(weights.shape[0]):
            length = int(current["mask"][row].sum())
            segments = torch.as_tensor(segments_of[tuple(current["ids"][row, :length].tolist())])
            code = (segments == CODE).double()
            for r in torch.nonzero(segments == QUERY).flatten():
                weights[row, head, r] = 0
                weights[row, head, r, :length] = (code / code.sum()).to(weights.dtype)
        return attn_output, weights

    handles = [encoder.model.register_forward_pre_hook(remember, with_kwargs=True),
               encoder.model.base_model.encoder.layer[layer].attention.self.register_forward_hook(plant)]
    try:
        measured = measure(encoder, inputs, 2, QUERY, set(), progress=False)
    finally:
        for handle in handles:
            handle.remove()
    n_code = np.array([(s == CODE).sum() for s in inputs.segments])
    np.testing.assert_allclose(measured.values["q2c_mass"][:, layer, head], 1, atol=1e-12)
    np.testing.assert_allclose(measured.values["q2q_mass"][:, layer, head], 0, atol=1e-12)
    np.testing.assert_allclose(measured.values["q2c_max"][:, layer, head], 1 / n_code, atol=1e-12)
    for name in CONSTRUCTS:   # uniform over code: the mass to a construct is its share
        np.testing.assert_allclose(measured.construct_mass[name][:, layer, head], measured.construct_share[name],
                                   atol=1e-12)
    for i in range(len(inputs)):
        stats, _, _ = reference(encoder, inputs.ids[i], inputs.type_ids[i], inputs.segments[i], inputs.separators[i],
                                inputs.constructs[i])
        others = np.ones((encoder.n_layers, encoder.n_heads), dtype=bool)
        others[layer, head] = False
        np.testing.assert_allclose(measured.values["q2c_mass"][i][others], stats["q2c_mass"][others], atol=1e-6)


def test_pairs_cut_the_code_first_and_label_code_tokens(tiny_roberta_dir):
    encoder = load_encoder(str(tiny_roberta_dir), attn_implementation="eager")
    inputs = tokenize_examples(encoder, examples(), AttentionInput.pair, 24, 32, 64)
    for ids, segments in zip(inputs.ids, inputs.segments):
        assert len(ids) <= 24 and (segments == QUERY).any() and (segments == CODE).any()
    # Every construct flag is on a code token only; categories are one per labelled token.
    for segments, flags in zip(inputs.segments, inputs.constructs):
        assert not flags[segments != CODE].any()
        assert (flags[:, :5].sum(1) <= 1).all()
    with pytest.raises(UserError, match="its code is empty after truncation"):
        tokenize_examples(encoder, [Example("long", "word " * 40, "x = 1", "python")], AttentionInput.pair, 24, 32, 64)


def test_a_model_without_attention_weights_is_refused(tiny_bert_dir):
    encoder = load_encoder(str(tiny_bert_dir))  # SDPA
    inputs = tokenize_examples(encoder, examples(), AttentionInput.pair, 64, 32, 64)
    with pytest.raises(UserError, match="returns no attention weights"):
        measure(encoder, inputs, 2, QUERY, set(), progress=False)


def test_unknown_statistics_are_refused():
    assert AttentionConfig(statistics="q2c_mass, entropy").statistic_names() == ["q2c_mass", "entropy"]
    with pytest.raises(UserError, match="unknown statistic q2c_mas"):
        AttentionConfig(statistics="q2c_mas").statistic_names()


# ---------------------------------------------------------------- the command

@pytest.fixture
def domain_pairs(tmp_path):
    rows = [{"query": q, "code": c, "id": f"q{i}", "domain": "text" if "word" in q or "string" in q else "math"}
            for i, (q, c) in enumerate(EXAMPLES * 4)]
    for i, row in enumerate(rows):
        row["code"] = row["code"] + f"\n# variant {i}"
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_attention_command_outputs_and_joins(tmp_path, domain_pairs, tiny_bert_dir):
    common = [f"data.path={domain_pairs}", f"model.name={tiny_bert_dir}", f"runs_dir={tmp_path / 'runs'}",
              "progress=false", "model.batch_size=4"]
    assert main(["ablate", *common, "ablation.n_bootstrap=200", "ablation.n_permutations=200"]) == 0
    assert main(["attention", *common, "attention.group_by=domain", "attention.n_permutations=200",
                 "attention.js_examples=4", "attention.max_clusters=4", "wandb.mode=disabled"]) == 0
    (out,) = (tmp_path / "runs").glob("*/attention/pair")
    heads = pd.read_csv(out / "heads.csv")
    assert len(heads) == 8 and {"q2c_mass", "q2c_mass_std", "delta_mrr", "cluster"} <= set(heads.columns)
    stats = pd.read_csv(out / "attention_stats.csv")
    examples_frame = pd.read_parquet(out / "attention_examples.parquet")
    assert len(examples_frame) == 20 * 8
    means = examples_frame.groupby("condition")["q2c_mass"].mean()
    np.testing.assert_allclose(stats.set_index("condition")["q2c_mass"], means.loc[stats["condition"]], atol=1e-12)
    for name in ("construct_enrichment", "layer_anova", "layer_posthoc", "group_anova", "matched_vs_mismatched",
                 "clusters", "elbow", "example_clusters", "correlations"):
        assert (out / f"{name}.csv").is_file(), name
    assert (out / "heatmap_q2c_mass.png").is_file() and (out / "heatmap_q2c_mass.svg").is_file()
    run = json.loads((out / "run.json").read_text())
    assert run["input"] == "pair" and run["n_examples"] == 20 and "ablation" in run["joined"]
    test = run["cluster_domain_test"]
    assert {"statistic", "p_value", "cramers_v"} <= set(test) or test["reason"]


@pytest.mark.parametrize("override, message", [
    ("attention.statistics=q2c_mas", "unknown statistic q2c_mas"),
    ("attention.group_by=domain", "the data has no domain to group by"),
    ("attention.clusters=30", "attention.clusters=30 needs more than 30 examples"),
    ("attention.group_by=repo", "attention.group_by='repo': choose one of domain, language"),
])
def test_bad_attention_input_fails_before_the_pass(tmp_path, pairs_file, tiny_bert_dir, monkeypatch, capsys,
                                                  override, message):
    import attention.study as study

    def must_not_run(*_args, **_kwargs):
        raise AssertionError("the attention pass started")

    monkeypatch.setattr(study, "measure", must_not_run)
    assert main(["attention", f"data.path={pairs_file}", f"model.name={tiny_bert_dir}", "progress=false",
                 f"runs_dir={tmp_path}", override]) == 2
    assert message in capsys.readouterr().err
