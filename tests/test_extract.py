"""Functions and doc comments from source files, for each of the six CodeSearchNet languages."""
import pytest

from codesearch.docstrings import opens_with_tag, strip_docstring, summarize
from codesearch.errors import UserError
from codesearch.extract import extract_file, extract_functions
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


# ---------------------------------------------------------------- each language's documentation tool

def dropped(source: bytes, language: str) -> dict:
    return dict(extract_file(source, language).dropped)


BLANK_LINE_JAVA = (b"class Deque {\n    /**\n     * Returns the number of elements.\n     */\n\n"
                   b"    // not synchronised\n    public int size() {\n        return tail - head;\n    }\n}\n")
BLANK_LINE_JAVASCRIPT = (b"/**\n * Return request header.\n *\n * @public\n */\n\nreq.get =\n"
                         b"req.header = function header(name) {\n  return this.headers[name.toLowerCase()];\n};\n")
BLANK_LINE_PHP = (b"<?php\nclass Application {\n    /**\n     * Gets the name of the application.\n     */\n\n"
                  b"    public function getName() {\n        return $this->name;\n    }\n}\n")
BLANK_LINE_RUBY = (b"class Set\n  ##\n  # Returns a new set holding the given objects.\n\n  def self.of(*ary)\n"
                   b"    new(ary)\n  end\nend\n")


@pytest.mark.parametrize("language, source, name, summary", [
    # Javadoc takes the last /** */ above a declaration, past blank lines and plain comments.
    ("java", BLANK_LINE_JAVA, "Deque.size", "Returns the number of elements."),
    # JSDoc (express's style: a blank line, then a chained assignment).
    ("javascript", BLANK_LINE_JAVASCRIPT, "header", "Return request header."),
    # PHP's own getDocComment (and phpDocumentor) likewise.
    ("php", BLANK_LINE_PHP, "Application.getName", "Gets the name of the application."),
    # RDoc, in the standard library's `##` style.
    ("ruby", BLANK_LINE_RUBY, "Set.of", "Returns a new set holding the given objects."),
])
def test_a_blank_line_does_not_detach_a_doc_comment_where_the_tool_attaches_it(language, source, name, summary):
    functions = by_name(extract_functions(source, language))
    assert set(functions) == {name}
    assert summarize(functions[name].docstring) == summary


def test_go_doc_comments_must_touch_their_function_and_the_rest_is_counted():
    source = (b"package heap\n\n// up moves the element at j towards the root.\n\nfunc up(h Interface, j int) {\n"
              b"\tj--\n}\n\n//go:noinline\nfunc down(h Interface) {\n\th.Len()\n}\n\n"
              b"// Sqrt returns the square root of x; it is written in assembly.\nfunc archSqrt(x float64) float64\n")
    extraction = extract_file(source, "go")
    assert extraction.functions == []
    assert dict(extraction.dropped) == {"detached_comment": 1, "not_doc_comment": 1, "no_body": 1}
    assert extraction.documented == 3


def test_code_between_a_comment_and_a_function_detaches_it_silently():
    source = b"/** Separated by code. */\nvar x = 1;\nfunction f(a) {\n  return a;\n}\n"
    assert extract_file(source, "javascript").documented == 0
    # A plain comment is no JSDoc, and is counted; the keyword `function` is no anonymous function.
    source = b"// Pick the first defined argument.\nfunction defaults(a, b) {\n  return a != null ? a : b;\n}\n"
    assert dropped(source, "javascript") == {"not_doc_comment": 1}


def test_abstract_methods_and_anonymous_functions_are_counted():
    java = b"interface Deque<E> {\n    /** Retrieves and removes the first element. */\n    E pollFirst();\n}\n"
    assert dropped(java, "java") == {"no_body": 1}
    javascript = b"/**\n * Parse headers into an object.\n */\nexport default (rawHeaders) => {\n  return {};\n};\n"
    assert dropped(javascript, "javascript") == {"anonymous_function": 1}


@pytest.mark.parametrize("language, doc, expected", [
    ("java", "@throws NoSuchElementException {@inheritDoc}", True),
    ("java", "{@inheritDoc}\n\n<p>This implementation iterates.", True),
    ("java", "Returns {@code true} if this list is empty.", False),
    ("javascript", "@param {String} type\n@return {Boolean}", True),
    ("javascript", "@type {Object}", True),
    ("php", "@return string", True),
    ("php", "@deprecated since Symfony 5.4, use getDisplay() instead", True),
    ("php", "Gets the display returned by the last execution.", False),
    ("ruby", ":call-seq:\n  add(obj) -> self\n\nAdds the given object to the set.", True),
    ("ruby", ":nodoc:", True),
    ("ruby", "@param [Object] o the object to delete", True),
    ("ruby", "--\nTODO deep copy @document", True),
    ("ruby", "Adds the given object to the set and returns self.", False),
    ("python", ":param path: the file to read", True),
    ("python", "@param count true iff it should count", True),
    ("python", "@contextmanager decorator.\n\nTypical usage:", False),
    ("python", ":class:`Fraction` objects represent rational numbers.", False),
    ("go", "Deprecated: Use Init instead.", True),
    ("go", "Init establishes the heap invariants.", False),
])
def test_documentation_that_opens_with_a_tag_or_directive(language, doc, expected):
    assert opens_with_tag(doc, language_spec(language)) is expected


def test_ruby_call_seq_above_a_method_is_found_and_recognised():
    source = (b"class Set\n  # :call-seq:\n  #   add(obj) -> self\n  #\n  # Adds the given object to the set.\n"
              b"  def add(o)\n    @hash[o] = true\n    self\n  end\nend\n")
    (function,) = extract_functions(source, "ruby")
    assert opens_with_tag(function.docstring, language_spec("ruby"))


def test_javadoc_paragraph_tags_end_the_summary():
    source = (b"class Vector {\n    /**\n     * Returns the number of components in this vector.<p>\n     *\n"
              b"     * Thread-safe.\n     */\n    public int size() {\n        return elementCount;\n    }\n\n"
              b"    /**\n     * <p>Removes all of the elements from this vector.</p>\n"
              b"     * <ul><li>the size becomes 0</li></ul>\n"
              b"     */\n    public void clear() {\n        removeAllElements();\n    }\n}\n")
    functions = by_name(extract_functions(source, "java"))
    assert summarize(functions["Vector.size"].docstring) == "Returns the number of components in this vector."
    assert summarize(functions["Vector.clear"].docstring) == "Removes all of the elements from this vector."


def test_a_named_function_expression_loses_its_line_indentation_on_every_line():
    source = (b";(function() {\n  /**\n   * Checks if `value` is classified as an `Array` object.\n   */\n"
              b"  lodash.isArray = function isArray(value) {\n    return value != null &&\n"
              b"      typeof value == 'object';\n  };\n}());\n")
    (function,) = extract_functions(source, "javascript")
    assert function.code == "function isArray(value) {\n  return value != null &&\n    typeof value == 'object';\n}"


@pytest.mark.parametrize("language, source, expected", [
    ("go", b"// Code generated by gen_sort_variants.go; DO NOT EDIT.\n\npackage sort\n", True),
    ("go", b"package sort\n\n// Code generated by hand; DO NOT EDIT.\nfunc f() {}\n", False),  # not before the code
    ("javascript", b"var a = 1;\n//# sourceMappingURL=axios.js.map\n", True),
    ("ruby", b"#\n# DO NOT MODIFY!!!!\n# This file is automatically generated by Racc 1.4.16\n#\n\nrequire 'racc'\n",
     True),
    ("php", b"<?php\n\n// this is an autogenerated file - do not edit\nspl_autoload_register(function ($class) {});\n",
     True),
    ("python", b"# This file is generated by mkstringprep.py. DO NOT EDIT.\n\nimport x\n", True),
    # Prose that happens to say it: a stream's behavioural parameters "do not modify the data source".
    ("java", b"/** Behavioural parameters do not modify the stream's data source. */\npackage java.util.stream;\n",
     False),
    ("ruby", b"# <tt>link:</tt> to link to files generated by RDoc.\nmodule RDoc\nend\n", False),
])
def test_generated_files_say_so_in_their_opening_or_closing_comments(language, source, expected):
    assert extract_file(source, language).generated is expected


@pytest.mark.parametrize("language, path, test, bundled", [
    ("go", "net/http/server_test.go", True, False),
    ("go", "go/doc/testdata/a.go", True, False),
    ("go", "vendor/golang.org/x/net/idna/idna.go", False, True),
    ("go", "net/http/server.go", False, False),
    ("java", "src/test/java/org/example/ListTest.java", True, False),
    ("java", "java.base/java/util/ArrayList.java", False, False),
    ("javascript", "express/test/app.router.js", True, False),
    ("javascript", "axios/lib/core/Axios.spec.js", True, False),
    ("javascript", "axios/dist/axios.js", False, True),
    ("javascript", "lodash/lodash.min.js", False, True),
    ("javascript", "moment/src/lib/moment/moment.js", False, False),
    ("php", "Symfony/Component/Console/Tests/Command/CommandTest.php", True, False),
    ("php", "Twig/TwigTest.php", False, False),          # a template test: library code
    ("php", "vendor/psr/log/LoggerInterface.php", False, True),
    ("ruby", "test/test_set.rb", True, False),
    ("ruby", "spec/set_spec.rb", True, False),
    ("ruby", "bundler/vendor/thor/lib/thor.rb", False, True),
    ("ruby", "set.rb", False, False),
    ("python", "tests/test_cli.py", True, False),
    ("python", "pip/_vendor/rich/console.py", False, True),
])
def test_test_and_bundled_files_by_each_languages_convention(language, path, test, bundled):
    spec = language_spec(language)
    assert spec.test_files.matches(path) is test
    assert spec.bundled_files.matches(path) is bundled
