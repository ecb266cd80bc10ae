"""``python -m proofs_check [--quick] [--out DIR]``."""

from proofs_check._runner import main

if __name__ == "__main__":
    raise SystemExit(main())
