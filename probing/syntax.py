"""Probing labels from tree-sitter syntax trees, for the six CodeSearchNet languages.

Token level: each subword token is mapped, through the tokenizer's character offsets, to the syntax leaf it
starts in; it gets that leaf's category (keyword, identifier, literal, operator, delimiter) and whether the leaf
lies inside a loop, a conditional, a call, a return statement. Sequence level: whether the function contains a
loop, a conditional, exception handling, a call to itself, or a return with a value.

One mapping table per language below; a token with no leaf (special tokens, comments, parse errors) has no label.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from codesearch.languages import language_spec, parser_for

CATEGORIES = ("keyword", "identifier", "literal", "operator", "delimiter")
DELIMITERS = frozenset({"(", ")", "[", "]", "{", "}", ",", ";", ":", ".", "`"})
IGNORE = -1


@dataclass(frozen=True)
class SyntaxTable:
    identifiers: frozenset[str]
    literals: frozenset[str]          # a leaf inside one of these is part of a literal
    loops: frozenset[str]
    conditionals: frozenset[str]
    calls: frozenset[str]
    returns: frozenset[str]
    exceptions: frozenset[str]
    identifier_tokens: frozenset[str] = frozenset()   # anonymous tokens that belong to a name (PHP's `$`)


def _f(*names: str) -> frozenset[str]:
    return frozenset(names)


TABLES: dict[str, SyntaxTable] = {
    "python": SyntaxTable(
        identifiers=_f("identifier"),
        literals=_f("string", "concatenated_string", "integer", "float", "true", "false", "none", "ellipsis"),
        loops=_f("for_statement", "while_statement", "list_comprehension", "set_comprehension",
                 "dictionary_comprehension", "generator_expression"),
        conditionals=_f("if_statement", "conditional_expression", "match_statement"),
        calls=_f("call"), returns=_f("return_statement"), exceptions=_f("try_statement"),
    ),
    "go": SyntaxTable(
        identifiers=_f("identifier", "field_identifier", "type_identifier", "package_identifier", "label_name"),
        literals=_f("interpreted_string_literal", "raw_string_literal", "int_literal", "float_literal",
                    "imaginary_literal", "rune_literal", "true", "false", "nil", "iota"),
        loops=_f("for_statement"),
        conditionals=_f("if_statement", "expression_switch_statement", "type_switch_statement", "select_statement"),
        calls=_f("call_expression"), returns=_f("return_statement"),
        exceptions=_f(),  # Go has no exception handling construct (panic and recover are ordinary calls)
    ),
    "java": SyntaxTable(
        identifiers=_f("identifier", "type_identifier"),
        literals=_f("string_literal", "character_literal", "decimal_integer_literal", "hex_integer_literal",
                    "octal_integer_literal", "binary_integer_literal", "decimal_floating_point_literal",
                    "hex_floating_point_literal", "true", "false", "null_literal"),
        loops=_f("for_statement", "enhanced_for_statement", "while_statement", "do_statement"),
        conditionals=_f("if_statement", "ternary_expression", "switch_expression", "switch_statement"),
        calls=_f("method_invocation", "object_creation_expression"), returns=_f("return_statement"),
        exceptions=_f("try_statement", "try_with_resources_statement"),
    ),
    "javascript": SyntaxTable(
        identifiers=_f("identifier", "property_identifier", "shorthand_property_identifier",
                       "private_property_identifier", "statement_identifier"),
        literals=_f("string", "template_string", "number", "regex", "true", "false", "null", "undefined"),
        loops=_f("for_statement", "for_in_statement", "while_statement", "do_statement"),
        conditionals=_f("if_statement", "ternary_expression", "switch_statement"),
        calls=_f("call_expression", "new_expression"), returns=_f("return_statement"),
        exceptions=_f("try_statement"),
    ),
    "php": SyntaxTable(
        identifiers=_f("name"),
        literals=_f("string", "encapsed_string", "integer", "float", "boolean", "null", "heredoc", "nowdoc"),
        loops=_f("for_statement", "foreach_statement", "while_statement", "do_statement"),
        conditionals=_f("if_statement", "conditional_expression", "switch_statement", "match_expression"),
        calls=_f("function_call_expression", "member_call_expression", "scoped_call_expression",
                 "nullsafe_member_call_expression", "object_creation_expression"),
        returns=_f("return_statement"), exceptions=_f("try_statement"), identifier_tokens=_f("$"),
    ),
    "ruby": SyntaxTable(
        identifiers=_f("identifier", "constant", "instance_variable", "class_variable", "global_variable"),
        literals=_f("string", "integer", "float", "true", "false", "nil", "simple_symbol", "delimited_symbol",
                    "rational", "complex", "character", "regex"),
        loops=_f("for", "while", "until", "while_modifier", "until_modifier"),
        conditionals=_f("if", "unless", "if_modifier", "unless_modifier", "conditional", "case"),
        calls=_f("call"), returns=_f("return"),
        exceptions=_f("begin", "rescue", "rescue_modifier", "ensure"),
    ),
}

TOKEN_TASKS = ("token_category", "in_loop", "in_conditional", "in_call", "in_return")
SEQUENCE_TASKS = ("has_loop", "has_conditional", "has_exception_handling", "is_recursive", "returns_value")


def table_for(language: str) -> SyntaxTable:
    language_spec(language)  # the clear error for an unknown language
    return TABLES[language]


@dataclass
class Leaf:
    start: int          # character offsets in the code
    end: int
    category: int       # index into CATEGORIES
    flags: tuple[bool, bool, bool, bool]   # inside loop, conditional, call, return


def _category(node, table: SyntaxTable, inside_literal: bool) -> int | None:
    if inside_literal:
        return CATEGORIES.index("literal")
    if node.type in table.identifiers or node.type in table.identifier_tokens:
        return CATEGORIES.index("identifier")
    if node.is_named:
        return None  # comments, errors and other named leaves carry no category
    text = node.type
    if text.replace("_", "").isalpha():
        return CATEGORIES.index("keyword")
    if text in DELIMITERS:
        return CATEGORIES.index("delimiter")
    return CATEGORIES.index("operator")


def _char_offsets(code: str) -> np.ndarray:
    """Byte offset -> character offset, for tree-sitter's byte positions."""
    lengths = np.fromiter((len(ch.encode("utf-8")) for ch in code), dtype=np.int64, count=len(code))
    return np.append(np.repeat(np.arange(len(code)), lengths), len(code))


def syntax_leaves(code: str, language: str) -> tuple[list[Leaf], dict[str, int]]:
    """Every labelled leaf of the code, and the function's sequence labels (0/1 per task)."""
    table = table_for(language)
    source = code.encode("utf-8")
    tree = parser_for(language, snippet=True).parse(source)
    to_char = _char_offsets(code)
    leaves: list[Leaf] = []
    found = {"loop": False, "conditional": False, "exception": False, "returns_value": False}
    function_name = _function_name(tree.root_node)
    recursive = False
    # (node, inside literal, loop, conditional, call, return)
    stack = [(tree.root_node, False, False, False, False, False)]
    while stack:
        node, literal, loop, cond, call, ret = stack.pop()
        kind = node.type
        literal = literal or kind in table.literals
        loop = loop or kind in table.loops
        cond = cond or kind in table.conditionals
        call = call or kind in table.calls
        ret = ret or kind in table.returns
        found["loop"] |= kind in table.loops
        found["conditional"] |= kind in table.conditionals
        found["exception"] |= kind in table.exceptions
        if kind in table.returns and any(c.is_named and c.type != "comment" for c in node.children):
            found["returns_value"] = True
        if kind in table.calls and function_name and _callee(node) == function_name:
            recursive = True
        if node.child_count == 0 or (literal and kind in table.literals):
            category = _category(node, table, literal)
            if category is not None and node.end_byte > node.start_byte:
                leaves.append(Leaf(int(to_char[node.start_byte]), int(to_char[node.end_byte]), category,
                                   (loop, cond, call, ret)))
            continue
        stack.extend((child, literal, loop, cond, call, ret) for child in reversed(node.children))
    sequence = {"has_loop": int(found["loop"]), "has_conditional": int(found["conditional"]),
                "has_exception_handling": int(found["exception"]), "is_recursive": int(recursive),
                "returns_value": int(found["returns_value"])}
    leaves.sort(key=lambda leaf: leaf.start)
    return leaves, sequence


_FUNCTION_TYPES = ("function_definition", "function_declaration", "method_declaration", "method_definition",
                   "method", "singleton_method", "function_expression", "arrow_function", "generator_function",
                   "generator_function_declaration", "function")


def _function_name(root) -> str:
    stack = [root]
    while stack:
        node = stack.pop()
        if node.type in _FUNCTION_TYPES:
            name = node.child_by_field_name("name")
            return name.text.decode("utf-8", "replace") if name is not None else ""
        stack.extend(reversed(node.children))
    return ""


def _callee(call) -> str:
    """The called function's own name: `f(x)`, `self.f(x)`, `this.f()`, `$this->f()`, `obj.f`."""
    for field in ("function", "name", "method"):
        target = call.child_by_field_name(field)
        if target is None:
            continue
        for name_field in ("attribute", "field", "property", "name"):
            inner = target.child_by_field_name(name_field)
            if inner is not None:
                target = inner
                break
        return target.text.decode("utf-8", "replace")
    return ""


def token_labels(leaves: list[Leaf], offsets: list[tuple[int, int]], code: str) -> np.ndarray:
    """[tokens, 5] labels (category, in loop, in conditional, in call, in return); IGNORE where no leaf.

    A token takes the leaf its first non-space character falls in; special tokens have (0, 0) offsets.
    """
    starts = np.array([leaf.start for leaf in leaves], dtype=np.int64)
    labels = np.full((len(offsets), len(TOKEN_TASKS)), IGNORE, dtype=np.int64)
    for i, (start, end) in enumerate(offsets):
        if end <= start:
            continue
        while start < end and code[start].isspace():
            start += 1
        if start >= end:
            continue
        j = int(np.searchsorted(starts, start, side="right")) - 1
        if j < 0 or not leaves[j].start <= start < leaves[j].end:
            continue
        leaf = leaves[j]
        labels[i] = (leaf.category, *map(int, leaf.flags))
    return labels
