"""Examples built on the toolkit; not part of the installed packages (run from the repository root)."""
