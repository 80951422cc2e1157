"""A synthetic preference world with verifiable preferences, for reproducing system-message generalization.

Instructions state their own facts (records.py); each of the paper's four dimensions has values a program can
check in a reply (values.py, checker.py); system messages are written from value combinations with many
paraphrases (templates.py), and the bench uses held-out combinations and paraphrases only (generate.py).
`python -m data_gen.world repro` (make repro) runs the experiment (repro.py, report.py).
"""

from data_gen.world.generate import WorldConfig, build_world, write_world
from data_gen.world.values import VALUE_IDS, WorldError

__all__ = ["VALUE_IDS", "WorldConfig", "WorldError", "build_world", "write_world"]
