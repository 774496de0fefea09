"""A sweep: the plan (every cell composed and validated before any work), the parent's side
of a cell (runner: one child per phase group, one row whatever happens), the child's side
(cell: the phases through the engine, the task and the meters), and the progress display."""
