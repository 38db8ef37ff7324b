"""The rule that will choose which full-data twin comes back from the fifth GPU loan, written on
2026-12-06 before any of its runs (docs/zoo-training.md, "A fifth loan, planned").

Members (each holds out the same tenth of the training split as every member before): the two
recipes ara-fashion-mnist has been published with, shifted by 1 px, now also mirrored left-right
with probability 1/2 (data.horizontal_flip): fa-s1-flip (decay 0.95, 50 epochs, like fa-s1) and
fa-s1-d97-e80-flip (decay 0.97, 80 epochs, like fa-s1-d97-e80, the member of the recipe published
now, whose final validation accuracy was 0.9247). Beside each trains its twin, twins/ta-*.toml.

Rule: as the fourth loan's (choose_fourth_loan.choose): the member with the highest final
validation accuracy, if it beats 0.9247, and then its twin's weights come back to be published as
ara-fashion-mnist (with the zoo config changed to the twin's recipe) whatever its test accuracy;
otherwise none. A member short of its planned epochs has no final score and cannot be chosen.
Run on the lent machine from the repository root after the runs end; prints the run name to pack,
or "none" (tools/device_train.sh: PACK=rule:THIS_FILE).

Added on 2026-12-06, before the first epoch of the run it concerns, as the fourth loan's rule
allowed: a member that ran to its end on the 2-core CPU (docs/zoo-training.md, "A member of the
fifth loan on this CPU" and the section after it) enters the rule with the final validation accuracy it measured there,
and a loan does not run it again (a second run would be a second draw of the same member). A
member still training on the CPU when a loan comes is run by the loan as planned, and its CPU run
is stopped and not used.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from best_run import final_val_accuracy  # noqa: E402
from choose_fourth_loan import RUNS, choose  # noqa: E402

PUBLISHED_VAL = 0.9247  # fa-s1-d97-e80, the member of the recipe published after the fourth loan
MEMBERS = ("fa-s1-flip", "fa-s1-d97-e80-flip")
# Members that ended on the CPU, with `python3 tools/best_run.py runs/cpu-sNN/MEMBER`:
# fa-s1-flip in runs/cpu-s31 (sessions 31-35, 50 of 50 epochs, 5,490 of 6,000 images);
# fa-s1-d97-e80-flip in runs/cpu-s38 (sessions 38-42, 80 of 80 epochs, 5,535 of 6,000 images).
FINISHED_ON_CPU = {"fa-s1-flip": 0.9150, "fa-s1-d97-e80-flip": 0.9225}


def main():
    scores = {
        member: FINISHED_ON_CPU[member] if member in FINISHED_ON_CPU else final_val_accuracy(RUNS + member)
        for member in MEMBERS
    }
    print(scores, file=sys.stderr)
    print(choose(scores, PUBLISHED_VAL))


if __name__ == "__main__":
    main()
