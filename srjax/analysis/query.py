"""Questions to a feature table: ``"volume > 1000 and time == 25"``, the top N by a column.

An expression is parsed with ``ast`` and evaluated column-wise over numpy arrays:
comparisons, ``and``/``or``/``not``, arithmetic, column names and numbers only, so a
query can read the table and nothing else.
"""

from __future__ import annotations

import ast
import operator

import numpy as np

from srjax.analysis.tables import Table
from srjax.errors import SrjaxError

COMPARE = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
           ast.Eq: operator.eq, ast.NotEq: operator.ne}
ARITHMETIC = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
              ast.Pow: operator.pow, ast.Mod: operator.mod}


def _evaluate(node, table: Table, expression: str):
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, table, expression)
    if isinstance(node, ast.BoolOp):
        combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
        values = [_evaluate(v, table, expression) for v in node.values]
        result = values[0]
        for value in values[1:]:
            result = combine(result, value)
        return result
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
        value = _evaluate(node.operand, table, expression)
        return np.logical_not(value) if isinstance(node.op, ast.Not) else -value
    if isinstance(node, ast.Compare):
        left, result = _evaluate(node.left, table, expression), True
        for op, right_node in zip(node.ops, node.comparators):
            right = _evaluate(right_node, table, expression)
            if type(op) not in COMPARE:
                break
            result = np.logical_and(result, COMPARE[type(op)](left, right))
            left = right
        else:
            return result
    elif isinstance(node, ast.BinOp) and type(node.op) in ARITHMETIC:
        return ARITHMETIC[type(node.op)](_evaluate(node.left, table, expression),
                                        _evaluate(node.right, table, expression))
    elif isinstance(node, ast.Name):
        if node.id not in table:
            raise SrjaxError(f"query {expression!r}: no column {node.id!r}; the columns are {', '.join(table)}")
        return table[node.id]
    elif isinstance(node, ast.Constant) and isinstance(node.value, (int, float, bool)):
        return node.value
    raise SrjaxError(f"query {expression!r}: {ast.unparse(node)!r} is not allowed; use columns, numbers, "
                     "comparisons, and/or/not and arithmetic")


def select(table: Table, expression: str) -> np.ndarray:
    """The rows of ``table`` where ``expression`` holds, as a boolean mask."""
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as err:
        raise SrjaxError(f"query {expression!r} is not an expression: {err.msg}") from None
    rows = len(next(iter(table.values()))) if table else 0
    return np.broadcast_to(np.asarray(_evaluate(tree, table, expression), bool), (rows,))


def query(table: Table, expression: str | None = None, top: int | None = None, by: str | None = None,
          ascending: bool = False) -> np.ndarray:
    """Row indices where ``expression`` holds, ordered by ``by`` (largest first unless
    ``ascending``; ties by row), at most ``top`` of them."""
    rows = np.flatnonzero(select(table, expression)) if expression else np.arange(len(table["id"]))
    if by is not None:
        if by not in table:
            raise SrjaxError(f"--by {by!r} is not a column; the columns are {', '.join(table)}")
        keys = table[by][rows]
        rows = rows[np.argsort(keys if ascending else -keys.astype(np.float64), kind="stable")]
    return rows[:top] if top is not None else rows
