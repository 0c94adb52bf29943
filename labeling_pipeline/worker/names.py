"""Every name shared between the Celery app, its tasks and the code that submits work.

A task name typed twice can drift apart and queue work that no worker takes; they are defined here
once and imported everywhere (a test checks that every name is registered on the app).
"""

from __future__ import annotations

from typing import Final

#: Key of the `PipelineSettings` object in ``app.conf``.
SETTINGS_KEY: Final = "unsamv2_settings"

#: CPU work: pseudo-labels, Label Studio sync, periodic checks.
PSEUDO_LABEL_QUEUE: Final = "pseudo_labels"
#: GPU work: training runs.
TRAINING_QUEUE: Final = "training"
QUEUES: Final = (PSEUDO_LABEL_QUEUE, TRAINING_QUEUE)

PSEUDO_LABEL_PROJECT_TASK: Final = "unsamv2.pseudo_label_project"
PSEUDO_LABEL_IMAGE_TASK: Final = "unsamv2.pseudo_label_image"
SYNC_PROJECT_TASK: Final = "unsamv2.sync_project"
CHECK_RETRAINING_TASK: Final = "unsamv2.check_retraining"
TRAIN_TASK: Final = "unsamv2.train"
TRAIN_SPECIALIST_TASK: Final = "unsamv2.train_specialist"
FAIL_LOST_JOBS_TASK: Final = "unsamv2.fail_lost_jobs"
