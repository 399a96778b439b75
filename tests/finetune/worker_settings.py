"""Settings for worker processes of the resume test.

Redis re-delivers an unacknowledged message after 2 s instead of an hour. A fine-tune whose
worker sent no heartbeat for 2 s may be taken over. So a killed run continues within seconds.
"""

from backend.settings import *  # noqa: F401,F403
from backend.settings import CELERY_BROKER_TRANSPORT_OPTIONS

CELERY_BROKER_TRANSPORT_OPTIONS = {
    **CELERY_BROKER_TRANSPORT_OPTIONS,
    "visibility_timeout": 2,
    "unacked_restore_interval": 1,
    "unacked_restore_throttle": 1,
}
VERSUS_FINETUNE_LEASE_SECONDS = 2
