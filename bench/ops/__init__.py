"""Running bench on a machine: the doctor (checks before the first sweep) and the nightly
(sweep, report, publish)."""
