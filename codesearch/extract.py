"""Functions and their documentation from a source file, with tree-sitter, for all six languages.

Documentation is found as each language's own documentation tool finds it (see `LanguageSpec`); a function
that has a comment above it which that tool would not take as its documentation is counted, by reason, not
silently passed over.
"""
from __future__ import annotations

import inspect
import textwrap
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass, field

from .docstrings import (
    clean_block_comment,
    clean_line_comments,
    html_blocks_as_paragraphs,
    python_docstring_node,
)
from .languages import LanguageSpec, language_spec, parser_for

# Literal nodes kept whole as one token (their children are quote marks and content pieces).
_STRING_NODE_SUFFIXES = ("string", "string_literal", "template_string", "heredoc")
_NAMING_PARENTS = ("variable_declarator", "assignment_expression", "pair")

# Why a function with a comment or docstring is left out (the manifest's names).
NO_BODY = "no_body"                    # abstract or interface method, Go function written in assembly
NO_NAME = "anonymous_function"         # nothing to search for it by
DETACHED = "detached_comment"          # a blank line apart, where the documentation tool wants none (Go)
NOT_DOC = "not_doc_comment"            # a plain comment (`//`, `/* */` where `/** */` is wanted) or directives


@dataclass
class ExtractedFunction:
    name: str                 # qualified as CodeSearchNet does: `Class.method`
    code: str                 # the function as CodeSearchNet stores it (a Python docstring stays inside)
    docstring: str            # the cleaned documentation, whole
    start_line: int           # 1-based, inclusive
    end_line: int
    code_tokens: list[str] = field(default_factory=list)  # without the docstring and comments
    code_lines: int = 0       # non-blank lines once the docstring is removed


@dataclass
class FileExtraction:
    functions: list[ExtractedFunction]   # documented functions, in file order
    dropped: Counter                     # functions with a comment that is no documentation, by reason
    generated: bool                      # a comment says a program wrote the file

    @property
    def documented(self) -> int:
        """Functions with a docstring or a comment above, whether extracted or dropped."""
        return len(self.functions) + sum(self.dropped.values())


@dataclass
class _Doc:
    text: str
    node: object = None            # the Python docstring's node, left out of the code's tokens and lines
    problem: str | None = None     # why it is no documentation after all


def extract_file(source: bytes, language: str) -> FileExtraction:
    """The documented functions of `source`, the ones left out and why, and whether it is generated."""
    spec = language_spec(language)
    tree = parser_for(language).parse(source)
    functions, comments = _collect(tree.root_node, spec)
    index = _CommentIndex(comments, source)
    result = FileExtraction([], Counter(), _is_generated(tree.root_node, spec, source))
    for node in functions:
        doc = _documentation(node, spec, index, source)
        if doc is None:
            continue  # undocumented
        problem = doc.problem or _shape_problem(node, spec)
        if problem:
            result.dropped[problem] += 1
        else:
            result.functions.append(_extracted(node, doc, spec, source))
    return result


def extract_functions(source: bytes, language: str) -> list[ExtractedFunction]:
    """Every documented function or method in `source`, in file order."""
    return extract_file(source, language).functions


def _collect(root, spec: LanguageSpec):
    functions, comments = [], []
    stack = [root]
    while stack:
        node = stack.pop()
        if not node.is_named:
            continue  # punctuation and keywords (the keyword `function` shares a function node's type name)
        if node.type in spec.function_types:
            functions.append(node)
        elif node.type in spec.comment_types:
            comments.append(node)
        stack.extend(reversed(node.children))
    functions.sort(key=lambda n: n.start_byte)
    comments.sort(key=lambda n: n.start_byte)
    return functions, comments


def _is_generated(root, spec: LanguageSpec, source: bytes) -> bool:
    """The comments before the file's first code or after its last say a program wrote it (a generator's
    notice; a source map, left by a bundler, at the end)."""
    children = [c for c in root.children if c.type not in spec.preamble_types]
    code = [i for i, child in enumerate(children) if child.type not in spec.comment_types]
    edges = children[:code[0]] + children[code[-1] + 1:] if code else children
    return spec.generated_marker.search("\n".join(_text(c, source) for c in edges)) is not None


def _documentation(node, spec: LanguageSpec, index: _CommentIndex, source: bytes) -> _Doc | None:
    """The function's docstring or doc comment; None when it has neither a docstring nor a comment above."""
    if spec.doc_style == "docstring":
        string = python_docstring_node(node)
        text = _python_docstring_text(string, source) if string is not None else ""
        return _Doc(text, string) if text.strip() else None
    return index.doc_comment_above(_anchor(node, spec), spec)


def _shape_problem(node, spec: LanguageSpec) -> str | None:
    if spec.may_lack_body and node.child_by_field_name("body") is None:
        return NO_BODY
    if not _qualified_name(node, spec):
        return NO_NAME  # anonymous functions (callbacks)
    return None


def _extracted(node, doc: _Doc, spec: LanguageSpec, source: bytes) -> ExtractedFunction:
    code_node = _named_node(node)
    return ExtractedFunction(
        name=_qualified_name(node, spec), code=_function_text(code_node, source), docstring=doc.text,
        start_line=node.start_point[0] + 1, end_line=node.end_point[0] + 1,
        code_tokens=_code_tokens(code_node, spec, skip=doc.node),
        code_lines=_count_code_lines(code_node, source, doc.node),
    )


def _anchor(node, spec: LanguageSpec):
    """The outermost node that wraps the function; its doc comment sits above it."""
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
    """The function's text, dedented as if it stood at the top of a file.

    Its first line is taken as indented like the line it starts on, so a function that starts mid-line
    (`Foo.prototype.bar = function bar() {`) loses the same indentation on every line."""
    line_start = source.rfind(b"\n", 0, node.start_byte) + 1
    line = source[line_start:node.start_byte]
    indent = line[:len(line) - len(line.lstrip())].decode("utf-8", errors="replace")
    return textwrap.dedent(indent + _text(node, source))


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


class _CommentIndex:
    """The file's comments in order, to find the ones above a function."""

    def __init__(self, comments, source: bytes):
        self.comments = comments
        self.end_bytes = [c.end_byte for c in comments]
        self.source = source

    def doc_comment_above(self, anchor, spec: LanguageSpec) -> _Doc | None:
        above = self._comments_above(anchor)
        if not above:
            return None
        if spec.doc_style == "block":
            return self._block_doc(above, spec)
        return self._line_doc(above, anchor, spec)

    def _comments_above(self, anchor) -> list:
        """The comments between `anchor` and the code before it, in file order: each on a line of its own,
        with nothing but blank space between them."""
        found = []
        position = anchor.start_byte
        i = bisect_right(self.end_bytes, position) - 1
        while i >= 0:
            comment = self.comments[i]
            if self.source[comment.end_byte:position].strip() or not self._starts_its_line(comment):
                break
            found.append(comment)
            position = comment.start_byte
            i -= 1
        return found[::-1]

    def _starts_its_line(self, node) -> bool:
        line_start = self.source.rfind(b"\n", 0, node.start_byte) + 1
        return self.source[line_start:node.start_byte].strip() == b""

    def _block_doc(self, above, spec: LanguageSpec) -> _Doc:
        """The nearest `/** ... */` above, past plain comments and blank lines, as Javadoc, JSDoc and PHP
        take it."""
        for comment in reversed(above):
            text = _text(comment, self.source)
            if text.startswith("/**") and not text.startswith("/**/"):
                doc = clean_block_comment(text)
                return _Doc(html_blocks_as_paragraphs(doc) if spec.html_docs else doc)
        return _Doc("", problem=NOT_DOC)

    def _line_doc(self, above, anchor, spec: LanguageSpec) -> _Doc:
        """The nearest group of line comments (or a Go `/* */` comment) above, less tool directives."""
        group = self._nearest_group(above)
        if anchor.start_point[0] - group[-1].end_point[0] > 1 and not spec.doc_after_blank_lines:
            return _Doc("", problem=DETACHED)
        texts = [_text(comment, self.source) for comment in group]
        if texts[-1].startswith("/*"):  # Go also documents with a block comment
            return _Doc(clean_block_comment(texts[-1]))
        lines = [t for t in texts if t.startswith(spec.line_comment_prefix)
                 and not (spec.directive and spec.directive.match(t))]
        if not lines:
            return _Doc("", problem=NOT_DOC)
        return _Doc(clean_line_comments(lines, spec.line_comment_prefix))

    @staticmethod
    def _nearest_group(above) -> list:
        """The last run of line comments on consecutive lines (a blank line ends a group), or the last
        block comment alone."""
        start = len(above) - 1
        while (start > 0 and not _is_block(above[start]) and not _is_block(above[start - 1])
               and above[start - 1].end_point[0] + 1 == above[start].start_point[0]):
            start -= 1
        return above[start:]


def _is_block(comment) -> bool:
    return comment.text.startswith(b"/*")
