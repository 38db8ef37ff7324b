"""The rule that chose which full-data twin came back from the third GPU loan (docs/zoo-training.md).

Fixed before the runs, and run on the lent machine from the repository root after they ended:
the better member with λ in the paper's best range 1-4 if it beat fa-s2's 0.9202, else λ = 0.1
if that did, else none. Prints the run name to pack. Kept as the record of that choice.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from best_run import final_val_accuracy  # noqa: E402

RUNS = "/tmp/runs/zoo-"
PUBLISHED_VAL = 0.9202  # fa-s2, the recipe published before this loan
TWINS = {"fa-s1": "ta-s1", "fa-s2-l4": "ta-l4"}


def main():
    scores = {member: final_val_accuracy(RUNS + member) for member in (*TWINS, "fa-s2-l01")}
    print(scores, file=sys.stderr)
    if None in scores.values():
        raise SystemExit("a member has no final val_accuracy (named above): this rule needs all three")
    best = max(TWINS, key=scores.get)
    if scores[best] > PUBLISHED_VAL:
        print(TWINS[best])
    elif scores["fa-s2-l01"] > PUBLISHED_VAL:
        print("ta-l01")
    else:
        print("none")


if __name__ == "__main__":
    main()
