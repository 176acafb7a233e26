"""`calculate`: exact arithmetic for the model, parsed with `ast` and evaluated by a whitelist (never eval).

    >>> evaluate("38 * 47")
    1786
    >>> evaluate("2 ** 10 / 4 + sqrt(16)")
    260.0
"""

from __future__ import annotations

import ast
import math
import operator
from typing import Annotated, Any

from pydantic import Field

from handlers.tools import ToolContext, ToolError, tool

MAX_EXPONENT = 10_000
MAX_CHARS = 500
_BINARY: dict[type, Any] = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
                            ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
                            ast.Pow: operator.pow}
_UNARY: dict[type, Any] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCS: dict[str, Any] = {"sqrt": math.sqrt, "abs": abs, "round": round, "min": min, "max": max, "log": math.log,
                          "log10": math.log10, "exp": math.exp, "sin": math.sin, "cos": math.cos, "tan": math.tan,
                          "floor": math.floor, "ceil": math.ceil}
_NAMES = {"pi": math.pi, "e": math.e}


def evaluate(expression: str) -> int | float:
    """The value of an arithmetic expression; `ToolError` for anything that is not plain arithmetic."""
    if len(expression) > MAX_CHARS:
        raise ToolError(f"expression too long (limit {MAX_CHARS} characters)")
    try:
        tree = ast.parse(expression.replace("^", "**").replace("×", "*").replace("÷", "/"), mode="eval")
    except SyntaxError:
        raise ToolError(f"not an arithmetic expression: {expression!r}") from None
    try:
        return _eval(tree.body)
    except ZeroDivisionError:
        raise ToolError("division by zero") from None
    except (OverflowError, ValueError) as err:
        raise ToolError(f"cannot compute that: {err}") from None


def _eval(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ToolError(f"exponent too large (limit {MAX_EXPONENT})")
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.Name) and node.id in _NAMES:
        return _NAMES[node.id]
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS
            and not node.keywords):
        return _FUNCS[node.func.id](*(_eval(a) for a in node.args))
    raise ToolError(f"not allowed in a calculation: {ast.unparse(node)!r} (numbers, + - * / // % **, "
                    f"{', '.join(_FUNCS)} only)")


@tool("calculate", description="Evaluate an arithmetic expression exactly, e.g. '38*47' or 'sqrt(2)/3'.")
async def calculate(tc: ToolContext,
                    expression: Annotated[str, Field(description="arithmetic expression")]) -> str:
    value = evaluate(expression)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)
    return f"{expression} = {value}"
