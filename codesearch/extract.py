"""Functions and their documentation from a source file, with tree-sitter, for all six languages."""
from __future__ import annotations

import inspect
import re
import textwrap
from bisect import bisect_right
from dataclasses import dataclass, field

from .docstrings import clean_block_comment, clean_line_comments, python_docstring_node
from .languages import LanguageSpec, language_spec, parser_for

# Literal nodes kept whole as one token (their children are quote marks and content pieces).
_STRING_NODE_SUFFIXES = ("string", "string_literal", "template_string", "heredoc")
_NAMING_PARENTS = ("variable_declarator", "assignment_expression", "pair")


@dataclass
class ExtractedFunction:
    name: str                 # qualified as CodeSearchNet does: `Class.method`
    code: str                 # the function as CodeSearchNet stores it (a Python docstring stays inside)
    docstring: str            # the cleaned documentation, whole
    start_line: int           # 1-based, inclusive
    end_line: int
    code_tokens: list[str] = field(default_factory=list)  # without the docstring and comments
    code_lines: int = 0       # non-blank lines once the docstring is removed


def extract_functions(source: bytes, language: str) -> list[ExtractedFunction]:
    """Every documented function or method in `source`, in file order."""
    spec = language_spec(language)
    tree = parser_for(language).parse(source)
    functions, comments = _collect(tree.root_node, spec)
    index = _CommentIndex(comments, source)
    out = []
    for node in functions:
        if spec.name in ("java", "php") and node.child_by_field_name("body") is None:
            continue  # abstract and interface methods have no implementation
        name = _qualified_name(node, spec)
        if not name:
            continue  # anonymous functions (callbacks) have no name to search for
        doc_node = None
        if spec.doc_style == "docstring":
            doc_node = python_docstring_node(node)
            docstring = _python_docstring_text(doc_node, source) if doc_node is not None else ""
        else:
            docstring = index.doc_comment_above(_anchor(node, spec), spec)
        if not docstring.strip():
            continue
        code_node = _named_node(node)
        code = _function_text(code_node, source)
        tokens = _code_tokens(code_node, spec, skip=doc_node)
        code_lines = _count_code_lines(code_node, source, doc_node)
        out.append(ExtractedFunction(
            name=name, code=code, docstring=docstring,
            start_line=node.start_point[0] + 1, end_line=node.end_point[0] + 1,
            code_tokens=tokens, code_lines=code_lines,
        ))
    return out


def _collect(root, spec: LanguageSpec):
    functions, comments = [], []
    stack = [root]
    while stack:
        node = stack.pop()
        if node.type in spec.function_types:
            functions.append(node)
        elif node.type in spec.comment_types:
            comments.append(node)
        stack.extend(reversed(node.children))
    functions.sort(key=lambda n: n.start_byte)
    comments.sort(key=lambda n: n.start_byte)
    return functions, comments


def _anchor(node, spec: LanguageSpec):
    """The outermost node that wraps the function; its doc comment sits right above it."""
    while node.parent is not None and node.parent.type in spec.wrapper_types:
        node = node.parent
    return node


def _text(node, source: bytes) -> str:
    return source[node.start_byte:node.end_byte].decode("utf-8", errors="replace")


def _qualified_name(node, spec: LanguageSpec) -> str:
    name = _own_name(node, spec)
    if not name:
        return ""
    owner = _owner_name(node, spec)
    return f"{owner}.{name}" if owner else name


def _named_node(node):
    """A JavaScript function expression's code includes the name it is assigned to (`f = function ...`)."""
    if node.child_by_field_name("name") is None and node.parent is not None and node.parent.type in _NAMING_PARENTS:
        return node.parent
    return node


def _own_name(node, spec: LanguageSpec) -> str:
    name_node = node.child_by_field_name("name")
    if name_node is not None:
        return name_node.text.decode("utf-8", errors="replace")
    # JavaScript function expressions take the name they are assigned to.
    parent = node.parent
    if parent is None:
        return ""
    if parent.type == "variable_declarator":
        target = parent.child_by_field_name("name")
    elif parent.type == "assignment_expression":
        target = parent.child_by_field_name("left")
    elif parent.type == "pair":
        target = parent.child_by_field_name("key")
    else:
        return ""
    return "" if target is None else target.text.decode("utf-8", errors="replace")


def _owner_name(node, spec: LanguageSpec) -> str:
    if spec.name == "go" and node.type == "method_declaration":
        receiver = node.child_by_field_name("receiver")
        for param in receiver.named_children if receiver is not None else []:
            rtype = param.child_by_field_name("type")
            if rtype is not None:
                return rtype.text.decode("utf-8", errors="replace").lstrip("*").split("[")[0]
        return ""
    parent = node.parent
    while parent is not None:
        if parent.type in spec.class_types:
            name = parent.child_by_field_name("name")
            return "" if name is None else name.text.decode("utf-8", errors="replace")
        parent = parent.parent
    return ""


def _function_text(node, source: bytes) -> str:
    """The function's text, dedented as if it stood at the top of a file."""
    line_start = source.rfind(b"\n", 0, node.start_byte) + 1
    indent = source[line_start:node.start_byte]
    text = _text(node, source)
    if indent.strip() == b"":
        text = textwrap.dedent(indent.decode("utf-8", errors="replace") + text)
    return text


def _python_docstring_text(string_node, source: bytes) -> str:
    parts = [c for c in string_node.children if c.type not in ("string_start", "string_end")]
    if not parts:
        return ""
    return inspect.cleandoc(source[parts[0].start_byte:parts[-1].end_byte].decode("utf-8", errors="replace"))


def _code_tokens(node, spec: LanguageSpec, skip=None) -> list[str]:
    tokens = []
    stack = [node]
    while stack:
        current = stack.pop()
        if skip is not None and current.id == skip.id:
            continue
        if current.type in spec.comment_types:
            continue
        if current.child_count == 0 or current.type.endswith(_STRING_NODE_SUFFIXES):
            text = current.text.decode("utf-8", errors="replace").strip()
            if text:
                tokens.append(text)
            continue
        stack.extend(reversed(current.children))
    return tokens


def _count_code_lines(node, source: bytes, doc_node) -> int:
    text = source[node.start_byte:node.end_byte]
    if doc_node is not None:
        start, end = doc_node.start_byte - node.start_byte, doc_node.end_byte - node.start_byte
        text = text[:start] + text[end:]
    return sum(1 for line in text.splitlines() if line.strip())


# Comments that talk to a tool, not to a reader; go/doc leaves the Go ones out of documentation likewise:
# Go directives (`//go:noinline`, `//line`, `//export`, `//+build`), a shebang, Ruby's magic comments.
DIRECTIVE = re.compile(r"//(go:|line |extern |export |\+build|[a-z0-9]+:[a-z0-9])|#!"
                       r"|#\s*-\*-.*-\*-\s*$"
                       r"|#\s*(frozen_string_literal|encoding|coding|warn_indent|warn_past_scope"
                       r"|shareable_constant_value)\s*:")


class _CommentIndex:
    """Comments by the line they end on, to find the doc comment right above a function."""

    def __init__(self, comments, source: bytes):
        self.comments = comments
        self.end_rows = [c.end_point[0] for c in comments]
        self.source = source

    def _starts_its_line(self, node) -> bool:
        line_start = self.source.rfind(b"\n", 0, node.start_byte) + 1
        return self.source[line_start:node.start_byte].strip() == b""

    def _ending_on(self, row: int):
        i = bisect_right(self.end_rows, row) - 1
        if i >= 0 and self.end_rows[i] == row and self._starts_its_line(self.comments[i]):
            return i
        return None

    def doc_comment_above(self, anchor, spec: LanguageSpec) -> str:
        i = self._ending_on(anchor.start_point[0] - 1)
        if i is None:
            return ""
        text = self.comments[i].text.decode("utf-8", errors="replace")
        if spec.doc_style == "block":
            return clean_block_comment(text) if text.startswith("/**") else ""
        if text.startswith("/*"):  # Go also documents with a block comment
            return clean_block_comment(text)
        if not text.startswith(spec.line_comment_prefix):
            return ""
        lines = [text]
        while True:
            j = self._ending_on(self.comments[i].start_point[0] - 1)
            if j is None:
                break
            previous = self.comments[j].text.decode("utf-8", errors="replace")
            if not previous.startswith(spec.line_comment_prefix):
                break
            lines.insert(0, previous)
            i = j
        lines = [line for line in lines if not DIRECTIVE.match(line)]
        return clean_line_comments(lines, spec.line_comment_prefix) if lines else ""
