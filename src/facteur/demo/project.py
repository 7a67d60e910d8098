"""The demo's project and idea: a small Python package whose tests fail until three tasks are done.

``calc`` has a test suite for ``add``, ``multiply`` and ``dot`` and none of the three functions. The idea
asks for them in three tasks: ``add`` and ``multiply`` are independent (they run in parallel), ``dot``
builds on both (its branch starts from theirs). The example agent (``examples/agents/script_agent.py``)
does not think: the idea spells out each task's code, and the agent writes it. The tests run with the
standard library's ``unittest``, so the demo needs nothing beyond Facteur.
"""

from __future__ import annotations

from pathlib import Path

REPOSITORY = "demo/calc"

FILES: dict[str, str] = {
    "README.md": "# calc\n\nA tiny arithmetic package, built by Facteur's demo.\n\n"
    "Run the tests with `python -m unittest discover -s tests -v`.\n",
    "calc/__init__.py": '"""Arithmetic helpers."""\n',
    "tests/__init__.py": "",
    "tests/test_calc.py": '''"""The behaviour calc promises; it fails until the demo's idea is carried out."""

import unittest


class AddTest(unittest.TestCase):
    def test_add(self) -> None:
        from calc.add import add

        self.assertEqual(add(2, 3), 5)
        self.assertEqual(add(-1, 1), 0)


class MultiplyTest(unittest.TestCase):
    def test_multiply(self) -> None:
        from calc.multiply import multiply

        self.assertEqual(multiply(4, 5), 20)
        self.assertEqual(multiply(-2, 3), -6)


class DotTest(unittest.TestCase):
    def test_dot(self) -> None:
        from calc.dot import dot

        self.assertEqual(dot([1, 2, 3], [4, 5, 6]), 32)
        self.assertEqual(dot([], []), 0)

    def test_dot_refuses_vectors_of_different_lengths(self) -> None:
        from calc.dot import dot

        with self.assertRaises(ValueError):
            dot([1], [1, 2])


if __name__ == "__main__":
    unittest.main()
''',
    ".gitignore": "__pycache__/\n*.pyc\n",
}

TITLE = "Give calc add, multiply and dot"

GOAL = """calc's test suite (tests/test_calc.py) fails: add, multiply and dot do not exist yet. Add them, one
task each.

#### add \u2014 Add calc.add

Write `calc/add.py` with `add(a, b)`, the sum of two numbers.

```python path=calc/add.py
\"\"\"Addition.\"\"\"


def add(a: float, b: float) -> float:
    \"\"\"The sum of a and b.\"\"\"
    return a + b
```

- Depends on: none
- Paths: `calc/add.py`
- Heavy: no

Acceptance criteria:
- [ ] `add(2, 3) == 5` (tests.test_calc.AddTest)

#### multiply \u2014 Add calc.multiply

Write `calc/multiply.py` with `multiply(a, b)`, the product of two numbers.

```python path=calc/multiply.py
\"\"\"Multiplication.\"\"\"


def multiply(a: float, b: float) -> float:
    \"\"\"The product of a and b.\"\"\"
    return a * b
```

- Depends on: none
- Paths: `calc/multiply.py`
- Heavy: no

Acceptance criteria:
- [ ] `multiply(4, 5) == 20` (tests.test_calc.MultiplyTest)

#### dot \u2014 Add calc.dot on top of add and multiply

Write `calc/dot.py` with `dot(xs, ys)`, the dot product of two vectors, built from `add` and `multiply`.

```python path=calc/dot.py
\"\"\"The dot product, from add and multiply.\"\"\"

from collections.abc import Sequence

from calc.add import add
from calc.multiply import multiply


def dot(xs: Sequence[float], ys: Sequence[float]) -> float:
    \"\"\"The sum of the products of xs and ys, element by element.\"\"\"
    if len(xs) != len(ys):
        raise ValueError(f"vectors of different lengths: {len(xs)} and {len(ys)}")
    total: float = 0
    for x, y in zip(xs, ys):
        total = add(total, multiply(x, y))
    return total
```

- Depends on: add, multiply
- Paths: `calc/dot.py`
- Heavy: no

Acceptance criteria:
- [ ] `dot([1, 2, 3], [4, 5, 6]) == 32` (tests.test_calc.DotTest)
- [ ] vectors of different lengths raise `ValueError`
"""

CONSTRAINTS = "Standard library only; keep each function in its own module."
SUCCESS_METRICS = ["python -m unittest discover -s tests passes on the last task's branch"]


def write_project(root: Path) -> Path:
    """Write the project's files under ``root`` (which must not hold them yet)."""
    for name, text in FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root
