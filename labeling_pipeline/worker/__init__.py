"""Celery side of the pipeline: the app, thin tasks, job submission and per-process resources.

Modules: `names` (task names, queues, settings key), `app` (the app factory), `tasks` (the task
functions), `jobs` (submission), `context` (per-process store and feature extractors),
`retraining` (when a project is due), `watchdog` (jobs whose worker went silent). Library code
below this package never imports it: dependencies are passed in.
"""
