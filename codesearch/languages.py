"""The six CodeSearchNet languages: tree-sitter grammars and each language's conventions.

One row per language. Everything language-specific that the extractor, the docstring stripper and the
syntax labels need lives here, so adding a language means adding a row.
"""
from __future__ import annotations

import fnmatch
import functools
import re
from dataclasses import dataclass

import tree_sitter as ts

from .errors import UserError


@dataclass(frozen=True)
class PathRule:
    """Files recognised by where they are: a directory of the path, or the file's name."""
    dirs: frozenset[str] = frozenset()   # directory names, anywhere in the path
    names: tuple[str, ...] = ()          # glob patterns of the file's name

    def matches(self, relative_path: str) -> bool:
        *dirs, name = relative_path.split("/")
        return (any(d in self.dirs for d in dirs)
                or any(fnmatch.fnmatchcase(name, pattern) for pattern in self.names))


# A file's opening or closing comments that say a program wrote it (protoc, racc, Facebook's `@generated`).
GENERATED = re.compile(r"(?im)\bdo not (edit|modify)( this file)?\s*([.!:;,-]|$)"
                       r"|^\W*(this file (is|was) )?(auto(matically)?[- ]?)?generated (by|from)\b|@generated\b")
# Block tags (`@param`, `@return`), also as an opening inline tag (`{@inheritDoc}`): Javadoc, JSDoc, phpDoc.
AT_TAG = re.compile(r"\{?@\w")


@dataclass(frozen=True)
class LanguageSpec:
    name: str
    extensions: tuple[str, ...]
    # Nodes that are functions or methods.
    function_types: frozenset[str]
    # Nodes that wrap a function and stand between it and its doc comment
    # (an export, a variable declaration holding an arrow function, a decorator).
    wrapper_types: frozenset[str]
    # Enclosing nodes whose name qualifies a method: `Class.method`, as CodeSearchNet names them.
    class_types: frozenset[str]
    comment_types: frozenset[str]
    # "docstring": a string literal opening the body (Python); "block": the last /** ... */ comment above;
    # "line": consecutive line comments above (// in Go, # in Ruby).
    doc_style: str
    line_comment_prefix: str
    # Constructors and standard extension methods, which CodeSearchNet removes.
    excluded_names: frozenset[str]
    excluded_prefixes: tuple[str, ...] = ()
    # Line comments that talk to a tool, not to a reader, and so are no documentation.
    directive: re.Pattern | None = None
    # Whether blank lines may stand between a doc comment and its function, as the language's documentation
    # tool allows (Javadoc, JSDoc, phpDocumentor, RDoc do; go/doc does not).
    doc_after_blank_lines: bool = True
    # A documentation that opens with one of these is a tag or directive, not a description.
    doc_tag: re.Pattern | None = None
    # The doc comment is HTML (Javadoc, JSDoc, phpDoc): a block element such as `<p>` starts a paragraph.
    html_docs: bool = False
    # Declarations that may lack a body (abstract and interface methods, Go functions written in assembly).
    may_lack_body: bool = False
    # Test code by the language's convention, and bundled or vendored copies of code.
    test_files: PathRule = PathRule()
    bundled_files: PathRule = PathRule()
    # Matched against the comments that open and close a file: a generated file says so there.
    generated_marker: re.Pattern = GENERATED
    # Top-level nodes that may come before a file's opening comments (PHP's `<?php`).
    preamble_types: frozenset[str] = frozenset()

    def is_excluded_name(self, name: str) -> bool:
        """True for constructors and standard extension methods (`__str__`, `toString`, ...)."""
        short = short_name(name)
        if short in self.excluded_names:
            return True
        if self.name == "python":
            return short.startswith("__") and short.endswith("__")
        return any(short.startswith(prefix) for prefix in self.excluded_prefixes)


def short_name(name: str) -> str:
    """The function's own name, without its class: `Class.method` -> `method`."""
    return name.rsplit(".", 1)[-1]


LANGUAGES: dict[str, LanguageSpec] = {
    "python": LanguageSpec(
        name="python",
        extensions=(".py",),
        function_types=frozenset({"function_definition"}),
        wrapper_types=frozenset({"decorated_definition"}),
        class_types=frozenset({"class_definition"}),
        comment_types=frozenset({"comment"}),
        doc_style="docstring",
        line_comment_prefix="#",
        excluded_names=frozenset(),
        # epydoc's fields (`@param x`; not `@contextmanager decorator.`) and Sphinx's (`:param x:`).
        doc_tag=re.compile(r"@(param|type|keyword|kwarg|return|returns|rtype|raise|raises|ivar|cvar|var)\b"
                           r"|:\w+( [^:`]*)?:(\s|$)"),
        test_files=PathRule(frozenset({"test", "tests"}), ("test_*.py", "*_test.py", "conftest.py")),
        bundled_files=PathRule(frozenset({"_vendor", "site-packages", "dist-packages"})),
    ),
    "go": LanguageSpec(
        name="go",
        extensions=(".go",),
        function_types=frozenset({"function_declaration", "method_declaration"}),
        wrapper_types=frozenset(),
        class_types=frozenset(),
        comment_types=frozenset({"comment"}),
        doc_style="line",
        line_comment_prefix="//",
        excluded_names=frozenset({"String", "Error", "GoString"}),
        # `//go:noinline`, `//line`, `//export`, `//+build`: go/doc leaves them out of documentation too.
        directive=re.compile(r"//(go:|line |extern |export |\+build|[a-z0-9]+:[a-z0-9])"),
        doc_after_blank_lines=False,
        doc_tag=re.compile(r"Deprecated:"),       # go/doc's deprecation notice
        may_lack_body=True,
        test_files=PathRule(frozenset({"testdata"}), ("*_test.go",)),
        bundled_files=PathRule(frozenset({"vendor"})),
        # The rule of go.dev/s/generatedcode.
        generated_marker=re.compile(r"^// Code generated .* DO NOT EDIT\.$", re.MULTILINE),
    ),
    "java": LanguageSpec(
        name="java",
        extensions=(".java",),
        # constructor_declaration is deliberately absent: CodeSearchNet drops constructors.
        function_types=frozenset({"method_declaration"}),
        wrapper_types=frozenset(),
        class_types=frozenset({"class_declaration", "interface_declaration", "enum_declaration",
                               "record_declaration"}),
        comment_types=frozenset({"line_comment", "block_comment"}),
        doc_style="block",
        line_comment_prefix="//",
        excluded_names=frozenset({"toString", "equals", "hashCode", "clone", "finalize"}),
        doc_tag=AT_TAG,
        html_docs=True,
        may_lack_body=True,
        # Maven's src/test and Surefire's test class names.
        test_files=PathRule(frozenset({"test", "tests"}), ("*Test.java", "*Tests.java", "*TestCase.java")),
    ),
    "javascript": LanguageSpec(
        name="javascript",
        extensions=(".js", ".mjs", ".cjs"),
        function_types=frozenset({"function_declaration", "generator_function_declaration", "method_definition",
                                  "function_expression", "function", "generator_function", "arrow_function"}),
        wrapper_types=frozenset({"export_statement", "variable_declarator", "lexical_declaration",
                                 "variable_declaration", "assignment_expression", "expression_statement", "pair"}),
        class_types=frozenset({"class_declaration", "class"}),
        comment_types=frozenset({"comment"}),
        doc_style="block",
        line_comment_prefix="//",
        excluded_names=frozenset({"constructor", "toString", "valueOf", "toJSON"}),
        doc_tag=AT_TAG,
        html_docs=True,
        test_files=PathRule(frozenset({"test", "tests", "__tests__", "__mocks__", "spec"}),
                            ("*.test.*", "*.spec.*")),
        # Builds of the sources (dist/, minified files) and dependencies' copies.
        bundled_files=PathRule(frozenset({"dist", "min", "umd", "bundles", "vendor", "node_modules"}),
                               ("*.min.*", "*-min.*", "*.bundle.*", "*.umd.*")),
        # A source map points back to the sources the file was built from.
        generated_marker=re.compile(GENERATED.pattern + r"|^//[#@] sourceMappingURL=", re.MULTILINE),
    ),
    "php": LanguageSpec(
        name="php",
        extensions=(".php",),
        function_types=frozenset({"function_definition", "method_declaration"}),
        wrapper_types=frozenset(),
        class_types=frozenset({"class_declaration", "trait_declaration", "interface_declaration",
                               "enum_declaration"}),
        comment_types=frozenset({"comment"}),
        doc_style="block",
        line_comment_prefix="//",
        excluded_names=frozenset(),
        excluded_prefixes=("__",),  # __construct, __toString and the other magic methods
        doc_tag=AT_TAG,
        html_docs=True,
        may_lack_body=True,
        preamble_types=frozenset({"php_tag"}),
        # Test folders only: PHPUnit's `*Test.php` would take Twig's `TwigTest` and `Test/*Test.php` (template
        # tests, library code). Composer's vendor/.
        test_files=PathRule(frozenset({"test", "tests", "Tests"})),
        bundled_files=PathRule(frozenset({"vendor"})),
    ),
    "ruby": LanguageSpec(
        name="ruby",
        extensions=(".rb",),
        function_types=frozenset({"method", "singleton_method"}),
        wrapper_types=frozenset(),
        class_types=frozenset({"class", "module"}),
        comment_types=frozenset({"comment"}),
        doc_style="line",
        line_comment_prefix="#",
        excluded_names=frozenset({"initialize", "to_s", "inspect", "hash", "eql?", "==", "<=>", "to_str"}),
        # A shebang and Ruby's magic comments (`# frozen_string_literal: true`, `# -*- coding: utf-8 -*-`).
        directive=re.compile(r"#!|#\s*-\*-.*-\*-\s*$|#\s*(frozen_string_literal|encoding|coding|warn_indent"
                             r"|warn_past_scope|shareable_constant_value)\s*:"),
        doc_tag=re.compile(r":[\w-]+:(\s|$)|--(\s|$)|@!?\w"),  # RDoc directives (`:call-seq:`, `#--`), YARD tags
        test_files=PathRule(frozenset({"test", "tests", "spec"}), ("test_*.rb", "*_test.rb", "*_spec.rb")),
        bundled_files=PathRule(frozenset({"vendor"})),                  # Bundler's and RubyGems' vendored gems
    ),
}


def language_spec(name: str) -> LanguageSpec:
    """The spec of a CodeSearchNet language; a clear error for any other name."""
    try:
        return LANGUAGES[name]
    except KeyError:
        raise UserError(
            f"unknown language {name!r}: choose one of {', '.join(sorted(LANGUAGES))}"
        ) from None


@functools.cache
def _grammar(name: str, snippet: bool) -> ts.Language:
    if name == "python":
        import tree_sitter_python as grammar
    elif name == "go":
        import tree_sitter_go as grammar
    elif name == "java":
        import tree_sitter_java as grammar
    elif name == "javascript":
        import tree_sitter_javascript as grammar
    elif name == "ruby":
        import tree_sitter_ruby as grammar
    elif name == "php":
        import tree_sitter_php as grammar

        # Whole files open with <?php; CodeSearchNet's snippets do not, and need the tag-less grammar.
        return ts.Language(grammar.language_php_only() if snippet else grammar.language_php())
    else:
        language_spec(name)  # raises the clear error
        raise AssertionError(name)
    return ts.Language(grammar.language())


def parser_for(name: str, snippet: bool = False) -> ts.Parser:
    """A tree-sitter parser for a whole source file, or (`snippet=True`) for a lone function."""
    language_spec(name)
    return ts.Parser(_grammar(name, snippet))
