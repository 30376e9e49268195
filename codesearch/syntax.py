"""Labels of code tokens from tree-sitter syntax trees, for the six CodeSearchNet languages (probes and attention).

Token level: each subword token is mapped, through the tokenizer's character offsets, to the syntax leaf it
starts in; it gets that leaf's category (keyword, identifier, literal, operator, delimiter) and whether the leaf
lies inside a loop, a conditional, a call, a return statement. Sequence level: whether the function contains a
loop, a conditional, exception handling, a call to itself, or a return with a value; a construct counts when it
starts within the tokens the model sees (a long function is cut at the encoder's maximum length).

One mapping table per language below; a token with no leaf (special tokens, comments, parse errors) has no label.
A method cut out of its class (`get(k) {...}` in JavaScript, `public function f()` in PHP) is parsed inside a
class body, where it is valid.
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
    own_objects: frozenset[str]       # what a method calls itself through (`self.f()`); not super/parent
    identifier_tokens: frozenset[str] = frozenset()   # anonymous tokens that belong to a name (PHP's `$`)
    keywords: frozenset[str] = frozenset()            # named leaves that are keywords (Java's `void`, `this`)


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
        own_objects=_f("self", "cls"),
    ),
    "go": SyntaxTable(
        identifiers=_f("identifier", "field_identifier", "type_identifier", "package_identifier", "label_name"),
        literals=_f("interpreted_string_literal", "raw_string_literal", "int_literal", "float_literal",
                    "imaginary_literal", "rune_literal", "true", "false", "nil", "iota"),
        loops=_f("for_statement"),
        conditionals=_f("if_statement", "expression_switch_statement", "type_switch_statement", "select_statement"),
        calls=_f("call_expression"), returns=_f("return_statement"),
        exceptions=_f(),  # Go has no exception handling construct (panic and recover are ordinary calls)
        own_objects=_f(),  # a method's receiver is named in its declaration (`func (s *T) f()`): found there
    ),
    "java": SyntaxTable(
        identifiers=_f("identifier", "type_identifier"),
        literals=_f("string_literal", "character_literal", "decimal_integer_literal", "hex_integer_literal",
                    "octal_integer_literal", "binary_integer_literal", "decimal_floating_point_literal",
                    "hex_floating_point_literal", "true", "false", "null_literal"),
        loops=_f("for_statement", "enhanced_for_statement", "while_statement", "do_statement"),
        conditionals=_f("if_statement", "ternary_expression", "switch_expression"),
        calls=_f("method_invocation", "object_creation_expression"), returns=_f("return_statement"),
        exceptions=_f("try_statement", "try_with_resources_statement"), own_objects=_f("this"),
        keywords=_f("void_type", "boolean_type", "this", "super"),
    ),
    "javascript": SyntaxTable(
        identifiers=_f("identifier", "property_identifier", "shorthand_property_identifier",
                       "shorthand_property_identifier_pattern", "private_property_identifier",
                       "statement_identifier"),
        literals=_f("string", "template_string", "number", "regex", "true", "false", "null", "undefined"),
        loops=_f("for_statement", "for_in_statement", "while_statement", "do_statement"),
        conditionals=_f("if_statement", "ternary_expression", "switch_statement"),
        calls=_f("call_expression", "new_expression"), returns=_f("return_statement"),
        exceptions=_f("try_statement"), own_objects=_f("this"), keywords=_f("this", "super"),
    ),
    "php": SyntaxTable(
        identifiers=_f("name"),
        literals=_f("string", "encapsed_string", "integer", "float", "boolean", "null", "heredoc", "nowdoc"),
        loops=_f("for_statement", "foreach_statement", "while_statement", "do_statement"),
        conditionals=_f("if_statement", "conditional_expression", "switch_statement", "match_expression"),
        calls=_f("function_call_expression", "member_call_expression", "scoped_call_expression",
                 "nullsafe_member_call_expression", "object_creation_expression"),
        returns=_f("return_statement"), exceptions=_f("try_statement"), identifier_tokens=_f("$"),
        own_objects=_f("$this", "self", "static"),
        keywords=_f("cast_type", "primitive_type", "bottom_type", "relative_scope"),
    ),
    "ruby": SyntaxTable(
        identifiers=_f("identifier", "constant", "instance_variable", "class_variable", "global_variable"),
        literals=_f("string", "integer", "float", "true", "false", "nil", "simple_symbol", "delimited_symbol",
                    "hash_key_symbol", "string_array", "symbol_array", "heredoc_beginning", "heredoc_body",
                    "rational", "complex", "character", "regex"),
        loops=_f("for", "while", "until", "while_modifier", "until_modifier"),
        conditionals=_f("if", "unless", "if_modifier", "unless_modifier", "conditional", "case"),
        calls=_f("call"), returns=_f("return"),
        exceptions=_f("rescue", "rescue_modifier", "ensure"),  # a plain begin...end block handles nothing
        own_objects=_f("self"), keywords=_f("self", "super"),
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
    if node.type in table.keywords:
        return CATEGORIES.index("keyword")
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


# Wrapped in a class body, a method cut out of its class parses (JavaScript's `get(k) {...}`, PHP's
# `public function f()`, Java's methods with annotations the top level refuses).
METHOD_LANGUAGES = frozenset({"javascript", "php", "java"})
CLASS_BODY = (b"class _ {\n", b"\n}")


def parse_snippet(code: str, language: str):
    """(tree, bytes before the code): the code alone, or inside a class body when only that parses."""
    parser = parser_for(language, snippet=True)
    source = code.encode("utf-8")
    tree = parser.parse(source)
    if tree.root_node.has_error and language in METHOD_LANGUAGES:
        before, after = CLASS_BODY
        wrapped = parser.parse(before + source + after)
        if not wrapped.root_node.has_error:
            return wrapped, len(before)
    return tree, 0


def syntax_leaves(code: str, language: str, visible_chars: int | None = None) -> tuple[list[Leaf], dict[str, int]]:
    """Every labelled leaf of the code, and the function's sequence labels (0/1 per task).

    `visible_chars`: the length of the code the model sees (its tokens end there); a construct that starts
    after it does not count for the sequence labels. Subtrees that fail to parse (ERROR) are skipped.
    """
    table = table_for(language)
    tree, shift = parse_snippet(code, language)
    to_char = _char_offsets(code)
    code_bytes = len(to_char) - 1
    seen_chars = len(code) if visible_chars is None else min(visible_chars, len(code))
    visible_end = shift + int(np.searchsorted(to_char, seen_chars))   # the first byte of that character
    leaves: list[Leaf] = []
    found = {"loop": False, "conditional": False, "exception": False, "returns_value": False}
    function = _function_node(tree.root_node)
    function_name = _name_of(function)
    own_objects = table.own_objects | _receiver_names(function)
    recursive = False
    # (node, inside literal, loop, conditional, call, return)
    stack = [(tree.root_node, False, False, False, False, False)]
    while stack:
        node, literal, loop, cond, call, ret = stack.pop()
        kind = node.type
        if kind == "ERROR" or node.is_missing:
            continue
        literal = literal or kind in table.literals
        loop = loop or kind in table.loops
        cond = cond or kind in table.conditionals
        call = call or kind in table.calls
        ret = ret or kind in table.returns
        if node.start_byte < visible_end:
            found["loop"] |= kind in table.loops
            found["conditional"] |= kind in table.conditionals
            found["exception"] |= kind in table.exceptions
            if kind in table.returns and any(c.is_named and c.type != "comment" for c in node.children):
                found["returns_value"] = True
            if kind in table.calls and function_name and _callee(node, own_objects) == function_name:
                recursive = True
        if node.child_count == 0 or (literal and kind in table.literals):
            category = _category(node, table, literal)
            inside_code = shift <= node.start_byte and node.end_byte <= shift + code_bytes
            if category is not None and node.end_byte > node.start_byte and inside_code:
                leaves.append(Leaf(int(to_char[node.start_byte - shift]), int(to_char[node.end_byte - shift]),
                                   category, (loop, cond, call, ret)))
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


def _function_node(root):
    stack = [root]
    while stack:
        node = stack.pop()
        if node.type in _FUNCTION_TYPES:
            return node
        stack.extend(reversed(node.children))
    return None


def _name_of(function) -> str:
    name = function.child_by_field_name("name") if function is not None else None
    return name.text.decode("utf-8", "replace") if name is not None else ""


def _receiver_names(function) -> frozenset[str]:
    """A Go method's receiver (`s` in `func (s *Server) Close()`), through which it calls itself."""
    receiver = function.child_by_field_name("receiver") if function is not None else None
    if receiver is None:
        return frozenset()
    names = [p.child_by_field_name("name") for p in receiver.named_children]
    return frozenset(n.text.decode("utf-8", "replace") for n in names if n is not None)


_RECEIVER_FIELDS = ("object", "operand", "receiver", "scope")
_NAME_FIELDS = ("attribute", "field", "property", "name", "method")


def _field(node, names: tuple[str, ...]):
    return next((child for child in map(node.child_by_field_name, names) if child is not None), None)


def _callee(call, own_objects: frozenset[str]) -> str:
    """The called name when the call can reach the function itself: a bare `f(x)`, or a call through the
    function's own object (`self.f()`, `this.f()`, `$this->f()`, `self::f()`, Go's receiver); "" for a call
    on anything else (another object, `super`, `parent::`), whose method merely shares the name."""
    function = call.child_by_field_name("function")
    target = call if function is None else function
    receiver, name = _field(target, _RECEIVER_FIELDS), _field(target, _NAME_FIELDS)
    if function is not None and receiver is None and name is None:   # f(x): the function field is the name
        return function.text.decode("utf-8", "replace") if function.named_child_count == 0 else ""
    if name is None or (receiver is not None and receiver.text.decode("utf-8", "replace") not in own_objects):
        return ""
    return name.text.decode("utf-8", "replace")


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
