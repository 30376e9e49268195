"""Functions and doc comments from source files, for each of the six CodeSearchNet languages."""
import pytest

from codesearch.docstrings import strip_docstring, summarize
from codesearch.errors import UserError
from codesearch.extract import extract_functions
from codesearch.languages import language_spec

PYTHON = b'''import os


class Store:
    @property
    def size(self):
        """Number of items held in the store.

        Counts every item, even hidden ones.
        """
        total = 0
        for item in self.items:
            total += 1
        return total

    def __len__(self):
        """Dunder methods are documented too."""
        return self.size


def undocumented(x):
    # a comment is not a docstring
    return x


async def fetch(url):
    \'\'\'Fetch a page over the network.\'\'\'
    return await get(url)
'''

GO = b'''package store

// Size returns the number of items
// held in the store.
func (s *Store) Size() int {
\treturn len(s.items)
}

// String is the standard extension method.
func (s Store) String() string { return "store" }

func undocumented() {}
'''

JAVA = b'''package a;

public class Store {
    /**
     * Returns the number of items.
     * @return the count
     */
    @Override
    public int size() {
        return items.size();
    }

    /** Constructors are not methods here. */
    public Store() {}

    // a line comment is not Javadoc
    public void undocumented() {}
}
'''

JAVASCRIPT = b'''/**
 * Add two numbers together.
 */
function add(a, b) {
  return a + b;
}

/** Multiply two numbers. */
export const mul = (a, b) => {
  return a * b;
};

class Store {
  /** Count the items in the store. */
  size() {
    return this.items.length;
  }
}

items.forEach(function (x) { return x; });
'''

PHP = b'''<?php
/**
 * Add two numbers together.
 */
function add($a, $b) {
    return $a + $b;
}

class Store {
    /** Count the items in the store. */
    public function size() {
        return count($this->items);
    }

    abstract protected function hidden();
}
'''

RUBY = b'''# Add two numbers
# and return the sum.
def add(a, b)
  a + b
end

class Store
  # Count the items in the store.
  def self.size(items)
    items.length
  end
end
'''


def by_name(functions):
    return {f.name: f for f in functions}


def test_python_docstrings_methods_and_code():
    functions = by_name(extract_functions(PYTHON, "python"))
    assert set(functions) == {"Store.size", "Store.__len__", "fetch"}
    size = functions["Store.size"]
    assert size.docstring.startswith("Number of items held in the store.")
    assert size.code.startswith("def size(self):\n    \"\"\"Number")  # dedented, docstring kept as CSN keeps it
    assert size.code_lines == 5  # without the docstring
    assert "Number" not in " ".join(size.code_tokens)
    assert functions["fetch"].docstring == "Fetch a page over the network."
    assert language_spec("python").is_excluded_name("Store.__len__")


def test_go_line_comments_and_receiver():
    functions = by_name(extract_functions(GO, "go"))
    assert set(functions) == {"Store.Size", "Store.String"}
    assert functions["Store.Size"].docstring == "Size returns the number of items\nheld in the store."
    assert language_spec("go").is_excluded_name("Store.String")
    assert functions["Store.Size"].code.startswith("func (s *Store) Size() int {")


def test_tool_directives_are_no_documentation():
    go = b"package x\n\n// Compute computes the value.\n//go:noinline\nfunc Compute() int {\n\treturn 1\n}\n"
    assert by_name(extract_functions(go, "go"))["Compute"].docstring == "Compute computes the value."
    ruby = b"# -*- coding: utf-8 -*-\ndef top_level\n  x = 1\n  x + 1\nend\n"
    assert extract_functions(ruby, "ruby") == []          # undocumented: a magic comment is no docstring
    ruby = b"# frozen_string_literal: true\n# Adds two numbers together.\ndef add(a, b)\n  a + b\nend\n"
    assert by_name(extract_functions(ruby, "ruby"))["add"].docstring == "Adds two numbers together."


def test_java_javadoc_above_annotations_and_no_constructors():
    functions = by_name(extract_functions(JAVA, "java"))
    assert set(functions) == {"Store.size"}
    assert summarize(functions["Store.size"].docstring) == "Returns the number of items."
    assert functions["Store.size"].code.startswith("@Override\npublic int size()")


def test_javascript_declarations_exports_arrows_and_methods():
    functions = by_name(extract_functions(JAVASCRIPT, "javascript"))
    assert set(functions) == {"add", "mul", "Store.size"}  # the anonymous callback has no name
    assert functions["mul"].docstring == "Multiply two numbers."
    assert functions["mul"].code.startswith("mul = (a, b) =>")
    assert functions["add"].docstring == "Add two numbers together."


def test_php_docblocks_and_abstract_methods():
    functions = by_name(extract_functions(PHP, "php"))
    assert set(functions) == {"add", "Store.size"}
    assert functions["Store.size"].docstring == "Count the items in the store."
    assert language_spec("php").is_excluded_name("Store.__construct")


def test_ruby_hash_comments_inside_a_class():
    functions = by_name(extract_functions(RUBY, "ruby"))
    assert set(functions) == {"add", "Store.size"}
    assert functions["add"].docstring == "Add two numbers\nand return the sum."
    assert functions["Store.size"].docstring == "Count the items in the store."


def test_unknown_language_is_a_clear_error():
    with pytest.raises(UserError, match="unknown language 'cobol'.*go, java, javascript, php, python, ruby"):
        extract_functions(b"", "cobol")


@pytest.mark.parametrize("docstring, expected", [
    ("Add two numbers.\n\nArgs:\n  a: first", "Add two numbers."),
    ("Add two\n   numbers over\n lines.", "Add two numbers over lines."),
    ("\n\n  Leading blank lines.\n\nMore.", "Leading blank lines."),
    ("Returns the count.\n@return the count", "Returns the count."),
])
def test_summary_is_the_first_paragraph(docstring, expected):
    assert summarize(docstring) == expected


@pytest.mark.parametrize("code, expected", [
    ('def f(x):\n    """Doc."""\n    return x\n', "def f(x):\n    return x\n"),
    ("def f(x):\n    '''Multi\n    line.'''\n    y = x\n    return y\n", "def f(x):\n    y = x\n    return y\n"),
    ('def f(x):\n    r"""Raw \\d doc."""\n    return x', "def f(x):\n    return x"),
    ('def f(x):\n    return "not a docstring"\n', 'def f(x):\n    return "not a docstring"\n'),
    # Python 2 code, as much of CodeSearchNet is: tree-sitter still finds the function.
    ('def f(x):\n    """Print it."""\n    print "x", x\n', 'def f(x):\n    print "x", x\n'),
    ('@cache\ndef f(x: int = 1) -> int:\n    """Doc."""\n    return x\n',
     "@cache\ndef f(x: int = 1) -> int:\n    return x\n"),
])
def test_strip_python_docstring(code, expected):
    assert strip_docstring(code, "python") == expected


@pytest.mark.parametrize("language, code, expected", [
    ("java", "/**\n * Adds.\n */\npublic int add() {\n  return 1;\n}", "public int add() {\n  return 1;\n}"),
    ("go", "// Add adds.\n// Really.\nfunc Add() int {\n\treturn 1\n}", "func Add() int {\n\treturn 1\n}"),
    ("ruby", "# Adds.\ndef add\n  1\nend", "def add\n  1\nend"),
    ("javascript", "function f() { /* inner */ return 1; }", "function f() { /* inner */ return 1; }"),
])
def test_strip_leading_doc_comments(language, code, expected):
    assert strip_docstring(code, language) == expected
