"""Docstrings: cleaning comment text, the first-paragraph summary used as a query, and removing a
docstring from the code it documents (left in, it would make retrieval trivial)."""
from __future__ import annotations

import inspect
import io
import re
import tokenize

from .languages import LanguageSpec, language_spec, parser_for

_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)
# HTML elements that open or close a block of text, so a paragraph.
_HTML_BLOCK = re.compile(r"</?(p|div|ul|ol|dl|li|pre|blockquote|table|h[1-6])\b[^>]*>|<hr\b[^>]*>",
                         re.IGNORECASE)


def clean_block_comment(text: str) -> str:
    """`/** ... */` (or `/* ... */`) with its markers and the leading `*` of each line removed."""
    body = re.sub(r"^/\*+", "", text.strip())
    body = re.sub(r"\*+/$", "", body)
    lines = [re.sub(r"^\s*\*(?!/) ?", "", line).rstrip() for line in body.splitlines()]
    return inspect.cleandoc("\n".join(lines))


def clean_line_comments(lines: list[str], prefix: str) -> str:
    """Consecutive `//` or `#` comment lines with their markers removed."""
    stripped = []
    for line in lines:
        line = line.strip()
        while line.startswith(prefix):  # `///` and `##` too
            line = line[len(prefix):]
        stripped.append((line[1:] if line.startswith(" ") else line).rstrip())
    return inspect.cleandoc("\n".join(stripped))


def html_blocks_as_paragraphs(text: str) -> str:
    """HTML documentation with each block element (`<p>`, `<ul>`, `</p>`, ...) made a paragraph break, as
    Javadoc renders it, so that the first paragraph is the summary and no tag is left hanging in it."""
    text = _HTML_BLOCK.sub("\n\n", text)
    return re.sub(r"[ \t]*\n(?:[ \t]*\n)+", "\n\n", text).strip()


def opens_with_tag(docstring: str, spec: LanguageSpec) -> bool:
    """True when the documentation opens with a tag or directive (`@throws ...`, `{@inheritDoc}`,
    `:call-seq:`) rather than a description: CodeSearchNet's summary, cut at the first tag, is then empty."""
    return spec.doc_tag is not None and spec.doc_tag.match(docstring.lstrip()) is not None


def summarize(docstring: str) -> str:
    """The docstring's first paragraph on one line, as CodeSearchNet uses it for a query.

    The paragraph ends at the first blank line, or at the first Javadoc-style tag line (`@param ...`)
    that follows some text.
    """
    kept: list[str] = []
    for line in docstring.strip().splitlines():
        stripped = line.strip()
        if not stripped:
            if kept:
                break
            continue
        if stripped.startswith("@") and kept:
            break
        kept.append(stripped)
    return " ".join(" ".join(kept).split())


def word_tokens(text: str) -> list[str]:
    """Words and punctuation, as in CodeSearchNet's `docstring_tokens`."""
    return _WORD.findall(text)


def strip_docstring(code: str, language: str) -> str:
    """`code` with its own docstring or leading doc comment removed.

    Python keeps its docstring inside the function body, and CodeSearchNet's `code` field (and the Hugging
    Face copy's `func_code_string`) keep it there; other languages put the doc comment above the function,
    which a snippet may or may not include. Anything else in the code is left as it is.
    """
    spec = language_spec(language)
    if spec.doc_style == "docstring":
        return _strip_python_docstring(code)
    return _strip_leading_comments(code, spec.line_comment_prefix)


def _strip_leading_comments(code: str, line_prefix: str) -> str:
    pattern = r"\A\s*(?:/\*.*?\*/\s*|" + re.escape(line_prefix) + r"[^\n]*(?:\n|\Z)\s*)+"
    return re.sub(pattern, "", code, flags=re.DOTALL)


def _strip_python_docstring(code: str) -> str:
    source = code.encode("utf-8")
    span = _python_docstring_span_tree_sitter(source)
    if span is None:
        span = _python_docstring_span_tokenize(code)
        if span is None:
            return code
        start, end = span
        return _cut_statement(code, start, end)
    start, end = span
    return _cut_statement(source, start, end).decode("utf-8")


def _python_docstring_span_tree_sitter(source: bytes) -> tuple[int, int] | None:
    tree = parser_for("python", snippet=True).parse(source)
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.type == "function_definition":
            return python_docstring_node_span(node)
        stack.extend(reversed(node.named_children))
    return None


def python_docstring_node(function_node):
    """The string node that is a Python function's docstring, or None."""
    body = function_node.child_by_field_name("body")
    if body is None or body.named_child_count == 0:
        return None
    first = body.named_children[0]
    if first.type == "expression_statement" and first.named_child_count == 1:
        string = first.named_children[0]
        if string.type == "string":
            return string
    return None


def python_docstring_node_span(function_node) -> tuple[int, int] | None:
    node = python_docstring_node(function_node)
    return None if node is None else (node.start_byte, node.end_byte)


def _python_docstring_span_tokenize(code: str) -> tuple[int, int] | None:
    """Fallback for code tree-sitter cannot make a function of: the first string token after the
    signature's colon, if nothing but layout comes before it."""
    offsets = [0]
    for line in code.splitlines(keepends=True):
        offsets.append(offsets[-1] + len(line))
    seen_def = seen_colon = False
    try:
        for tok in tokenize.generate_tokens(io.StringIO(code).readline):
            if not seen_def:
                seen_def = tok.type == tokenize.NAME and tok.string == "def"
            elif not seen_colon:
                seen_colon = tok.type == tokenize.OP and tok.string == ":" and _depth_zero(code, tok)
            elif tok.type in (tokenize.NEWLINE, tokenize.NL, tokenize.INDENT, tokenize.COMMENT):
                continue
            elif tok.type == tokenize.STRING:
                start = offsets[tok.start[0] - 1] + tok.start[1]
                end = offsets[tok.end[0] - 1] + tok.end[1]
                return start, end
            else:
                return None
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return None
    return None


def _depth_zero(code: str, tok) -> bool:
    # A colon inside the parameter list (an annotation) is not the one that opens the body.
    line = code.splitlines()[tok.start[0] - 1][: tok.start[1]]
    return line.count("(") - line.count(")") <= 0 and line.count("[") - line.count("]") <= 0


def _cut_statement(text, start: int, end: int):
    """Remove text[start:end]; when it sits alone on its lines, remove those lines whole."""
    newline = b"\n" if isinstance(text, bytes) else "\n"
    line_start = text.rfind(newline, 0, start) + 1
    line_end = text.find(newline, end)
    line_end = len(text) if line_end == -1 else line_end + 1
    before, after = text[line_start:start], text[end:line_end]
    if before.strip() == before[:0] and after.strip() in (b"", b";", "", ";"):
        return text[:line_start] + text[line_end:]
    return text[:start] + text[end:]
