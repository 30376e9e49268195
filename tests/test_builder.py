"""The local corpus builder: CodeSearchNet's filters, splits by file, its release layout, determinism, errors."""
import gzip
import json
import textwrap
from pathlib import Path

import pytest

from codesearch import builder
from codesearch.builder import CorpusSettings, build_corpus, cached_corpus, split_of
from codesearch.dedupe import near_duplicate_keep_mask
from codesearch.errors import DataError, UserError
from codesearch.readers import read_task

GOOD = '''
def {name}(values, factor):
    """{doc}"""
    result = []
    for value in values:
        result.append(value * factor + {k})
    return result
'''


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def make_python_tree(root: Path, n_files: int = 12) -> None:
    for i in range(n_files):
        body = GOOD.format(name=f"scale_{i}", doc=f"Scale every value by a factor, variant {i}.", k=i)
        # Each file also holds one of each thing CodeSearchNet removes.
        body += f'''
def short_{i}(x):
    """Return x unchanged, always."""
    return x

def terse_{i}(values):
    """Scale."""
    out = list(values)
    out.sort()
    return out

class Box{i}:
    def __repr__(self):
        """Show the box as text for debugging."""
        parts = [str(self)]
        parts.append("box")
        return "".join(parts)

def test_helper_{i}(values):
    """Helper named like a test function."""
    out = list(values)
    out.reverse()
    return out
'''
        write(root / f"pkg{i % 3}" / f"mod{i}.py", body)
    # A near-duplicate of scale_0 in a bigger file that comes first in path order, as a bundle built from the
    # sources would: the one in the smaller file is kept.
    bundle = GOOD.format(name="scale_copy", doc="A copy of the scaling function.", k=0)
    bundle += "\n\ndef undocumented(values):\n" + "".join(f"    values.append({k})\n" for k in range(40))
    write(root / "aaa" / "bundle.py", bundle)


def read_split(directory: Path, language: str, split: str) -> list[dict]:
    path = directory / language / "final" / "jsonl" / split / f"{language}_{split}_0.jsonl.gz"
    with gzip.open(path, "rt") as handle:
        return [json.loads(line) for line in handle]


def test_filters_splits_layout_and_manifest(tmp_path):
    src = tmp_path / "src"
    make_python_tree(src)
    manifest = build_corpus(CorpusSettings(source_dir=str(src), source_name="demo"), tmp_path / "out",
                            progress=False)
    counts = manifest["counts"]
    assert counts["files"] == 13
    assert counts["removed"] == {"constructor_or_extension_method": 12, "near_duplicate": 1, "short_code": 12,
                                 "short_docstring": 12, "test_in_name": 12}
    records = [r for split in ("train", "valid", "test") for r in read_split(tmp_path / "out", "python", split)]
    assert sorted(r["func_name"] for r in records) == sorted(f"scale_{i}" for i in range(12))
    assert sum(counts["splits"].values()) == len(records) == 12
    assert counts["documented_functions"] == len(records) + sum(counts["removed"].values())
    # Every CodeSearchNet field, with the docstring still inside Python code as the release has it.
    record = records[0]
    assert set(record) == {"repo", "path", "func_name", "original_string", "language", "code", "code_tokens",
                           "docstring", "docstring_tokens", "sha", "url", "partition"}
    assert '"""Scale every value' in record["code"]
    assert record["repo"] == "demo"
    # Splits follow the file: all functions of a file share one, and it is the hash of the path.
    for r in records:
        assert r["partition"] == split_of(r["path"], (0.7, 0.1, 0.2))
    assert manifest["content_hash"].startswith("sha256:")
    assert (tmp_path / "out" / "manifest.json").is_file()
    assert manifest["tool_versions"]["tree-sitter-python"] != "unknown"


def test_rebuild_is_byte_identical(tmp_path):
    src = tmp_path / "src"
    make_python_tree(src)
    first = build_corpus(CorpusSettings(source_dir=str(src)), tmp_path / "a", progress=False)
    second = build_corpus(CorpusSettings(source_dir=str(src)), tmp_path / "b", progress=False)
    assert first["content_hash"] == second["content_hash"]
    for split in ("train", "valid", "test"):
        name = f"python/final/jsonl/{split}/python_{split}_0.jsonl.gz"
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_a_folder_that_is_no_corpus_is_never_replaced(tmp_path):
    src = tmp_path / "src"
    make_python_tree(src)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match=r"notes exists and is no corpus \(it has no manifest.json\)"):
        build_corpus(CorpusSettings(source_dir=str(src)), tmp_path / "notes", progress=False)
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"
    build_corpus(CorpusSettings(source_dir=str(src)), tmp_path / "out", progress=False)   # new: built
    build_corpus(CorpusSettings(source_dir=str(src)), tmp_path / "out", progress=False)   # a corpus: replaced


def test_an_edited_source_is_built_again(tmp_path):
    src = tmp_path / "src"
    make_python_tree(src)
    first_dir, first = cached_corpus(CorpusSettings(source_dir=str(src)), progress=False)
    assert cached_corpus(CorpusSettings(source_dir=str(src)), progress=False)[0] == first_dir   # reused
    write(src / "extra.py", GOOD.format(name="extra_scale", doc="Scale the extra values by a factor.", k=99))
    second_dir, second = cached_corpus(CorpusSettings(source_dir=str(src)), progress=False)
    assert second_dir != first_dir and second["counts"]["files"] == first["counts"]["files"] + 1


def test_the_reader_reads_what_the_builder_wrote(tmp_path):
    src = tmp_path / "src"
    make_python_tree(src)
    build_corpus(CorpusSettings(source_dir=str(src), split_fractions=(0.0, 0.0, 1.0)), tmp_path / "out",
                 progress=False)
    task = read_task(tmp_path / "out", language="python", split="test")
    assert len(task) == 12
    for example in task.examples:
        assert "Scale every value" not in example.code  # the docstring was removed from the code
        assert example.query.startswith("Scale every value by a factor")
        assert example.code.startswith("def scale_")


MULTI = {
    "go": ("lib.go", '''package lib

// Scale every value by the factor given.
func Scale(values []int, factor int) []int {
\tout := make([]int, 0)
\tfor _, v := range values {
\t\tout = append(out, v*factor)
\t}
\treturn out
}
'''),
    "java": ("Lib.java", '''public class Lib {
    /**
     * Scale every value by the factor given.
     */
    public int[] scale(int[] values, int factor) {
        int[] out = new int[values.length];
        for (int i = 0; i < values.length; i++) out[i] = values[i] * factor;
        return out;
    }
}
'''),
    "javascript": ("lib.js", '''/**
 * Scale every value by the factor given.
 */
function scale(values, factor) {
  const out = [];
  for (const v of values) out.push(v * factor);
  return out;
}
'''),
    "php": ("lib.php", '''<?php
/**
 * Scale every value by the factor given.
 */
function scale($values, $factor) {
    $out = [];
    foreach ($values as $v) { $out[] = $v * $factor; }
    return $out;
}
'''),
    "ruby": ("lib.rb", '''# Scale every value by the factor given.
def scale(values, factor)
  values.map do |v|
    v * factor
  end
end
'''),
}


@pytest.mark.parametrize("language", sorted(MULTI))
def test_every_language_builds_and_reads_back(tmp_path, language):
    filename, text = MULTI[language]
    write(tmp_path / "src" / filename, text)
    manifest = build_corpus(CorpusSettings(language=language, source_dir=str(tmp_path / "src"),
                                           split_fractions=(0.0, 0.0, 1.0)), tmp_path / "out", progress=False)
    assert manifest["counts"]["splits"]["test"] == 1
    task = read_task(tmp_path / "out", language=language, split="test")
    assert task.examples[0].query == "Scale every value by the factor given."
    assert "Scale every value" not in task.examples[0].code


def test_near_duplicates_by_token_set_jaccard():
    a = ["def", "f", "(", "x", ")", "return", "x", "+", "1"]
    b = ["def", "g", "(", "x", ")", "return", "x", "+", "1"]   # 5 of 6 word tokens shared: 5/7 < 0.8
    c = ["def", "f", "(", "x", ")", "return", "x", "+", "1", ";"]  # the same word set as a
    keep = near_duplicate_keep_mask([a, b, c], threshold=0.8)
    assert keep.tolist() == [True, True, False]
    assert near_duplicate_keep_mask([a, b], threshold=0.7).tolist() == [True, True]   # 4/6 = 0.67
    assert near_duplicate_keep_mask([a, b], threshold=0.6).tolist() == [True, False]


def test_empty_corpus_after_filtering_is_an_error(tmp_path):
    write(tmp_path / "src" / "tiny.py", 'def f(x):\n    """Too short to keep here."""\n    return x\n')
    with pytest.raises(DataError, match=r"no functions left after filtering in .*src.*short_code"):
        build_corpus(CorpusSettings(source_dir=str(tmp_path / "src")), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()  # nothing half-built is left behind


def test_directory_without_source_files_is_an_error(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match=r"no ruby source files \(\.rb\) under .*src"):
        build_corpus(CorpusSettings(language="ruby", source_dir=str(tmp_path / "src")), tmp_path / "out",
                     progress=False)


def test_missing_source_directory_and_unknown_language(tmp_path):
    with pytest.raises(DataError, match="is not a directory"):
        build_corpus(CorpusSettings(source_dir=str(tmp_path / "nope")), tmp_path / "out", progress=False)
    with pytest.raises(UserError, match="unknown language 'kotlin'"):
        build_corpus(CorpusSettings(language="kotlin", source_dir=str(tmp_path)), tmp_path / "out",
                     progress=False)


def test_builtin_corpus_is_the_standard_library_and_is_cached():
    directory, manifest = cached_corpus(CorpusSettings(), progress=False)
    assert manifest["source"]["name"].startswith("python-stdlib-")
    assert min(manifest["counts"]["splits"].values()) > 100
    again, manifest_again = cached_corpus(CorpusSettings(), progress=False)
    assert again == directory and manifest_again == manifest
    # Splits are disjoint by file.
    paths = {split: {r["path"] for r in read_split(directory, "python", split)} for split in ("train", "test")}
    assert not paths["train"] & paths["test"]


# ---------------------------------------------------------------- real-style trees: what is read, what is dropped

GO_TREE = {
    "container/heap/heap.go": '''package heap

// Init establishes the heap invariants required by the other routines.
func Init(h Interface) {
\tn := h.Len()
\tfor i := n/2 - 1; i >= 0; i-- {
\t\tdown(h, i, n)
\t}
}

// Deprecated: Fix re-establishes the heap ordering; use Init.
func Fix(h Interface, i int) {
\tif !down(h, i, h.Len()) {
\t\tup(h, i)
\t}
}

// up moves the element at j towards the root of the heap.

func up(h Interface, j int) {
\tfor j > 0 {
\t\th.Swap(j, (j-1)/2)
\t\tj = (j - 1) / 2
\t}
}

// archSqrt returns the square root of x; it is written in assembly.
func archSqrt(x float64) float64

//go:noinline
func spin(n int) int {
\tfor i := 0; i < n; i++ {
\t}
\treturn n
}

// Run runs every registered check in the order of their names.
func (r *testRunner) Run() {
\tfor _, c := range r.checks {
\t\tc.run()
\t}
}
''',
    "container/heap/heap_test.go": '''package heap

// BenchmarkInit measures how long Init takes on a large heap.
func BenchmarkInit(b *testing.B) {
\th := new(myHeap)
\tfor i := 0; i < b.N; i++ {
\t\tInit(h)
\t}
}
''',
    "container/heap/zheap.go": '''// Code generated by gen.go; DO NOT EDIT.

package heap

// initInts establishes the heap invariants on a slice of ints.
func initInts(h []int) {
\tn := len(h)
\tfor i := n/2 - 1; i >= 0; i-- {
\t\tdownInts(h, i, n)
\t}
}
''',
    "vendor/golang.org/x/text/width/width.go": '''package width

// Fold maps a string to its narrow and wide canonical forms.
func Fold(s string) string {
\tout := make([]rune, 0, len(s))
\tfor _, r := range s {
\t\tout = append(out, fold(r))
\t}
\treturn string(out)
}
''',
}

JAVA_TREE = {
    "java.base/java/util/ArrayDeque.java": '''package java.util;

public class ArrayDeque<E> {
    /**
     * Inserts the specified element at the front of this deque.
     *
     * @param e the element to add
     */
    public void addFirst(E e) {
        if (e == null)
            throw new NullPointerException();
        elements[head = dec(head, elements.length)] = e;
    }

    /**
     * @throws NoSuchElementException {@inheritDoc}
     */
    public E removeFirst() {
        E e = pollFirst();
        if (e == null)
            throw new NoSuchElementException();
        return e;
    }

    /**
     * Returns the number of elements in this deque.<p>
     *
     * A cheap operation.
     */

    // not synchronised
    public int size() {
        int n = tail - head;
        if (n < 0) n += elements.length;
        return n;
    }

    // Circularly decrements i, mod modulus.
    static final int dec(int i, int modulus) {
        if (--i < 0) i = modulus - 1;
        return i;
    }
}

interface Deque<E> {
    /** Retrieves and removes the first element of this deque. */
    E pollFirst();
}
''',
    "src/test/java/java/util/ArrayDequeCheck.java": '''package java.util;

public class ArrayDequeCheck {
    /** Fills a deque with many elements for the checks. */
    static ArrayDeque<Integer> filled(int n) {
        ArrayDeque<Integer> d = new ArrayDeque<>();
        for (int i = 0; i < n; i++) d.addFirst(i);
        return d;
    }
}
''',
}

COMBINE_URLS = '''/**
 * Creates a new URL by combining the specified URLs.
 *
 * @param {string} baseURL The base URL
 * @returns {string} The combined URL
 */
function combineURLs(baseURL, relativeURL) {
  return relativeURL
    ? baseURL.replace(/\\/?\\/$/, '') + '/' + relativeURL.replace(/^\\/+/, '')
    : baseURL;
}
'''
IS_DATE = '''/**
 * Checks whether the input is a Date object, across realms.
 */
function isDate(input) {
  return (
    input instanceof Date ||
    Object.prototype.toString.call(input) === '[object Date]'
  );
}
'''
JAVASCRIPT_TREE = {
    "express/lib/request.js": '''/**
 * Return request header.
 *
 * @param {String} name
 * @return {String}
 * @public
 */

req.get =
req.header = function header(name) {
  if (!name) {
    throw new TypeError('name argument is required to req.get');
  }
  return this.headers[name.toLowerCase()];
};

/**
 * @param {String|Array} types...
 * @return {String|false|null}
 * @public
 */
req.is = function is(types) {
  var arr = types;
  return typeis(this, arr);
};
''',
    "express/test/support/utils.js": '''/**
 * Assert that a supertest response has a header.
 */
function shouldHaveHeader(header) {
  return function (res) {
    assert.ok((header.toLowerCase() in res.headers), 'should have header ' + header);
  };
}
''',
    # axios's sources and the bundle built from them, which comes first in path order.
    "axios/dist/axios.js": COMBINE_URLS,
    "axios/lib/helpers/combineURLs.js": COMBINE_URLS,
    # moment's UMD bundle sits at the package's root, named like a source: its copy loses to the source's.
    "moment/moment.js": ";(function (global, factory) {\n  global.moment = factory();\n}(this, (function () {\n"
                        + IS_DATE + "".join(f"  var unit{k} = 'unit{k}';\n" for k in range(40)) + "})));\n",
    "moment/src/lib/utils/is-date.js": IS_DATE,
}

PHP_TREE = {
    "Symfony/Component/Console/Tester/CommandTester.php": '''<?php

namespace Symfony\\Component\\Console\\Tester;

class CommandTester
{
    /**
     * Executes the command.
     *
     * @param array $input An array of command arguments and options
     */

    public function execute(array $input, array $options = []): int
    {
        $this->input = new ArrayInput($input);
        return $this->statusCode = $this->command->run($this->input, $this->output);
    }

    /**
     * @return string
     */
    public function getDisplay(bool $normalize = false)
    {
        $display = stream_get_contents($this->output->getStream());
        return $display;
    }

    /**
     * Runs the test suite for the given input.
     */
    public function testInput(array $input)
    {
        $x = $input;
        return $x;
    }
}
''',
    "Twig/TwigTest.php": '''<?php

namespace Twig;

final class TwigTest
{
    /**
     * Returns the name of the template test.
     */
    public function getName(): string
    {
        $name = $this->name;
        return $name;
    }
}

abstract class Node
{
    /**
     * Compiles the node to PHP.
     */
    abstract public function compile(Compiler $compiler);
}
''',
    "Symfony/Component/Console/Tests/Command/CommandTest.php": '''<?php

class CommandTest extends TestCase
{
    /**
     * Builds a command with the default name for the checks.
     */
    private function makeCommand()
    {
        $command = new Command('namespace:name');
        return $command;
    }
}
''',
}

RUBY_TREE = {
    "set.rb": '''# frozen_string_literal: true

class Set
  ##
  # Creates a new set containing the given objects.

  def self.of(*ary)
    set = new(ary)
    set.freeze if frozen?
    set
  end

  # :call-seq:
  #   add(obj) -> self
  #
  # Adds the given object to the set and returns self.
  def add(o)
    @hash[o] = true
    self
  end

  # :nodoc:
  def flatten_merge(set, seen = {})
    set.each { |e| add(e) }
    self
  end

  # @param [Object] o the object to delete
  # @return [Set] self
  def delete(o)
    @hash.delete(o)
    self
  end
end
''',
    "test/test_set.rb": '''class TC_Set < Test::Unit::TestCase
  # Builds a set of the first n integers for the checks.
  def build_set(n)
    set = Set.new
    n.times { |i| set << i }
    set
  end
end
''',
    "bundler/vendor/thor/lib/thor/shell.rb": '''class Thor
  # Returns the shell used in all Thor classes.
  def shell
    @shell ||= Base.shell.new
    @shell.padding = 1
    @shell
  end
end
''',
}

REAL_STYLE = {
    "go": (GO_TREE, {"Init", "testRunner.Run"},
           {"bundled_file": 1, "detached_comment": 1, "docstring_opens_with_tag": 1, "generated_file": 1,
            "no_body": 1, "not_doc_comment": 1, "test_file": 1}),
    "java": (JAVA_TREE, {"ArrayDeque.addFirst", "ArrayDeque.size"},
             {"docstring_opens_with_tag": 1, "no_body": 1, "not_doc_comment": 1, "test_file": 1}),
    "javascript": (JAVASCRIPT_TREE, {"header", "combineURLs", "isDate"},
                   {"bundled_file": 1, "docstring_opens_with_tag": 1, "near_duplicate": 1, "test_file": 1}),
    "php": (PHP_TREE, {"CommandTester.execute", "TwigTest.getName"},
            {"docstring_opens_with_tag": 1, "no_body": 1, "test_file": 1, "test_in_name": 1}),
    "ruby": (RUBY_TREE, {"Set.of"}, {"bundled_file": 1, "docstring_opens_with_tag": 3, "test_file": 1}),
}


@pytest.mark.parametrize("language", sorted(REAL_STYLE))
def test_real_style_sources_what_is_kept_and_each_removal_counted(tmp_path, language):
    tree, kept, removed = REAL_STYLE[language]
    for rel, text in tree.items():
        path = tmp_path / "src" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    manifest = build_corpus(CorpusSettings(language=language, source_dir=str(tmp_path / "src"),
                                           split_fractions=(0.0, 0.0, 1.0)), tmp_path / "out", progress=False)
    records = read_split(tmp_path / "out", language, "test")
    assert {r["func_name"] for r in records} == kept
    counts = manifest["counts"]
    assert counts["removed"] == removed
    assert counts["documented_functions"] == len(records) + sum(removed.values())
    assert sum(counts["skipped_files"].values()) == sum(removed.get(k, 0) for k in
                                                         ("test_file", "bundled_file", "generated_file"))
    # Sources win over the bundles built from them, and no query is a tag or keeps a trailing <p>.
    assert not any("/dist/" in r["path"] or r["path"] == "moment/moment.js" for r in records)
    task = read_task(tmp_path / "out", language=language, split="test")
    for example in task.examples:
        assert not example.query.startswith(("@", "{@", ":")) and "<p>" not in example.query


def test_javadoc_summary_without_html_and_named_function_expressions_dedented(tmp_path):
    for rel, text in JAVA_TREE.items():
        write(tmp_path / "src" / rel, text)
    build_corpus(CorpusSettings(language="java", source_dir=str(tmp_path / "src"), split_fractions=(0.0, 0.0, 1.0)),
                 tmp_path / "out", progress=False)
    size = next(r for r in read_split(tmp_path / "out", "java", "test") if r["func_name"] == "ArrayDeque.size")
    assert size["docstring_tokens"] == ["Returns", "the", "number", "of", "elements", "in", "this", "deque", "."]
    assert size["code"].startswith("public int size() {\n    int n = tail - head;")


def test_a_corpus_cached_by_an_older_extractor_is_not_reused(tmp_path, monkeypatch):
    src = tmp_path / "src"
    make_python_tree(src)
    current, manifest = cached_corpus(CorpusSettings(source_dir=str(src)), progress=False)
    assert manifest["corpus_format"] == builder.CORPUS_FORMAT
    monkeypatch.setattr(builder, "CORPUS_FORMAT", builder.CORPUS_FORMAT - 1)
    older = cached_corpus(CorpusSettings(source_dir=str(src)), progress=False)[0]
    assert older != current


def test_a_file_the_extractor_fails_on_is_named(tmp_path, monkeypatch):
    write(tmp_path / "src" / "pkg" / "broken.py", GOOD.format(name="f", doc="Scale the values.", k=1))

    def failing(source, language):
        raise ValueError("parser gave up")

    monkeypatch.setattr(builder, "extract_file", failing)
    with pytest.raises(DataError, match=r"src/pkg/broken\.py: could not extract python functions: parser gave up"):
        build_corpus(CorpusSettings(source_dir=str(tmp_path / "src")), tmp_path / "out", progress=False)


def test_test_in_name_looks_at_the_function_not_its_class(tmp_path):
    write(tmp_path / "src" / "case.py", '''
class TestCase:
    def assertEqual(self, first, second):
        """Fail if the two objects are unequal as determined by '=='."""
        if not first == second:
            raise self.failureException(first, second)
        return None

    def test_scaling(self, values):
        """A test method, which CodeSearchNet leaves out."""
        out = list(values)
        out.sort()
        return out
''')
    manifest = build_corpus(CorpusSettings(source_dir=str(tmp_path / "src"), split_fractions=(0.0, 0.0, 1.0)),
                            tmp_path / "out", progress=False)
    assert [r["func_name"] for r in read_split(tmp_path / "out", "python", "test")] == ["TestCase.assertEqual"]
    assert manifest["counts"]["removed"] == {"test_in_name": 1}
