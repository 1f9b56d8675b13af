"""The runner: global plan, mesh, fixed-shape steps, overlapped I/O, resume; `layertap extract`."""
