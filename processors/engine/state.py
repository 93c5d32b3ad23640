"""The layout of the engine's state in a partition's StateStore.

(Documented in full with its version in the next step.)
"""

from __future__ import annotations

from typing import Final

#: Where an absence timer set before a pack switch keeps the version that set it.
TIMER_VERSION: Final = 4
#: Rule state a changed rule keeps at a switch: cool-downs (and their causes), first keys (and
#: the actions that used them), pending absence timers and recent resolutions.
KEPT_AT_SWITCH: Final = frozenset({"cd", "cb", "k", "ka", "p", "d"})
#: Partition key recording the last pack switch: {"at", "watermark", "versions"}.
PACK_KEY: Final = "p:pack"
