import sys
from pathlib import Path

from hypothesis import settings

sys.path.insert(0, str(Path(__file__).parent))

from examples import PROFILES, examples, profile

for name in PROFILES:
    extra = {"database": None} if name == "ci" else {}
    settings.register_profile(
        name, max_examples=examples(100, name), deadline=None, print_blob=True, **extra
    )
settings.load_profile(profile())
