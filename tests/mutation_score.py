"""Mutation score of the method losses from a finished ``mutmut run`` (``./run_all.sh --mutants``).

Reads ``mutants/methods/*.py.meta`` (mutmut's result per mutant) and the mutated sources,
and prints, per module, the killed mutants out of those that can change a loss value.

Rule for the mutants left out (they cannot change any loss value):
* mutants whose only change is inside a ``raise`` statement (the text or type of an error
  message); the condition that raises is *not* left out;
* mutants of ``describe`` / ``_validate_options`` (metadata and option validation);
* the survivors reviewed one by one in :data:`EQUIVALENT`, each with the reason it cannot
  change a value (a keyword set to its default, a scale that cancels, ...).
Every other mutant counts. Killed = a test failed (or timed out); survived = every test
passed; "no tests" (no selected test reaches the function) counts as survived.

Usage: ``python tests/mutation_score.py [--survivors] [MODULE ...]`` from the repository root.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

# Mutants reviewed as unable to change any loss value (numbering as of the sources they were
# reviewed against; a changed module renumbers its mutants, so re-review its survivors).
EQUIVALENT: dict[str, str] = {
    **{f"methods.kd.x_kd_loss__mutmut_{n}": "log_softmax dim=None or omitted: torch's implicit dim of 2-D is 1"
       for n in (3, 5, 10, 12)},
    **{f"methods.pkt.x_cosine_conditional_probabilities__mutmut_{n}": "nan_to_num nan=None/omitted: default 0.0"
       for n in (12, 14)},
    **{f"methods.pkt.x_cosine_conditional_probabilities__mutmut_{n}": "kernel scale cancels in the row normalisation"
       for n in (19, 22)},
    "methods.rkd.x_mean_normalised_distances__mutmut_7": "distance matrix is symmetric: the positive count is even",
    **{f"methods.rkd.x_triplet_angles__mutmut_{n}": "F.normalize p=None/omitted: default p=2" for n in (9, 12)},
    **{f"methods.rkd.x_pairwise_distances__mutmut_{n}": "torch.eye device/dtype dropped: 0/1 exact in every dtype; "
       "a device mismatch raises, it cannot change a value" for n in (18, 19, 21, 22)},
    **{f"methods.samd.x_semantic_attention__mutmut_{n}": "shape index of a 3-D CAM: a same-size bilinear resize is "
       "the identity" for n in (16, 17)},
    **{f"methods.samd.x_semantic_attention__mutmut_{n}": "align_corners=None/omitted: default False" for n in (24, 28)},
    "methods.samd.xǁSAMDǁ__init____mutmut_1": "ctx=None: SAMD never reads ctx after construction",
}

KILLED = {1, 3, 36, 24, -24, 152, 255}
SURVIVED = {0}
NO_TESTS = {5, 33}
NOT_VALUE_FUNCTIONS = {"describe", "_validate_options"}
_NAME = re.compile(r"^(?P<func>.+)__mutmut_(?P<n>\d+)$")


class _StripRaise(ast.NodeTransformer):
    def visit_Raise(self, node: ast.Raise) -> ast.Raise:
        return ast.Raise(exc=None, cause=None)


def _normalised(fn: ast.FunctionDef) -> str:
    fn = ast.parse(ast.unparse(fn)).body[0]
    fn.name = "f"
    if fn.body and isinstance(fn.body[0], ast.Expr) and isinstance(getattr(fn.body[0], "value", None), ast.Constant):
        fn.body = fn.body[1:]
    return ast.dump(_StripRaise().visit(fn))


def _functions(source: Path) -> dict[str, ast.FunctionDef]:
    found: dict[str, ast.FunctionDef] = {}
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.FunctionDef) and "__mutmut_" in node.name:
            found[node.name] = node
    return found


def module_score(meta: Path) -> dict:
    module = meta.name.removesuffix(".py.meta")
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    functions = _functions(meta.with_name(module + ".py"))
    row = {"module": module, "mutants": 0, "excluded": 0, "killed": 0, "survived": [], "no_tests": 0,
           "not_checked": 0}
    for key, code in sorted(codes.items()):
        name = key.rsplit(".", 1)[-1]
        match = _NAME.match(name)
        func = match.group("func") if match else name
        short = func.split("ǁ")[-1].removeprefix("x_")
        row["mutants"] += 1
        orig = functions.get(f"{func}__mutmut_orig")
        if key in EQUIVALENT or short in NOT_VALUE_FUNCTIONS or (
            orig is not None and name in functions and _normalised(functions[name]) == _normalised(orig)
        ):
            row["excluded"] += 1
        elif code is None:
            row["not_checked"] += 1
        elif code in KILLED:
            row["killed"] += 1
        else:
            row["survived"].append(key)
            if code in NO_TESTS:
                row["no_tests"] += 1
    counted = row["mutants"] - row["excluded"] - row["not_checked"]
    row["score"] = row["killed"] / counted if counted else float("nan")
    return row


def main(argv: list[str]) -> int:
    show = "--survivors" in argv
    wanted = [a for a in argv if not a.startswith("--")]
    print("| module | mutants | left out (rule) | checked | killed | survived (no tests) | score |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for meta in sorted(Path("mutants/methods").glob("*.py.meta")):
        row = module_score(meta)
        if wanted and row["module"] not in wanted:
            continue
        checked = row["mutants"] - row["excluded"] - row["not_checked"]
        if not checked:
            continue
        rows.append(row)
        print(f"| {row['module']} | {row['mutants']} | {row['excluded']} | {checked} | {row['killed']} | "
              f"{len(row['survived'])} ({row['no_tests']}) | {100 * row['score']:.1f} % |")
    if show:
        for row in rows:
            for key in row["survived"]:
                print(key)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
