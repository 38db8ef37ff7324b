"""The rule that will choose which full-data twin comes back from the next GPU loan, written on
2026-11-23 before any of its runs (docs/zoo-training.md, "A fourth loan, planned").

Members (each holds out the same tenth of the training split): fa-s1-l2, fa-s1-l4 (λ = 2, 4),
fa-s1-d97 (decay 0.97) and fa-s1-d97-e80 (decay 0.97 for 80 epochs), all shifted by 1 px like
fa-s1, the published recipe's member, whose final validation accuracy was 0.9242. Beside each
trains its twin, twins/ta-*.toml: the same recipe on the whole split.

Rule: the member with the highest final validation accuracy, if it beats 0.9242, and then its
twin's weights come back to be published as ara-fashion-mnist (with the zoo config changed to the
twin's recipe); otherwise none, and ara-fashion-mnist stays as it is. Run on the lent machine
from the repository root after the runs end; prints the run name to pack (PACK=...), or "none".

A member that ran to its end on the 2-core CPU first (docs/zoo-training.md, "One member of the
fourth loan, on this CPU") enters the rule with the final validation accuracy it measured there,
and a loan does not run it again: a second run would be a second draw of the same member.

A member that stopped short of its planned epochs (cut by --time-limit, or killed) has no final
validation accuracy (best_run.final_val_accuracy gives None and says why on stderr), so it cannot
be chosen; with none finished the rule prints "none".
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from best_run import final_val_accuracy  # noqa: E402

RUNS = "/tmp/runs/zoo-"
PUBLISHED_VAL = 0.9242  # fa-s1, the member of the recipe published after the third loan
MEMBERS = ("fa-s1-l2", "fa-s1-l4", "fa-s1-d97", "fa-s1-d97-e80")
# fa-s1-d97 ended on the CPU on 2026-11-24: `python3 tools/best_run.py runs/cpu-s14/fa-s1-d97`
# fa-s1-l2 ended on the CPU on 2026-11-24: `python3 tools/best_run.py runs/cpu-s19/fa-s1-l2`
# fa-s1-l4 ended on the CPU on 2026-11-25: `python3 tools/best_run.py runs/cpu-s25/fa-s1-l4`
FINISHED_ON_CPU = {"fa-s1-d97": 0.9157, "fa-s1-l2": 0.9225, "fa-s1-l4": 0.9172}
# Outcome, 2026-12-06 on an H100: fa-s1-d97-e80 ended at 0.9247, so this printed ta-s1-d97-e80, now
# ara-fashion-mnist (docs/zoo-training.md, "The fourth loan"). The sweep is over.


def twin(member):
    return "ta-" + member.removeprefix("fa-")


def choose(scores, published=PUBLISHED_VAL):
    """The twin of the member with the best final validation accuracy (ties: the first in
    ``scores``), if that beats ``published``; else "none". A score of None (a run short of its
    planned epochs) cannot be chosen."""
    finished = [member for member, score in scores.items() if score is not None]
    if not finished:
        return "none"
    best = max(finished, key=scores.get)
    return twin(best) if scores[best] > published else "none"


def main():
    scores = {
        member: FINISHED_ON_CPU[member] if member in FINISHED_ON_CPU else final_val_accuracy(RUNS + member)
        for member in MEMBERS
    }
    print(scores, file=sys.stderr)
    print(choose(scores))


if __name__ == "__main__":
    main()
