"""Course tooling: exercise checks and progress, the exercise build, the doctor, benchmarks,
classroom mode, grading, the static site and the test suite's stage times.
"""
