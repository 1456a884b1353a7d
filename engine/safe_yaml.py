"""``safe_load``: YAML's safe subset, bounded, parsed by libyaml when PyYAML was built with it (about 4× faster than
the pure-Python parser: a run's config is read on the GUI thread whenever the runs list is shown), else by PyYAML's own
parser. The result is the same: both use PyYAML's ``SafeConstructor``.

Bounded: aliases let a few hundred bytes stand for billions of values (the "billion laughs"); a document is composed
first and refused, in time linear in its size, when its values, counted with every alias expanded, exceed
``MAX_VALUES``, or when an alias refers to the node that contains it. libyaml refuses nesting beyond 1000 levels; the
pure-Python parser's recursion limit is reported the same way.
"""

from __future__ import annotations

import yaml

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAX_VALUES = 1_000_000


class DocumentTooLarge(yaml.YAMLError):
    """A YAML document that expands beyond ``MAX_VALUES`` values or refers to itself."""


def _children(node):
    if isinstance(node, yaml.MappingNode):
        return [c for pair in node.value for c in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def expanded_size(root, limit: int = MAX_VALUES) -> int:
    """Number of values of the composed ``root`` with aliases expanded; ``DocumentTooLarge`` past ``limit``."""
    memo: dict[int, int] = {}
    open_: set[int] = set()
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        nid = id(node)
        if done:
            open_.discard(nid)
            total = 1 + sum(memo[id(c)] for c in _children(node))
            if total > limit:
                raise DocumentTooLarge(f"the document expands to more than {limit:,} values (aliases)")
            memo[nid] = total
            continue
        if nid in memo:
            continue
        open_.add(nid)
        stack.append((node, True))
        for c in _children(node):
            if id(c) in open_:
                raise DocumentTooLarge("an alias refers to the node that contains it (recursive document)")
            if id(c) not in memo:
                stack.append((c, False))
    return memo.get(id(root), 0)


def safe_load(text: str, *, max_values: int = MAX_VALUES):
    """Like ``yaml.safe_load`` (plain Python objects, never arbitrary ones), refusing documents that expand past
    ``max_values`` values; raises ``yaml.YAMLError`` (``DocumentTooLarge``) for those."""
    loader = _LOADER(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise DocumentTooLarge("nested too deeply") from None
        if node is None:
            return None
        expanded_size(node, max_values)
        try:
            return loader.construct_document(node)
        except RecursionError:
            raise DocumentTooLarge("nested too deeply") from None
    finally:
        loader.dispose()


def short_repr(value, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters without building the whole text (values from untrusted files
    can be huge or share structure through aliases)."""
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxtuple, r.maxdict, r.maxset = 3, 6, 6, 6, 6
    r.maxstring, r.maxother, r.maxlong = limit, limit, 40
    text = r.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
