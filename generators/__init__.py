"""biomint generators: pure generation code (CONVENTIONS.md section 1)."""
