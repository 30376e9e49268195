"""Probes: syntax labels in every language, the batched probe's metrics, the planted-signal test, the command's
outputs and its join with ablation, and bad input."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import f1_score

from codesearch.builder import CorpusSettings, build_corpus
from codesearch.errors import UserError
from codesearch.records import Example
from codesearch.syntax import CATEGORIES, syntax_leaves, token_labels
from experiments.cli import main
from heads.hooks import hook_z
from heads.models import load_encoder
from heads.naming import HeadId
from probing.features import extract_features
from probing.probe import accuracy_from, fit_probe, in_memory, macro_f1_from
from probing.settings import ProbeConfig
from probing.tasks import (
    TASKS,
    control_labels_by_type,
    kept_positions,
    label_split,
    pair_features,
    resolve_tasks,
    stored_token_labels,
)

# ---------------------------------------------------------------- labels


def labels_of(code: str, language: str, spans):
    leaves, sequence = syntax_leaves(code, language)
    return token_labels(leaves, spans, code), sequence


def test_token_labels_python_by_hand():
    code = "def f(xs):\n    for x in xs:\n        g(x)\n    return 1\n"

    def span(text, start=0):
        at = code.index(text, start)
        return at, at + len(text)
    # A special token, then: def, f, for, g, its "(", return, 1.
    spans = [(0, 0), span("def"), span("f", 4), span("for"), span("g"), span("(", 30), span("return"), span("1")]
    labels, sequence = labels_of(code, "python", spans)
    category = [CATEGORIES[c] if c >= 0 else None for c in labels[:, 0]]
    assert category == [None, "keyword", "identifier", "keyword", "identifier", "delimiter", "keyword", "literal"]
    in_loop, in_call, in_return = labels[:, 1], labels[:, 3], labels[:, 4]
    assert in_loop.tolist() == [-1, 0, 0, 1, 1, 1, 0, 0]      # `for` itself is part of the loop statement
    assert in_call.tolist() == [-1, 0, 0, 0, 1, 1, 0, 0]
    assert in_return.tolist() == [-1, 0, 0, 0, 0, 0, 1, 1]
    assert sequence == {"has_loop": 1, "has_conditional": 0, "has_exception_handling": 0, "is_recursive": 0,
                        "returns_value": 1}


SNIPPETS = {
    "python": ("def walk(n):\n    try:\n        if n:\n            return walk(n - 1)\n    except E:\n        pass\n",
               {"has_loop": 0, "has_conditional": 1, "has_exception_handling": 1, "is_recursive": 1,
                "returns_value": 1}),
    "go": ("func Walk(n int) int {\n\tfor i := 0; i < n; i++ {\n\t\tfmt.Println(i)\n\t}\n\treturn 0\n}",
           {"has_loop": 1, "has_conditional": 0, "has_exception_handling": 0, "is_recursive": 0, "returns_value": 1}),
    "java": ("public int walk(int n) {\n  try { return n > 0 ? this.walk(n - 1) : 0; } catch (E e) { return 1; }\n}",
             {"has_loop": 0, "has_conditional": 1, "has_exception_handling": 1, "is_recursive": 1,
              "returns_value": 1}),
    "javascript": ("function walk(xs) {\n  for (const x of xs) { if (x) { walk(x); } }\n  return;\n}",
                   {"has_loop": 1, "has_conditional": 1, "has_exception_handling": 0, "is_recursive": 1,
                    "returns_value": 0}),
    "php": ("public function walk($xs) {\n    foreach ($xs as $x) { $this->walk($x); }\n    return $xs;\n}",
            {"has_loop": 1, "has_conditional": 0, "has_exception_handling": 0, "is_recursive": 1,
             "returns_value": 1}),
    "ruby": ("def walk(xs)\n  begin\n    xs.each { |x| puts x } unless xs.empty?\n  rescue StandardError\n    nil\n"
             "  end\nend",
             {"has_loop": 0, "has_conditional": 1, "has_exception_handling": 1, "is_recursive": 0,
              "returns_value": 0}),
}


@pytest.mark.parametrize("language", sorted(SNIPPETS))
def test_sequence_labels_in_every_language(language):
    code, expected = SNIPPETS[language]
    leaves, sequence = syntax_leaves(code, language)
    assert sequence == expected
    assert {CATEGORIES[leaf.category] for leaf in leaves} >= {"keyword", "identifier", "delimiter"}


RECURSION = [  # (language, code, calls itself?)
    ("python", "def walk(self, n):\n    for c in n:\n        self.walk(c)", 1),
    ("python", "def __init__(self, x):\n    super().__init__(x)", 0),
    ("python", "def read(self):\n    return self._fh.read()", 0),
    ("go", "func (s *Server) Walk(n int) int {\n\treturn s.Walk(n-1)\n}", 1),
    ("go", "func (s *Server) Close() error {\n\treturn s.conn.Close()\n}", 0),
    ("java", "public int fact(int n) { return n * fact(n - 1); }", 1),
    ("java", "@Override\npublic void close() { super.close(); }", 0),
    ("javascript", "walk(n) {\n  for (const c of n) { this.walk(c); }\n}", 1),
    ("javascript", "get(k) {\n  return this.map.get(k);\n}", 0),
    ("php", "public static function walk($n) { return self::walk($n); }", 1),
    ("php", "public function save() { return parent::save(); }", 0),
    ("ruby", "def walk(n)\n  self.walk(n)\nend", 1),
    ("ruby", "def save\n  super\nend", 0),
]


@pytest.mark.parametrize("language, code, expected", RECURSION)
def test_recursion_is_a_call_to_the_function_itself_not_to_a_namesake(language, code, expected):
    assert syntax_leaves(code, language)[1]["is_recursive"] == expected


def test_a_plain_ruby_begin_block_is_no_exception_handling():
    assert syntax_leaves("def f(x)\n  begin\n    x\n  end\nend", "ruby")[1]["has_exception_handling"] == 0


RICH = {  # many kinds of leaf per language: every one that is code gets a category
    "java": "@Override\npublic static <T> boolean get(final String[] a) throws IOException {\n"
            "  this.x = super.y; boolean ok = true; char c = 'c';\n  Object o = (Object) a; return ok;\n}",
    "javascript": "get({a, b}, ...rest) {\n  const self = this; let x = `t ${a}`, y = /re/g, z = null;\n"
                  "  class A extends B { constructor() { super(); } }\n  return new P((r) => r(this.x));\n}",
    "php": "public static function get(array $a, ?int $b = null): ?string\n{\n"
           "  $x = self::$c[$a] ?? parent::get($a); $r = (int) $a; return $this->get($a);\n}",
    "ruby": "def self.get(a, *args, b: 1, &blk)\n  @x = @@y + $z\n  h = { a: 1, 'b' => 2 }; arr = %w[a b]\n"
            "  yield self if block_given?\n  super\nend",
}


@pytest.mark.parametrize("language", sorted(RICH))
def test_every_code_leaf_has_a_category(language):
    code = RICH[language]
    leaves, _ = syntax_leaves(code, language)
    covered = np.zeros(len(code), dtype=bool)
    for leaf in leaves:
        covered[leaf.start:leaf.end] = True
    uncovered = "".join(ch if not ok else " " for ch, ok in zip(code, covered)).split()
    assert uncovered == []


def test_tokens_inside_parse_errors_have_no_label():
    code = "def f(x):\n    return x +\n"           # the expression after return is cut off
    leaves, _ = syntax_leaves(code, "python")
    labelled = {code[leaf.start:leaf.end] for leaf in leaves}
    assert "def" in labelled and "+" not in labelled


def test_function_labels_describe_only_what_the_model_sees():
    code = "def f(xs):\n    total = 0\n    for x in xs:\n        total += x\n    return total\n"
    cut = code.index("for")
    assert syntax_leaves(code, "python")[1]["has_loop"] == 1
    assert syntax_leaves(code, "python", visible_chars=cut)[1] == {
        "has_loop": 0, "has_conditional": 0, "has_exception_handling": 0, "is_recursive": 0, "returns_value": 0}
    # Multibyte characters before the cut: the limit is in characters, tree-sitter counts bytes.
    wide = "def f(xs):\n    s = 'éé😀'\n    for x in xs:\n        pass\n"
    assert syntax_leaves(wide, "python", visible_chars=wide.index("for"))[1]["has_loop"] == 0
    assert syntax_leaves(wide, "python", visible_chars=wide.index("for") + 1)[1]["has_loop"] == 1


def test_a_method_cut_out_of_its_class_is_parsed_inside_one():
    code = "get(k) {\n  for (const x of k) { f(x); }\n  return this.m[k];\n}"
    leaves, sequence = syntax_leaves(code, "javascript")
    first = min(leaves, key=lambda leaf: leaf.start)
    assert code[first.start:first.end] == "get" and CATEGORIES[first.category] == "identifier"
    assert not first.flags[2]                      # a method's name is no call
    assert sequence["has_loop"] == 1 and sequence["returns_value"] == 1
    assert max(leaf.end for leaf in leaves) == len(code)    # no leaf of the wrapper


def test_tokens_map_to_leaves_through_real_tokenizer_offsets(builtin_encoder):
    code = 'def total(values):\n    return sum(v * 2 for v in values)  # double\n'
    ids, offsets = builtin_encoder.tokenize_with_offsets([code], 64)
    labels, _ = labels_of(code, "python", offsets[0])
    tokens = builtin_encoder.tokenizer.convert_ids_to_tokens(ids[0])
    by_token = {tok: CATEGORIES[lab[0]] for tok, lab in zip(tokens, labels) if lab[0] >= 0}
    assert by_token["def"] == "keyword" and by_token["total"] == "identifier" and by_token["2"] == "literal"
    assert by_token["*"] == "operator" and by_token["("] == "delimiter"
    # Special tokens and the comment carry no label.
    assert labels[0, 0] == -1 and labels[-1, 0] == -1 and "double" not in by_token


# ---------------------------------------------------------------- probe mechanics


def test_macro_f1_and_accuracy_match_scikit_learn():
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 4, 500), rng.integers(0, 4, 500)
    y_pred[y_pred == 3] = 2  # a class that is never predicted
    confusion = torch.zeros(4, 4, dtype=torch.long)
    for t, p in zip(y_true, y_pred):
        confusion[t, p] += 1
    assert float(macro_f1_from(confusion)) == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert float(accuracy_from(confusion)) == pytest.approx(np.mean(y_true == y_pred))


def test_control_labels_are_fixed_per_token_type_with_the_real_class_shares():
    train = np.array([0, 0, 0, 1])
    types = {"train": np.array([5, 6, 5, 7]), "test": np.array([7, 5, 9])}
    control = control_labels_by_type(train, types, 2, seed=0)
    assert control["train"][0] == control["train"][2] == control["test"][1]
    assert control["train"][3] == control["test"][0]
    # Many types with skewed frequencies: the control task keeps the real task's class shares over tokens.
    rng = np.random.default_rng(1)
    train_types = rng.zipf(1.5, size=20000) % 3000
    labels = (rng.random(20000) < 0.2).astype(np.int64)
    largest_share = np.bincount(train_types).max() / len(train_types)
    for seed in range(5):
        control = control_labels_by_type(labels, {"train": train_types}, 2, seed=seed)["train"]
        # A type cannot be split: the shares match up to half of the type straddling the class boundary.
        assert abs(control.mean() - labels.mean()) <= largest_share / 2 + 1e-9
        per_type = {t: set(control[train_types == t]) for t in np.unique(train_types)[:50]}
        assert all(len(v) == 1 for v in per_type.values())


def test_pair_features_hold_true_and_mismatched_pairs():
    q = np.arange(12, dtype=np.float32).reshape(3, 2, 2)
    features, labels = pair_features(q, q, seed=0)
    assert labels.tolist() == [1, 1, 1, 0, 0, 0]
    assert features.shape == (6, 2, 4)
    assert np.all(features[:3, :, 2:] == 0)          # |q - c| vanishes for the true pairs here
    assert np.all(features[3:, :, 2:].sum(axis=(1, 2)) > 0)


def loop_corpus(n: int, seed: int = 0) -> list[Example]:
    """Small Python functions, half with a loop; enough variety for token-level labels in every split."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        names = [f"v{i}", f"acc{i}", f"items{i}"]
        if rng.random() < 0.5:
            body = f"    {names[1]} = 0\n    for {names[0]} in {names[2]}:\n        {names[1]} += {names[0]} * {i}\n"
        else:
            body = f"    {names[1]} = len({names[2]}) + {i}\n    {names[1]} = {names[1]} * 2\n"
        code = f"def f{i}({names[2]}):\n{body}    return {names[1]}\n"
        out.append(Example(id=str(i), query=f"compute value {i}", code=code, language="python", path=f"m{i}.py"))
    return out


def test_planted_signal_head_is_found_and_selective(tiny_bert_dir, tmp_path):
    """A tiny model in which one head's output carries the in-loop label and no other head carries anything:
    the probe must rank that head first by a wide margin, with high selectivity, and the others near zero."""
    encoder = load_encoder(str(tiny_bert_dir))
    planted_layer, planted_head = 1, 2
    task = TASKS["in_loop"]
    splits = {name: label_split(name, encoder, loop_corpus(n, seed), 96, 16)
              for name, n, seed in (("train", 60, 0), ("valid", 20, 1), ("test", 30, 2))}
    label_of_ids = {tuple(ids): labels[:, task.column]
                    for split in splits.values() for ids, labels in zip(split.token_ids, split.token_labels)}
    noise = torch.Generator().manual_seed(0)
    current = {}

    def remember_inputs(_module, _args, kwargs):
        current["ids"], current["mask"] = kwargs["input_ids"], kwargs["attention_mask"]

    def plant(layer, z, _attention_mask):
        out = torch.randn(z.shape, generator=noise)  # every head: noise, unrelated to the input
        if layer == planted_layer:
            for row in range(z.shape[0]):
                length = int(current["mask"][row].sum())
                labels = label_of_ids[tuple(current["ids"][row, :length].tolist())]
                signal = torch.as_tensor(np.where(labels == 1, 1.0, -1.0), dtype=torch.float32)
                out[row, :length, planted_head] += 3.0 * signal[:, None]
        return out

    handle = encoder.model.register_forward_pre_hook(remember_inputs, with_kwargs=True)
    stores = {}
    try:
        with hook_z(encoder.model, plant):
            for name, split in splits.items():
                keep = kept_positions(split, 0, seed=0)
                store = extract_features(encoder, split.token_ids, keep, tmp_path / name, {"x": name}, 8,
                                         progress=False)
                stores[name] = store
    finally:
        handle.remove()
    data, control = {}, {}
    types = {}
    for name, split in splits.items():
        labels, token_types = stored_token_labels(split, stores[name].meta, task)
        rows = np.nonzero(labels != -1)[0]
        data[name] = in_memory(stores[name].tokens(rows), labels[rows])
        types[name] = token_types[rows]
    control_labels = control_labels_by_type(data["train"].labels, types, 2, seed=0)
    control = {name: in_memory(data[name].features(np.arange(len(data[name]))), control_labels[name])
               for name in data}
    real = fit_probe(data["train"], data["valid"], data["test"], 2, seed=0, settings=ProbeConfig(steps=150))
    ctrl = fit_probe(control["train"], control["valid"], control["test"], 2, seed=0, settings=ProbeConfig(steps=150))
    planted = HeadId(planted_layer, planted_head).flat(encoder.n_heads)
    others = np.delete(np.arange(len(real.accuracy)), planted)
    majority = max(np.mean(data["test"].labels), 1 - np.mean(data["test"].labels))
    assert np.argmax(real.accuracy) == planted
    assert real.accuracy[planted] > 0.97
    assert real.accuracy[planted] - real.accuracy[others].max() > 0.2            # first by a wide margin
    selectivity = real.accuracy - ctrl.accuracy
    assert selectivity[planted] > (1 - majority) - 0.08   # nearly all it can be above the majority baseline
    assert np.abs(selectivity[others]).max() < 0.08
    assert np.abs(real.accuracy[others] - majority).max() < 0.08


# ---------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def probe_corpus(tmp_path_factory):
    """A corpus built by the builder, with all three splits."""
    root = tmp_path_factory.mktemp("probe-corpus")
    for i, example in enumerate(loop_corpus(48, seed=5)):
        code = example.code.replace("):\n", f'):\n    """Compute the value number {i} from the items."""\n', 1)
        if i % 3 == 0:
            handler = "    try:\n        pass\n    except ValueError:\n        pass\n"
            code = code.replace("    return", handler + "    return")
        (root / "src").mkdir(exist_ok=True)
        (root / "src" / f"mod{i}.py").write_text(code)
    build_corpus(CorpusSettings(source_dir=str(root / "src"), split_fractions=(0.5, 0.25, 0.25)), root / "corpus",
                 progress=False)
    return root / "corpus"


def test_probe_command_outputs_and_ablation_join(tmp_path, probe_corpus, tiny_bert_dir):
    common = [f"data.path={probe_corpus}", f"model.name={tiny_bert_dir}", f"runs_dir={tmp_path / 'runs'}",
              "progress=false", "model.batch_size=8"]
    assert main(["ablate", *common, "ablation.n_bootstrap=200", "ablation.n_permutations=200"]) == 0
    assert main(["probe", *common, "task=in_loop,has_exception_handling,query_code_match", "probe.seeds=2",
                 "probe.steps=40", "wandb.mode=offline"]) == 0
    (study,) = (tmp_path / "runs").iterdir()
    from test_tracking_sweeps import inspect, offline_runs

    (logged,) = offline_runs(study)
    record, summary = inspect(logged)
    assert (record["job_type"], record["run_group"]) == ("probe", study.name)
    assert "probe/query_code_match/max_selectivity" in summary["summary"]
    out = study / "probe" / "in_loop+has_exception_handling+query_code_match"
    frame = pd.read_csv(out / "probes.csv")
    assert list(frame.columns) == ["condition", "layer", "head", "task", "accuracy", "macro_f1", "majority",
                                   "control_accuracy", "selectivity", "random_init_accuracy", "n_train", "n_test",
                                   "seed_std"]
    assert len(frame) == 3 * 2 * 4 and set(frame["task"]) == {"in_loop", "has_exception_handling",
                                                              "query_code_match"}
    for column in ("accuracy", "macro_f1", "majority", "control_accuracy", "random_init_accuracy"):
        assert frame[column].between(0, 1).all()
    assert np.allclose(frame["selectivity"], frame["accuracy"] - frame["control_accuracy"], atol=1e-9)
    assert (frame["seed_std"] >= 0).all() and (frame["n_test"] > 0).all()
    for task in ("in_loop", "has_exception_handling", "query_code_match"):
        assert (out / f"heatmap_{task}.png").is_file() and (out / f"heatmap_{task}.svg").is_file()
    joined = pd.read_csv(out / "probe_vs_ablation.csv")
    assert len(joined) == len(frame) and {"selectivity", "delta_mrr"} <= set(joined.columns)
    run = json.loads((out / "run.json").read_text())
    assert set(run["ablation_join"]["by_task"]) == {"in_loop", "has_exception_handling", "query_code_match"}
    assert run["ablation_join"]["source"].endswith("all-zero-both-" + run["ablation_join"]["source"][-6:])


def test_unknown_task_and_languages_without_grammar(capsys, tmp_path):
    assert main(["probe", "task=loopiness"]) == 2
    assert "unknown probing task loopiness" in capsys.readouterr().err
    assert main(["probe", "data.language=cobol"]) == 2
    assert "expected one of [python, go, java, javascript, php, ruby]" in capsys.readouterr().err
    with pytest.raises(UserError, match="unknown language 'kotlin'"):
        syntax_leaves("fun f() {}", "kotlin")
    with pytest.raises(UserError, match="unknown probing task"):
        resolve_tasks("")


def test_a_task_with_one_class_is_refused_before_features(tmp_path, probe_corpus, tiny_bert_dir, capsys,
                                                         monkeypatch):
    import probing.study as command

    def must_not_run(*_args, **_kwargs):
        raise AssertionError("features were computed")

    monkeypatch.setattr(command, "random_init_copy", must_not_run)
    assert main(["probe", f"data.path={probe_corpus}", f"model.name={tiny_bert_dir}", f"runs_dir={tmp_path}",
                 "task=is_recursive", "progress=false"]) == 2
    assert "probing task is_recursive has one class only in the train split (no)" in capsys.readouterr().err


def test_all_tasks_skip_a_task_with_one_class_and_say_so(tmp_path, probe_corpus, tiny_bert_dir, capsys):
    assert main(["probe", f"data.path={probe_corpus}", f"model.name={tiny_bert_dir}", f"runs_dir={tmp_path}",
                 "task=all", "probe.seeds=1", "probe.steps=5", "progress=false"]) == 0
    assert "warning: skipped: probing task is_recursive has one class only" in capsys.readouterr().err
    (out,) = tmp_path.glob("*/probe/all")
    run = json.loads((out / "run.json").read_text())
    assert "is_recursive" in run["skipped_tasks"] and "is_recursive" not in run["tasks"]
    assert {"token_category", "query_code_match"} <= set(run["tasks"])
    assert set(pd.read_csv(out / "probes.csv")["task"]) == set(run["tasks"])


def test_token_sampling_is_seeded_and_bounded(tiny_bert_dir):
    encoder = load_encoder(str(tiny_bert_dir))
    split = label_split("train", encoder, loop_corpus(10), 96, 16)
    a, b = kept_positions(split, 100, seed=1), kept_positions(split, 100, seed=1)
    assert sum(len(p) for p in a) == 100 and all(np.array_equal(x, y) for x, y in zip(a, b))
    everything = kept_positions(split, 0, seed=1)
    assert sum(len(p) for p in everything) == sum(int((t[:, 0] >= 0).sum()) for t in split.token_labels)
