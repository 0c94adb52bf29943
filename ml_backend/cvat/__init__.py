"""CVAT adapters: a Nuclio handler, a Nuclio-dashboard-compatible API, a cvat-sdk function.

CVAT has no channel for a custom parameter such as granularity, so each granularity preset is
served as its own function (`presets`). The three adapters share the request/response codecs
(`codec`) and the invocation logic (`service`); none of them loads anything at import time.
"""
