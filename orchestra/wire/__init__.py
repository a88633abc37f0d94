"""Generated wire code (see generate.py). Nothing hand-written lives here but the generator."""
