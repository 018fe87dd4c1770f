"""Write arith_mc.json: 40 held-out multiple-choice questions in the built-in model's `mc` form.

    python tests/data/lm_eval/make_arith_mc.py

Deterministic (the task suite's held-out sampler, seed 0), so rerunning it rewrites the same file;
the questions come from the held-out split, never from the training corpus.
"""

from __future__ import annotations

import json
from pathlib import Path

from diffuserve.tasks.suite import MC_LETTERS, held_out_problems

NUM_QUESTIONS = 40
SEED = 0


def main() -> None:
    rows = [{"question": p.prompt, "answer": MC_LETTERS.index(p.answer)}
            for p in held_out_problems("mc", NUM_QUESTIONS, seed=SEED)]
    out = Path(__file__).with_name("arith_mc.json")
    out.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {len(rows)} questions to {out}")


if __name__ == "__main__":
    main()
