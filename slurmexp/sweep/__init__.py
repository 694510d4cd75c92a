"""What the user asked for: the sweep file's schema and the plan of runs it expands to."""
