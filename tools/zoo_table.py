"""The README's zoo table, generated from the zoo configs and the published model cards.

    PYTHONPATH=. python tools/zoo_table.py            # print it
    PYTHONPATH=. python tools/zoo_table.py --write    # replace it in README.md

Only cards are read for measured figures; an entry without a card is listed as not trained.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from capszoo import zoo
from capszoo.config import load_config

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- zoo-table:begin -->", "<!-- zoo-table:end -->"

# The adaptive-routing paper's test accuracies (%) for 2 capsule layers (DESIGN.md).
PAPER = {("dynamic", "cifar10"): 76.05, ("dynamic", "svhn_cropped"): 93.65, ("dynamic", "fashion_mnist"): 93.02,
         ("dynamic", "mnist"): 99.65, ("adaptive_lambda", "cifar10"): 78.41, ("adaptive_lambda", "svhn_cropped"): 94.27,
         ("adaptive_lambda", "fashion_mnist"): 93.07, ("adaptive_lambda", "mnist"): 99.65}

CAVEATS = {"digits": "scikit-learn 8×8 digits resized to 28×28: not a paper benchmark",
           "cifar10": "here: a JPEG re-encoding of CIFAR-10 (lossy)"}


def table():
    lines = ["| entry | dataset | capsule layers | routing | λ / iterations | params | test accuracy here | "
             "paper | notes |", "|---|---|---:|---|---|---:|---|---:|---|"]
    for entry in zoo.list_models(as_frame=True).itertuples():
        config, card = load_config(entry.name), zoo.read_card(entry.name)
        setting = ", ".join([f"λ = {entry.lam:g}"] * pd.notna(entry.lam) +
                            [f"r = {entry.iterations:g}"] * pd.notna(entry.iterations)) or "–"
        if card:
            measured = f"**{100 * card['test_accuracy']:.2f} %** ({zoo.trained_how(card)})"
        else:
            measured = "not trained yet"
        paper = PAPER.get((entry.routing, entry.dataset)) if entry.depth == 2 and \
            config.model.conv_filters == 256 else None
        lines.append(f"| `{entry.name}` | {entry.dataset} | {entry.depth} | {entry.routing} | {setting} | "
                     f"{entry.params:,} | {measured} | {f'{paper:.2f} %' if paper else '–'} | "
                     f"{CAVEATS.get(entry.dataset, '')} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="replace the table in README.md")
    args = parser.parse_args(argv)
    text = table()
    if args.write:
        readme = ROOT / "README.md"
        content = readme.read_text()
        start, end = content.index(BEGIN) + len(BEGIN), content.index(END)
        readme.write_text(content[:start] + "\n" + text + "\n" + content[end:])
    print(text)


if __name__ == "__main__":
    sys.exit(main())
