"""A whole study: the study file, overrides, the plan, jobs, executors, preflight, and the run
(prepare -> execute -> report). Importing this package imports nothing heavy; the study
file (`study_file`) is read and validated without torch."""
