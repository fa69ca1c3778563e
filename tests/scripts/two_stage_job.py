"""Run the two-stage test job (tests/test_recipe_two_stage.py) once; launched in several processes by the test.

python tests/scripts/two_stage_job.py SOURCES OUTPUT_DIR
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from test_recipe_two_stage import run_job  # noqa: E402

if __name__ == "__main__":
    run_job(Path(sys.argv[1]), Path(sys.argv[2]), ce_baseline="false")
