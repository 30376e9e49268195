"""The six CodeSearchNet languages: tree-sitter grammars and each language's conventions.

One row per language. Everything language-specific that the extractor, the docstring stripper and the
syntax labels need lives here, so adding a language means adding a row.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import tree_sitter as ts

from .errors import UserError


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
    # "docstring": a string literal opening the body (Python); "block": a /** ... */ comment right above;
    # "line": consecutive line comments right above (// in Go, # in Ruby).
    doc_style: str
    line_comment_prefix: str
    # Constructors and standard extension methods, which CodeSearchNet removes.
    excluded_names: frozenset[str]
    excluded_prefixes: tuple[str, ...] = ()

    def is_excluded_name(self, name: str) -> bool:
        """True for constructors and standard extension methods (`__str__`, `toString`, ...)."""
        short = name.rsplit(".", 1)[-1]
        if short in self.excluded_names:
            return True
        if self.name == "python":
            return short.startswith("__") and short.endswith("__")
        return any(short.startswith(prefix) for prefix in self.excluded_prefixes)


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
